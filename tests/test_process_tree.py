"""Following a process and everything it starts: pid watchers, run(), the CLI's -- CMD, against
real process trees (sh -c, make -j2), and strace -f watching the same build."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

import opentrace

from .conftest import Child, collect

pytestmark = pytest.mark.root


def opened(events: list[opentrace.OpenEvent], path: Path) -> list[opentrace.OpenEvent]:
    return [e for e in events if e.path == str(path)]


def until_finished(w: opentrace.Watcher, timeout: float = 20) -> list[opentrace.OpenEvent]:
    """Iterates ``w`` to its end (a pid watcher ends by itself); fails after ``timeout``."""
    events: list[opentrace.OpenEvent] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = w.poll(0.2)
        events += batch
        if not batch and w._finished():
            return events
    raise AssertionError("the watcher did not end")


# Pid watchers ---------------------------------------------------------------------------------


def test_descendants_started_before_and_after_the_watcher(marker: Path, tmp_path: Path) -> None:
    """A child started before watch(), its children and grandchildren forked later (through sh -c),
    all to any depth; an unrelated process opening the same file is not reported; the watcher ends
    once they have all exited."""
    go = tmp_path / "go"
    os.mkfifo(go)
    script = (
        f'cat {go} >/dev/null; cat {marker}; '
        f'sh -c "cat {marker}; sh -c \\"cat {marker}; (sleep 0.2; cat {marker}) & wait\\""'
    )
    root = subprocess.Popen(["sh", "-c", script], stderr=subprocess.DEVNULL)
    marker.write_text("x")
    with opentrace.watch(pid=root.pid, descendants=True) as w:
        subprocess.run(["cat", str(marker)], stdout=subprocess.DEVNULL)  # not a descendant
        with open(go, "w") as f:
            f.write("go\n")
        events = until_finished(w)
        root.wait()
    mine = opened(events, marker)
    assert len(mine) == 4 and len({e.pid for e in mine}) == 4
    assert all(e.comm == "cat" for e in mine)
    by_pid = {e.pid: e for e in events}
    # Each cat's parent is a shell of the tree: the root or one started under it.
    assert all(e.ppid == root.pid or e.ppid in by_pid for e in mine)


def test_without_descendants_only_the_process_and_it_ends_with_it(marker: Path) -> None:
    child = Child([["openat", None, str(marker), 0, 0]])
    with opentrace.watch(pid=child.pid) as w:
        child.go()
        events = until_finished(w)
    assert [e.pid for e in opened(events, marker)] == [child.pid]
    assert w.poll(0) == [] and list(w) == []


def test_a_reused_pid_is_never_matched(marker: Path) -> None:
    """The followed process exits while its child lives on; a new process then gets its pid (set
    through ns_last_pid) and opens the marker: not reported. The watcher ends with the child."""
    # The child that lives on prints its pid; it runs until killed (the watcher must still be
    # following it when the stranger opens).
    root = subprocess.Popen(["sh", "-c", "sleep 1000 & echo $!; exit 0"], stdout=subprocess.PIPE, text=True)
    with opentrace.watch(pid=root.pid, descendants=True) as w:
        assert root.stdout is not None
        orphan = int(root.stdout.readline())
        root.wait()
        root.stdout.close()
        stranger = None
        for _ in range(20):
            Path("/proc/sys/kernel/ns_last_pid").write_text(str(root.pid - 1))
            candidate = subprocess.Popen(["sh", "-c", f"read x; cat {marker}"], stdin=subprocess.PIPE, text=True,
                                         stderr=subprocess.DEVNULL)
            if candidate.pid == root.pid:
                stranger = candidate
                break
            candidate.communicate("")
        assert stranger is not None, "could not get the same pid again"
        stranger.communicate("go\n")
        os.kill(orphan, 0)  # still there: the watcher was following the tree all along
        assert not w._finished()
        os.kill(orphan, signal.SIGKILL)
        events = until_finished(w)
    assert opened(events, marker) == []
    assert {e.comm for e in events} <= {"sh", "sleep"}


def test_bad_pid_watchers() -> None:
    with pytest.raises(ValueError, match="descendants=True needs pid"):
        opentrace.watch(descendants=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    with pytest.raises(ValueError, match=f"pid: there is no process {gone.pid}"):
        opentrace.watch(pid=gone.pid)


def test_ppid_is_the_parent_at_the_time_of_the_open(marker: Path) -> None:
    child = Child([["openat", None, str(marker), 0, 0]])
    with opentrace.watch(pid=child.pid) as w:
        child.go()
        (ev,) = collect(w, lambda e: e.path == str(marker))
    assert ev.ppid == os.getpid()


# run() ----------------------------------------------------------------------------------------


def test_run_sees_the_first_opens_and_nothing_before(marker: Path) -> None:
    marker.write_text("x")
    with opentrace.run(["cat", str(marker)]) as w:
        events = until_finished(w)
    assert w.wait() == 0 and w.returncode == 0
    assert events and {e.pid for e in events} == {w.pid}
    assert events[0].path == "/etc/ld.so.cache"  # the dynamic loader's first open
    assert opened(events, marker)[0].fd is not None


def test_run_return_codes_cwd_env_and_errors(tmp_path: Path) -> None:
    env = {"NAME": "here", "PATH": "/usr/bin:/bin"}
    with opentrace.run(["sh", "-c", 'cat "$NAME"; exit 3'], cwd=tmp_path, env=env) as w:
        events = until_finished(w)
    assert w.wait() == 3
    (ev,) = [e for e in events if e.path == "here"]
    assert ev.errno == errno.ENOENT and ev.comm == "cat"
    with opentrace.run(["sh", "-c", "kill -9 $$"]) as w:
        until_finished(w)
    assert w.wait(timeout=5) == -signal.SIGKILL
    with pytest.raises(FileNotFoundError):
        opentrace.run(["/nonexistent/program"])
    with pytest.raises(FileNotFoundError):
        opentrace.run(["no-such-program-opentrace"])
    with pytest.raises(TypeError):
        opentrace.run("ls -l")  # type: ignore[arg-type]


def test_closing_early_stops_tracing_and_leaves_the_command_running(tmp_path: Path) -> None:
    done, go = tmp_path / "done", tmp_path / "go"
    os.mkfifo(go)
    # The command waits for the test (on a FIFO) until after close().
    w = opentrace.run(["sh", "-c", f"read x < {go}; echo > {done}"])
    w.close()
    assert w.returncode is None
    with pytest.raises(subprocess.TimeoutExpired):
        w.wait(timeout=0.05)
    assert w.returncode is None  # still running, with tracing stopped
    with open(go, "w") as f:  # (until the command opens its end)
        f.write("go\n")
    assert w.wait(timeout=10) == 0 and done.exists()


# The CLI's -- CMD ------------------------------------------------------------------------------


def cli(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "opentrace", "-q", *args], capture_output=True, text=True,
                          timeout=60, **kw)  # type: ignore[call-overload]


def test_cli_command_status_output_file_and_signals(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    done = cli("-o", str(trace), "--", "sh", "-c", "echo out; cat /etc/hostname >/dev/null; exit 5")
    assert done.returncode == 5 and done.stdout == "out\n" and done.stderr == ""
    lines = trace.read_text().splitlines()
    assert lines[0].split() == ["PID", "COMM", "FD", "ERR", "PATH"]
    assert any(line.endswith(" /etc/hostname") and " cat " in line for line in lines)
    assert cli("--", "sh", "-c", "kill -KILL $$").returncode == 128 + signal.SIGKILL
    assert cli("--", "no-such-program-opentrace").returncode == 127
    # SIGTERM to the tracer goes to the command, as a shell passes it on; the trace goes on.
    proc = subprocess.Popen([sys.executable, "-m", "opentrace", "-o", str(trace), "--", "sh", "-c",
                             "trap 'cat /etc/hostname; exit 9' TERM; echo trapped; while :; do sleep 0.05; done"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and proc.stderr.readline().startswith("opentrace: tracing sh -c")
    assert proc.stdout is not None and proc.stdout.readline() == "trapped\n"  # the trap is set
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 9
    assert any(line.endswith(" /etc/hostname") for line in trace.read_text().splitlines())
    proc.stdout.close()
    proc.stderr.close()


def test_cli_summary(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    script = "cat f f f >/dev/null; cat nope 2>/dev/null; cat nope 2>/dev/null; true"
    done = cli("-F", "--summary", "--", "sh", "-c", script, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[-1]: line.split()[:3] for line in done.stdout.splitlines()[1:]}
    assert rows[str(tmp_path / "f")] == ["3", "0", "-"]
    assert rows[str(tmp_path / "nope")] == ["2", "2", "ENOENT"]
    as_json = [json.loads(line) for line in cli("-F", "--summary", "--json", "--", "sh", "-c", script,
                                                cwd=tmp_path).stdout.splitlines()]
    assert {"path": str(tmp_path / "nope"), "opens": 2, "failed": 2, "errors": {"ENOENT": 2}} in as_json
    counts = [item["opens"] for item in as_json]
    assert counts == sorted(counts, reverse=True)


def test_cli_descendants_of_a_running_process(marker: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    os.mkfifo(go)
    root = subprocess.Popen(["sh", "-c", f"cat {go} >/dev/null; sh -c 'cat {marker}'"], stderr=subprocess.DEVNULL)
    proc = subprocess.Popen([sys.executable, "-m", "opentrace", "-p", str(root.pid), "--descendants"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and proc.stderr.readline().startswith("opentrace: tracing")
    with open(go, "w") as f:
        f.write("go\n")
    out, _ = proc.communicate(timeout=20)  # ends by itself when the tree has exited
    root.wait()
    assert proc.returncode == 0
    assert [line.split()[1] for line in out.splitlines() if line.endswith(str(marker))] == ["cat"]


# The same build under strace -f ----------------------------------------------------------------

MAKEFILE = """\
CFLAGS = -O1 -Wall
prog: main.o util.o extra.o
\t$(CC) -o $@ $^
%.o: %.c util.h
\t$(CC) $(CFLAGS) -c $< -o $@
"""
SOURCES = {
    "util.h": "int twice(int);\nint thrice(int);\n",
    "util.c": '#include "util.h"\nint twice(int x) { return 2 * x; }\n',
    "extra.c": '#include "util.h"\nint thrice(int x) { return 3 * x; }\n',
    "main.c": '#include <stdio.h>\n#include "util.h"\nint main(void) { printf("%d\\n", twice(thrice(7))); }\n',
}
STRACE_LINE = re.compile(r'^(\d+) +(open|openat|openat2|creat)\((.*)$')
STRACE_RESUMED = re.compile(r'^(\d+) +<\.\.\. (open|openat|openat2|creat) resumed>(.*)$')
RESULT = re.compile(r'\) += (-?\d+)(?: (E[A-Z0-9]+))?')


def strace_opens(text: str) -> dict[int, list[tuple[str, bytes, int]]]:
    """strace -f -xx output: per thread, the (syscall, path, result) of each open, in order."""
    per_thread: dict[int, list[tuple[str, bytes, int]]] = defaultdict(list)
    pending: dict[int, tuple[str, bytes]] = {}

    def path_of(call: str, args: str) -> bytes:
        strings = re.findall(r'"((?:\\x[0-9a-f]{2})*)"', args)
        return bytes.fromhex(strings[0].replace("\\x", ""))

    def result(rest: str) -> int:
        m = RESULT.search(rest)
        assert m, rest
        ret = int(m.group(1))
        return -getattr(errno, m.group(2)) if ret == -1 else ret

    for line in text.splitlines():
        if m := STRACE_LINE.match(line):
            tid, call, rest = int(m.group(1)), m.group(2), m.group(3)
            if rest.endswith("<unfinished ...>"):
                pending[tid] = (call, path_of(call, rest))
            else:
                per_thread[tid].append((call, path_of(call, rest), result(rest)))
        elif m := STRACE_RESUMED.match(line):
            tid, call, rest = int(m.group(1)), m.group(2), m.group(3)
            started, path = pending.pop(tid)
            assert started == call
            per_thread[tid].append((call, path, result(rest)))
    return per_thread


@pytest.mark.skipif(not shutil.which("strace") or not shutil.which("make"), reason="needs strace and make")
def test_a_make_j2_build_matches_strace_f_thread_by_thread(tmp_path: Path) -> None:
    """opentrace -- strace -f ... make -j2: both watch the same processes of one build; for every
    thread strace saw, the sequence of (syscall, path, result) must be the same."""
    (tmp_path / "Makefile").write_text(MAKEFILE)
    for name, text in SOURCES.items():
        (tmp_path / name).write_text(text)
    trace, straced = tmp_path / "trace.json", tmp_path / "strace.out"
    done = cli("--json", "-o", str(trace), "--", "strace", "-f", "-qq", "-xx", "-s", "8192", "-o", str(straced),
               "-e", "trace=open,openat,openat2,creat", "make", "-j2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert subprocess.run([str(tmp_path / "prog")], capture_output=True, text=True).stdout == "42\n"
    expected = strace_opens(straced.read_text())
    assert len(expected) >= 8  # make, the compilers, assemblers, linker...
    ours: dict[int, list[tuple[str, bytes, int]]] = defaultdict(list)
    for line in trace.read_text().splitlines():
        ev = json.loads(line)
        path = base64_path(ev)
        ours[ev["tid"]].append((ev["syscall"], path, ev["ret"]))
    total = 0
    for tid, opens in expected.items():
        assert ours.get(tid) == opens, f"thread {tid}: strace saw {opens[:3]}..., opentrace {ours.get(tid, [])[:3]}..."
        total += len(opens)
    assert total > 100


def base64_path(ev: dict[str, object]) -> bytes:
    import base64

    if "path_b64" in ev:
        return base64.b64decode(str(ev["path_b64"]))
    return os.fsencode(str(ev["path"]))
