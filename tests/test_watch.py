"""Real-kernel tests: programs load, attach, and report what real processes open."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import opentrace

from .conftest import asleep_in, collect, epoll_returns, wait_for

pytestmark = pytest.mark.root


def test_marker_opened_by_child_is_reported(tracer, marker: Path) -> None:
    marker.write_text("hello\n")
    w = tracer()
    before = time.monotonic_ns()
    child = subprocess.run(["cat", str(marker)], capture_output=True, check=True)
    after = time.monotonic_ns()
    assert child.stdout == b"hello\n"

    (ev,) = collect(w, lambda e: e.path == str(marker))
    assert ev.comm == "cat"
    assert ev.syscall == "openat"
    assert ev.path_bytes == os.fsencode(marker)
    assert ev.uid == 0
    assert ev.pid == ev.tid  # cat is single-threaded
    assert ev.fd is not None and ev.fd >= 3 and ev.errno is None and ev.ret == ev.fd
    assert ev.dfd == -100
    assert before <= ev.timestamp_ns <= after


def test_child_pid_and_failed_open(tracer, marker: Path) -> None:
    w = tracer()
    child = subprocess.Popen(["cat", str(marker)], stderr=subprocess.DEVNULL)
    child.wait()
    (ev,) = collect(w, lambda e: e.path == str(marker))
    assert ev.pid == child.pid
    assert ev.ret == -2 and ev.errno == 2 and ev.fd is None


def test_own_opens_are_left_out_unless_asked_for(tracer, marker: Path) -> None:
    everyone = tracer()
    me = tracer(pid=os.getpid())
    fd = os.open(marker, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    mine = collect(me, lambda e: e.path == str(marker))
    assert [(e.pid, e.fd) for e in mine] == [(os.getpid(), fd)]
    assert mine[0].flags & os.O_CREAT and mine[0].mode == 0o600
    assert collect(everyone, lambda e: e.path == str(marker), timeout=0.5) == []


def test_close_from_another_thread_wakes_a_blocked_iteration(tracer) -> None:
    w = tracer(comm="no-such-comm")  # nothing arrives
    done = threading.Event()

    def consume() -> None:
        for _ in w:
            pass
        done.set()

    thread = threading.Thread(target=consume)
    thread.start()
    tid = thread.native_id
    assert tid is not None
    with epoll_returns(tid) as returns:
        wait_for(lambda: asleep_in(tid) == "epoll_wait", "the iteration blocking in epoll_wait")
        w.close()
        thread.join(10)
    assert done.is_set(), "iteration did not stop after close()"
    # Woken by close() (its eventfd made the wait return 1), not by the wait's own timeout (0).
    assert returns and returns[-1] == 1, returns
    assert list(w) == []
    with pytest.raises(StopIteration):
        next(w)


def test_context_manager_closes(marker: Path) -> None:
    with opentrace.watch() as w:
        assert not w.closed
    assert w.closed
    assert w.poll(0) == []
    w.close()  # idempotent


def test_ctrl_c_interrupts_a_blocked_iteration() -> None:
    code = (
        "import opentrace\n"
        "w = opentrace.watch(comm='no-such-comm')\n"
        "print('ready', flush=True)\n"
        "try:\n"
        "    for ev in w: pass\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline() == "ready\n"
    # The signal must find the iteration blocked, not still on its way to it.
    wait_for(lambda: asleep_in(child.pid, child.pid) == "epoll_wait", "the child's iteration blocking")
    child.send_signal(2)
    out, _ = child.communicate(timeout=3)
    assert out == "interrupted\n"
    assert child.returncode == 0
