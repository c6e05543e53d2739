"""Test helper, run as a child process: performs the syscalls a test asks for, once told to.

    python opener.py '<json list of operations>' [--in-thread]

It prints ``{"pid": ..., "tid": ...}`` (``tid``: the thread that will do the work), waits for a
line on stdin, runs the operations in order and prints their results as a JSON list: the raw
syscall return value, or ``-errno``. Operations:

    ["open", path, flags, mode]              open(2)
    ["creat", path, mode]                    creat(2)
    ["openat", dirpath|null, path, flags, mode]  openat(2); dirpath is opened O_DIRECTORY as dfd
    ["openat2", path, flags, mode, resolve]  openat2(2) with AT_FDCWD
    ["unfaulted", path]                      openat(2) of a path that sits in a file-backed page
                                             mapped just before, never touched from user space
    ["bad_pointer"]                          openat(2) with an unmapped address as the path
    ["unmapped_during", fifo, "openat"|"openat2"]
                                             a thread opens the FIFO for reading through a path (and
                                             open_how) in a private page; while it blocks, the page
                                             is unmapped and a writer opens the FIFO: the open
                                             succeeds, but its arguments are gone by the syscall's exit
    ["loop", path, n]                        n x (openat + close); returns n
    ["sleep", seconds]                       time.sleep; returns 0
    ["setuid", uid]                          drop to uid (real, effective, saved)
    ["rename", comm]                         prctl(PR_SET_NAME)
    ["rounds", path, k]                      rounds of k x (openat + close), each followed by
                                             printing "checkpoint" and waiting for a line on
                                             stdin; "stop" ends them; returns the opens done

For full paths, what the process itself sees (/proc/self, opened at start, so that it works after a
chroot too):
    ["resolve", dir, path, flags, mode]      openat(2) from dir (null: AT_FDCWD; a path: opened
                                             O_DIRECTORY first; {"kept": name}: a kept fd);
                                             returns [ret, readlink of the new fd or null,
                                             readlink of the starting directory]
    ["keep", name, path]                     keep an O_DIRECTORY fd of path under name
    ["chdir", path] / ["chroot", path]       (chroot also changes into the new root)
    ["mv", old, new]                         rename(2)
    ["unshare_mount"]                        a private mount namespace
    ["mount", source, target, fstype]        mount(2) (fstype null: a bind mount)

Paths are str; non-UTF-8 bytes travel as surrogate escapes (os.fsencode undoes them).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import tempfile
import threading
import time

from procfs import asleep_in_syscall

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]

SYS_OPEN, SYS_CREAT, SYS_OPENAT, SYS_OPENAT2 = 2, 85, 257, 437  # x86_64
AT_FDCWD = -100
PR_SET_NAME = 15


class OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def result(ret: int) -> int:
    if ret < 0:
        return -ctypes.get_errno()
    os.close(ret)
    return ret


def call(*args: object) -> int:
    ctypes.set_errno(0)
    return result(libc.syscall(*args))


def unfaulted(path: bytes) -> int:
    fd, name = tempfile.mkstemp()
    try:
        os.write(fd, path + b"\0")
        addr = libc.mmap(None, 4096, 1, 2, fd, 0)  # PROT_READ, MAP_PRIVATE: no page table entry yet
        return call(SYS_OPENAT, AT_FDCWD, ctypes.c_void_p(addr), os.O_RDONLY, 0)
    finally:
        os.close(fd)
        os.unlink(name)


def unmapped_during(fifo: bytes, syscall: str) -> int:
    os.mkfifo(fifo)
    page = libc.mmap(None, 4096, 3, 0x22, -1, 0)  # PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS
    ctypes.memmove(page, fifo + b"\0", len(fifo) + 1)
    how_at = page + 2048
    ctypes.memmove(how_at, bytes(OpenHow(os.O_RDONLY, 0, 0)), ctypes.sizeof(OpenHow))
    result: list[int] = []

    def reader() -> None:
        if syscall == "openat":
            result.append(call(SYS_OPENAT, AT_FDCWD, ctypes.c_void_p(page), os.O_RDONLY, 0))
        else:
            result.append(call(SYS_OPENAT2, AT_FDCWD, ctypes.c_void_p(page), ctypes.c_void_p(how_at),
                               ctypes.sizeof(OpenHow)))

    thread = threading.Thread(target=reader)
    thread.start()
    # Wait until the reader sits in the open (its arguments already copied by the kernel).
    nr = SYS_OPENAT if syscall == "openat" else SYS_OPENAT2
    deadline = time.monotonic() + 5
    while asleep_in_syscall(thread.native_id) != nr and time.monotonic() < deadline:
        time.sleep(0.01)
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.munmap(ctypes.c_void_p(page), 4096)
    writer = os.open(fifo, os.O_WRONLY)
    thread.join()
    os.close(writer)
    return result[0]


PROC_SELF = os.open("/proc/self", os.O_RDONLY | os.O_DIRECTORY)
KEPT: dict[str, int] = {}
MS_BIND, MS_REC, MS_PRIVATE, CLONE_NEWNS = 0x1000, 0x4000, 1 << 18, 0x20000


def check(rc: int, what: str) -> None:
    if rc != 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")


def link(name: str) -> str | None:
    """readlink of /proc/self/NAME; None where the kernel cannot say (ENAMETOOLONG)."""
    try:
        return os.readlink(name, dir_fd=PROC_SELF)
    except OSError:
        return None


def resolve(where: object, path: str, flags: int, mode: int) -> list[object]:
    if where is None:
        dfd, start = AT_FDCWD, link("cwd")
    else:
        dfd = KEPT[where["kept"]] if isinstance(where, dict) else os.open(str(where), os.O_RDONLY | os.O_DIRECTORY)
        start = link(f"fd/{dfd}")
    try:
        ctypes.set_errno(0)
        ret = libc.syscall(SYS_OPENAT, dfd, os.fsencode(path), flags, mode)
        if ret < 0:
            return [-ctypes.get_errno(), None, start]
        opened = link(f"fd/{ret}")
        os.close(ret)
        return [ret, opened, start]
    finally:
        if dfd not in (AT_FDCWD, *KEPT.values()):
            os.close(dfd)


def run(op: list) -> object:
    kind, *args = op
    p = os.fsencode
    if kind == "resolve":
        return resolve(*args)
    if kind == "keep":
        KEPT[args[0]] = os.open(args[1], os.O_RDONLY | os.O_DIRECTORY)
        return KEPT[args[0]]
    if kind == "chdir":
        os.chdir(args[0])
        return 0
    if kind == "chroot":
        os.chroot(args[0])
        os.chdir("/")
        return 0
    if kind == "mv":
        os.rename(args[0], args[1])
        return 0
    if kind == "unshare_mount":
        check(libc.unshare(CLONE_NEWNS), "unshare")
        check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
        return 0
    if kind == "mount":
        source, target, fstype = args
        flags = MS_BIND if fstype is None else 0
        check(libc.mount(p(source), p(target), None if fstype is None else fstype.encode(), flags, None), "mount")
        return 0
    if kind == "open":
        return call(SYS_OPEN, p(args[0]), args[1], args[2])
    if kind == "creat":
        return call(SYS_CREAT, p(args[0]), args[1])
    if kind == "openat":
        dirpath, path, flags, mode = args
        dfd = AT_FDCWD if dirpath is None else os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return call(SYS_OPENAT, dfd, p(path), flags, mode)
        finally:
            if dfd != AT_FDCWD:
                os.close(dfd)
    if kind == "openat2":
        how = OpenHow(args[1], args[2], args[3])
        return call(SYS_OPENAT2, AT_FDCWD, p(args[0]), ctypes.byref(how), ctypes.sizeof(how))
    if kind == "unfaulted":
        return unfaulted(p(args[0]))
    if kind == "unmapped_during":
        return unmapped_during(p(args[0]), args[1])
    if kind == "bad_pointer":
        return call(SYS_OPENAT, AT_FDCWD, ctypes.c_void_p(8), os.O_RDONLY, 0)
    if kind == "loop":
        path, n = p(args[0]), args[1]
        for _ in range(n):
            os.close(os.open(path, os.O_RDONLY))
        return n
    if kind == "sleep":
        time.sleep(args[0])
        return 0
    if kind == "setuid":
        os.setresuid(args[0], args[0], args[0])
        return 0
    if kind == "rename":
        return libc.prctl(PR_SET_NAME, args[0].encode(), 0, 0, 0)
    if kind == "rounds":
        path, k, done = p(args[0]), args[1], 0
        while True:
            for _ in range(k):
                os.close(os.open(path, os.O_RDONLY))
            done += k
            print("checkpoint", flush=True)
            if sys.stdin.readline().strip() == "stop":
                return done
    raise ValueError(f"unknown operation {kind!r}")


def main() -> None:
    ops = json.loads(sys.argv[1])
    results: list[object] = []
    go = threading.Event()

    def work() -> None:
        go.wait()
        results.extend(run(op) for op in ops)

    if "--in-thread" in sys.argv:
        worker = threading.Thread(target=work)
        worker.start()
        while worker.native_id is None:
            pass
        tid = worker.native_id
    else:
        worker, tid = None, threading.get_native_id()
    print(json.dumps({"pid": os.getpid(), "tid": tid}), flush=True)
    sys.stdin.readline()
    go.set()
    if worker is None:
        work()
    else:
        worker.join()
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
