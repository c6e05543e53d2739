"""Any tracepoint (watch_tracepoints, `opentrace watch`), against what real processes did: what a
child process reports of itself, and strace watching the same child."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

import opentrace

pytestmark = pytest.mark.root

# A child that waits for a line on stdin, runs `code`, prints what it returns as JSON, and exits.
CHILD = """
import ctypes, json, os, sys
sys.stdin.readline()
{code}
print(json.dumps(result), flush=True)
"""


def child(code: str, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD.format(code=code), *argv], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def go(proc: subprocess.Popen[str]) -> Any:
    out, _ = proc.communicate("go\n", timeout=30)
    assert proc.returncode == 0
    return json.loads(out)


def drain(w: opentrace.Watcher[opentrace.TracepointEvent], quiet: float = 0.3) -> list[opentrace.TracepointEvent]:
    events: list[opentrace.TracepointEvent] = []
    while batch := w.poll(quiet):
        events += batch
    return events


def test_exec_of_true(tmp_path: Path) -> None:
    with opentrace.watch_tracepoints("sched:sched_process_exec") as w:
        proc = subprocess.Popen(["/bin/true"])
        assert proc.wait() == 0
        events = [e for e in drain(w) if e.pid == proc.pid]
    [ev] = events
    assert ev.tracepoint == "sched:sched_process_exec"
    assert (ev["filename"], ev["pid"], ev.comm, ev.tid) == ("/bin/true", proc.pid, "true", proc.pid)
    assert ev.uid == os.getuid() and 0 <= ev.cpu < os.cpu_count()  # type: ignore[operator]
    assert ev.fields == {"filename": "/bin/true", "pid": proc.pid, "old_pid": proc.pid}
    assert abs(ev.timestamp_ns - time.monotonic_ns()) < 60e9
    d = ev.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["fields"]["filename"] == "/bin/true" and d["tracepoint"] == "sched:sched_process_exec"
    assert "'filename': '/bin/true'" in repr(ev)
    with pytest.raises(KeyError, match="nope"):
        ev["nope"]
    assert "filename" in ev and "nope" not in ev
    with pytest.raises(AttributeError):
        ev.pid = 1  # type: ignore[misc]


def test_syscall_string_arguments_as_strace_saw_them(tmp_path: Path) -> None:
    """unlink/rename paths copied from the process in the kernel, beside strace's view of the same
    syscalls, argument by argument."""
    a, b, c = tmp_path / "a", tmp_path / "b b", tmp_path / "caf\xe9"
    for p in (a, c):
        p.write_bytes(b"")
    code = f"os.rename({str(a)!r}, {str(b)!r}); os.unlink({str(b)!r}); os.unlink({str(c)!r})\n" \
        "try: os.unlink('relative-missing')\nexcept FileNotFoundError: pass\nresult = os.getpid()"
    log = tmp_path / "strace.log"
    with opentrace.watch_tracepoints("syscalls:sys_enter_unlink*", "syscalls:sys_enter_rename*") as w:
        # -xx: strace shows every byte of a string as \xNN, so its strings are exact.
        strace = ["strace", "-f", "-qq", "-xx", "-o", str(log), "-e", "trace=unlink,unlinkat,rename,renameat,renameat2"]
        proc = subprocess.Popen([*strace, sys.executable, "-c", CHILD.format(code=code)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, cwd=tmp_path)
        pid = go(proc)
        events = [e for e in drain(w) if e.pid == pid]
    # strace: unlinkat(AT_FDCWD, "\x2f\x74...", 0) = 0
    seen = []
    for line in log.read_text().splitlines():
        m = re.match(r"(?:\d+ +)?(\w+)\((.*)\) += ", line)
        if m and m.group(1) in {"unlink", "unlinkat", "rename", "renameat", "renameat2"}:
            strings = re.findall(r'"((?:\\x[0-9a-f]{2})*)"', m.group(2))
            seen.append((m.group(1), [bytes.fromhex(s.replace("\\x", "")) for s in strings]))
    assert len(seen) == 4, log.read_text()
    assert [e.tracepoint.removeprefix("syscalls:sys_enter_") for e in events] == [name for name, _ in seen]
    for ev, (_, paths) in zip(events, seen, strict=True):
        strings = [os.fsencode(v) for k, v in ev.fields.items() if k in {"pathname", "oldname", "newname"}]
        assert strings == paths, (ev, paths)
        # dfd/olddfd: AT_FDCWD, read as the int it is.
        assert all(v == -100 for k, v in ev.fields.items() if k in {"dfd", "olddfd", "newdfd"})
    assert os.fsencode(str(c)) in [p for _, paths in seen for p in paths]


def test_task_rename_comms(tmp_path: Path) -> None:
    code = "ctypes.CDLL(None).prctl(15, b'opentrace-new\\0', 0, 0, 0)\n" \
        "result = [os.getpid(), open('/proc/self/comm').read().strip()]"
    proc = child(code)
    with opentrace.watch_tracepoints("task:task_rename", pid=proc.pid) as w:
        pid, comm = go(proc)
        events = drain(w)
    [ev] = [e for e in events if e["newcomm"] == comm]
    assert comm == "opentrace-new"
    assert ev["pid"] == pid
    assert ev["oldcomm"] == Path(sys.executable).name[:15]
    assert ev.comm == ev["oldcomm"]  # the tracepoint fires before the rename


def test_fork_pids_and_dynamic_comms() -> None:
    code = "pid = os.fork()\nif pid == 0: os._exit(0)\nos.waitpid(pid, 0)\nresult = [os.getpid(), pid]"
    proc = child(code)
    with opentrace.watch_tracepoints("sched:sched_process_fork", pid=proc.pid) as w:
        parent, kid = go(proc)
        events = drain(w)
    [ev] = events
    name = Path(sys.executable).name[:15]
    assert ev.fields == {"parent_comm": name, "parent_pid": parent, "child_comm": name, "child_pid": kid}
    # The child exited: a pid watcher ends by itself.
    assert w.poll(0) == [] and w._finished()


def test_globs_names_and_unknowns() -> None:
    with opentrace.watch_tracepoints("syscalls:sys_enter_mkdir*", "sched:sched_process_exec") as w:
        assert w.tracepoints == sorted(
            ["sched:sched_process_exec", *opentrace.tracepoints("syscalls:sys_enter_mkdir*")]
        )
        assert w.syscalls == [] and "tracepoints=" in repr(w)
    with pytest.raises(opentrace.TracepointNotFound, match="no tracepoint matches 'nosuch:\\*'"):
        opentrace.watch_tracepoints("nosuch:*")
    with pytest.raises(opentrace.TracepointNotFound):
        opentrace.watch_tracepoints("sched:no_such_tracepoint")
    with pytest.raises(opentrace.TracepointNotFound, match="category:name"):
        opentrace.watch_tracepoints("sched_switch")
    with pytest.raises(TypeError, match="at least one"):
        opentrace.watch_tracepoints()
    with pytest.raises(TypeError, match="must be str"):
        opentrace.watch_tracepoints(b"sched:sched_switch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pid"):
        opentrace.watch_tracepoints("sched:sched_switch", pid=-1)


def test_filters_in_the_kernel(tmp_path: Path) -> None:
    code = "os.mkdir(sys.argv[1]); result = os.getpid()"
    first, second = child(code, str(tmp_path / "one")), child(code, str(tmp_path / "two"))
    with opentrace.watch_tracepoints("syscalls:sys_enter_mkdir*", tid=second.pid) as w:
        go(first)
        go(second)
        events = drain(w)
    assert [(e.pid, e["pathname"]) for e in events] == [(second.pid, str(tmp_path / "two"))]
    with opentrace.watch_tracepoints("syscalls:sys_enter_mkdir*", comm="no-such-comm") as w:
        go(child(code, str(tmp_path / "three")))
        assert drain(w) == []
    # uid: a child running as nobody is seen, one running as root is not. (Somewhere nobody can
    # reach, with the system's python: pytest's directories and this python may be root's alone.)
    shared = Path(tempfile.mkdtemp(prefix="opentrace-uid-"))
    try:
        shared.chmod(0o777)
        nobody = subprocess.Popen(["/usr/bin/python3", "-c", CHILD.format(code=code), str(shared / "four")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, user=65534, cwd="/")
        root = child(code, str(shared / "five"))
        with opentrace.watch_tracepoints("syscalls:sys_enter_mkdir*", uid=65534) as w:
            go(root)
            go(nobody)
            events = drain(w)
    finally:
        shutil.rmtree(shared)
    assert [(e.pid, e.uid, e["pathname"]) for e in events] == [(nobody.pid, 65534, str(shared / "four"))]


def test_lost_records_are_counted_exactly(tmp_path: Path) -> None:
    """A small ring and a reader that does not read: delivered + lost is every record."""
    n = 20000
    code = f"for _ in range({n}):\n    os.access('/', 0)\nresult = os.getpid()"
    proc = child(code)
    with opentrace.watch_tracepoints("syscalls:sys_enter_access", "syscalls:sys_enter_faccessat*",
                                     pid=proc.pid, ring_size=1 << 16) as w:
        go(proc)
        events = drain(w)
        lost = w.lost
    assert lost > 0, "the ring was meant to overflow"
    assert len(events) + lost == n


def test_an_unusable_named_tracepoint_says_why(tmp_path: Path) -> None:
    fake = tmp_path / "tracefs"
    real = Path("/sys/kernel/tracing")
    for name in ("sched/sched_process_exec",):
        (fake / "events" / name).mkdir(parents=True)
        (fake / "events" / name / "format").write_text((real / "events" / name / "format").read_text())
    fields = "".join(f"\tfield:__data_loc char[] s{i};\toffset:{8 + 4 * i};\tsize:4;\tsigned:0;\n" for i in range(9))
    (fake / "events" / "fake" / "many").mkdir(parents=True)
    (fake / "events" / "fake" / "many" / "format").write_text(
        f"name: many\nID: 9999\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
        f"{fields}\nprint fmt: \"x\"\n")
    for syscalls in (real / "events" / "syscalls").iterdir():
        if syscalls.name.startswith(("sys_enter_open", "sys_exit_open")):
            (fake / "events" / "syscalls" / syscalls.name).mkdir(parents=True)
            (fake / "events" / "syscalls" / syscalls.name / "format").write_text((syscalls / "format").read_text())
    code = ("import opentrace\n"
            "try:\n    opentrace.watch_tracepoints('fake:many')\nexcept ValueError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, OPENTRACE_TRACEFS=str(fake)))
    assert "fake:many cannot be watched: it has more than 8 dynamic fields" in done.stdout, done


def test_cli_text_and_json(tmp_path: Path) -> None:
    def watch(*options: str) -> str:
        cli = subprocess.Popen([sys.executable, "-m", "opentrace", "watch", "sched:sched_process_exec", "-c", "1",
                                *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while cli.poll() is None and time.monotonic() < deadline:
            subprocess.run([str(tmp_path / "opentrace-x")], check=True)
            time.sleep(0.2)
        out, err = cli.communicate(timeout=10)
        assert cli.returncode == 0, err
        assert ("watching sched:sched_process_exec" in err) != ("-q" in options)
        return out

    (tmp_path / "opentrace-x").symlink_to("/bin/true")
    out = watch("-n", "opentrace-x")
    header, line = out.splitlines()
    assert header.split() == ["TIME(s)", "CPU", "PID", "COMM", "TRACEPOINT", "FIELDS"]
    assert re.fullmatch(rf"[\d.]+ +\d+ +\d+ +opentrace-x +sched:sched_process_exec "
                        rf"filename={re.escape(str(tmp_path))}/opentrace-x pid=\d+ old_pid=\d+", line), line
    out = watch("-n", "opentrace-x", "--json", "-q", "-o", str(tmp_path / "out.json"))
    assert out == ""
    [record] = [json.loads(x) for x in (tmp_path / "out.json").read_text().splitlines()]
    assert set(record) == {"tracepoint", "timestamp_ns", "cpu", "pid", "tid", "uid", "comm", "fields"}
    assert record["comm"] == "opentrace-x" and record["fields"]["filename"] == str(tmp_path / "opentrace-x")
    bad = subprocess.run([sys.executable, "-m", "opentrace", "watch", "nosuch:thing"], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("opentrace: ") and "Traceback" not in bad.stderr
