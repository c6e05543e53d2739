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

pytestmark = pytest.mark.root


class Cli:
    """``python -m opentrace ARGS``, started and ready (its 'tracing' line seen on stderr)."""

    def __init__(self, *args: str, stdout: int = subprocess.PIPE) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "opentrace", *args], stdout=stdout, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stderr is not None
        first = self.proc.stderr.readline()
        assert first.startswith("opentrace: tracing "), first

    def finish(self, timeout: float = 10) -> tuple[int, list[str], str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, (out or "").splitlines(), err

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, list[str], str]:
        time.sleep(0.3)  # let the last events through
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
    assert lines[0].split() == ["TIME(s)", "UID", "PID", "COMM", "FD", "ERR", "FLAGS", "PATH"]
    ((ts, uid, pid, _comm, fd_col, err_col, flags, path),) = rows(lines, marker)
    assert 0 <= float(ts) < 10 and re.fullmatch(r"\d+\.\d{3}", ts)
    assert (uid, pid, fd_col, err_col, path) == ("0", str(child.pid), str(fd), "0", str(marker))
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
    assert set(ev) == {"timestamp_ns", "pid", "tid", "uid", "comm", "syscall", "path",
                       "dfd", "flags", "mode", "ret", "fd", "errno"}


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


def test_runtime_error_exits_1_with_one_line() -> None:
    # Root without CAP_BPF/CAP_PERFMON/CAP_SYS_ADMIN: the kernel refuses the programs.
    done = subprocess.run(
        ["setpriv", "--bounding-set=-bpf,-perfmon,-sys_admin", sys.executable, "-m", "opentrace", "-d", "1"],
        capture_output=True, text=True, timeout=20,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("opentrace: ") and "CAP_BPF" in done.stderr
    assert "os error" not in done.stderr
