"""deploy/: the systemd unit is valid, it and the DaemonSet grant the same three capabilities, and
those are enough: the agent run as an unprivileged user with exactly them (what the unit's
DynamicUser gets) counts a container's opens under its id; without each, what it is for is missing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .agentkit import Agent, unique_comm, until
from .conftest import Child, cgroup2_mount

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "opentrace-agent.service"
DAEMONSET = DEPLOY / "kubernetes" / "daemonset.yaml"
NOBODY = 65534


def unit_setting(name: str) -> list[str]:
    (line,) = [line for line in UNIT.read_text().splitlines() if line.startswith(f"{name}=")]
    return line.split("=", 1)[1].split()


def unit_capabilities() -> set[str]:
    ambient = set(unit_setting("AmbientCapabilities"))
    assert ambient == set(unit_setting("CapabilityBoundingSet"))
    return ambient


def daemonset_capabilities() -> set[str]:
    text = DAEMONSET.read_text()
    block = re.search(r"^( *)add:\n((?:\1  - .*\n)+)", text, re.M)
    assert block, "no capabilities.add list in the DaemonSet"
    return {"CAP_" + line.split("-", 1)[1].split("#")[0].strip() for line in block.group(2).splitlines()}


def test_the_unit_and_the_daemonset_grant_the_same_three_capabilities() -> None:
    assert unit_capabilities() == daemonset_capabilities() == {"CAP_BPF", "CAP_PERFMON", "CAP_DAC_READ_SEARCH"}
    text = DAEMONSET.read_text()
    assert re.search(r"^ *hostPID: true$", text, re.M) and re.search(r'drop: \["ALL"\]', text)
    for mount in ("/sys/kernel/tracing", "/sys/kernel/btf", "/sys/fs/cgroup"):
        assert f"mountPath: {mount}\n" in text and f"path: {mount}\n" in text
    assert "privileged: false" in text
    assert all("SYS_ADMIN" not in line.split("#")[0] for line in text.splitlines())


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_finds_nothing_to_say_about_the_unit(tmp_path: Path) -> None:
    unit = tmp_path / UNIT.name  # the same unit, run from this checkout's virtualenv
    opentrace = Path(sys.executable).with_name("opentrace")
    unit.write_text(UNIT.read_text().replace("/opt/opentrace/bin/opentrace", str(opentrace)))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout + done.stderr == ""


@pytest.fixture
def container() -> Iterator[Path]:
    mount = cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup2 hierarchy mounted")
    top = mount / f"opentrace-deploy-{os.getpid()}"
    scope = top / f"docker-{uuid.uuid4().hex * 2}.scope"
    scope.mkdir(parents=True)
    yield scope
    scope.rmdir()
    top.rmdir()


def as_user(uid: int, caps: set[str]) -> list[str]:
    """setpriv: ``uid`` with only ``caps`` (ambient, so that they survive exec, as systemd gives them)."""
    spec = ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in sorted(caps))])
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", f"--inh-caps={spec}",
            f"--ambient-caps={spec}", f"--bounding-set={spec}"]


def containers_opens(prefix: list[str], scope: Path, also: tuple[str, ...] = ()) -> dict[str, float]:
    """The agent, started through ``prefix`` (with the options ``also`` besides its metrics),
    counting 3 opens of a child in ``scope``: opens by container label."""
    comm = unique_comm()
    with Agent("--metrics", "127.0.0.1:0", "-n", comm, *also, prefix=prefix) as agent:
        child = Child([["rename", comm], *[["openat", None, "/etc/hostname", os.O_RDONLY, 0]] * 3])
        (scope / "cgroup.procs").write_text(str(child.pid))
        child.go()
        until(lambda: agent.metric("opentrace_opens_total") == 3, "the agent counting the 3 opens")
        opens = {dict(labels)["container"]: value for (name, labels), value in agent.metrics().items()
                 if name == "opentrace_opens_total"}
        assert agent.stop() == 0
    return opens


@pytest.mark.root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="no setpriv (util-linux)")
def test_the_units_capabilities_are_enough_for_an_unprivileged_user(container: Path) -> None:
    assert containers_opens(as_user(NOBODY, unit_capabilities()), container) == {container.name[7:71]: 3}


@pytest.mark.root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="no setpriv (util-linux)")
def test_without_dac_read_search_events_are_counted_but_not_by_container(container: Path, tmp_path: Path) -> None:
    """uid 0 (as in the DaemonSet) reads tracefs without it; naming an event's cgroup by its id
    needs it. With metrics alone the cgroups are named from a walk of the cgroup2 mount at the
    start (and the kernel's record of each made later), which needs no capability."""
    caps = unit_capabilities() - {"CAP_DAC_READ_SEARCH"}
    events = ("--json-file", str(tmp_path / "opens.json"))
    assert containers_opens(as_user(0, caps), container, events) == {"": 3}
    assert containers_opens(as_user(0, caps), container) == {container.name[7:71]: 3}


@pytest.mark.root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="no setpriv (util-linux)")
@pytest.mark.parametrize("missing", ["CAP_BPF", "CAP_PERFMON"])
def test_without_bpf_or_perfmon_the_agent_says_what_it_needs(missing: str) -> None:
    argv = [*as_user(0, unit_capabilities() - {missing}), sys.executable, "-m", "opentrace", "agent",
            "--metrics", "127.0.0.1:0"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert "CAP_BPF" in line and "CAP_PERFMON" in line


@pytest.mark.root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare (util-linux)")
def test_in_a_cgroup_namespace_of_its_own_the_agent_still_names_containers(container: Path) -> None:
    """As in a Kubernetes pod under cgroup v2 (a private cgroup namespace), the node's tree mounted."""
    own = container.parent / "agent"
    own.mkdir()
    try:
        prefix = ["sh", "-c", f'echo $$ > "{own}/cgroup.procs" && exec unshare --cgroup "$@"', "sh"]
        assert containers_opens(prefix, container) == {container.name[7:71]: 3}
    finally:
        own.rmdir()


@pytest.mark.root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare (util-linux)")
def test_a_cgroup_namespace_mounting_its_own_cgroup2_does_not_fool_it(container: Path, tmp_path: Path) -> None:
    """In a cgroup and mount namespace of its own, cgroup2 mounted anew (the namespace's root: it
    shows as '/' in mountinfo, listed first, but is not the hierarchy's root) and the node's tree
    only bound elsewhere: the agent names containers from the node's tree, not the namespace's."""
    own, mount = container.parent / "agent", cgroup2_mount()
    ns_tree, host = tmp_path / "ns-cgroup", tmp_path / "host-cgroup"
    for directory in (own, ns_tree, host):
        directory.mkdir()
    inner = (f'mount -t cgroup2 none "{ns_tree}" && mount --bind "{mount}" "{host}" && umount -l "{mount}" '
             '&& exec "$@"')
    try:
        enter = f'echo $$ > "{own}/cgroup.procs" && exec unshare --cgroup --mount sh -c \'{inner}\' sh "$@"'
        prefix = ["sh", "-c", enter, "sh"]
        assert containers_opens(prefix, container) == {container.name[7:71]: 3}
    finally:
        own.rmdir()
