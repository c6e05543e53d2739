"""``run()`` and ``CommandWatcher``: a command traced with everything it starts, from its first
instruction on."""

from __future__ import annotations

import atexit
import os
from collections.abc import Mapping, Sequence

from . import _opentrace
from ._opentrace import OpenEvent
from ._watch import DEFAULT_LATENCY, DEFAULT_RING_SIZE, SYSCALLS, Watcher, _checked, _load

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["CommandWatcher", "run"]

# Commands whose watcher went away before they were waited for: reaped when they end, so that
# none stays a zombie.
_unreaped: set[int] = set()


def _reap_finished() -> None:
    for pid in list(_unreaped):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _unreaped.discard(pid)


atexit.register(_reap_finished)


def _argv(args: object) -> list[bytes]:
    if isinstance(args, (str, bytes, os.PathLike)):
        raise TypeError(f"args must be a sequence of arguments such as ['make', '-j2'], not {type(args).__name__}")
    if not isinstance(args, Sequence):
        raise TypeError(f"args must be a sequence of str, not {type(args).__name__}")
    argv = []
    for arg in args:
        if not isinstance(arg, (str, bytes, os.PathLike)):
            raise TypeError(f"args must contain str, bytes or path-like arguments, not {type(arg).__name__}")
        argv.append(os.fsencode(arg))
    if not argv:
        raise ValueError("args is empty: it needs at least the program to run")
    if not argv[0]:
        raise ValueError("args[0], the program to run, is empty ('')")
    return argv


def _environment(env: Mapping[str, str] | None) -> list[bytes]:
    items = os.environb.items() if env is None else ((os.fsencode(k), os.fsencode(v)) for k, v in env.items())
    out = []
    for key, value in items:
        if not key or b"=" in key:
            raise ValueError(f"illegal environment variable name {key!r}")
        out.append(key + b"=" + value)
    return out


def _candidates(program: bytes, env: Mapping[str, str] | None) -> list[bytes]:
    """Where the program may be, in the order execvp tries them (the PATH of ``env`` if it has one)."""
    if b"/" in program:
        return [program]
    path = (env or {}).get("PATH") if env is not None else os.environ.get("PATH")
    dirs = os.fsencode(path if path is not None else os.defpath).split(b":")
    return [os.path.join(d or b".", program) for d in dirs]


def run(
    args: Sequence[str | bytes | os.PathLike[str]],
    *,
    cwd: str | bytes | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    failed: bool = False,
    syscalls: Iterable[str] = SYSCALLS,
    full_path: bool = False,
    file_id: bool = True,
    comm: str | None = None,
    uid: int | None = None,
    ring_size: int = DEFAULT_RING_SIZE,
    ring_shards: int | None = None,
    latency: float = DEFAULT_LATENCY,
    paths: Iterable[str | bytes | os.PathLike[str] | os.PathLike[bytes]] | None = None,
) -> CommandWatcher:
    """Start the command ``args`` (as ``subprocess`` would, with ``cwd`` and ``env``) and watch it
    and every process it starts, from its first instruction on: the programs are attached before
    it executes. The other options are ``watch()``'s. Iteration ends once the command and all its
    descendants have exited and their events are delivered; closing the watcher early stops
    tracing but does not kill the command. An ``OSError`` (``FileNotFoundError``, ...) if it
    cannot be started."""
    argv = _argv(args)
    envp = _environment(env)
    where = None if cwd is None else os.fsencode(cwd)
    config = _checked(pid=None, descendants=False, tid=None, uid=uid, comm=comm, failed=failed,
                      syscalls=syscalls, ring_size=ring_size, latency=latency, full_path=full_path,
                      file_id=file_id, ring_shards=ring_shards, paths=paths)
    _reap_finished()
    suspended = _opentrace.Suspended(_candidates(argv[0], env), argv, envp, where)
    try:
        session = _load({**config, "pid": suspended.pid, "descendants": True})
    except BaseException:
        suspended.abandon()
        raise
    watcher = CommandWatcher(session, suspended.pid)
    try:
        suspended.release(os.fsdecode(argv[0]), None if where is None else os.fsdecode(where))
    except BaseException:
        watcher.close()
        watcher._returncode = 127
        raise
    return watcher


class CommandWatcher(Watcher[OpenEvent]):
    """The watcher of a command started by ``run()``: also its ``pid``, ``returncode`` and
    ``wait()``, as ``subprocess.Popen`` has them."""

    __slots__ = ("_pid", "_pidfd", "_returncode")

    def __init__(self, session: _opentrace.Session, pid: int) -> None:
        super().__init__(session)
        self._pid = pid
        self._returncode: int | None = None
        self._pidfd: int | None = None
        import weakref

        weakref.finalize(self, _unreaped.add, pid)

    @property
    def pid(self) -> int:
        """The command's process id."""
        return self._pid

    @property
    def returncode(self) -> int | None:
        """None while the command runs; then its exit status, or -N if signal N killed it."""
        if self._returncode is None:
            self._reap(os.WNOHANG)
        return self._returncode

    def wait(self, timeout: float | None = None) -> int:
        """Waits for the command to end (at most ``timeout`` seconds: then
        ``subprocess.TimeoutExpired``) and returns its ``returncode``."""
        if self._returncode is None and timeout is not None:
            import select

            if self._pidfd is None:
                self._pidfd = os.pidfd_open(self._pid)
            poller = select.poll()
            poller.register(self._pidfd, select.POLLIN)
            if not poller.poll(max(0.0, timeout) * 1000):
                import subprocess

                raise subprocess.TimeoutExpired(str(self._pid), timeout)
        if self._returncode is None:
            self._reap(0)
        assert self._returncode is not None
        return self._returncode

    def _reap(self, options: int) -> None:
        try:
            pid, status = os.waitpid(self._pid, options)
        except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored, os.wait()): as Popen, status 0
            self._returncode = 0
            return
        if pid:
            self._returncode = os.waitstatus_to_exitcode(status)
            _unreaped.discard(self._pid)
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None

    def __repr__(self) -> str:
        return f"<opentrace.CommandWatcher pid={self._pid} returncode={self.returncode} lost={self.lost}>"
