"""File identity (`inode`, `dev`, `mnt_id`) of every successful open, compared with what the
opening process itself gets from the kernel for its fd: `os.fstat` and `/proc/self/fdinfo`'s
`mnt_id`. On the root filesystem, a tmpfs, a bind mount (another mount of the same files), and
an overlayfs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import opentrace

pytestmark = pytest.mark.root

# Opens each path given, and reports what the kernel says of its fd, before closing it.
CHILD = r"""
import json, os, sys
out = []
for path in sys.argv[2:]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        out.append({"path": path, "errno": e.errno})
        continue
    st = os.fstat(fd)
    with open(f"/proc/self/fdinfo/{fd}") as info:
        mnt_id = next(int(l.split()[1]) for l in info if l.startswith("mnt_id:"))
    out.append({"path": path, "fd": fd, "ino": st.st_ino, "dev": st.st_dev, "mnt_id": mnt_id})
    os.close(fd)
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
"""


def opened(tmp_path: Path, paths: list[Path]) -> list[tuple[dict[str, int], opentrace.OpenEvent]]:
    """Each path's report from the child, with the watcher's event of that open."""
    report = tmp_path / "report.json"
    with opentrace.run([sys.executable, "-c", CHILD, str(report), *map(str, paths)]) as w:
        events = [e for e in w if e.path in {str(p) for p in paths}]
        assert w.wait(10) == 0
    reports = json.loads(report.read_text())
    assert [e.path for e in events] == [r["path"] for r in reports]
    return list(zip(reports, events, strict=True))


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "tmpfs"
    where.mkdir()
    mount("-t", "tmpfs", "opentrace-test", str(where))
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def check(pairs: list[tuple[dict[str, int], opentrace.OpenEvent]]) -> None:
    for report, ev in pairs:
        assert ev.fd == report["fd"]
        assert (ev.inode, ev.dev, ev.mnt_id) == (report["ino"], report["dev"], report["mnt_id"]), report["path"]
        assert (ev.to_dict()["inode"], ev.to_dict()["dev"], ev.to_dict()["mnt_id"]) == (ev.inode, ev.dev, ev.mnt_id)


def test_root_filesystem_and_tmpfs(tmp_path: Path, tmpfs: Path, struct_reads: None) -> None:
    on_root = tmp_path / "file"
    on_root.write_text("x")
    on_tmpfs = tmpfs / "file"
    on_tmpfs.write_text("x")
    pairs = opened(tmp_path, [on_root, on_tmpfs, Path("/etc/hostname")])
    check(pairs)
    # Different filesystems: different devices and mounts.
    assert pairs[0][1].dev != pairs[1][1].dev and pairs[0][1].mnt_id != pairs[1][1].mnt_id


def test_a_bind_mount_is_the_same_file_through_another_mount(tmp_path: Path, tmpfs: Path,
                                                            struct_reads: None) -> None:
    (tmpfs / "dir").mkdir()
    (tmpfs / "dir" / "file").write_text("x")
    bound = tmp_path / "bound"
    bound.mkdir()
    mount("--bind", str(tmpfs / "dir"), str(bound))
    try:
        (direct, a), (through_bind, b) = opened(tmp_path, [tmpfs / "dir" / "file", bound / "file"])
    finally:
        subprocess.run(["umount", "-l", str(bound)], check=False)
    check([(direct, a), (through_bind, b)])
    assert (a.inode, a.dev) == (b.inode, b.dev) and a.mnt_id != b.mnt_id


def test_overlayfs(tmp_path: Path, tmpfs: Path) -> None:
    for name in ("lower", "upper", "work", "merged"):
        (tmpfs / name).mkdir()
    (tmpfs / "lower" / "below").write_text("x")
    (tmpfs / "upper" / "above").write_text("x")
    merged = tmpfs / "merged"
    try:
        mount("-t", "overlay", "overlay", "-o",
              f"lowerdir={tmpfs}/lower,upperdir={tmpfs}/upper,workdir={tmpfs}/work", str(merged))
    except subprocess.CalledProcessError as e:
        pytest.skip(f"overlayfs cannot be mounted here: {e.stderr.decode().strip()}")
    try:
        check(opened(tmp_path, [merged / "below", merged / "above"]))
    finally:
        subprocess.run(["umount", "-l", str(merged)], check=False)


def test_failed_opens_have_no_identity(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    missing = tmp_path / "missing"
    with opentrace.run([sys.executable, "-c", CHILD, str(report), str(missing)]) as w:
        [ev] = [e for e in w if e.path == str(missing)]
    assert ev.errno == 2 and (ev.inode, ev.dev, ev.mnt_id) == (None, None, None)
    assert opentrace.OpenEvent(**{k: v for k, v in ev.to_dict().items() if k not in ("errno", "container_id")}) == ev


def test_built_by_hand_and_pickled() -> None:
    import pickle

    ev = opentrace.OpenEvent(path="/x", ret=3, inode=12, dev=os.makedev(8, 1), mnt_id=30)
    assert (ev.inode, ev.dev, ev.mnt_id) == (12, os.makedev(8, 1), 30)
    assert pickle.loads(pickle.dumps(ev)) == ev
    with pytest.raises(ValueError, match="device number"):
        opentrace.OpenEvent(dev=1 << 60)
