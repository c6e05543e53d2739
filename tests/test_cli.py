"""The CLI through ``main(argv)``: usage errors (no privileges) and real traces (root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from opentrace.cli import main

from .conftest import Child, cgroup2_mount


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


def _run_in_thread(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[threading.Thread, list[int], str]:
    """Runs ``main(argv)`` in a thread and waits until it traces (its 'tracing' line); returns
    the thread, where its result goes, and what it printed so far."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(main(argv)))
    thread.start()
    out = err = ""
    deadline = time.monotonic() + 10
    while "opentrace: tracing" not in err and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
        captured = capsys.readouterr()
        out, err = out + captured.out, err + captured.err
    assert "opentrace: tracing" in err, err
    return thread, result, out


@pytest.mark.root
def test_trace_prints_opensnoop_columns(marker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    thread, result, out = _run_in_thread(["-d", "2", "-n", "cat"], capsys)
    subprocess.run(["cat", str(marker)], stderr=subprocess.DEVNULL)
    thread.join(5)
    assert result == [0]
    lines = (out + capsys.readouterr().out).splitlines()
    assert lines[0].split() == ["PID", "COMM", "FD", "ERR", "PATH"]
    mine = [line.split() for line in lines[1:] if line.endswith(str(marker))]
    assert len(mine) == 1
    pid, comm, fd, err, path = mine[0]
    assert (comm, fd, err, path) == ("cat", "-1", "2", str(marker))
    assert int(pid) > 0


@pytest.mark.root
def test_trace_json_count(marker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker.write_text("x")
    open_it = ["openat", None, str(marker), 0, 0]
    child = Child([["rename", "json-count"], open_it, open_it])
    thread, result, out = _run_in_thread(["--json", "-c", "1", "-n", "json-count", "-d", "5"], capsys)
    _, fd, _ = child.go()
    thread.join(6)
    assert result == [0]
    (line,) = (out + capsys.readouterr().out).splitlines()
    ev = json.loads(line)
    assert (ev["comm"], ev["pid"], ev["path"], ev["fd"]) == ("json-count", child.pid, str(marker), fd)


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
@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["list", "sched:zzz*"], "no tracepoint matches 'sched:zzz*'"),
        (["list", "zzz"], "names look like category:name"),
        (["watch", "sched:zzz*"], "no tracepoint matches 'sched:zzz*'"),
        (["watch", "sched"], '"sched" is not a tracepoint name'),
        (["watch", "sched:sched_switch", "nosuch:thing"], 'no tracepoint "nosuch:thing"'),
        (["format", "nosuch"], '"nosuch" is not a tracepoint name'),
        (["format", "syscalls:nope"], 'no tracepoint "syscalls:nope"'),
    ],
)
def test_nothing_matching_exits_1_with_one_line(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every command answers a name or pattern that matches nothing alike: a runtime error (API.md:
    "1 on a runtime error (..., unknown tracepoint, ...)"), exit 1, one line."""
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("opentrace: ") and err.count("\n") == 1 and says in err, err


@pytest.mark.root
def test_module_entry_point_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "opentrace", "-d", "0.5", "-n", "no-such-comm"],
        capture_output=True, text=True, timeout=10,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["PID", "COMM", "FD", "ERR", "PATH"]


def test_an_empty_cgroup_is_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    """``--cgroup ''`` would be the root cgroup, every task: refused, not taken as no filter."""
    with pytest.raises(SystemExit) as info:
        main(["--cgroup", "", "-d", "0.1"])
    assert info.value.code == 2
    assert "cgroup must name a cgroup" in capsys.readouterr().err


def _cgroup_v1_mount() -> str | None:
    """A cgroup v1 hierarchy's mount point (hybrid hosts have them beside the cgroup2 one)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, rest = line.partition(" - ")
        if rest.split()[0] == "cgroup":
            return fields.split()[4]
    return None


@pytest.mark.root
def test_a_cgroup_v1_path_is_named_as_such(capsys: pytest.CaptureFixture[str]) -> None:
    v1, v2 = _cgroup_v1_mount(), cgroup2_mount()
    if v1 is None or v2 is None:
        pytest.skip("needs a hybrid cgroup layout: a cgroup v1 hierarchy beside the cgroup2 one")
    with pytest.raises(SystemExit) as info:
        main(["--cgroup", v1, "-d", "0.1"])
    assert info.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert f'"{v1}" is in a cgroup v1 hierarchy' in line and f"only cgroup v2 paths work: under {v2}" in line, line
    assert "does not exist" not in line


def test_output_errors_are_worded_as_the_library_words_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One wording of OS errors (the compiled half's), before anything is loaded."""
    target = tmp_path / "no-such-dir" / "trace.txt"
    assert main(["-o", str(target), "-d", "0.1"]) == 1
    assert capsys.readouterr().err == (
        f"opentrace: cannot write the trace to {target}: no such file or directory (ENOENT)\n"
    )


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["--ring-size", "99999999999999999999"], "'99999999999999999999'"),
        (["--ring-size", "-4M"], "'-4M'"),
        (["--ring-si", "-4M"], "'-4M'"),
        (["--ring-size=-4M"], "'-4M'"),
        (["--ring-size", "3M"], "'3M'"),
        (["--ring-size", "2G"], "'2G'"),
        (["watch", "sched:sched_switch", "--ring-size", "-4K"], "'-4K'"),
    ],
)
def test_a_bad_ring_size_is_refused_with_the_range(
    argv: list[str], shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Any value, negative-looking ones too, is taken as the value and refused saying what fits."""
    with pytest.raises(SystemExit) as info:
        main([*argv, "-d", "0.1"])
    assert info.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    page = os.sysconf("SC_PAGE_SIZE")
    assert err.endswith(
        f"error: argument --ring-size: must be a power of two between {page >> 10}K and 1G "
        f"({page} and {1 << 30} bytes), not {shown}"
    ), err


def test_an_empty_command_is_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["-q", "--", ""])
    assert info.value.code == 2
    assert "error: the command after -- is empty ('')" in capsys.readouterr().err
