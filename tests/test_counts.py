"""In-kernel counting (`watch_counts`, `opentrace top`): opens counted per key in the kernel, read
every interval; the intervals must add up to exactly the opens the workload made, failures by
errno, relative failed paths told apart by the directory they started from, and a full table of
keys counted as lost, never dropped silently."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import opentrace

from .conftest import Child, cgroup2_mount

pytestmark = pytest.mark.root


def totals(watcher: opentrace.CountWatcher, intervals: int = 50) -> dict[str, list[object]]:
    """Per path: [opens, failed, errors], summed over the watcher's intervals until it ends."""
    seen: dict[str, list[object]] = {}
    for n, rows in enumerate(watcher):
        for row in rows:
            if row.path is None:
                continue
            total = seen.setdefault(row.path, [0, 0, {}, row])
            total[0] += row.opens  # type: ignore[operator]
            total[1] += row.failed  # type: ignore[operator]
            for name, count in row.errors.items():
                total[2][name] = total[2].get(name, 0) + count  # type: ignore[index,union-attr]
        assert n < intervals, "a pid watcher's counts end once its process has exited"
    return seen


def openat(path: object) -> list[object]:
    return ["openat", None, str(path), 0, 0]


def test_counts_add_up_to_every_open(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("")
    b.write_text("")
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    ops: list[list[object]] = [["loop", str(a), 3000], ["loop", str(b), 700]]
    ops += [["chdir", str(tmp_path / "one")], *[openat("missing")] * 40]
    ops += [["chdir", str(tmp_path / "two")], *[openat("missing")] * 25, openat(tmp_path / "nope")]
    child = Child(ops)
    with opentrace.watch_counts(0.2, pid=child.pid) as w:
        results = child.go()
        seen = totals(w)
        assert w.lost == 0
    assert results[0] == 3000 and results[3] == -errno.ENOENT
    assert seen[str(a)][:3] == [3000, 0, {}] and seen[str(b)][:3] == [700, 0, {}]
    # The same relative path, from two directories: two files, each with its own count.
    assert seen[str(tmp_path / "one" / "missing")][:3] == [40, 40, {"ENOENT": 40}]
    assert seen[str(tmp_path / "two" / "missing")][:3] == [25, 25, {"ENOENT": 25}]
    assert seen[str(tmp_path / "nope")][:3] == [1, 1, {"ENOENT": 1}]
    row = seen[str(a)][3]
    assert isinstance(row, opentrace.OpenCount)
    assert (row.inode, row.dev) == (a.stat().st_ino, a.stat().st_dev)
    assert row.comm is not None and row.pid is None  # grouped by cgroup, comm and file by default
    assert row.cgroup is not None and json.loads(json.dumps(row.to_dict()))["path"] == str(a)


def test_counts_by_file_are_made_at_the_exit_alone_for_every_syscall(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, struct_reads: None
) -> None:
    """By file too, no entry program runs: the exit reads the path and the directory the lookup
    started from in the task's saved registers. Every syscall of the family, absolute and
    relative (to the working directory and to a directory fd), succeeding and failing: each
    path's counts are what the child's calls returned."""
    d = tmp_path / "d"
    d.mkdir()
    f = d / "f"
    f.write_text("")
    ops: list[list[object]] = [["open", str(f), os.O_RDONLY, 0]] * 3 + [["open", str(d / "missing"), 0, 0]] * 2
    ops += [["creat", str(d / "new"), 0o600]] * 2 + [["openat2", str(f), 0, 0, 0]] * 4
    ops += [["openat2", str(tmp_path / "gone"), 0, 0, 0]]
    # Each of these opens d first (as a dfd): 11 more opens of d.
    ops += [["openat", str(d), "f", 0, 0]] * 5 + [["openat", str(d), "missing", 0, 0]] * 6
    ops += [["chdir", str(d)], ["open", "missing", 0, 0], ["creat", "new", 0o600]]
    child = Child(ops)
    with caplog.at_level(logging.DEBUG, logger="opentrace"), opentrace.watch_counts(0.2, pid=child.pid) as w:
        results = child.go()
        seen = totals(w)
        assert w.lost == 0
    assert "counting at the exits alone" in caplog.text
    ok = [r for r in results if isinstance(r, int) and r > 0]
    assert len(ok) == 3 + 2 + 4 + 5 + 1 and results.count(-errno.ENOENT) == 2 + 1 + 6 + 1
    assert seen[str(f)][:3] == [12, 0, {}]
    assert seen[str(d / "new")][:3] == [3, 0, {}]
    assert seen[str(d)][:3] == [11, 0, {}]
    assert seen[str(tmp_path / "gone")][:3] == [1, 1, {"ENOENT": 1}]
    # Absolute (by its path) and relative (by "missing" and d): two keys, one path.
    assert seen[str(d / "missing")][:3] == [9, 9, {"ENOENT": 9}]


def read_while_counting(tmp_path: Path, sigint_every: float | None) -> tuple[int, int, int]:
    """A child opens 100 files 5 times each, 4 ms apart, while ``read()`` is called again and
    again (each read as keys are being made); with ``sigint_every``, SIGINT comes that often from
    another thread, and its handler raises KeyboardInterrupt only while the library's code runs
    (where it is the library's to keep what it took: the loop here would lose a list a call
    returned, as any caller's would). Returns the opens of the child's files counted under their
    paths, the opens of rows with no path, and how many KeyboardInterrupts were raised."""
    library = str(Path(opentrace.__file__).parent)
    files = [tmp_path / f"f{i}" for i in range(100)]
    for f in files:
        f.write_text("")
    child = Child([op for f in files for op in (["loop", str(f), 5], ["sleep", 0.004])])
    interrupts = named = unnamed = 0

    def in_library(signum: int, frame: Any) -> None:
        nonlocal interrupts
        while frame is not None:
            if frame.f_code.co_filename.startswith(library):
                interrupts += 1
                raise KeyboardInterrupt
            frame = frame.f_back

    def add(rows: list[opentrace.OpenCount]) -> None:
        nonlocal named, unnamed
        named += sum(r.opens for r in rows if r.path is not None and r.path.startswith(str(tmp_path)))
        unnamed += sum(r.opens for r in rows if r.path is None)

    stop = threading.Event()

    def pester() -> None:
        while sigint_every is not None and not stop.wait(sigint_every):
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.signal(signal.SIGINT, in_library)
    try:
        with opentrace.watch_counts(0.01, by=("file",), pid=child.pid) as w:
            pesterer = threading.Thread(target=pester)
            pesterer.start()
            try:
                done = threading.Thread(target=child.go)
                done.start()
                while done.is_alive():
                    try:
                        rows = w.read()
                    except KeyboardInterrupt:
                        continue
                    add(rows)
            finally:
                stop.set()
                pesterer.join()
            add(w.read())
            assert w.lost == 0
    finally:
        signal.signal(signal.SIGINT, before)
    return named, unnamed, interrupts


def test_counts_read_as_their_keys_are_made_name_their_files(tmp_path: Path) -> None:
    """The program that counts a new key sends the event that names it right after; preempted in
    between, it leaves the count readable first (for 150 µs, seen here): a read waits for the
    name rather than hand out a row with no path."""
    assert read_while_counting(tmp_path, None) == (500, 0, 0)


def test_a_ctrl_c_inside_a_read_loses_no_count(tmp_path: Path) -> None:
    """A Ctrl-C can land anywhere in the library's read of an interval, even just after the
    kernel's counters were taken: what that read took comes with the next one, and the reads add
    up to every open."""
    named, unnamed, interrupts = read_while_counting(tmp_path, 0.0005)
    assert interrupts > 100 and (named, unnamed) == (500, 0)


def test_grouped_by_pid(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("")
    child = Child([["loop", str(target), 100]])
    with opentrace.watch_counts(0.2, by=("pid", "file"), pid=child.pid) as w:
        child.go()
        rows = [row for rows in w for row in rows if row.path == str(target)]
    assert [(r.pid, r.comm, r.cgroup) for r in rows] == [(child.pid, None, None)] * len(rows)
    assert sum(r.opens for r in rows) == 100


def test_counts_without_the_file_are_made_at_the_exit_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Grouped by cgroup and comm, no entry program runs and no event names a key: the cgroup is
    named by its id, and the counts are still exactly the child's opens, failures by errno."""
    mount = cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup2 hierarchy mounted")
    group = mount / f"opentrace-counts-{os.getpid()}"
    group.mkdir()
    try:
        target = tmp_path / "f"
        target.write_text("")
        child = Child([["loop", str(target), 300], *[openat(tmp_path / "missing")] * 20, openat(target / "x")])
        (group / "cgroup.procs").write_text(str(child.pid))
        with caplog.at_level(logging.DEBUG, logger="opentrace"), \
                opentrace.watch_counts(0.2, by=("cgroup", "comm"), pid=child.pid) as w:
            results = child.go()
            rows = [row for rows in w for row in rows]
            assert w.lost == 0
    finally:
        group.rmdir()
    assert results[-1] == -errno.ENOTDIR
    assert "counting at the exits alone" in caplog.text
    assert {(r.cgroup, r.container_id, r.comm, r.pid, r.path) for r in rows} == {
        ("/" + group.relative_to(mount).as_posix(), None, "python", None, None)
    }
    assert sum(r.opens for r in rows) == 321 and sum(r.failed for r in rows) == 21
    errors: dict[str, int] = {}
    for r in rows:
        for name, n in r.errors.items():
            errors[name] = errors.get(name, 0) + n
    assert errors == {"ENOENT": 20, "ENOTDIR": 1}


def test_a_cgroup_removed_before_its_counts_are_read_is_still_named(tmp_path: Path) -> None:
    """Counted at the exits alone, cgroups are named when the counts are read: a container's
    cgroup that was there at the start and is gone by then is still named, and its container id
    found (it was learned at the start), not counted as outside any container."""
    mount = cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup2 hierarchy mounted")
    cid = os.urandom(32).hex()
    group = mount / f"opentrace-gone-{os.getpid()}"
    scope = group / f"docker-{cid}.scope"
    scope.mkdir(parents=True)
    try:
        target = tmp_path / "f"
        target.write_text("")
        child = Child([["loop", str(target), 25]])
        (scope / "cgroup.procs").write_text(str(child.pid))
        with opentrace.watch_counts(600, by=("cgroup", "comm"), pid=child.pid) as w:
            child.go()
            scope.rmdir()
            group.rmdir()
            rows = [row for rows in w for row in rows]
    finally:
        for directory in (scope, group):
            if directory.exists():
                directory.rmdir()
    assert [(r.cgroup, r.container_id, r.opens) for r in rows] == [
        ("/" + scope.relative_to(mount).as_posix(), cid, 25)]


def test_a_full_table_of_keys_is_counted_and_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = [tmp_path / f"f{i}" for i in range(40)]
    for f in files:
        f.write_text("")
    child = Child([["loop", str(f), 5] for f in files])
    with caplog.at_level(logging.WARNING, logger="opentrace"), \
            opentrace.watch_counts(0.2, max_keys=8, pid=child.pid) as w:
        child.go()
        seen = totals(w)
        lost = w.lost
    counted = sum(t[0] for path, t in seen.items() if path.startswith(str(tmp_path)))  # type: ignore[misc]
    assert lost > 0 and counted + lost == 200
    assert "the table of keys full" in caplog.text


def test_keys_that_stop_counting_leave_room_for_new_ones(tmp_path: Path) -> None:
    """Files come and go (as containers and processes do in an always-on agent): keys idle while
    the table is three quarters full are taken out (their last counts read as they go), and the
    next files are counted in full. A table of 8 keys counts 30 files, none lost."""
    waves = [[tmp_path / f"w{wave}-{i}" for i in range(6)] for wave in range(5)]
    ops: list[list[object]] = []
    for files in waves:
        for f in files:
            f.write_text("")
        ops += [["loop", str(f), 5] for f in files]
        ops.append(["sleep", 1.5])  # seven intervals: read, then taken out (with room for a slow reader)
    child = Child(ops)
    with opentrace.watch_counts(0.2, max_keys=8, pid=child.pid) as w:
        worker = threading.Thread(target=child.go)  # the counts are read as the waves go
        worker.start()
        seen = totals(w)
        worker.join()
        assert w.lost == 0
    assert {path: t[0] for path, t in seen.items() if path.startswith(str(tmp_path))} == {
        str(f): 5 for files in waves for f in files}


def test_io_uring_opens_are_counted(uring_helper: Path, tmp_path: Path) -> None:
    target = tmp_path / "data"
    target.write_text("")
    report = tmp_path / "report"
    with opentrace.watch_counts(0.2, comm="uring_opener") as w:
        subprocess.run([str(uring_helper), f"--out={report}", *[f"open:{target}"] * 30,
                        f"open:{tmp_path}/missing"], check=True)
        seen: dict[str, list[int]] = {}
        for rows in w:
            for row in rows:
                if row.path in (str(target), f"{tmp_path}/missing"):
                    seen.setdefault(row.path, [0, 0])
                    seen[row.path][0] += row.opens
                    seen[row.path][1] += row.failed
            if seen.get(str(target), [0])[0] >= 30 and f"{tmp_path}/missing" in seen:
                break
    # The helper's own dynamic loading opens its file with syscalls, never this one.
    assert seen == {str(target): [30, 0], f"{tmp_path}/missing": [1, 1]}


def start_top(child: Child, *options: str) -> subprocess.Popen[str]:
    """``opentrace top --json -p CHILD OPTIONS...``, once it says it counts."""
    top = subprocess.Popen([sys.executable, "-m", "opentrace", "top", "--json", "-p", str(child.pid), *options],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert top.stderr is not None and top.stderr.readline().startswith("opentrace top: counting")
    return top


def test_cli_top_json(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("")
    child = Child([["loop", str(target), 250]])
    top = start_top(child, "-i", "0.2", "--by", "comm,file")
    try:
        child.go()
        out, errors = top.communicate(timeout=30)
    finally:
        top.kill()
    assert top.returncode == 0, errors
    rows = [json.loads(line) for line in out.splitlines()]
    mine = [r for r in rows if r["path"] == str(target)]
    assert sum(r["opens"] for r in mine) == 250 and {r["comm"] for r in mine} == {Path(sys.executable).name[:15]}
    assert all(r["errors"] == {} and r["failed"] == 0 and isinstance(r["interval"], int) for r in mine)


@pytest.mark.parametrize("sigs", [[signal.SIGINT], [signal.SIGTERM], [signal.SIGTERM, signal.SIGINT]])
def test_cli_top_stopped_mid_interval_prints_what_it_counted(tmp_path: Path, sigs: list[int]) -> None:
    """Ctrl-C (or SIGTERM) in the middle of a long interval: the opens counted so far are the
    last interval's rows, not lost with it; a second signal at once does not cut them short."""
    target = tmp_path / "f"
    target.write_text("")
    child = Child([["loop", str(target), 123]])
    top = start_top(child, "-i", "600", "--by", "file")
    try:
        child.go()
        for sig in sigs:
            top.send_signal(sig)
        out, errors = top.communicate(timeout=30)
    finally:
        top.kill()
    assert top.returncode == 0, errors
    mine = [json.loads(line) for line in out.splitlines() if json.loads(line)["path"] == str(target)]
    assert [(r["interval"], r["opens"]) for r in mine] == [(1, 123)]


def test_bad_groupings_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown grouping"):
        opentrace.watch_counts(by=("inode",))
    with pytest.raises(TypeError):
        opentrace.watch_counts(by="comm")
    assert subprocess.run([sys.executable, "-m", "opentrace", "top", "--by", "nope"],
                          capture_output=True).returncode == 2

