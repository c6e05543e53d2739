from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import opentrace

from .procfs import asleep_in_syscall

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IS_ROOT:
        return
    skip = pytest.mark.skip(reason="needs root: loads eBPF programs into the running kernel")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """A unique path no other process will open."""
    return tmp_path / f"opentrace-marker-{uuid.uuid4().hex}"


@pytest.fixture
def tracer() -> Iterator[Callable[..., opentrace.Watcher]]:
    """``tracer(**filters)`` opens a watcher that is closed when the test ends."""
    opened: list[opentrace.Watcher] = []

    def start(**filters: object) -> opentrace.Watcher:
        w = opentrace.watch(**filters)  # type: ignore[arg-type]
        opened.append(w)
        return w

    yield start
    for w in opened:
        w.close()


def collect(
    w: opentrace.Watcher,
    wanted: Callable[[opentrace.OpenEvent], bool],
    count: int = 1,
    timeout: float = 5.0,
) -> list[opentrace.OpenEvent]:
    """Events matching ``wanted`` until ``count`` arrived or ``timeout`` passed."""
    found: list[opentrace.OpenEvent] = []
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        found.extend(ev for ev in w.poll(0.1) if wanted(ev))
    return found


def settle(w: opentrace.Watcher, quiet: float = 0.3) -> list[opentrace.OpenEvent]:
    """Everything that arrives until the stream has been quiet for ``quiet`` seconds."""
    events: list[opentrace.OpenEvent] = []
    while batch := w.poll(quiet):
        events.extend(batch)
    return events


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Until ``condition()`` holds (checked every 5 ms); fails saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
        time.sleep(0.005)


# Syscall numbers of where a blocked read sleeps: epoll_wait on the ring and close()'s eventfd
# (src/ring.rs); a second reader of one watcher waits on the first's lock.
_SLEEPS = {
    "x86_64": {232: "epoll_wait", 281: "epoll_wait", 441: "epoll_wait", 202: "futex"},
    "aarch64": {22: "epoll_wait", 441: "epoll_wait", 98: "futex"},
}[platform.machine()]


def asleep_in(tid: int, pid: int | str = "self") -> str | None:
    """"epoll_wait" or "futex" when thread ``tid`` (of process ``pid``) is asleep in that syscall;
    None when it runs, sleeps elsewhere or is gone."""
    nr = asleep_in_syscall(tid, pid)
    return None if nr is None else _SLEEPS.get(nr)


def context_switches(tid: int) -> int:
    """How many times thread ``tid`` of this process has gone to sleep (voluntary switches): it
    does not move while the thread stays asleep."""
    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError(f"no voluntary_ctxt_switches for thread {tid}")


@contextlib.contextmanager
def epoll_returns(tid: int) -> Iterator[list[int]]:
    """What thread ``tid``'s epoll waits returned while the block ran, in order, as the kernel's
    syscall exit tracepoints saw them: 0 when a wait timed out, how many fds were ready when
    something woke it (close() wakes a blocked reader through its eventfd). Filled in at the end."""
    returns: list[int] = []
    with opentrace.watch_tracepoints("syscalls:sys_exit_epoll_*wait*", tid=tid) as exits:
        yield returns
        while batch := exits.poll(0):
            for ev in batch:
                ret = ev["ret"]
                assert isinstance(ret, int)
                returns.append(ret)


OPENER = Path(__file__).with_name("opener.py")


class Child:
    """A helper process (tests/opener.py) that runs ``ops`` when ``go()`` is called."""

    def __init__(self, ops: list[list[object]], in_thread: bool = False) -> None:
        argv = [sys.executable, str(OPENER), json.dumps(ops)] + (["--in-thread"] if in_thread else [])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        ids = json.loads(self.proc.stdout.readline())
        self.pid: int = ids["pid"]
        self.tid: int = ids["tid"]

    def say(self, line: str) -> str:
        """Sends ``line`` (the first one starts the operations); returns the next line the child prints."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline()

    def go(self, timeout: float = 30) -> list[Any]:
        """Runs the operations; their results (see tests/opener.py)."""
        out, _ = self.proc.communicate("go\n", timeout=timeout)
        assert self.proc.returncode == 0, out
        results: list[Any] = json.loads(out)
        return results


def run_child(ops: list[list[object]], in_thread: bool = False) -> tuple[Child, list[Any]]:
    child = Child(ops, in_thread)
    return child, child.go()


def cgroup2_mount() -> Path | None:
    """Where the root of the cgroup2 hierarchy is mounted."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, rest = line.partition(" - ")
        if rest.split()[0] == "cgroup2" and fields.split()[3] == "/":
            return Path(fields.split()[4])
    return None


def in_cgroup(directory: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """Runs ``command`` moved into the cgroup ``directory`` first (through cgroup.procs)."""
    script = f'echo $$ > "{directory}/cgroup.procs" || exit 99; exec "$@"'
    done = subprocess.run(["sh", "-c", script, "sh", *command], capture_output=True, text=True)
    assert done.returncode != 99, done.stderr
    return done


URING_SOURCE = Path(__file__).with_name("uring_opener.c")


@pytest.fixture(scope="session")
def uring_helper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/uring_opener.c, built (gcc and liburing-dev come with scripts/bootstrap)."""
    binary = tmp_path_factory.mktemp("uring") / "uring_opener"
    cc = shutil.which("gcc") or shutil.which("cc")
    assert cc, "no C compiler: run scripts/bootstrap (it installs gcc and liburing-dev)"
    built = subprocess.run([cc, "-O2", "-Wall", "-o", str(binary), str(URING_SOURCE), "-luring"],
                           capture_output=True, text=True)
    assert built.returncode == 0, (
        f"building {URING_SOURCE.name} failed (liburing-dev missing? run scripts/bootstrap):\n{built.stderr}"
    )
    return binary


@pytest.fixture(params=["kfunc", "probe-reads"])
def struct_reads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                 caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The kernel's structs (the dentries and mounts of full paths and of a path filter's walk, an
    opened file's identity) read both ways: through pointers typed by the bpf_rdonly_cast kfunc
    (direct loads, Linux 6.2 and newer), and by probe reads (older kernels, or OPENTRACE_NO_KFUNCS
    set); the log says which the programs were loaded with, and that no watcher of the test had
    its programs loaded again without the kfunc (a verifier refusing them)."""
    if request.param == "probe-reads":
        monkeypatch.setenv("OPENTRACE_NO_KFUNCS", "1")
    else:
        monkeypatch.delenv("OPENTRACE_NO_KFUNCS", raising=False)
    with caplog.at_level("DEBUG", logger="opentrace"):
        opentrace.watch(paths=["/usr/"]).close()
    if request.param == "kfunc" and "bpf_rdonly_cast is not used" in caplog.text:
        pytest.skip("the kernel has no bpf_rdonly_cast (Linux 6.2 and newer)")
    how = "direct loads (bpf_rdonly_cast)" if request.param == "kfunc" else "probe reads"
    assert f"the programs read kernel structs by {how}" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="opentrace"):
        yield
        assert "loading with the kfunc bpf_rdonly_cast failed" not in caplog.text
