"""Path filters in the kernel (``watch(paths=...)``, ``--path``): which opens come through is
checked against what the opening process itself saw (``readlink /proc/self/fd/N``, or its start
directory joined with the path for a failed open), matched by the entries' rules written out
here, independently of the extension's."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import random
import shutil
import string
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import opentrace

from .conftest import Child, run_child, settle

pytestmark = pytest.mark.root

O_RDONLY, O_CREAT, O_WRONLY = os.O_RDONLY, os.O_CREAT, os.O_WRONLY


def resolve(where: object, path: object, flags: int = O_RDONLY, mode: int = 0o600) -> list[object]:
    return ["resolve", where, str(path), flags, mode]


def seen_by_process(op: list[Any], result: list[Any]) -> str | None:
    """The full path the opening process saw: its fd's link, or start directory + path."""
    path, (ret, link, start) = op[2], result
    if ret >= 0:
        return None if link is None else str(link)
    return os.path.join(start, path) if not path.startswith("/") else path


def matches(entries: list[str], full: str) -> bool:
    """The documented rules: DIR/ is the directory and everything under it, *X a suffix, anything
    else one exact path (entries here are absolute and normal)."""
    for entry in entries:
        if entry.startswith("*"):
            if full.endswith(entry[1:]):
                return True
        elif entry.endswith("/"):
            if full.startswith(entry) or full == entry.rstrip("/"):
                return True
        elif full == entry:
            return True
    return False


def opened_and_matching(entries: list[str], ops: list[list[Any]], results: list[Any]) -> list[tuple[str, str]]:
    """(path as passed, full path the process saw) of the opens among ``ops`` that the rules match;
    every open must have succeeded."""
    expected = []
    for op, result in zip(ops, results, strict=True):
        if op[0] != "resolve":
            continue
        full = seen_by_process(op, result)
        assert full is not None and result[0] >= 0, (op, result)
        if matches(entries, full):
            expected.append((op[2], full))
    return expected


def carried(expected: list[tuple[str, str]], full_path: bool) -> list[tuple[str, str | None]]:
    """(path, full path) pairs as events carry them: the full path only with ``full_path=True``."""
    return [(path, full if full_path else None) for path, full in expected]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """tmp/data/a/b/c/f, tmp/data/g.log, tmp/data2/f (a prefix of 'data' that is not under it),
    tmp/other/x.log, tmp/other/exact, tmp/link -> data."""
    (tmp_path / "data" / "a" / "b" / "c").mkdir(parents=True)
    for name in ("data/a/b/c/f", "data/g.log", "data2/f", "other/x.log", "other/exact", "other/exactly"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / "link").symlink_to("data")
    return tmp_path


def run_filtered(
    tree: Path, entries: list[str], ops: list[list[object]], *, full_path: bool = True
) -> tuple[list[Any], list[Any]]:
    """The results of ``ops`` and the events of a watcher of ``entries`` (by default with
    ``full_path=True``: most tests compare the full path matched with the process's own)."""
    child = Child(ops)
    with opentrace.watch(pid=child.pid, paths=entries, full_path=full_path) as w:
        results = child.go()
        events = settle(w)
        assert w.lost == 0
    return results, events


@pytest.mark.parametrize("full_path", [True, False], ids=["full_path", "paths-alone"])
def test_directory_exact_and_suffix_entries_against_what_the_process_saw(tree: Path, full_path: bool) -> None:
    """Matched by the path the process saw; the events carry it only with ``full_path=True``
    (resolved to be matched, it is not sent unless asked)."""
    entries = [f"{tree}/data/", f"{tree}/other/exact", "*.log"]
    ops = [
        ["chdir", str(tree / "other")],
        resolve(None, f"{tree}/data/a/b/c/f"),
        resolve(None, "../data/a/b/c/f"),  # relative, through ..
        resolve(None, "../link/g.log"),  # through a symlink: the resolved path is under data/
        resolve(None, f"{tree}/data"),  # the directory itself
        resolve(None, f"{tree}/data2/f"),  # 'data2' starts with 'data' but is not under it
        resolve(None, "exact"),
        resolve(None, "exactly"),  # the exact entry is not a prefix
        resolve(None, "x.log"),
        resolve(None, f"{tree}/data/nope"),  # failed, absolute
        resolve(None, "../data/a/nope"),  # failed, relative: '<tree>/other/../data/a/nope' is not under data/
        ["chdir", str(tree / "data" / "a")],
        resolve(None, "b/nope"),  # failed, relative, from inside data/
        ["chdir", str(tree / "other")],
        resolve(None, "nope.log"),  # failed, relative, suffix
        resolve(None, "nope"),  # failed, outside
        resolve(None, "/etc/hostname"),
    ]
    results, events = run_filtered(tree, entries, ops, full_path=full_path)
    expected = []
    for op, result in zip(ops, results, strict=True):
        if op[0] != "resolve":
            continue
        full = seen_by_process(op, result)
        assert full is not None, (op, result)
        if matches(entries, full):
            expected.append((op[2], result[0], full if full_path else None))
    got = [(ev.path, ev.ret, ev.full_path) for ev in events]
    assert got == expected
    # Every kind of entry and outcome is in there, so that the comparison means something.
    assert len(expected) == 9
    assert not any(path == "../data/a/nope" for path, _, _ in expected)
    assert {ret >= 0 for _, ret, _ in expected} == {True, False}


@pytest.mark.parametrize("full_path", [True, False], ids=["full_path", "paths-alone"])
def test_a_symlinked_directory_entry_matches_the_resolved_and_the_given_path(tree: Path, full_path: bool) -> None:
    entries = [f"{tree}/link/"]
    ops = [
        resolve(None, f"{tree}/data/a/b/c/f"),  # the resolved path of link/a/b/c/f
        resolve(None, f"{tree}/link/nope"),  # failed: matched as passed, through the link
        resolve(None, f"{tree}/data2/f"),
    ]
    results, events = run_filtered(tree, entries, ops, full_path=full_path)
    assert [(ev.path, ev.ret) for ev in events] == [(op[2], r[0]) for op, r in zip(ops[:2], results[:2], strict=True)]
    assert results[1][0] == -errno.ENOENT
    assert [ev.full_path for ev in events] == ([f"{tree}/data/a/b/c/f", f"{tree}/link/nope"] if full_path
                                               else [None, None])


@pytest.mark.parametrize("full_path", [True, False], ids=["full_path", "paths-alone"])
def test_opens_the_filter_cannot_compare_are_let_through_and_said(
    tree: Path, caplog: pytest.LogCaptureFixture, full_path: bool
) -> None:
    """Never dropped unseen: a pipe opened through /proc/self/fd (no path names it) and a failed
    relative open whose start directory joined with its path is longer than PATH_MAX cannot be
    compared: they come through, their full path None, and the log says how many and why. Opens
    that are compared and do not match stay out."""
    deep = tree / "other"
    while len(os.fsencode(deep)) < 3850:
        deep /= "z" * 200
        deep.mkdir()
    ops = [
        ["chdir", str(deep)],
        resolve(None, "n" * 250),  # failed: its start directory + "/" + it is over 4095 bytes
        resolve(None, "/proc/self/fd/0"),  # the child's stdin, a pipe
        resolve(None, f"{tree}/other/x.log"),  # compared: not under data/
        resolve(None, f"{tree}/data/g.log"),
    ]
    # A suffix entry: every open is compared by its path.
    entries = [f"{tree}/data/", "*.opentrace-never"]
    with caplog.at_level("INFO", logger="opentrace"):
        results, events = run_filtered(tree, entries, ops, full_path=full_path)
    assert results[1][0] == -errno.ENOENT and results[2][1].startswith("pipe:[")
    assert [(ev.path, ev.ret, ev.full_path) for ev in events] == [
        ("n" * 250, -errno.ENOENT, None),
        ("/proc/self/fd/0", results[2][0], None),
        (f"{tree}/data/g.log", results[4][0], f"{tree}/data/g.log" if full_path else None),
    ]
    said = [r.getMessage() for r in caplog.records]
    for why in ("longer than PATH_MAX", "a pipe, socket or other file with no path"):
        if full_path:
            line = f"full_path is None for 1 events: {why}"
            assert any(m.startswith(line) and "the path filter lets those it cannot compare through" in m
                       for m in said), said
        else:
            line = ("the path filter let 1 events through without comparing them: their full path is unknown "
                    f"({why}")
            assert any(m.startswith(line) for m in said), said


@pytest.mark.parametrize("full_path", [True, False], ids=["full_path", "paths-alone"])
def test_directory_entries_are_decided_by_the_kernel_across_mounts(
    tree: Path, caplog: pytest.LogCaptureFixture, struct_reads: None, full_path: bool
) -> None:
    """Entries that are all existing directories are decided by the opened file's ancestors
    (dentries and mounts, learned at start), not by its path: the same answer as the path rules,
    with a tmpfs mounted inside the directory (under it) and the directory bind-mounted elsewhere
    (its path there is not under it)."""
    inner, bind = tree / "data" / "a" / "mnt", tree / "bind"
    inner.mkdir()
    bind.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "opentrace-test", str(inner)], check=True)
    try:
        subprocess.run(["mount", "--bind", str(tree / "data"), str(bind)], check=True)
        try:
            (inner / "f").write_text("f")
            entries = [f"{tree}/data/", f"{tree}/other/"]
            ops = [
                resolve(None, inner / "f"),  # on the tmpfs mounted under data/
                resolve(None, inner),  # its mount's root
                resolve(None, bind / "g.log"),  # data/g.log, through the bind mount
                resolve(None, tree / "data" / "g.log"),
                resolve(None, tree / "other" / "x.log"),
                resolve(None, tree / "data2" / "f"),
                resolve(None, tree / "data"),
                resolve(None, tree),  # above both
                resolve(None, "/etc/hostname"),
            ]
            with caplog.at_level("WARNING", logger="opentrace"):
                results, events = run_filtered(tree, entries, ops, full_path=full_path)
        finally:
            subprocess.run(["umount", str(bind)], check=True)
    finally:
        subprocess.run(["umount", str(inner)], check=True)
    assert "learned" not in caplog.text, caplog.text
    expected = opened_and_matching(entries, ops, results)
    assert [(ev.path, ev.full_path) for ev in events] == carried(expected, full_path)
    assert len(expected) == 5


@pytest.mark.parametrize("full_path", [True, False], ids=["full_path", "paths-alone"])
@pytest.mark.parametrize("more_dirs", [0, 5], ids=["one-directory", "six-directories"])
def test_files_many_levels_below_or_beside_a_directory_are_decided_as_their_paths_say(
    tree: Path, more_dirs: int, caplog: pytest.LogCaptureFixture, struct_reads: None, full_path: bool
) -> None:
    """The walk up from a file takes its first levels in line and the rest in a loop, and compares
    a few directories in line and more in the loop: files 20 levels below the directory (more than
    the 16 taken in line), beside it and above it, with one directory entry or six (the one that
    matches last), get the answer their paths give."""
    levels = "/".join(f"l{i}" for i in range(20))
    for top in ("data", "other"):
        (tree / top / levels).mkdir(parents=True)
        (tree / top / levels / "f").write_text("f")
    extra = [tree / f"extra{i}" for i in range(more_dirs)]
    for directory in extra:
        directory.mkdir()
    entries = [f"{d}/" for d in extra] + [f"{tree}/data/"]
    ops = [
        resolve(None, tree / "data" / levels / "f"),  # decided after the levels taken in line
        resolve(None, tree / "other" / levels / "f"),  # beside it: walked up to the root
        resolve(None, tree / "data" / "l0" / "l1"),
        resolve(None, tree / "other" / "x.log"),
        ["chdir", str(tree / "data" / levels)],
        resolve(None, "f"),
        resolve(None, "../" * 21 + "other/x.log"),
    ]
    with caplog.at_level("WARNING", logger="opentrace"):
        results, events = run_filtered(tree, entries, ops, full_path=full_path)
    assert "learned" not in caplog.text, caplog.text
    expected = opened_and_matching(entries, ops, results)
    assert [(ev.path, ev.full_path) for ev in events] == carried(expected, full_path)
    assert len(expected) == 3


def test_a_kernel_refusing_the_kfunc_call_gets_the_programs_without_it(
    tree: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kfunc calls given an id the kernel refuses (type 1 is no function): loading fails, and
    is made again without them; the filter still decides by dentries, by probe reads."""
    monkeypatch.delenv("OPENTRACE_NO_KFUNCS", raising=False)
    monkeypatch.setenv("OPENTRACE_TEST_KFUNC_ID", "1")
    entries = [f"{tree}/data/"]
    ops = [resolve(None, tree / "data" / "a" / "b" / "c" / "f"), resolve(None, tree / "other" / "x.log")]
    with caplog.at_level("DEBUG", logger="opentrace"):
        results, events = run_filtered(tree, entries, ops)
    assert "loading with the kfunc bpf_rdonly_cast failed" in caplog.text
    assert "the programs read kernel structs by probe reads" in caplog.text
    assert [(ev.path, ev.full_path) for ev in events] == opened_and_matching(entries, ops, results)
    assert len(events) == 1


def test_two_watchers_of_one_process_keep_their_own_directories(tree: Path) -> None:
    """Each watcher learns its directories from the thread that starts it; one started later in
    the same process does not add its directories to the first one's."""
    inside, outside = tree / "data" / "g.log", tree / "other" / "x.log"
    ops = [resolve(None, inside), resolve(None, outside)]
    child = Child(ops)
    with opentrace.watch(pid=child.pid, paths=[f"{tree}/data/"], full_path=True) as first, \
            opentrace.watch(pid=child.pid, paths=[f"{tree}/other/"], full_path=True) as second:
        results = child.go()
        seen = [[ev.full_path for ev in settle(w)] for w in (first, second)]
    assert all(r[0] >= 0 for r in results), results
    assert seen == [[str(inside)], [str(outside)]]


@pytest.mark.parametrize("full_path", [True, False], ids=["full_path", "paths-alone"])
def test_the_root_directory_as_an_entry_matches_everything(tree: Path, full_path: bool) -> None:
    ops = [resolve(None, "/etc/hostname"), resolve(None, tree / "other" / "x.log"), resolve(None, "/nonexistent-ot")]
    results, events = run_filtered(tree, ["/"], ops, full_path=full_path)
    assert [(ev.path, ev.ret) for ev in events] == [(op[2], r[0]) for op, r in zip(ops, results, strict=True)]
    assert [ev.full_path for ev in events] == [seen_by_process(op, r) if full_path else None
                                               for op, r in zip(ops, results, strict=True)]


def test_a_directory_deleted_and_made_again_is_still_matched_by_its_path(
    tree: Path, caplog: pytest.LogCaptureFixture, struct_reads: None
) -> None:
    """The kernel decides by the directory it learned at start; when that one is deleted, a new one
    made at its path is another directory, so the filter goes back to comparing paths (and says so)."""
    data = tree / "data"
    with caplog.at_level("INFO", logger="opentrace"), opentrace.watch(paths=[f"{data}/"], full_path=True) as w:
        before, first = run_child([resolve(None, data / "g.log")])
        subprocess.run(["rm", "-rf", str(data)], check=True)
        data.mkdir()
        (data / "new").write_text("new")
        after, second = run_child([resolve(None, data / "new"), resolve(None, tree / "other" / "x.log")])
        events = [ev for ev in settle(w) if ev.pid in (before.pid, after.pid)]
    assert [r[0] >= 0 for r in first + second] == [True, True, True], (first, second)
    assert [ev.full_path for ev in events] == [str(data / "g.log"), str(data / "new")]
    assert "deleted or replaced" in caplog.text, caplog.text


def test_deleting_and_renaming_other_things_keeps_the_directories_decided_by_dentries(
    tree: Path, caplog: pytest.LogCaptureFixture, struct_reads: None
) -> None:
    """Only the deletion of a directory of the filter sends it back to comparing paths: files
    deleted in it, a directory renamed in it, and deletions and renames elsewhere do not."""
    data = tree / "data"
    with caplog.at_level("INFO", logger="opentrace"), opentrace.watch(paths=[f"{data}/"], full_path=True) as w:
        (data / "gone").write_text("x")
        os.unlink(data / "gone")
        os.rename(data / "a" / "b" / "c", data / "a" / "b" / "c2")
        os.rename(tree / "other" / "x.log", tree / "other" / "y.log")
        (tree / "empty").mkdir()
        os.rmdir(tree / "empty")
        child, results = run_child([resolve(None, data / "a" / "b" / "c2" / "f")])
        events = [ev for ev in settle(w) if ev.pid == child.pid]
    assert results[0][0] >= 0, results
    assert [ev.full_path for ev in events] == [str(data / "a" / "b" / "c2" / "f")]
    assert "deleted or replaced" not in caplog.text, caplog.text


Move = Callable[[], object] | None


def watch_while_moving(entries: list[str], opens: list[tuple[Move, Path, int]]) -> list[tuple[str, str]]:
    """Watches ``entries`` while, for each of ``opens``, a move is made (if any) and then a new
    process opens the path with the flags; (full path seen, full path the opener saw) of each."""
    pairs = []
    with opentrace.watch(paths=entries, full_path=True) as w:
        children = []
        for move, path, flags in opens:
            if move is not None:
                move()
            children.append(run_child([resolve(None, path, flags)]))
        events = settle(w)
    for child, results in children:
        truth = seen_by_process(resolve(None, "x"), results[0])
        assert results[0][0] >= 0 and truth is not None, results
        seen = [ev.full_path for ev in events if ev.pid == child.pid]
        pairs.append((seen[0] if len(seen) == 1 else f"{len(seen)} events", truth))
    return pairs


def exchange(a: Path, b: Path) -> None:
    """``renameat2(a, b, RENAME_EXCHANGE)``: ``a`` and ``b`` swap names at once."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2) != 0:  # AT_FDCWD, RENAME_EXCHANGE
        raise OSError(ctypes.get_errno(), "renameat2(RENAME_EXCHANGE)", str(a))


def links_up_to(directory: Path) -> int:
    """The links of the walk from ``directory`` up to ``/``: one per component, and one per mount
    point on the way (the directory itself included)."""
    mounts = sum(os.path.ismount(p) for p in [directory, *directory.parents] if p != Path("/"))
    return len(directory.parts) - 1 + mounts


@pytest.mark.parametrize("links", [0, 16, 17], ids=["two-below", "16-links", "17-links"])
def test_renaming_a_directory_or_one_above_it_gives_its_files_their_new_paths(
    tree: Path, links: int, caplog: pytest.LogCaptureFixture, struct_reads: None
) -> None:
    """A matching open's full path is the directory's own path, kept when it was learned, and the
    names below it; the kept path is taken only while every directory above it, and it, are as
    they were. Renaming a directory above the filter's, then the filter's own, then both back,
    then swapping the one above with another (RENAME_EXCHANGE) and back: each file's full path,
    and an O_TMPFILE's, is the one its opener saw. The directory 2 levels below the renamed one,
    or as deep as the longest chain kept (16 links: the renamed one far up the chain),
    or one deeper (not kept)."""
    top, swap = tree / "top", tree / "swap"
    top.mkdir()
    depth = 2 if links == 0 else links - links_up_to(top)
    below = [f"l{i}" for i in range(depth)]
    directory = top.joinpath(*below)
    assert links in (0, links_up_to(directory)) and depth >= 2
    (directory / "c").mkdir(parents=True)
    (directory / "c" / "f").write_text("f")
    swap.mkdir()
    top2 = tree / "top2"
    moved = top2.joinpath(*below)
    renamed = moved.with_name("renamed")
    opens: list[tuple[Move, Path, int]] = [
        (None, directory / "c" / "f", O_RDONLY),
        (lambda: os.rename(top, top2), moved / "c" / "f", O_RDONLY),
        (lambda: os.rename(moved, renamed), renamed / "c" / "f", O_RDONLY),
        (lambda: (os.rename(renamed, moved), os.rename(top2, top)), directory / "c" / "f", O_RDONLY),
        (lambda: exchange(top, swap), swap.joinpath(*below) / "c" / "f", O_RDONLY),
        (lambda: exchange(top, swap), directory / "c" / "f", O_RDONLY),
        (None, directory, O_RDONLY),
        (None, directory / "c", os.O_TMPFILE | os.O_RDWR),
    ]
    with caplog.at_level("DEBUG", logger="opentrace"):
        pairs = watch_while_moving([f"{directory}/"], opens)
    assert [seen for seen, _ in pairs] == [truth for _, truth in pairs]
    assert pairs[1][1] == str(moved / "c" / "f") and pairs[2][1] == str(renamed / "c" / "f")
    assert pairs[4][1] == str(swap.joinpath(*below) / "c" / "f")
    assert pairs[7][1].startswith(f"{directory}/c/#") and pairs[7][1].endswith(" (deleted)")
    assert "deleted or replaced" not in caplog.text and "learned by the kernel" not in caplog.text, caplog.text
    kept = 0 if links == 17 else 1
    assert f"keeps the paths of {kept} of its 1 directories" in caplog.text, caplog.text


def test_kept_paths_of_every_short_length_are_put_in_front_whole(caplog: pytest.LogCaptureFixture) -> None:
    """The kept path of a directory is put in front of the names below it byte by byte when it is
    shorter than 8 bytes, else in 8-byte words, the last one ending with it: directories at the
    root whose paths have 2 to 17 bytes (each length up to two words), each with a file two levels
    below; every file's full path is the one its opener saw."""
    made = []
    try:
        for length in range(2, 18):
            for _ in range(100):
                short = Path("/" + "".join(random.choices(string.ascii_lowercase + string.digits, k=length - 1)))
                try:
                    short.mkdir()
                except FileExistsError:
                    continue
                made.append(short)
                break
            else:
                raise AssertionError(f"no free name of {length} bytes at /")
            (short / "a" / "b").mkdir(parents=True)
            (short / "a" / "b" / "f").write_text("f")
        opens = [(None, directory / "a" / "b" / "f", O_RDONLY) for directory in made]
        with caplog.at_level("DEBUG", logger="opentrace"):
            pairs = watch_while_moving([f"{directory}/" for directory in made], opens)
        assert [seen for seen, _ in pairs] == [truth for _, truth in pairs]
        assert [truth for _, truth in pairs] == [str(directory / "a" / "b" / "f") for directory in made]
        assert f"keeps the paths of {len(made)} of its {len(made)} directories" in caplog.text, caplog.text
    finally:
        for directory in made:
            shutil.rmtree(directory)


@pytest.mark.parametrize("entry", ["m/d/", "m/"], ids=["inside-the-mount", "the-mount-root"])
def test_moving_the_mount_a_directory_is_on_gives_its_files_their_new_paths(
    tmp_path: Path, entry: str, caplog: pytest.LogCaptureFixture, struct_reads: None
) -> None:
    """The filter's directory on a tmpfs (inside it, or its root) that is moved (``mount --move``)
    while it is watched: to another directory, back, then onto the same directory seen through a
    bind mount (the same mountpoint dentry, another parent mount). Each file's full path is the
    one its opener saw: the directory's kept path holds only while the mounts above it are where
    they were. Then a tmpfs mounted on the directory: its files are under it. (The filter's
    second entry, so not the first directory learned.)"""
    base, bound = tmp_path / "base", tmp_path / "bound"
    for directory in (base, bound, tmp_path / "elsewhere"):
        directory.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "opentrace-test", str(base)], check=True)
    try:
        # A mount under a shared one cannot be moved.
        subprocess.run(["mount", "--make-private", str(base)], check=True)
        (base / "m").mkdir()
        (base / "n").mkdir()
        subprocess.run(["mount", "--bind", str(base), str(bound)], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "opentrace-test", str(base / "m")], check=True)
        (base / "m" / "d").mkdir()
        (base / "m" / "d" / "f").write_text("f")
        at, covered = base / "m", []

        def move(to: Path) -> None:
            nonlocal at
            subprocess.run(["mount", "--move", str(at), str(to)], check=True)
            at = to

        def cover(directory: Path) -> None:
            subprocess.run(["mount", "-t", "tmpfs", "opentrace-test", str(directory)], check=True)
            covered.append(directory)
            (directory / "x").write_text("x")

        last = bound / entry.rstrip("/")
        opens: list[tuple[Move, Path, int]] = [
            (None, base / "m" / "d" / "f", O_RDONLY),
            (lambda: move(base / "n"), base / "n" / "d" / "f", O_RDONLY),
            (lambda: move(base / "m"), base / "m" / "d" / "f", O_RDONLY),
            (lambda: move(bound / "m"), bound / "m" / "d" / "f", O_RDONLY),
            (lambda: cover(last), last / "x", O_RDONLY),
        ]
        try:
            with caplog.at_level("DEBUG", logger="opentrace"):
                pairs = watch_while_moving([f"{tmp_path}/elsewhere/", f"{base}/{entry}"], opens)
        finally:
            for directory in covered:
                subprocess.run(["umount", str(directory)], check=True)
            subprocess.run(["umount", str(at)], check=True)
            subprocess.run(["umount", str(bound)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(base)], check=True)
    assert [seen for seen, _ in pairs] == [truth for _, truth in pairs]
    assert pairs[1][1] == str(base / "n" / "d" / "f") and pairs[3][1] == str(bound / "m" / "d" / "f")
    assert pairs[4][1] == str(last / "x")
    assert "deleted or replaced" not in caplog.text and "learned by the kernel" not in caplog.text, caplog.text
    assert "keeps the paths of 2 of its 2 directories" in caplog.text, caplog.text


def test_relative_entries_are_taken_from_the_current_directory(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree)
    ops = [resolve(None, f"{tree}/data/g.log"), resolve(None, f"{tree}/other/x.log")]
    results, events = run_filtered(tree, ["data/./a/../"], ops)
    assert [(ev.full_path, ev.ret) for ev in events] == [(f"{tree}/data/g.log", results[0][0])]


def test_opens_that_do_not_match_take_no_ring_space_and_are_not_lost(tree: Path) -> None:
    """A storm of opens outside the filter into the smallest ring, then a few inside it: none of
    those is lost, and nothing is counted lost."""
    outside, inside = tree / "other" / "x.log", tree / "data" / "g.log"
    with opentrace.watch(paths=[f"{tree}/data/"], ring_size=4096, latency=0, full_path=True) as w:
        child, results = run_child([["loop", str(outside), 20000], ["loop", str(inside), 5]])
        events = settle(w)
        assert w.lost == 0
    assert results == [20000, 5]
    mine = [ev for ev in events if ev.pid == child.pid]
    assert [ev.full_path for ev in mine] == [str(inside)] * 5
    assert all(ev.full_path is not None and ev.full_path.startswith(f"{tree}/data/") for ev in events)


@pytest.mark.parametrize("full_path", [True, False], ids=["full_path", "paths-alone"])
def test_io_uring_opens_are_matched_as_they_complete(uring_helper: Path, tree: Path, full_path: bool) -> None:
    out = tree / "uring.out"
    inside, outside = tree / "data" / "g.log", tree / "other" / "x.log"
    ops = [f"open:{inside}", f"open:{outside}", f"open:{tree}/data/missing", f"open:{tree}/other/missing"]
    with opentrace.run([str(uring_helper), f"--out={out}", *ops], syscalls=["io_uring"],
                       paths=[f"{tree}/data/"], full_path=full_path) as w:
        events = list(w)
        assert w.lost == 0
    reports = [json.loads(line) for line in out.read_text().splitlines()]
    assert reports[0]["res"] >= 0 and reports[1]["res"] >= 0 and reports[2]["res"] < 0
    expected = [(str(inside), reports[0]["res"]), (f"{tree}/data/missing", reports[2]["res"])]
    assert [(ev.path, ev.ret) for ev in events] == expected
    assert [ev.full_path for ev in events] == [path if full_path else None for path, _ in expected]


@pytest.mark.parametrize("by", [("file",), ("comm",)])
@pytest.mark.parametrize("entry", ["exact", "directory"])
def test_watch_counts_counts_only_the_matching_opens(tree: Path, by: tuple[str, ...], entry: str) -> None:
    """By file (the keys are named by their full paths) and not (no full path is sent), with an
    exact entry (compared by the path) and a directory's (decided by the file's dentries)."""
    inside, outside = tree / "data" / "g.log", tree / "other" / "x.log"
    paths = [str(inside)] if entry == "exact" else [f"{inside.parent}/"]
    with opentrace.watch_counts(0.2, by=by, paths=paths) as counts:
        child = Child([["loop", str(inside), 300], ["loop", str(outside), 300]])
        comm = Path(f"/proc/{child.pid}/comm").read_text().strip()
        assert child.go() == [300, 300]
        rows = []
        for interval in counts:
            rows.extend(interval)
            if sum(r.opens for r in rows) >= 300:
                break
        assert counts.lost == 0
    assert sum(r.opens for r in rows) == 300
    if by == ("file",):
        assert {r.path for r in rows} == {str(inside)}
    else:
        assert {(r.comm, r.path) for r in rows} == {(comm, None)}


@pytest.mark.parametrize(("paths", "error", "words"), [
    ("/etc/", TypeError, "list of paths"),
    ([], ValueError, "at least one"),
    (["*"], ValueError, "after '*'"),
    (["/" + "a" * 254 + "/"], ValueError, "255 bytes"),
    (["/x"] * 65, ValueError, "at most 64"),
    ([3], TypeError, "str, bytes or path"),
])
def test_bad_entries_say_what_is_wrong(paths: object, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        opentrace.watch(paths=paths)  # type: ignore[arg-type]


def test_cli_path_option(tree: Path) -> None:
    inside, outside = tree / "data" / "a" / "b" / "c" / "f", tree / "other" / "exact"
    code = f"import os; os.chdir({str(tree)!r}); open('data/a/b/c/f').close(); open({str(outside)!r}).close()"
    for full in ([], ["-F"]):
        done = subprocess.run(
            [sys.executable, "-m", "opentrace", "--json", *full, "--path", f"{tree}/data/", "--path", "*.nothing",
             "--", sys.executable, "-c", code],
            capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        assert [(ev["path"], ev["full_path"]) for ev in lines] == [("data/a/b/c/f", str(inside) if full else None)]
    bad = subprocess.run([sys.executable, "-m", "opentrace", "--path", "/" + "b" * 300 + "/", "--", "true"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "255 bytes" in bad.stderr
