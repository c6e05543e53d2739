"""Opens submitted through io_uring, made by a real C program (tests/uring_opener.c, liburing)
that reports what the kernel answered: each completion's result and /proc/self/fd's link for
its fd. Inline completions, io-wq workers (IOSQE_ASYNC), an SQPOLL ring, fixed-file slots."""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import opentrace

pytestmark = pytest.mark.root


@pytest.fixture
def helper(uring_helper: Path) -> Path:
    """tests/uring_opener.c, built."""
    return uring_helper

def run(helper: Path, tmp: Path, ops: list[str], flags: tuple[str, ...] = (), lost: int = 0, **options: Any
        ) -> tuple[list[dict[str, Any]], list[opentrace.OpenEvent]]:
    """Runs the helper under ``opentrace.run``; its reports and every event of the run (``lost``:
    how many events the watcher must count as lost)."""
    out = tmp / f"report-{len(list(tmp.iterdir()))}.jsonl"
    with opentrace.run([str(helper), *flags, f"--out={out}", *ops], cwd=tmp, **options) as w:
        events = list(w)
        assert w.wait(10) == 0
        assert w.lost == lost
    reports = [json.loads(line) for line in out.read_text().splitlines()]
    return reports, events


def uring(events: list[opentrace.OpenEvent]) -> list[opentrace.OpenEvent]:
    return [e for e in events if e.syscall == "io_uring"]


def test_open_and_enoent_as_the_kernel_answered(helper: Path, tmp_path: Path) -> None:
    target = tmp_path / "data"
    target.write_bytes(b"x")
    reports, events = run(helper, tmp_path, [f"open:{target}", f"open:{tmp_path}/missing"], full_path=True)
    ok, missing = reports
    assert ok["res"] >= 0 and missing["res"] == -errno.ENOENT
    first, second = uring(events)
    assert (first.path, first.ret, first.fd, first.errno) == (str(target), ok["res"], ok["res"], None)
    assert first.full_path == ok["link"] == str(target)
    assert (second.path, second.ret, second.fd, second.errno) == (f"{tmp_path}/missing", -errno.ENOENT, None,
                                                                   errno.ENOENT)
    assert second.full_path == f"{tmp_path}/missing"
    # The file opened, as the kernel's stat of it says; nothing for the failed open.
    stat = target.stat()
    assert (first.inode, first.dev) == (stat.st_ino, stat.st_dev) and first.mnt_id is not None
    assert (second.inode, second.dev, second.mnt_id) == (None, None, None)
    for ev, report in ((first, ok), (second, missing)):
        assert (ev.pid, ev.tid, ev.comm) == (report["pid"], report["tid"], "uring_opener")
        assert (ev.dfd, ev.flags, ev.mode) == (-100, os.O_RDONLY, 0)
        assert ev.uid == os.getuid()
        assert ev.ppid == os.getpid()

    # The same process's syscall opens (the dynamic loader's) carry the same identity.
    syscall_opens = [e for e in events if e.syscall != "io_uring" and e.pid == ok["pid"]]
    assert syscall_opens
    assert {(e.cgroup_id, e.ns_pid, e.cgroup) for e in syscall_opens} == {(first.cgroup_id, first.ns_pid,
                                                                           first.cgroup)}
    assert first.timestamp_ns < second.timestamp_ns
    assert [pickle.loads(pickle.dumps(e)) for e in (first, second)] == [first, second]


def test_openat2_create_with_mode(helper: Path, tmp_path: Path) -> None:
    target = tmp_path / "created"
    reports, events = run(helper, tmp_path, ["create:created:640"], full_path=True)
    [report] = reports
    [ev] = uring(events)
    assert report["res"] >= 0 and report["link"] == str(target)
    assert target.exists()
    assert (ev.path, ev.ret, ev.fd) == ("created", report["res"], report["res"])
    assert ev.flags == os.O_CREAT | os.O_WRONLY | os.O_TRUNC
    assert ev.mode == 0o640
    assert ev.full_path == str(target)


def test_dirfd_relative_open_completed_by_an_io_wq_worker(helper: Path, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "file").write_bytes(b"")
    # IOSQE_ASYNC: the open runs, and completes, in a kernel worker of the process, not in it.
    reports, events = run(helper, tmp_path, [f"openat:{tmp_path}/sub:file", "open:nope"], flags=("--async",),
                          full_path=True)
    opened, failed = reports
    ev, ev_failed = uring(events)
    dir_opens = [e for e in events if e.syscall != "io_uring" and e.path == f"{tmp_path}/sub"]
    assert len(dir_opens) == 1
    assert (ev.path, ev.dfd, ev.ret) == ("file", dir_opens[0].fd, opened["res"])
    assert ev.full_path == opened["link"] == f"{tmp_path}/sub/file"
    assert (ev_failed.ret, ev_failed.full_path) == (failed["res"], f"{tmp_path}/nope")
    assert failed["res"] == -errno.ENOENT


def test_fixed_file_slot_has_no_fd(helper: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / "slot"
    target.write_bytes(b"")
    with caplog.at_level(logging.INFO, logger="opentrace"):
        reports, events = run(helper, tmp_path, [f"fixed:{target}"], full_path=True)
    [report] = reports
    [ev] = uring(events)
    assert report["res"] == 0
    assert (ev.path, ev.ret, ev.fd, ev.errno) == (str(target), 0, None, None)
    assert ev.full_path is None and (ev.inode, ev.dev, ev.mnt_id) == (None, None, None)
    assert "fixed-file slot" in caplog.text
    assert ev.to_dict()["fd"] is None
    # A copy made from its fields (pickled) is the same event, still without an fd.
    copy = pickle.loads(pickle.dumps(ev))
    assert copy == ev and hash(copy) == hash(ev) and copy.fd is None


def test_sqpoll_ring(helper: Path, tmp_path: Path) -> None:
    target = tmp_path / "polled"
    target.write_bytes(b"")
    reports, events = run(helper, tmp_path, [f"open:{target}", "open:absent"], flags=("--sqpoll",),
                          full_path=True)
    ok, missing = reports
    ev, ev_missing = uring(events)
    # The ring's kernel thread submits: same process, its own thread id and name.
    assert ev.pid == ok["pid"] and ev.tid != ok["tid"]
    assert ev.comm == f"iou-sqp-{ok['pid']}"[:15]
    assert (ev.ret, ev.full_path) == (ok["res"], ok["link"])
    assert (ev_missing.ret, ev_missing.full_path) == (-errno.ENOENT, f"{tmp_path}/absent")
    assert missing["res"] == -errno.ENOENT


def test_syscalls_choose_io_uring_or_not(helper: Path, tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"")
    _, events = run(helper, tmp_path, [f"open:{target}"], syscalls=["openat"])
    assert events and uring(events) == []
    assert {e.syscall for e in events} == {"openat"}
    reports, events = run(helper, tmp_path, [f"open:{target}"], syscalls=["io_uring"])
    assert [(e.syscall, e.ret) for e in events] == [("io_uring", reports[0]["res"])]
    with opentrace.watch() as w:
        assert "io_uring" in w.syscalls


def test_failed_only(helper: Path, tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"")
    _, events = run(helper, tmp_path, [f"open:{target}", "open:gone", f"open:{target}"], failed=True)
    assert [(e.path, e.errno) for e in uring(events)] == [("gone", errno.ENOENT)]


@pytest.mark.parametrize("shards", [None, 2], ids=["default-rings", "two-shards"])
def test_many_requests_each_paired_with_its_own_completion(helper: Path, tmp_path: Path, shards: int | None) -> None:
    """200 opens of distinct files, a third of them missing, some through io-wq: each event has
    its own request's path and its own completion's result, as the process saw them; through two
    ring shards too, where a completion can be read before its submission and waits for it."""
    ops = []
    for i in range(200):
        if i % 3:
            (tmp_path / f"f{i}").write_bytes(b"")
        ops.append(f"open:{tmp_path}/f{i}")
    reports, events = run(helper, tmp_path, ops, full_path=True, **({} if shards is None else {"ring_shards": shards}))
    opens = uring(events)
    assert len(opens) == len(reports) == 200
    for ev, report, op in zip(opens, reports, ops, strict=True):
        assert ev.path == op.removeprefix("open:")
        assert ev.ret == report["res"], (ev, report)
        assert ev.full_path == (report["link"] if report["res"] >= 0 else ev.path)
    assert sum(e.ret < 0 for e in opens) == 67


@pytest.mark.parametrize("shards", [None, 2], ids=["default-rings", "two-shards"])
def test_io_uring_and_syscall_opens_of_one_thread_come_in_the_order_it_made_them(
    helper: Path, tmp_path: Path, shards: int | None
) -> None:
    """The helper's one thread alternates an io_uring open with a syscall open (each `openat:`
    op opens its directory with openat(2), then the file through io_uring): its events come in
    that order, by time, through two ring shards too, where an io_uring open's records wait for
    a later pass than the syscall open after it. 400 of each: more records than a pass of
    the merge reads (512), should the reader fall behind."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"")
    ops = [f"openat:{tmp_path}/d:f"] * 400
    reports, events = run(helper, tmp_path, ops, full_path=True, **({} if shards is None else {"ring_shards": shards}))
    pid = reports[0]["pid"]
    mine = [e for e in events if e.pid == pid and e.full_path in (f"{tmp_path}/d", f"{tmp_path}/d/f")]
    assert [e.syscall for e in mine] == ["openat", "io_uring"] * 400
    assert [e.ret for e in mine if e.syscall == "io_uring"] == [r["res"] for r in reports]
    stamps = [e.timestamp_ns for e in mine]
    assert stamps == sorted(stamps)


def test_async_iteration_with_no_latency_gets_an_io_uring_open_held_for_a_later_pass(
    helper: Path, tmp_path: Path
) -> None:
    """With two ring shards an io_uring open's records wait for a pass after the one that read
    them; with ``latency=0`` and nothing else coming, async iteration must still take that pass
    (it used to wait on the rings' fds, which nothing would wake)."""
    import asyncio

    target = tmp_path / "f"
    target.write_bytes(b"")

    async def main() -> opentrace.OpenEvent:
        with opentrace.watch(ring_shards=2, latency=0, syscalls=["io_uring"]) as w:
            subprocess.run([str(helper), f"--out={tmp_path}/report", f"open:{target}"], check=True)
            return await asyncio.wait_for(anext(aiter(w)), 5)

    ev = asyncio.run(main())
    [report] = [json.loads(line) for line in (tmp_path / "report").read_text().splitlines()]
    assert (ev.syscall, ev.path, ev.ret) == ("io_uring", str(target), report["res"])


def test_a_storm_of_opens_and_reads(helper: Path, tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"0123456789")
    # Reads go through the same tracepoints and must not become events.
    _, events = run(helper, tmp_path, [f"opens:{target}:3000", f"reads:{target}:3000"], syscalls=["io_uring"])
    assert len(events) == 3000
    assert all(e.path == str(target) and e.fd is not None and e.fd >= 0 for e in events)


def test_refused_before_submission(helper: Path, tmp_path: Path) -> None:
    """The kernel refuses O_CLOEXEC with a fixed-file slot while preparing the request: it never
    reaches io_uring_submit_req, and is still an event, with its path and error."""
    target = tmp_path / "refused"
    target.write_bytes(b"")
    reports, events = run(helper, tmp_path, [f"cloexec_fixed:{target}"], full_path=True)
    [report] = reports
    [ev] = uring(events)
    assert report["res"] == -errno.EINVAL
    assert (ev.path, ev.ret, ev.errno, ev.fd) == (str(target), -errno.EINVAL, errno.EINVAL, None)
    assert ev.flags == os.O_RDONLY | os.O_CLOEXEC and ev.full_path == str(target)
    _, events = run(helper, tmp_path, [f"cloexec_fixed:{target}"], failed=True)
    assert [e.path for e in uring(events)] == [str(target)]


def test_a_success_with_no_completion_is_counted_as_lost(helper: Path, tmp_path: Path) -> None:
    """IOSQE_CQE_SKIP_SUCCESS: the kernel posts nothing when the open succeeds, so its result
    is never known; the event is counted in lost, not reported half-known."""
    target = tmp_path / "skipped"
    target.write_bytes(b"")
    _, events = run(helper, tmp_path, [f"skip:{target}", f"open:{target}"], lost=1)
    assert [e.path for e in uring(events)] == [str(target)]


def test_a_failure_despite_skip_success_is_reported(helper: Path, tmp_path: Path) -> None:
    """With IOSQE_CQE_SKIP_SUCCESS, a failed open still posts its completion: it is an event."""
    [report], events = run(helper, tmp_path, [f"skip:{tmp_path}/missing"])
    assert report["res"] == -errno.ENOENT
    [ev] = uring(events)
    assert (ev.path, ev.ret, ev.errno) == (f"{tmp_path}/missing", -errno.ENOENT, errno.ENOENT)


def test_lost_records_are_counted_exactly(helper: Path, tmp_path: Path) -> None:
    """A small ring not read until the command is done: submissions and completions alike are
    dropped, and every open is either an event or counted in lost, once."""
    target = tmp_path / "many"
    target.write_bytes(b"")
    n = 3000
    with opentrace.run([str(helper), f"--out={tmp_path / 'o'}", f"opens:{target}:{n}"], cwd=tmp_path,
                       syscalls=["io_uring"], ring_size=1 << 16) as w:
        assert w.wait(30) == 0
        events = list(w)
        lost = w.lost
    assert lost > 0, "the ring was meant to overflow"
    assert all(e.path == str(target) and e.fd is not None for e in events)
    assert len(events) + lost == n


@pytest.mark.parametrize("shards", ["1", "2"], ids=["one-ring", "two-shards"])
def test_a_count_reached_before_completions_are_read_loses_none(helper: Path, tmp_path: Path, shards: str) -> None:
    """``-c 1`` over eight opens submitted together (the eight submissions come before the first
    completion): the trace stops at the first event, the other completions still in the ring.
    Their requests were not lost, only never shown; through one ring the CLI said "7 events
    lost" before. (Two shards' merge reads and decodes the batch together: no loss either way so
    far; that path is checked, not shown to have been wrong.)"""
    target = tmp_path / "batched"
    target.write_bytes(b"")
    out = tmp_path / "o"
    cli = subprocess.run(
        [sys.executable, "-m", "opentrace", "--json", "-c", "1", "--ring-shards", shards, "--syscall", "io_uring",
         "--", str(helper), f"--out={out}", f"batch:{target}:8"],
        capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    [line] = cli.stdout.splitlines()
    assert json.loads(line)["path"] == str(target)
    assert "lost" not in cli.stderr
    reports = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(reports) == 8 and all(r["res"] >= 0 for r in reports)


def test_watch_filters_apply(helper: Path, tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"")
    out = tmp_path / "out"
    other = tmp_path / "other_opener"
    other.symlink_to(helper)
    with opentrace.watch(comm="uring_opener", syscalls=["io_uring"]) as w:
        subprocess.run([str(helper), f"--out={out}", f"open:{target}"], check=True)
        # The same program under another name: its io_uring opens are left out in the kernel.
        subprocess.run([str(other), f"--out={tmp_path / 'other.jsonl'}", f"open:{target}"], check=True)
        events = []
        while batch := w.poll(0.3):
            events += batch
    [report] = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e.comm, e.pid, e.ret) for e in events] == [("uring_opener", report["pid"], report["res"])]


def test_cli_shows_io_uring_opens(helper: Path, tmp_path: Path) -> None:
    target = tmp_path / "cli"
    target.write_bytes(b"")
    cli = subprocess.run(
        [sys.executable, "-m", "opentrace", "--json", "-F",
         "--syscall", "io_uring", "--", str(helper), f"--out={tmp_path / 'o'}", f"open:{target}"],
        capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    [line] = cli.stdout.splitlines()
    ev = json.loads(line)
    assert (ev["syscall"], ev["path"], ev["full_path"]) == ("io_uring", str(target), str(target))


def test_io_uring_disabled_is_skipped_with_a_debug_log() -> None:
    knob = Path("/proc/sys/kernel/io_uring_disabled")
    if not knob.exists():
        pytest.skip("this kernel has no kernel.io_uring_disabled (Linux 6.6+)")
    before = knob.read_text()
    knob.write_text("2")
    try:
        # Layouts are read once per process: a fresh one sees the setting.
        probe = subprocess.run(
            [sys.executable, "-c", "import logging, opentrace; logging.basicConfig(level=logging.DEBUG)\n"
             "with opentrace.watch() as w: print(','.join(w.syscalls))"],
            capture_output=True, text=True, timeout=60)
        # Asked for alone, it is an error that says why.
        alone = subprocess.run(
            [sys.executable, "-c", "import opentrace\nopentrace.watch(syscalls=['io_uring'])"],
            capture_output=True, text=True, timeout=60)
    finally:
        knob.write_text(before)
    assert alone.returncode == 1
    assert "io_uring open requests cannot be traced here: io_uring is disabled" in alone.stderr, alone.stderr
    assert probe.returncode == 0, probe.stderr
    traced = probe.stdout.strip().split(",")
    assert "io_uring" not in traced and "openat" in traced, traced
    assert "io_uring open requests are not traced: io_uring is disabled" in probe.stderr
