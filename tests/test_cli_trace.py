"""The CLI as users run it (``python -m opentrace ...`` in a subprocess) against real opens."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import Child
from .contract import OPEN_EVENT_DICT_KEYS

pytestmark = pytest.mark.root


class Cli:
    """``python -m opentrace ARGS``, started and ready (its 'tracing' line seen on stderr)."""

    def __init__(self, *args: str, stdout: int = subprocess.PIPE, stdin: int | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "opentrace", *args], stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stderr is not None
        first = self.proc.stderr.readline()
        assert first.startswith("opentrace: tracing "), first

    def finish(self, timeout: float = 10) -> tuple[int, list[str], str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, (out or "").splitlines(), err

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, list[str], str]:
        """Ends the trace. Events already in the ring are printed before the CLI exits: callers
        stop it once the processes they watch are done."""
        self.proc.send_signal(sig)
        return self.finish()


def rows(lines: list[str], path: Path) -> list[list[str]]:
    return [line.split() for line in lines if line.endswith(str(path))]


def test_columns_fd_and_err(marker: Path) -> None:
    marker.write_text("")
    child = Child([["openat", None, str(marker), os.O_RDONLY, 0], ["openat", None, str(marker) + "x", 0, 0]])
    cli = Cli("-p", str(child.pid))
    fd, _ = child.go()
    code, lines, err = cli.stop()
    assert code == 0 and "Traceback" not in err
    assert lines[0].split() == ["PID", "COMM", "FD", "ERR", "PATH"]
    assert rows(lines, marker) == [[str(child.pid), "python", str(fd), "0", str(marker)]]
    missing = str(marker) + "x"
    assert rows(lines, Path(missing)) == [[str(child.pid), "python", "-1", str(errno.ENOENT), missing]]


def test_timestamp_uid_and_flags_columns(marker: Path) -> None:
    child = Child([["openat", None, str(marker), os.O_CREAT | os.O_WRONLY, 0o600]])
    cli = Cli("-T", "-U", "-e", "-p", str(child.pid))
    (fd,) = child.go()
    _, lines, _ = cli.stop()
    assert lines[0].split() == ["TIME(s)", "UID", "PID", "COMM", "FD", "ERR", "CONTAINER", "FLAGS", "DFD", "PATH"]
    ((ts, uid, pid, _comm, fd_col, err_col, container, flags, dfd, path),) = rows(lines, marker)
    assert 0 <= float(ts) < 10 and re.fullmatch(r"\d+\.\d{3}", ts)
    assert (uid, pid, fd_col, err_col, dfd, path) == ("0", str(child.pid), str(fd), "0", "-", str(marker))
    assert container == "-"  # not in a container
    assert int(flags, 8) == os.O_CREAT | os.O_WRONLY and len(flags) == 8


def test_failed_only(marker: Path) -> None:
    marker.write_text("")
    child = Child([["openat", None, str(marker), 0, 0], ["openat", None, str(marker) + ".no", 0, 0]])
    cli = Cli("-x", "-p", str(child.pid))
    child.go()
    _, lines, _ = cli.stop()
    assert [r[-1] for r in (line.split() for line in lines[1:])] == [str(marker) + ".no"]


def test_tid_uid_and_name_filters(marker: Path) -> None:
    threaded = Child([["openat", None, str(marker), 0, 0]], in_thread=True)
    cli = Cli("-t", str(threaded.tid))
    threaded.go()
    _, lines, _ = cli.stop()
    assert [r[0] for r in rows(lines, marker)] == [str(threaded.pid)]

    dropped = Child([["setuid", 65534], ["openat", None, str(marker), 0, 0]])
    cli = Cli("-u", "65534", "-U")
    dropped.go()
    _, lines, _ = cli.stop()
    assert [(r[0], r[1]) for r in rows(lines, marker)] == [("65534", str(dropped.pid))]

    named = Child([["rename", "cli-name-test"], ["openat", None, str(marker), 0, 0]])
    cli = Cli("-n", "name-te")
    named.go()
    _, lines, _ = cli.stop()
    assert [(r[0], r[1]) for r in rows(lines, marker)] == [(str(named.pid), "cli-name-test")]


def test_json_lines_parse_back(marker: Path) -> None:
    child = Child([["openat", None, str(marker), 0, 0]])
    cli = Cli("--json", "-p", str(child.pid))
    child.go()
    _, lines, _ = cli.stop()
    events = [json.loads(line) for line in lines]
    (ev,) = [e for e in events if e["path"] == str(marker)]
    assert ev["pid"] == child.pid and ev["errno"] == errno.ENOENT and ev["fd"] is None
    assert set(ev) == set(OPEN_EVENT_DICT_KEYS)


def test_count_and_duration_end_the_trace(marker: Path) -> None:
    marker.write_text("")
    child = Child([["loop", str(marker), 50]])
    cli = Cli("-c", "5", "-p", str(child.pid))
    child.go()
    code, lines, _ = cli.finish()
    assert code == 0 and len(lines) == 1 + 5
    started = time.monotonic()
    code, _, _ = Cli("-d", "0.5", "-n", "no-such-comm").finish()
    assert code == 0 and time.monotonic() - started < 3


def test_lost_events_reported_on_stderr_and_counted_exactly(marker: Path) -> None:
    marker.write_text("")
    n = 20000
    child = Child([["loop", str(marker), n]])
    # A reader that nobody reads from: the CLI blocks on its full stdout pipe, the small ring overflows.
    cli = Cli("-p", str(child.pid), "--ring-size", "4K", "-d", "3")
    child.go()
    code, lines, err = cli.finish()
    assert code == 0
    delivered = len(rows(lines, marker))
    total = re.search(r"opentrace: (\d+) events lost in all", err)
    assert total, err
    assert re.search(r"^opentrace: \d+ events lost \(ring buffer full; \d+ in all\)", err, re.M), err
    assert delivered + int(total.group(1)) == n


@pytest.mark.parametrize("busy", [True, False])
def test_closed_stdout_ends_quietly(busy: bool) -> None:
    """Like ``opentrace | head -1``: the reader goes away; the CLI ends with 0 and no traceback,
    at its next write (busy) or, with nothing to write, at its next idle check (about 1 s)."""
    cli = Cli("-n", "cat") if busy else Cli("-n", "no-such-comm")
    assert cli.proc.stdout is not None and cli.proc.stderr is not None
    assert cli.proc.stdout.readline().startswith("PID")
    cli.proc.stdout.close()
    if busy:
        subprocess.run(["cat", "/etc/hostname"], stdout=subprocess.DEVNULL)
    assert cli.proc.wait(timeout=5) == 0
    err = cli.proc.stderr.read()
    cli.proc.stderr.close()
    assert "Traceback" not in err and "Broken" not in err


def test_sigterm_ends_cleanly() -> None:
    code, lines, err = Cli("-n", "no-such-comm").stop(signal.SIGTERM)
    assert code == 0 and "Traceback" not in err and lines[0].startswith("PID")


@pytest.mark.parametrize(("output", "shards"), [("text", 1), ("parquet", 1), ("text", 2)])
def test_a_second_ctrl_c_does_not_cut_the_end_of_the_trace_short(tmp_path: Path, output: str, shards: int) -> None:
    """SIGTERM and Ctrl-C at once, as an impatient user sends them: the first stops the reading,
    the second only says that the trace is being finished. Every open of the child is written
    (text lines, or rows of a Parquet file that is put in place) or counted lost, and the CLI
    exits 0 with its "lost" line. Before, the second signal abandoned the final read and the
    Parquet file, and the final read took one batch (4,096 events) of what was in the ring, the
    rest dropped uncounted (with one Ctrl-C too)."""
    import pyarrow.parquet as pq

    target = tmp_path / "f"
    target.write_text("")
    n = 50_000
    child = Child([["rounds", str(target), n]])
    out = tmp_path / ("trace.parquet" if output == "parquet" else "trace.txt")
    cli = Cli("-p", str(child.pid), "-o", str(out), "--ring-shards", str(shards))
    assert child.say("go") == "checkpoint\n"
    os.kill(cli.proc.pid, signal.SIGTERM)
    os.kill(cli.proc.pid, signal.SIGINT)
    code, _, err = cli.finish(timeout=60)
    assert child.say("stop") == f"[{n}]\n"
    child.proc.communicate(timeout=30)
    assert code == 0 and "Traceback" not in err, err
    assert "opentrace: stopping: writing what the trace read first" in err, err
    lost = sum(int(k) for k in re.findall(r"opentrace: (\d+) events lost in all", err))
    if output == "parquet":
        table = pq.read_table(out, columns=["path"])
        written = table.column("path").to_pylist().count(os.fsencode(target))
    else:
        written = len(rows(out.read_text().splitlines(), target))
    assert written + lost == n, err


def test_runtime_error_exits_1_with_one_line() -> None:
    # Root without CAP_BPF/CAP_PERFMON/CAP_SYS_ADMIN: the kernel refuses the programs.
    done = subprocess.run(
        ["setpriv", "--bounding-set=-bpf,-perfmon,-sys_admin", sys.executable, "-m", "opentrace", "-d", "1"],
        capture_output=True, text=True, timeout=20,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("opentrace: ") and "CAP_BPF" in done.stderr
    assert "os error" not in done.stderr


# Output that cannot be written ------------------------------------------------------------------


def _cli_to(stdout: object, *args: str, opens: bool = True) -> subprocess.CompletedProcess[str]:
    """``opentrace ARGS`` with its stdout set up by ``stdout`` (a file, or ``None`` for closed),
    while `cat` opens files, so that there is something to write."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "opentrace", *args], stdout=stdout,  # type: ignore[arg-type]
        stderr=subprocess.PIPE, text=True, close_fds=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        if opens:
            subprocess.run(["cat", "/etc/hostname"], stdout=subprocess.DEVNULL)
        time.sleep(0.05)
    err = proc.stderr.read()
    proc.stderr.close()
    return subprocess.CompletedProcess(proc.args, proc.wait(timeout=5), "", err)


def test_a_full_device_exits_1_with_one_line() -> None:
    with open("/dev/full", "w") as full:
        done = _cli_to(full, "-q", "-n", "cat")
    assert done.returncode == 1, done.stderr
    assert done.stderr == "opentrace: cannot write the trace to standard output: no space left on device (ENOSPC)\n"


def test_a_closed_stdout_exits_1_with_one_line() -> None:
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", "opentrace", "-q", "-n", "cat"],
        capture_output=True, text=True, timeout=20,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr == "opentrace: cannot write the trace: standard output is closed\n"


def test_a_disk_filling_up_mid_stream_exits_1_with_one_line(tmp_path: Path) -> None:
    """The trace goes to a file on a 64 KiB tmpfs (in a private mount namespace) that fills up
    while `cat` keeps opening files."""
    script = (
        'mount -t tmpfs -o size=64k tmpfs "$1" && shift && exec "$@" > "$OUT"'
    )
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(tiny),
         sys.executable, "-m", "opentrace", "-q", "-n", "cat"],
        stderr=subprocess.PIPE, text=True, env=dict(os.environ, OUT=str(tiny / "trace")),
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < deadline:
        subprocess.run(["cat", "/etc/hostname", "/etc/passwd", "/etc/group"], stdout=subprocess.DEVNULL)
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=5) == 1, err
    assert err == "opentrace: cannot write the trace to standard output: no space left on device (ENOSPC)\n"


# -- CMD: its status, whatever becomes of the trace's output -------------------------------------

# Waits for a line on stdin (the test's go), opens a file, leaves a marker, exits with $2.
WAITING_COMMAND = 'read x; cat /etc/hostname > /dev/null; echo done > "$1"; exit "$2"'


def test_the_reader_going_away_leaves_the_command_to_finish_with_its_status(tmp_path: Path) -> None:
    """``opentrace -- CMD | head -1``: once the reader is gone, tracing stops, CMD runs to its
    end, and opentrace exits with CMD's status."""
    marker = tmp_path / "done"
    cli = Cli("--", "sh", "-c", WAITING_COMMAND, "sh", str(marker), "7", stdin=subprocess.PIPE)
    assert cli.proc.stdin is not None and cli.proc.stdout is not None and cli.proc.stderr is not None
    assert cli.proc.stdout.readline().startswith("PID")
    cli.proc.stdout.close()  # as head -1 does
    cli.proc.stdin.write("go\n")  # the command goes on and opens files: lines nobody reads
    cli.proc.stdin.close()
    assert cli.proc.wait(timeout=20) == 7
    assert marker.read_text() == "done\n"  # CMD ran to its end before opentrace exited
    err = cli.proc.stderr.read()
    cli.proc.stderr.close()
    assert err == ""


@pytest.mark.parametrize(("status", "expected"), [(7, 7), (0, 1)])
def test_an_unwritable_trace_leaves_the_command_to_finish(tmp_path: Path, status: int, expected: int) -> None:
    """``opentrace -- CMD > /dev/full``: the error at once, CMD runs to its end; the exit status is
    CMD's if it failed, else 1 (the trace failed)."""
    marker = tmp_path / "done"
    with open("/dev/full", "w") as full:
        proc = subprocess.Popen(
            [sys.executable, "-m", "opentrace", "--", "sh", "-c", WAITING_COMMAND, "sh", str(marker), str(status)],
            stdin=subprocess.PIPE, stdout=full, stderr=subprocess.PIPE, text=True,
        )
    assert proc.stdin is not None and proc.stderr is not None
    first = proc.stderr.readline()
    assert first == "opentrace: cannot write the trace to standard output: no space left on device (ENOSPC)\n"
    proc.stdin.write("go\n")  # CMD was still waiting: it goes on after the error
    proc.stdin.close()
    assert proc.wait(timeout=20) == expected
    assert marker.read_text() == "done\n"
    rest = proc.stderr.read()
    proc.stderr.close()
    assert rest == ""


def test_a_command_not_found_exits_127_and_one_not_executable_126(tmp_path: Path) -> None:
    """As shells do, with the command named, quoted."""
    def cli(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "opentrace", "-q", "--", *command],
                              capture_output=True, text=True, timeout=30)

    missing = cli("opentrace-no-such-program", "arg")
    assert missing.returncode == 127
    assert missing.stderr == "opentrace: cannot run 'opentrace-no-such-program': not found\n"
    script = tmp_path / "not executable"
    script.write_text("#!/bin/sh\necho ran\n")
    denied = cli(str(script))
    assert denied.returncode == 126
    assert denied.stderr == f"opentrace: cannot run '{script}': permission denied (EACCES)\n"
    assert denied.stdout == ""


def test_version() -> None:
    import importlib.metadata

    done = subprocess.run([sys.executable, "-m", "opentrace", "--version"], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout == f"opentrace {importlib.metadata.version('opentrace')}\n"


def test_json_keeps_non_utf8_path_bytes_for_any_reader(tmp_path: Path) -> None:
    """jq (not Python) reads the JSON line: ``path`` has U+FFFD where the bytes were not UTF-8,
    ``path_b64`` has the bytes themselves."""
    raw = os.fsencode(tmp_path) + b"/caf\xe9-\xff"
    child = Child([["openat", None, os.fsdecode(raw), 0, 0]])
    cli = Cli("--json", "-p", str(child.pid))
    child.go()
    _, lines, _ = cli.stop()
    (line,) = [line for line in lines if "caf" in line]
    jq = subprocess.run(["jq", "-r", ".path_b64"], input=line, capture_output=True, text=True, check=True)
    as_bytes = subprocess.run(["base64", "-d"], input=jq.stdout.encode(), capture_output=True, check=True)
    assert as_bytes.stdout == raw
    shown = subprocess.run(["jq", "-r", ".path"], input=line, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == raw.decode("utf-8", "replace")
