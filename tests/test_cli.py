"""The CLI through ``main(argv)``: usage errors (no privileges) and real traces (root)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from opentrace.cli import main


def test_help_lists_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "opentrace -x" in out and "-p PID" in out


@pytest.mark.parametrize(
    "argv",
    [["--bogus"], ["-p", "abc"], ["-d", "0"], ["-d", "-1"], ["-c", "0"], ["--syscall", "read"],
     ["format"], ["list", "a", "b"], ["-p", "0"], ["-n", "x" * 16], ["--ring-size", "1000"]],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "error:" in err


def _run_in_thread(argv: list[str]) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(main(argv)))
    thread.start()
    return thread, result


@pytest.mark.root
def test_trace_prints_opensnoop_columns(marker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    thread, result = _run_in_thread(["-d", "2", "-n", "cat"])
    time.sleep(0.5)
    subprocess.run(["cat", str(marker)], stderr=subprocess.DEVNULL)
    thread.join(5)
    assert result == [0]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["PID", "COMM", "FD", "ERR", "PATH"]
    mine = [line.split() for line in lines[1:] if line.endswith(str(marker))]
    assert len(mine) == 1
    pid, comm, fd, err, path = mine[0]
    assert (comm, fd, err, path) == ("cat", "-1", "2", str(marker))
    assert int(pid) > 0


@pytest.mark.root
def test_trace_json_count(marker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker.write_text("x")
    thread, result = _run_in_thread(["--json", "-c", "1", "-n", "cat", "-d", "5"])
    time.sleep(0.5)
    subprocess.run(["cat", str(marker)], stdout=subprocess.DEVNULL)
    thread.join(6)
    assert result == [0]
    (line,) = capsys.readouterr().out.splitlines()
    ev = json.loads(line)
    assert ev["comm"] == "cat" and ev["fd"] is not None


@pytest.mark.root
def test_list_and_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "syscalls:sys_enter_open*"]) == 0
    names = capsys.readouterr().out.split()
    assert "syscalls:sys_enter_openat" in names and "syscalls:sys_enter_openat2" in names
    assert main(["format", "syscalls:sys_enter_openat"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("syscalls:sys_enter_openat (id ")
    assert any(line.split()[-1] == "filename" and line.split()[0] == "24" for line in out.splitlines()[2:-1])
    assert main(["format", "syscalls:sys_enter_openat", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fields"][0]["name"] == "common_type"


@pytest.mark.root
def test_unknown_tracepoint_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["format", "syscalls:nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("opentrace: no tracepoint") and "Traceback" not in err


@pytest.mark.root
def test_module_entry_point_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "opentrace", "-d", "0.5", "-n", "no-such-comm"], capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["PID", "COMM", "FD", "ERR", "PATH"]
