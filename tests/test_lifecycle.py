"""A watcher's life: every kernel object released however it ends, threads, two at once, faults."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import opentrace

from .conftest import Child, asleep_in, collect, context_switches, epoll_returns, settle, wait_for

# The benchmarks' helper, one definition for both: the ids of every BPF program loaded.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from common import bpf_program_ids

pytestmark = pytest.mark.root


def kernel_fds() -> dict[str, int]:
    """This process's fds that stand for kernel objects (bpf maps/programs/links, perf events,
    epoll sets, eventfds), by kind."""
    kinds: dict[str, int] = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("anon_inode:"):
            kinds[target] = kinds.get(target, 0) + 1
    return kinds



def wait_gone(ids: set[int], timeout: float = 5.0) -> set[int]:
    """Programs are freed after an RCU grace period: wait for ``ids`` to disappear."""
    deadline = time.monotonic() + timeout
    while (left := ids & bpf_program_ids()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _close(w: opentrace.Watcher) -> None:
    w.close()


def _with_block(w: opentrace.Watcher) -> None:
    with w:
        pass


def _break_and_collect(w: opentrace.Watcher) -> None:
    subprocess.run(["true"])
    for _ in w:
        break
    del w
    gc.collect()


def _exception_in_loop(w: opentrace.Watcher) -> None:
    subprocess.run(["true"])
    with pytest.raises(ZeroDivisionError), w:
        for _ in w:
            1 / 0  # noqa: B018


@pytest.mark.parametrize("end", [_close, _with_block, _break_and_collect, _exception_in_loop])
def test_every_ending_releases_every_kernel_object(end) -> None:
    before_fds, before_progs = kernel_fds(), bpf_program_ids()
    for _ in range(5):
        end(opentrace.watch())
    gc.collect()
    assert kernel_fds() == before_fds
    new = bpf_program_ids() - before_progs
    assert wait_gone(new) == set()


def test_interpreter_exit_releases_everything_and_does_not_hang() -> None:
    code = (
        "import threading, opentrace\n"
        "w = opentrace.watch()\n"
        "threading.Thread(target=lambda: [e for e in w], daemon=True).start()\n"
        "w2 = opentrace.watch(syscalls=['openat'])\n"
        "print(len(w2.syscalls), flush=True)\n"
    )
    before = bpf_program_ids()
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1\n" and done.stderr == ""
    assert time.monotonic() - started < 10
    assert wait_gone(bpf_program_ids() - before) == set()


def test_detaching_at_exit_holds_none_of_the_process_fds() -> None:
    """At interpreter exit the programs' detach is left to a process of its own: it must hold
    only the links, not the process's pipes. An exit handler registered before opentrace was
    imported (it runs after opentrace's) closes a child's stdin and waits for it to see EOF."""
    code = (
        "import atexit, subprocess, sys\n"
        "cat = subprocess.Popen(['cat'], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)\n"
        "atexit.register(lambda: (cat.stdin.close(), print('cat', cat.wait(20), flush=True)))\n"
        "import opentrace\n"
        "w = opentrace.watch()\n"
    )
    before = bpf_program_ids()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "cat 0\n", done.stderr
    assert wait_gone(bpf_program_ids() - before) == set()


@pytest.mark.parametrize("end", [_close, _break_and_collect])
def test_a_watcher_of_hundreds_of_tracepoints_ends_at_once(end) -> None:
    """The kernel detaches such tracepoints one after the other, ~40 ms each (about 13 s for
    every sys_enter_*): closing it, or dropping it unclosed, leaves that to a process of its own."""
    before_fds, before_progs = kernel_fds(), bpf_program_ids()
    w = opentrace.watch_tracepoints("syscalls:sys_enter_*")
    assert len(w.tracepoints) > 100
    started = time.monotonic()
    end(w)
    del w
    gc.collect()
    took = time.monotonic() - started
    assert kernel_fds() == before_fds
    assert took < 3, f"ending the watcher took {took:.1f} s"
    # The holding process lets go in the end.
    assert wait_gone(bpf_program_ids() - before_progs, timeout=60) == set()


# Threads ----------------------------------------------------------------------------------------


def test_two_threads_on_one_watcher_get_each_event_once(tmp_path: Path) -> None:
    paths = [tmp_path / f"m{i}" for i in range(300)]
    child = Child([["openat", None, str(p), 0, 0] for p in paths])
    w = opentrace.watch(pid=child.pid)
    seen: list[list[str]] = [[], []]

    def consume(out: list[str]) -> None:
        for ev in w:
            out.append(ev.path)

    threads = [threading.Thread(target=consume, args=(out,)) for out in seen]
    for t in threads:
        t.start()
    child.go()
    deadline = time.monotonic() + 5
    while sum(map(len, seen)) < len(paths) and time.monotonic() < deadline:
        time.sleep(0.05)
    w.close()
    for t in threads:
        t.join(2)
        assert not t.is_alive()
    together = seen[0] + seen[1]
    assert sorted(together) == sorted(map(str, paths))  # every event, none twice


def test_poll_honours_its_timeout() -> None:
    with opentrace.watch(comm="no-such-comm") as w:
        for timeout in (0, 0.05, 0.3):
            started = time.monotonic()
            assert w.poll(timeout) == []
            took = time.monotonic() - started
            assert timeout <= took < timeout + 0.5


def test_close_wakes_poll_and_next_in_other_threads() -> None:
    w = opentrace.watch(comm="no-such-comm")
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(w.poll(None))),
        threading.Thread(target=lambda: results.append(next(w, "stopped"))),
    ]
    for t in threads:
        t.start()
    tids = [t.native_id for t in threads]
    assert None not in tids

    def where() -> list[str | None]:
        return [asleep_in(tid) for tid in tids]  # type: ignore[arg-type]

    # Both blocked when close() comes: one waiting for events, the other for the first's lock.
    wait_for(lambda: sorted(map(str, where())) == ["epoll_wait", "futex"], "both reads blocking")
    with epoll_returns(tids[where().index("epoll_wait")]) as returns:  # type: ignore[arg-type]
        w.close()
        for t in threads:
            t.join(10)
            assert not t.is_alive()
    assert returns and returns[-1] == 1, returns  # woken by close(), not by the wait's timeout
    assert sorted(map(str, results)) == ["[]", "stopped"]


def test_lost_does_not_wait_for_a_blocked_reader() -> None:
    """The reader holds the stream while it sleeps in epoll_wait (waking by itself once a second);
    reading ``lost`` meanwhile must neither wait for it nor wake it: the reader's count of
    sleeps does not move while ``lost`` is read."""
    w = opentrace.watch(comm="no-such-comm")
    reader = threading.Thread(target=lambda: list(w))
    reader.start()
    tid = reader.native_id
    assert tid is not None
    got: list[int] = []
    for _ in range(5):  # a try during which the reader woke by itself proves nothing: again
        wait_for(lambda: asleep_in(tid) == "epoll_wait", "the reader blocking")
        before = context_switches(tid)
        got.clear()
        asker = threading.Thread(target=lambda: got.append(w.lost))
        asker.start()
        asker.join(10)
        assert got == [0], "lost did not return while the reader was blocked"
        if asleep_in(tid) == "epoll_wait" and context_switches(tid) == before:
            break
    else:
        raise AssertionError("the reader woke during every read of lost")
    w.close()
    reader.join(10)
    assert not reader.is_alive()


# Two at once ------------------------------------------------------------------------------------


def test_two_watchers_in_one_process_each_see_every_event(marker: Path) -> None:
    child = Child([["openat", None, str(marker), 0, 0]] * 3)
    # (filtered, so that whatever else runs on the machine cannot fill their rings meanwhile)
    with opentrace.watch(pid=child.pid) as a, opentrace.watch(comm="python", syscalls=["openat"]) as b:
        child.go()
        for w in (a, b):
            assert len(collect(w, lambda e: e.pid == child.pid and e.path == str(marker), count=3)) == 3


def test_two_cli_processes_each_see_every_event(marker: Path) -> None:
    def cli() -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-m", "opentrace", "-n", "cat", "-d", "3"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None and proc.stderr.readline().startswith("opentrace: tracing")
        return proc

    first, second = cli(), cli()
    for _ in range(3):
        subprocess.run(["cat", str(marker)], stderr=subprocess.DEVNULL)
    for proc in (first, second):
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert [line.split()[-1] for line in out.splitlines() if line.endswith(str(marker))] == [str(marker)] * 3


# Environment faults -----------------------------------------------------------------------------


def without_tracefs(*argv: str) -> subprocess.CompletedProcess[str]:
    """Runs ``argv`` in a private mount namespace where tracefs is not mounted (nor debugfs, which
    would automount it): the machine's own mounts, and any tracer using them, are untouched."""
    script = (
        "umount /sys/kernel/tracing 2>/dev/null; umount -l /sys/kernel/debug 2>/dev/null; "
        "test -d /sys/kernel/tracing/events && { echo 'tracefs still mounted' >&2; exit 99; }; "
        'exec "$@"'
    )
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 99, done.stderr
    return done


def test_tracefs_not_mounted_is_mounted_for_root() -> None:
    code = (
        "import logging, os, opentrace\n"
        "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "w = opentrace.watch(); w.close()\n"
        "print(os.path.isdir('/sys/kernel/tracing/events'))\n"
    )
    done = without_tracefs(sys.executable, "-c", code)
    assert done.returncode == 0 and done.stdout == "True\n", done.stderr
    assert "tracefs was not mounted; mounted it at /sys/kernel/tracing" in done.stderr


def test_tracefs_that_cannot_be_mounted_is_a_clear_error() -> None:
    done = without_tracefs("setpriv", "--bounding-set=-sys_admin", sys.executable, "-m", "opentrace", "-d", "1")
    assert done.returncode == 1
    assert done.stderr.startswith("opentrace: tracefs is not mounted, and mounting it at /sys/kernel/tracing failed")
    assert "mount -t tracefs nodev /sys/kernel/tracing" in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1


def test_a_missing_tracepoint_is_skipped(tmp_path: Path, marker: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A kernel without creat(2) tracepoints (e.g. arm64): the others are traced, with a debug log."""
    fake = tmp_path / "tracefs"
    for syscall in ("open", "openat", "openat2"):
        for phase in ("enter", "exit"):
            name = f"sys_{phase}_{syscall}"
            (fake / "events" / "syscalls" / name).mkdir(parents=True)
            real = Path("/sys/kernel/tracing/events/syscalls") / name / "format"
            (fake / "events" / "syscalls" / name / "format").write_text(real.read_text())
    code = (
        "import logging, opentrace\n"
        "logging.basicConfig(level=logging.DEBUG, format='%(name)s %(message)s')\n"
        "w = opentrace.watch(); print(w.syscalls); w.close()\n"
    )
    env = dict(os.environ, OPENTRACE_TRACEFS=str(fake))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "['io_uring', 'open', 'openat', 'openat2']\n"
    assert "opentrace not traced, this kernel has no tracepoints for: creat" in done.stderr


def test_settle_helper_returns_every_event_then_stops(marker: Path) -> None:
    child = Child([["openat", None, str(marker), 0, 0]] * 3)
    with opentrace.watch(pid=child.pid) as w:
        child.go()
        events = settle(w, 0.1)
    assert [e.path for e in events if e.path == str(marker)] == [str(marker)] * 3


def test_a_signal_handler_may_close_the_watcher_it_interrupts() -> None:
    code = (
        "import signal, opentrace\n"
        "w = opentrace.watch(comm='no-such-comm')\n"
        "signal.signal(signal.SIGALRM, lambda *_: w.close())\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.3)\n"
        "print('ended', sum(1 for _ in w), w.closed, w.lost)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ended 0 True 0\n", "")


def test_a_handler_reading_the_watcher_it_interrupts_gets_an_error_not_a_hang() -> None:
    code = (
        "import signal, opentrace\n"
        "w = opentrace.watch(comm='no-such-comm')\n"
        "signal.signal(signal.SIGALRM, lambda *_: w.poll(0))\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.3)\n"
        "try:\n"
        "    next(w)\n"
        "except RuntimeError as e:\n"
        "    print(e)\n"
        "w.close()\n"
        "print(w.closed)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("this watcher is already being read by this thread")
    assert done.stdout.endswith("True\n")


# Forks, garbage collection, handlers that raise ---------------------------------------------------


def test_a_forked_child_cannot_read_its_parents_watcher(marker: Path) -> None:
    """The child gets an error naming the cause; the parent's stream loses nothing; once the
    parent closes, the programs are gone although the child still runs (its copies were let go)."""
    before = bpf_program_ids()
    w = opentrace.watch(comm="python", syscalls=["openat"])
    ours = bpf_program_ids() - before
    r, wfd = os.pipe()
    release_r, release_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what reading does, then wait to be told to exit
        os.close(r)
        os.close(release_w)
        try:
            next(w)
            said = "read an event"
        except opentrace.OpentraceError as e:
            said = str(e)
        os.write(wfd, said.encode() + b"\n")
        os.read(release_r, 1)  # alive until the parent has closed and checked
        os._exit(0)
    os.close(wfd)
    os.close(release_r)
    said = os.read(r, 4096).decode()
    os.close(r)
    assert said.startswith(f"this watcher belongs to process {os.getpid()}, which this process was forked from")
    child = Child([["openat", None, str(marker), 0, 0]] * 2)
    child.go()
    assert len(collect(w, lambda e: e.pid == child.pid and e.path == str(marker), count=2)) == 2
    w.close()
    assert os.waitpid(pid, os.WNOHANG) == (0, 0), "the forked child should still run"
    assert wait_gone(ours) == set()
    os.close(release_w)
    os.waitpid(pid, 0)


def test_dropping_a_watcher_lets_other_threads_run_while_it_detaches() -> None:
    """Detaching waits for RCU grace periods (tens of ms); garbage collection must not hold the
    GIL through them."""
    ticks = [0]
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks[0] += 1

    w = opentrace.watch()
    thread = threading.Thread(target=tick)
    thread.start()
    try:
        wait_for(lambda: ticks[0] > 0, "the other thread running")
        before = ticks[0]
        started = time.monotonic()
        del w
        gc.collect()
        took = time.monotonic() - started
        during = ticks[0] - before
    finally:
        stop.set()
        thread.join()
    assert took > 0.005, "detaching took no time: nothing to measure"
    assert during > 1000, f"the other thread made {during} steps in {took * 1000:.0f} ms of detaching"


def test_a_logging_handler_that_raises_loses_no_drained_event(marker: Path) -> None:
    """The CLI's read path: a handler raising while the lost-events warning is emitted (Ctrl-C at
    that moment does it) must not throw away the lines drained before it."""
    import logging

    from opentrace._opentrace import Formatter

    class Boom(Exception):
        pass

    class Raising(logging.Handler):
        raised = 0

        def emit(self, record: logging.LogRecord) -> None:
            if "lost" in record.getMessage() and not self.raised:
                self.raised += 1
                raise Boom

    # Rounds of opens that overflow the small ring (events lost), the child pausing after each
    # while the test reads everything in the ring at once; at the first read once the check is
    # due, the warning comes after that drain, before its lines are returned.
    marker.write_text("")
    child = Child([["rounds", str(marker), 100]])
    logger = logging.getLogger("opentrace")
    handler = Raising()
    logger.addHandler(handler)
    lines: list[str] = []

    def read(w: opentrace.Watcher, timeout: float) -> int:
        read: list[tuple[str, int]] = []
        w._read_text(Formatter(), timeout, None, read)
        ((text, count),) = read
        lines.extend(line for line in text.splitlines() if line.endswith(str(marker)))
        return count

    try:
        w = opentrace.watch(pid=child.pid, ring_size=4096)
        said, deadline = child.say("go"), time.monotonic() + 60
        while True:
            assert said == "checkpoint\n", said
            try:
                read(w, 0)
            except Boom:
                break
            assert time.monotonic() < deadline, "no lost-events warning within 60 s"
            said = child.say("more")
        # The child is paused: whatever this read returns was drained before the raise.
        assert read(w, 0) > 0, "the raise came with no drained event waiting"
        n = json.loads(child.say("stop"))[0]
        child.proc.communicate(timeout=30)  # it exits
        while not w._finished():
            read(w, 10)
        w.close()
    finally:
        logger.removeHandler(handler)
    assert handler.raised == 1
    assert w.lost > 0
    assert len(lines) + w.lost == n


def test_the_64_programs_per_tracepoint_limit_is_a_clear_error() -> None:
    watchers: list[opentrace.Watcher] = []
    try:
        with pytest.raises(opentrace.OpentraceError) as info:
            for _ in range(70):
                watchers.append(opentrace.watch(syscalls=["creat"], ring_size=4096))
    finally:
        for w in watchers:
            w.close()
    message = str(info.value)
    assert message.startswith("the tracepoint ") and "(64, shared by every tracer" in message, message
    assert "E2BIG" not in message and "os error" not in message
    assert len(watchers) <= 64


@pytest.mark.parametrize(("value", "said"), [("", "is set but empty"), ("/nonexistent", "is not a tracefs directory")])
def test_a_wrong_opentrace_tracefs_is_named(value: str, said: str) -> None:
    env = dict(os.environ, OPENTRACE_TRACEFS=value)
    done = subprocess.run([sys.executable, "-m", "opentrace", "-d", "0.1"], capture_output=True, text=True, env=env)
    assert done.returncode == 1
    assert done.stderr.startswith(f"opentrace: OPENTRACE_TRACEFS{'=' + value if value else ''} {said}"), done.stderr
    assert "kernel" not in done.stderr and done.stderr.count("\n") == 1


def test_capabilities_without_a_readable_tracefs_are_told_the_real_fix() -> None:
    """Not root, with CAP_BPF and CAP_PERFMON: what is missing is read access to tracefs."""
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=+bpf,+perfmon",
         "--ambient-caps=+bpf,+perfmon", sys.executable, "-m", "opentrace", "-d", "0.1"],
        capture_output=True, text=True, timeout=20,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("opentrace: reading tracefs (/sys/kernel/tracing) is not allowed"), done.stderr
    assert "mode=" in done.stderr and "gid=" in done.stderr and "run as root" in done.stderr
