"""full_path against the kernel's own answer: the opening process reads /proc/self/fd/N of each
fd it gets (and /proc/self/cwd, or its dfd's link, for a failed relative open) and the event must
say the same bytes. Real files, real mounts, a real chroot."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import opentrace

from .conftest import Child, settle

# The walk reads each dentry and mount by direct loads (bpf_rdonly_cast) and by probe reads.
pytestmark = [pytest.mark.root, pytest.mark.usefixtures("struct_reads")]

O_RDONLY, O_CREAT, O_WRONLY = os.O_RDONLY, os.O_CREAT, os.O_WRONLY


def resolve(where: object, path: object, flags: int = O_RDONLY, mode: int = 0o600) -> list[object]:
    return ["resolve", where, str(path), flags, mode]


def traced(ops: list[list[object]], **options: Any) -> tuple[list[Any], list[opentrace.OpenEvent]]:
    child = Child(ops)
    with opentrace.watch(pid=child.pid, full_path=True, **options) as w:
        results = child.go()
        events = settle(w)
    return results, events


def check(ops: list[list[object]], results: list[Any], events: list[opentrace.OpenEvent]) -> int:
    """Each ``resolve`` op's event (its path, with its result, in order) has the full path the
    process saw. Returns how many were checked."""
    pending = list(events)
    checked = 0
    for op, result in zip(ops, results, strict=True):
        if op[0] != "resolve":
            continue
        path, (ret, link, start) = op[2], result
        index = next(i for i, e in enumerate(pending) if e.path == path and e.ret == ret)
        ev = pending[index]
        del pending[: index + 1]
        if ret >= 0:
            expected = None if link is None else os.fsencode(link)
        else:
            expected = os.fsencode(os.path.join(start, path))
        assert ev.full_path_bytes == expected, (op, result, ev.full_path_bytes)
        assert ev.full_path == (None if expected is None else os.fsdecode(expected))
        checked += 1
    return checked


def run_and_check(ops: list[list[object]], **options: Any) -> list[Any]:
    results, events = traced(ops, **options)
    assert check(ops, results, events) == sum(op[0] == "resolve" for op in ops)
    return results


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """tmp/real/sub/f, tmp/link -> real, tmp/other/."""
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "sub" / "f").write_text("f")
    (tmp_path / "link").symlink_to("real")
    (tmp_path / "other").mkdir()
    return tmp_path


def test_relative_dotdot_and_symlinked_directories(tree: Path) -> None:
    results = run_and_check([
        ["chdir", str(tree / "other")],
        resolve(None, "../real/sub/f"),
        resolve(None, "../link/sub/f"),
        resolve(None, "./../real/./sub/../sub/f"),
        resolve(str(tree / "link"), "sub/f"),  # dfd through a symlink
        resolve(str(tree / "link" / "sub"), "../sub/f"),
        resolve(None, str(tree / "link" / "sub" / "f")),
        resolve(None, "."),
        resolve(None, "/"),
    ])
    assert results[1][1] == str(tree / "real" / "sub" / "f")


def test_failed_relative_and_dirfd_opens_join_their_starting_directory(tree: Path) -> None:
    results = run_and_check([
        ["chdir", str(tree / "other")],
        resolve(None, "nope/x"),
        resolve(None, "../link/nope"),
        resolve(str(tree / "link"), "nope"),  # the directory dfd refers to, not the cwd
        resolve(str(tree / "link" / "sub"), "f/not-a-dir"),
        resolve(None, "/nonexistent/x"),  # absolute: itself
        resolve(None, str(tree / "link" / "nope")),  # absolute through a symlink: itself
    ])
    assert [r[0] for r in results[1:]] == [-errno.ENOENT] * 3 + [-errno.ENOTDIR] + [-errno.ENOENT] * 2
    assert results[3][2] == str(tree / "real")


def test_procfs_devtmpfs_and_sysfs() -> None:
    run_and_check([
        resolve(None, "/proc/self/status"),
        resolve(None, "/proc/self/fd/3"),  # /proc/self: a magic link back to a real directory
        resolve(None, "/dev/null"),
        resolve(None, "/sys/class/net/lo/mtu"),  # through sysfs symlinks
        resolve("/sys/class/net", "lo/address"),
        resolve("/proc", "self/stat"),
    ])


def test_private_tmpfs_and_bind_mounts(tree: Path) -> None:
    (tree / "mnt").mkdir()
    (tree / "bound").mkdir()
    run_and_check([
        ["unshare_mount"],
        ["mount", "tmpfs", str(tree / "mnt"), "tmpfs"],
        resolve(None, tree / "mnt" / "new", O_CREAT | O_WRONLY),
        resolve(str(tree / "mnt"), "new"),
        ["mount", str(tree / "real"), str(tree / "bound"), None],
        resolve(None, tree / "bound" / "sub" / "f"),
        resolve(str(tree / "bound"), "sub/../sub/f"),
        resolve(str(tree / "bound" / "sub"), "nope"),
    ])


def test_chroot_paths_are_relative_to_the_new_root_and_files_outside_it_global(tmp_path: Path) -> None:
    jail, outside = tmp_path / "jail", tmp_path / "outside"
    (jail / "etc").mkdir(parents=True)
    (jail / "etc" / "passwd").write_text("jailed")
    outside.mkdir()
    (outside / "f").write_text("out")
    results = run_and_check([
        ["keep", "outside", str(outside)],
        ["chroot", str(jail)],
        resolve(None, "/etc/passwd"),
        resolve(None, "etc/passwd"),
        resolve("/etc", "passwd"),
        resolve(None, "nope"),
        resolve({"kept": "outside"}, "f"),  # unreachable from the new root: shown from the global one
    ])
    assert results[2][1] == "/etc/passwd" and results[5][2] == "/"
    assert results[6][1] == str(outside / "f")


def test_a_renamed_directory_shows_its_new_name(tree: Path) -> None:
    run_and_check([
        ["chdir", str(tree)],
        resolve(None, "real/sub/f"),
        ["mv", str(tree / "real"), str(tree / "renamed")],
        resolve(None, "renamed/sub/f"),
        resolve(None, "link/sub/f"),  # the symlink now dangles
        ["mv", str(tree / "renamed" / "sub"), str(tree / "moved")],
        resolve(None, "moved/f"),
        ["chdir", str(tree / "moved")],
        resolve(None, "f"),
    ])


def file_of_length(top: Path, length: int) -> Path:
    """An empty file whose path has ``length`` bytes: under ``top``, directories of 200-byte
    names, then a last name that makes up the rest."""
    path = top
    while len(os.fsencode(path)) < length - 210:
        path = path / ("x" * 200)
    path = path / ("y" * (length - len(os.fsencode(path)) - 1))
    path.parent.mkdir(parents=True)
    path.write_text("")
    assert len(os.fsencode(path)) == length
    return path


def test_a_600_level_tree_and_a_3900_byte_path(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["d"] * 600)
    deep.mkdir(parents=True)
    (deep / "f").write_text("")
    long = file_of_length(tmp_path / "long", 3900)
    results = run_and_check([
        ["chdir", str(tmp_path)],
        resolve(None, os.path.relpath(deep / "f", tmp_path)),
        resolve(None, long),
        ["chdir", str(long.parent)],
        resolve(None, long.name),
        resolve(None, "nope"),
    ])
    assert len(results[1][1]) > 1200 and len(os.fsencode(results[2][1])) == 3900


def test_names_of_every_length_and_a_4095_byte_path(tmp_path: Path) -> None:
    """With direct loads, a name of up to 64 bytes is copied 8 bytes at a time (its whole words,
    then its last 8 bytes, reaching back before a short name), and by a probe read where it is
    longer or within 8 bytes of the start of the buffer: names of 1 to 24 bytes, 63 to 65, and 255
    (NAME_MAX), each under the one before; a path of exactly 4095 bytes (the longest PATH_MAX
    allows: its top names are in those first 8 bytes), opened absolute and relative."""
    lengths = [*range(1, 25), 63, 64, 65, 255]
    every = tmp_path.joinpath(*(chr(ord("a") + n % 26) * n for n in lengths))
    every.mkdir(parents=True)
    (every / "f").write_text("")
    longest = file_of_length(tmp_path / "l", 4095)
    results = run_and_check([
        resolve(None, every / "f"),
        ["chdir", str(every)],
        resolve(None, "f"),
        resolve(None, longest),
        ["chdir", str(longest.parent)],
        resolve(None, longest.name),
    ])
    assert results[0][1] == str(every / "f") and len(os.fsencode(results[3][1])) == 4095


def test_a_full_path_longer_than_path_max_is_none_and_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The kernel cannot say it either (readlink fails with ENAMETOOLONG): None, never a part."""
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    names = []
    for _ in range(21):
        name = "z" * 200
        os.mkdir(name, dir_fd=fd)
        inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd, names = inner, [*names, name]
    os.close(fd)
    ops = [["chdir", str(tmp_path)], *(["chdir", n] for n in names), resolve(None, "f", O_CREAT | O_WRONLY)]
    with caplog.at_level(logging.INFO, logger="opentrace"):
        results, events = traced(ops)
    ret, link, _ = results[-1]
    assert ret >= 0 and link is None
    (ev,) = [e for e in events if e.path == "f"]
    assert ev.fd == ret and ev.full_path is None and ev.full_path_bytes is None
    assert any("full_path is None for 1 events: longer than PATH_MAX" in r.getMessage() for r in caplog.records)


def test_non_utf8_names(tmp_path: Path) -> None:
    odd = os.fsencode(tmp_path) + b"/caf\xe9-\xff\xfe"
    os.mkdir(odd)
    open(odd + b"/\x80f", "w").close()
    run_and_check([
        resolve(None, os.fsdecode(odd + b"/\x80f")),
        ["chdir", os.fsdecode(odd)],
        resolve(None, os.fsdecode(b"\x80f")),
        resolve(None, os.fsdecode(b"\x81nope")),
    ])


def test_a_deleted_file_reads_as_proc_shows_it(tmp_path: Path) -> None:
    """O_TMPFILE: a file with no name; /proc/self/fd says "<dir>/#<inode> (deleted)"."""
    results = run_and_check([resolve(None, tmp_path, os.O_TMPFILE | O_WRONLY)])
    assert results[0][1].endswith(" (deleted)")


def test_a_pipe_opened_through_proc_has_no_full_path() -> None:
    """/proc/self/fd/0 of a pipe opens the pipe: /proc shows "pipe:[inode]", which names no file."""
    results, events = traced([resolve(None, "/proc/self/fd/0")])
    ret, link, _ = results[0]
    assert ret >= 0 and link.startswith("pipe:[")
    (ev,) = [e for e in events if e.path == "/proc/self/fd/0"]
    assert ev.full_path is None


def test_full_path_is_none_unless_asked_for(tree: Path) -> None:
    child = Child([resolve(None, tree / "link" / "sub" / "f")])
    with opentrace.watch(pid=child.pid) as w:
        child.go()
        (ev,) = [e for e in settle(w) if e.path.endswith("/f")]
    assert ev.full_path is None and ev.full_path_bytes is None and ev.to_dict()["full_path"] is None


def test_cli_full_path_column_and_json(tree: Path) -> None:
    child = Child([["chdir", str(tree / "other")], resolve(None, "../link/sub/f"), resolve(None, "nope")])
    cli = subprocess.Popen([sys.executable, "-m", "opentrace", "-F", "-e", "-p", str(child.pid)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    json_cli = subprocess.Popen([sys.executable, "-m", "opentrace", "-F", "--json", "-p", str(child.pid)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for proc in (cli, json_cli):
        assert proc.stderr is not None and proc.stderr.readline().startswith("opentrace: tracing")
    child.go()
    out = [proc.communicate(timeout=10)[0] for proc in (cli.send_signal(2) or cli, json_cli.send_signal(2) or json_cli)]
    lines = out[0].splitlines()
    assert lines[0].split()[-2:] == ["DFD", "PATH"]
    assert any(line.endswith(f" - {tree}/real/sub/f") for line in lines), lines
    assert any(line.endswith(f" - {tree}/other/nope") for line in lines), lines
    import json

    events = [json.loads(line) for line in out[1].splitlines()]
    assert {e["path"]: e["full_path"] for e in events if e["path"] in ("../link/sub/f", "nope")} == {
        "../link/sub/f": f"{tree}/real/sub/f", "nope": f"{tree}/other/nope"}


def _btf_without(tmp_path: Path, member: bytes) -> Path:
    """A copy of this kernel's BTF in which struct member ``member`` is called something else."""
    data = Path("/sys/kernel/btf/vmlinux").read_bytes()
    needle = b"\0" + member + b"\0"
    assert data.count(needle) == 1
    copy = tmp_path / "vmlinux"
    copy.write_bytes(data.replace(needle, b"\0" + member[:-1] + b"Q\0"))
    return copy


def test_a_kernel_without_a_member_the_walk_needs(tmp_path: Path) -> None:
    """full_path=True is a clear error naming what is missing; everything else works as before."""
    env = dict(os.environ, OPENTRACE_BTF=str(_btf_without(tmp_path, b"d_parent")))
    code = (
        "import opentrace\n"
        "with opentrace.watch() as w: print('plain ok')\n"
        "try:\n"
        "    opentrace.watch(full_path=True)\n"
        "except opentrace.OpentraceError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    plain, error = done.stdout.splitlines()
    assert plain == "plain ok"
    assert error.startswith("full paths cannot be resolved on this kernel:") and "d_parent" in error, error


def test_a_kernel_without_btf_is_a_clear_error(tmp_path: Path) -> None:
    env = dict(os.environ, OPENTRACE_BTF=str(tmp_path / "none"))
    done = subprocess.run([sys.executable, "-m", "opentrace", "-F", "-d", "0.1"], capture_output=True, text=True,
                          env=env, timeout=30)
    assert done.returncode == 1
    assert done.stderr.startswith("opentrace: cannot read this kernel's struct layouts from its BTF"), done.stderr
    assert "CONFIG_DEBUG_INFO_BTF" in done.stderr and done.stderr.count("\n") == 1
