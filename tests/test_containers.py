"""Containers: real cgroups made under the cgroup2 mount (named like each runtime's), real PID
namespaces (unshare), the cgroup filter, and a tracer that itself runs in a PID namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import opentrace

from .conftest import cgroup2_mount, in_cgroup, settle

ID = uuid.uuid4().hex + uuid.uuid4().hex  # 64 hex digits, like a container id
MOUNT = cgroup2_mount() or Path("/sys/fs/cgroup")
pytestmark = [pytest.mark.root, pytest.mark.skipif(cgroup2_mount() is None, reason="no cgroup2 hierarchy mounted")]


@pytest.fixture
def cgroups() -> Iterator[list[Path]]:
    """Cgroup directories a test makes (append them); removed, deepest first, afterwards."""
    made: list[Path] = []
    yield made
    for directory in sorted(made, key=lambda p: len(p.parts), reverse=True):
        if directory.exists():
            directory.rmdir()


def make_cgroup(cgroups: list[Path], relative: str) -> Path:
    path = MOUNT / relative.lstrip("/")
    inside = path.relative_to(MOUNT)
    for part in [*reversed(inside.parents[:-1]), inside]:  # from the top, without the mount itself
        directory = MOUNT / part
        if not directory.exists():
            directory.mkdir()
            cgroups.append(directory)
    return path


LAYOUTS = [
    f"/opentrace-test/system.slice/docker-{ID}.scope",
    f"/opentrace-test/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podx.slice/cri-containerd-{ID}.scope",
    f"/opentrace-test/kubepods.slice/crio-{ID}.scope",
    f"/opentrace-test/machine.slice/libpod-{ID}.scope",
    f"/opentrace-test/docker/{ID}",
    f"/opentrace-test/kubepods/burstable/podx/{ID}",
]


RUNTIMES = ["docker", "containerd", "crio", "libpod", "cgroupfs-docker", "cgroupfs-k8s"]


@pytest.mark.parametrize("layout", LAYOUTS, ids=RUNTIMES)
def test_cgroup_and_container_id_of_each_runtime_layout(layout: str, cgroups: list[Path], marker: Path) -> None:
    directory = make_cgroup(cgroups, layout)
    marker.write_text("x")
    with opentrace.watch(comm="cat") as w:
        in_cgroup(directory, "cat", str(marker))
        (ev,) = [e for e in settle(w) if e.path == str(marker)]
    assert ev.cgroup_id == directory.stat().st_ino
    assert ev.cgroup == layout
    assert ev.container_id == ID
    assert ev.to_dict()["container_id"] == ID


def test_a_removed_cgroup_keeps_its_name(cgroups: list[Path], marker: Path) -> None:
    """The cgroup is made after the watcher starts and removed before its events are read."""
    with opentrace.watch(comm="cat") as w:
        directory = make_cgroup(cgroups, f"/opentrace-test/short-lived-{uuid.uuid4().hex[:8]}")
        in_cgroup(directory, "cat", str(marker))
        for made in sorted(cgroups, key=lambda p: len(p.parts), reverse=True):
            made.rmdir()
        (ev,) = [e for e in settle(w) if e.path == str(marker)]
    assert ev.cgroup == "/" + str(directory.relative_to(MOUNT)) and ev.container_id is None


def test_outside_containers(marker: Path) -> None:
    with opentrace.watch(comm="cat") as w:
        subprocess.run(["cat", str(marker)], capture_output=True)
        (ev,) = [e for e in settle(w) if e.path == str(marker)]
    own = Path(f"/proc/{os.getpid()}/cgroup").read_text().splitlines()
    v2 = next(line.split(":", 2)[2] for line in own if line.startswith("0::"))
    assert ev.cgroup == v2 and ev.container_id is None
    assert ev.ns_pid == ev.pid


def test_ns_pid_of_a_process_in_its_own_pid_namespace(marker: Path) -> None:
    with opentrace.watch(comm="cat") as w:
        done = subprocess.run(["unshare", "--pid", "--fork", "sh", "-c", f"exec cat {marker}"], capture_output=True)
        assert done.returncode == 1  # no such file: the open is what counts
        (ev,) = [e for e in settle(w) if e.path == str(marker)]
    assert ev.ns_pid == 1 and ev.pid != 1


def test_cgroup_filter_in_the_kernel(cgroups: list[Path], marker: Path) -> None:
    watched = make_cgroup(cgroups, "/opentrace-test/watched")
    inner = make_cgroup(cgroups, "/opentrace-test/watched/inner")
    other = make_cgroup(cgroups, "/opentrace-test/other")
    for form in ("/opentrace-test/watched", str(MOUNT / "opentrace-test/watched"), "opentrace-test/watched"):
        with opentrace.watch(cgroup=form, comm="cat") as w:
            in_cgroup(inner, "cat", str(marker))
            in_cgroup(watched, "cat", str(marker))
            in_cgroup(other, "cat", str(marker))
            subprocess.run(["cat", str(marker)], capture_output=True)
            got = sorted(e.cgroup for e in settle(w) if e.path == str(marker))
        assert got == ["/opentrace-test/watched", "/opentrace-test/watched/inner"], form
    with pytest.raises(ValueError, match="cgroup: there is no cgroup"):
        opentrace.watch(cgroup="/opentrace-test/nope")
    with pytest.raises(TypeError):
        opentrace.watch(cgroup=5)  # type: ignore[arg-type]


TRACER = """
import json, os, subprocess, sys
import opentrace
marker = sys.argv[1]
child = subprocess.Popen(["sh", "-c", f"read x; cat {marker}; cat {marker}"], stdin=subprocess.PIPE, text=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
with opentrace.watch() as everyone, opentrace.watch(pid=child.pid, descendants=True) as one:
    print("ready", flush=True)
    sys.stdin.readline()  # the host opens the marker meanwhile
    open(marker).close()  # our own open: left out
    child.communicate("go\\n")
    mine = [e.to_dict() for e in everyone.poll(1.0) + everyone.poll(0.3) if e.path == marker]
    followed = [e.to_dict() for e in one if e.path == marker]
print(json.dumps({"me": os.getpid(), "child": child.pid, "everyone": mine, "one": followed}))
"""


def test_a_tracer_inside_a_pid_namespace(marker: Path) -> None:
    """Ids are the namespace's, the host's processes are not seen, its own opens are left out by
    its real identity (it is pid 1 there: the host's pid 1 must not be dropped for it), and pid
    filters take the numbers it sees."""
    marker.write_text("x")
    tracer = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", TRACER,
                               str(marker)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert tracer.stdin is not None and tracer.stdout is not None
    assert tracer.stdout.readline() == "ready\n"
    subprocess.run(["cat", str(marker)], capture_output=True)  # a host process
    out, _ = tracer.communicate("go\n", timeout=30)
    assert tracer.returncode == 0
    seen = json.loads(out)
    assert seen["me"] == 1 and seen["child"] == 2
    # Two cats started by the child (the shell): the namespace's numbers, the host's cat unseen.
    assert [(e["comm"], e["ppid"]) for e in seen["everyone"]] == [("cat", seen["child"])] * 2
    assert all(2 < e["pid"] < 100 and e["ns_pid"] == e["pid"] for e in seen["everyone"])
    def who(events: list[dict[str, object]]) -> list[tuple[object, ...]]:
        return [(e["pid"], e["ppid"], e["comm"], e["ret"]) for e in events]

    assert who(seen["one"]) == who(seen["everyone"])


def test_cli_container_column_cgroup_filter_and_json(cgroups: list[Path], marker: Path) -> None:
    directory = make_cgroup(cgroups, f"/opentrace-test/system.slice/docker-{ID}.scope")
    cli = subprocess.Popen([sys.executable, "-m", "opentrace", "-C", "--cgroup", "/opentrace-test"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    json_cli = subprocess.Popen([sys.executable, "-m", "opentrace", "--json", "-n", "cat"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for proc in (cli, json_cli):
        assert proc.stderr is not None and proc.stderr.readline().startswith("opentrace: tracing")
    in_cgroup(directory, "cat", str(marker))
    subprocess.run(["cat", str(marker)], capture_output=True)  # outside the cgroup
    outs = []
    for proc in (cli, json_cli):
        proc.send_signal(2)
        outs.append(proc.communicate(timeout=10)[0])
    lines = outs[0].splitlines()
    assert lines[0].split() == ["PID", "COMM", "FD", "ERR", "CONTAINER", "PATH"]
    assert [line.split()[-2] for line in lines[1:] if line.endswith(str(marker))] == [ID[:12]]
    events = [json.loads(line) for line in outs[1].splitlines()]
    (inside,) = [e for e in events if e["path"] == str(marker) and e["container_id"]]
    assert inside["cgroup"] == f"/opentrace-test/system.slice/docker-{ID}.scope"
    assert inside["cgroup_id"] == directory.stat().st_ino and inside["ns_pid"] == inside["pid"]
