from __future__ import annotations

import json
import os
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
