"""``watch()`` and ``Watcher``: argument checking, iteration, asyncio, lifetime."""

from __future__ import annotations

import atexit
import os
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator

from . import _opentrace

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms)
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any, TypeVar
    from typing import Generic as _Generic

    # PEP 696 defaults are in typing from 3.13 only; typing_extensions is read by the type checker
    # (mypy's own dependency, and in its bundled stubs), never imported at run time.
    from typing_extensions import TypeVar as _TypeVarWithDefault

    from ._opentrace import OpenEvent, TracepointEvent, _RawColumn

    _Self = TypeVar("_Self", bound="Watcher[Any]")
    # What a watcher yields: OpenEvent (watch(), run()) or TracepointEvent (watch_tracepoints()).
    # The default keeps a bare ``Watcher`` annotation (from before Watcher was generic) meaning
    # ``Watcher[OpenEvent]`` under ``mypy --strict``.
    _E = _TypeVarWithDefault("_E", "OpenEvent", "TracepointEvent", default="OpenEvent")
else:
    _E = None

    class _Generic:
        """``Watcher[OpenEvent]`` at run time, without importing typing."""

        __slots__ = ()

        def __class_getitem__(cls, item: object) -> type:
            return cls

__all__ = ["SYSCALLS", "Watcher", "watch"]

# The names, bounds and defaults every check and the CLI take, from the compiled half where the
# kernel side shares them.
SYSCALLS = frozenset(_opentrace.SYSCALLS)
DEFAULT_RING_SIZE = _opentrace.DEFAULT_RING_SIZE
# The smallest record a ring holds is larger: the reads that empty a ring at the end of a trace
# take at most its size over this many events (a storm that goes on never lets it be empty).
_SMALLEST_RECORD = 32
MAX_RING_SIZE = _opentrace.MAX_RING_SIZE
MAX_RING_SHARDS = _opentrace.MAX_RING_SHARDS
DEFAULT_LATENCY = _opentrace.DEFAULT_LATENCY
MAX_LATENCY = _opentrace.MAX_LATENCY
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_PID_MAX = _opentrace.PID_MAX
_COMM_MAX = _opentrace.COMM_MAX

_live: weakref.WeakSet[Watcher[Any]] = weakref.WeakSet()


def _last_reads(ring_size: int | None) -> int:
    """How many events the reads that empty a ring of ``ring_size`` bytes (None: the default) at
    the end of a trace may take at most: what it can hold."""
    return (ring_size or DEFAULT_RING_SIZE) // _SMALLEST_RECORD


def _show(value: object) -> str:
    """``repr(value)`` for a message, kept short (and safe for ints too long to print)."""
    if isinstance(value, int) and abs(value).bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {_show(value)}")
    return value


# More names than this cannot be a list of the five sources (and keeps an endless iterator finite).
_MAX_SYSCALL_NAMES = 64


def _syscalls(value: object) -> list[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            f"syscalls must be an iterable of names such as ['openat'], not {type(value).__name__}"
        )
    names: list[str] = []
    for name in value:
        if not isinstance(name, str):
            raise TypeError(f"syscalls must contain str names, not {type(name).__name__}")
        if name not in SYSCALLS:
            raise ValueError(f"unknown syscall {_show(name)}; choose from {', '.join(sorted(SYSCALLS))}")
        names.append(name)
        if len(names) > _MAX_SYSCALL_NAMES:
            raise ValueError(f"syscalls names more than {_MAX_SYSCALL_NAMES} items; name each syscall once")
    if not names:
        raise ValueError("syscalls must name at least one of " + ", ".join(sorted(SYSCALLS)))
    return sorted(set(names))


def _existing_pid(pid: int) -> int:
    """A pid watcher follows one process: it must exist (checked again, race-free, when loading)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise ValueError(f"pid: there is no process {pid} (it has exited, or never was)") from None
    except PermissionError:
        pass  # it exists, and belongs to someone else
    return pid


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def _comm(value: object) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"comm must be a str, not {type(value).__name__}")
    try:
        raw = os.fsencode(value)
    except UnicodeEncodeError:
        raise ValueError(f"comm must be encodable as a file name (no lone surrogates), not {_show(value)}") from None
    if not raw or b"\0" in raw or len(raw) > _COMM_MAX:
        raise ValueError(
            f"comm must be 1 to {_COMM_MAX} bytes (the kernel's command name length) "
            f"without NUL, not {_show(value)}"
        )
    return raw


def _ring_size(value: object, shown: str | None = None) -> int:
    """A valid ring size; the error says the range (``shown``: the value as the caller wrote it)."""
    if isinstance(value, int) and not isinstance(value, bool):
        # A power of two from the page size on is a multiple of it, as the kernel wants.
        if not _PAGE_SIZE <= value <= MAX_RING_SIZE or value & (value - 1):
            raise ValueError(
                f"ring_size must be a power of two between {_bytes(_PAGE_SIZE)} and {_bytes(MAX_RING_SIZE)} "
                f"({_PAGE_SIZE} and {MAX_RING_SIZE} bytes), not {shown or _show(value)}"
            )
    return _int("ring_size", value, _PAGE_SIZE, MAX_RING_SIZE)


def _ring_shards(value: object, ring_size: int) -> int:
    """A valid shard count for ``ring_size`` bytes in all: each shard gets at least a page."""
    shards = _int("ring_shards", value, 1, MAX_RING_SHARDS)
    if ring_size // shards < _PAGE_SIZE:
        raise ValueError(
            f"ring_shards={shards} would leave less than a page ({_PAGE_SIZE} bytes) to each shard of "
            f"ring_size={ring_size}: at most {max(1, ring_size // _PAGE_SIZE)} fit, or give a larger ring_size"
        )
    return shards


def _bytes(n: int) -> str:
    """4096 as "4K", 1 << 30 as "1G" (n a power of two of 1K or more)."""
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift:
            return f"{n >> shift}{unit}"
    return str(n)


def _seconds(name: str, value: object, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not 0 <= value <= high:  # also rejects NaN
        raise ValueError(f"{name} must be between 0 and {high:g} seconds, not {_show(value)}")
    return float(value)


def _latency_ns(value: object) -> int:
    return round(_seconds("latency", value, MAX_LATENCY) * 1e9)


def _timeout(value: object) -> float | None:
    """``poll()``'s timeout: None (wait for events), or seconds >= 0 (inf waits like None)."""
    if value is None or value == float("inf"):
        return None
    return _seconds("timeout", value, float("inf"))


def _paths(value: object) -> list[bytes]:
    """``paths``: a list of entries, each str, bytes or a path object (checked further in Rust)."""
    if isinstance(value, (str, bytes, os.PathLike)):
        raise TypeError(f"paths must be a list of paths, such as [{value!r}], not one path")
    if not isinstance(value, Iterable):
        raise TypeError(f"paths must be a list of paths, not {type(value).__name__}")
    entries = []
    for entry in value:
        if not isinstance(entry, (str, bytes, os.PathLike)):
            raise TypeError(f"each of paths must be a str, bytes or path object, not {type(entry).__name__}")
        entries.append(os.fsencode(entry))
    return entries


def _is_own_thread(tid: int) -> bool:
    return os.path.exists(f"/proc/self/task/{tid}")


def watch(
    *,
    pid: int | None = None,
    descendants: bool = False,
    tid: int | None = None,
    uid: int | None = None,
    comm: str | None = None,
    failed: bool = False,
    syscalls: Iterable[str] = SYSCALLS,
    ring_size: int = DEFAULT_RING_SIZE,
    ring_shards: int | None = None,
    latency: float = DEFAULT_LATENCY,
    full_path: bool = False,
    file_id: bool = True,
    cgroup: str | None = None,
    container: str | None = None,
    paths: Iterable[str | bytes | os.PathLike[str] | os.PathLike[bytes]] | None = None,
) -> Watcher[OpenEvent]:
    """Load and attach the tracepoint programs; returns a ``Watcher`` yielding ``OpenEvent``.

    Filters (all optional) select events in the kernel: ``pid`` (process; with ``descendants``
    also every process descended from it, followed as they fork; a pid watcher ends when they have
    all exited), ``tid`` (thread),
    ``uid`` (real user id), ``comm`` (command name contains), ``failed`` (only failed opens),
    ``syscalls`` (subset of open/openat/openat2/creat/io_uring; io_uring: open requests submitted
    through an io_uring). ``ring_size`` is the ring buffers' size
    in bytes, in all; ``ring_shards`` how many rings it is split into, each written by a group of
    CPUs (default: one per two CPUs, at most 64; one on two CPUs or fewer), whose events are merged
    in ``timestamp_ns`` order within the ``latency`` window. ``latency`` bounds, in seconds, how
    long a busy stream may hold an event back to
    deliver it in a batch (an event after a quiet spell arrives at once). ``full_path`` resolves
    each event's ``full_path``: the absolute path of what was opened, as the process sees it.
    ``file_id`` reads each successful open's ``inode``, ``dev`` and ``mnt_id`` (default; False
    saves the exit program a few reads of the kernel's structures, and leaves them None).
    ``cgroup`` (a cgroup v2 path, under the cgroup2 mount or with the mount point in front) keeps
    only the tasks in that cgroup or below it; ``container`` (a name, an id or the start of one, as
    docker, podman or containerd know it) keeps only that container's, by its cgroup.
    ``paths`` (up to 64 entries) keeps only the opens whose full path matches one, decided in the
    kernel: an entry ending in ``/`` matches the directory and everything under it, ``*`` in front
    makes a suffix (``"*.so"``), any other entry is one exact path; relative entries are taken from
    the current directory. The path matched is the one ``full_path`` gives; the events carry it
    only with ``full_path=True`` (a file found under a directory entry by its ancestors in the
    kernel has its full path walked only then).
    """
    config = _checked(pid=pid, descendants=descendants, tid=tid, uid=uid, comm=comm, failed=failed,
                      syscalls=syscalls, ring_size=ring_size, latency=latency, full_path=full_path,
                      file_id=file_id, cgroup=cgroup,
                      container=container, paths=paths,
                      ring_shards=ring_shards)
    return Watcher(_load(config))


def _checked(
    *,
    pid: int | None,
    descendants: bool,
    tid: int | None,
    uid: int | None,
    comm: str | None,
    failed: bool,
    syscalls: Iterable[str],
    ring_size: int,
    latency: float,
    full_path: bool,
    file_id: bool = True,
    cgroup: str | None = None,
    container: str | None = None,
    ring_shards: int | None = None,
    paths: Iterable[str | bytes | os.PathLike[str] | os.PathLike[bytes]] | None = None,
) -> dict[str, Any]:
    """``watch()``'s arguments checked (all of them, before anything is loaded), as ``Session`` takes them."""
    config: dict[str, Any] = {
        "syscalls": _syscalls(syscalls),
        "ring_size": _ring_size(ring_size),
        "latency_ns": _latency_ns(latency),
    }
    if ring_shards is not None:
        config["ring_shards"] = _ring_shards(ring_shards, config["ring_size"])
    if pid is not None:
        config["pid"] = _existing_pid(_int("pid", pid, 1, _PID_MAX))
    config["descendants"] = _bool("descendants", descendants)
    if descendants and pid is None:
        raise ValueError("descendants=True needs pid: the process whose descendants to follow")
    if tid is not None:
        config["tid"] = _int("tid", tid, 1, _PID_MAX)
    if uid is not None:
        config["uid"] = _int("uid", uid, 0, 2**32 - 2)
    if comm is not None:
        config["comm"] = _comm(comm)
    config["failed"] = _bool("failed", failed)
    config["full_path"] = _bool("full_path", full_path)
    config["file_id"] = _bool("file_id", file_id)
    if cgroup is not None:
        if not isinstance(cgroup, str):
            raise TypeError(f"cgroup must be a str such as '/system.slice/x.scope', not {type(cgroup).__name__}")
        if not cgroup:
            raise ValueError("cgroup must name a cgroup, such as '/system.slice/x.scope' ('/' for all), not ''")
        config["cgroup"] = cgroup  # whether it exists is checked when loading, against the mount
    if container is not None:
        if not isinstance(container, str):
            raise TypeError(f"container must be a str (a name or an id), not {type(container).__name__}")
        if cgroup is not None:
            raise ValueError("give cgroup or container, not both: a container is watched by its cgroup")
        from ._containers import container_cgroup

        config["cgroup"] = container_cgroup(container)
    if paths is not None:
        config["paths"] = _paths(paths)
    me = os.getpid()
    if pid != me and (tid is None or not _is_own_thread(tid)):
        config["exclude_tgid"] = me
    return config


def _load(config: dict[str, Any]) -> _opentrace.Session:
    session = _opentrace.Session(**config)
    from . import _containers

    _containers.start()  # the events' container names, from the runtimes
    skipped = set(config["syscalls"]).difference(session.attached)
    if skipped:
        import logging

        logging.getLogger("opentrace").debug(
            "not traced, this kernel has no tracepoints for: %s", ", ".join(sorted(skipped))
        )
    return session


class Watcher(_Generic[_E]):
    """A live set of attached programs and the stream of their events.

    Iterate it (``for``/``async for``/``next()``), ``poll()`` it, and ``close()`` it (or use it
    as a context manager). Closing from another thread wakes and stops a blocked iteration.
    """

    __slots__ = ("__weakref__", "_session", "_tracepoints")

    def __init__(self, session: _opentrace.Session, tracepoints: bool = False) -> None:
        self._session = session
        self._tracepoints = tracepoints
        _live.add(self)

    def __iter__(self) -> Iterator[_E]:
        return self._session

    def __next__(self) -> _E:
        event: _E = next(self._session)
        return event

    def __aiter__(self) -> AsyncIterator[_E]:
        return self

    async def __anext__(self) -> _E:
        import asyncio

        session = self._session
        while True:
            event: _E | None = session.next_ready()
            if event is not None:
                return event
            if session.finished():
                raise StopAsyncIteration
            pause = session.pause_left()
            if pause > 0:
                # Read a busy stream in batches (see ``latency``), as the blocking iterator does.
                await asyncio.sleep(pause)
                continue
            loop = asyncio.get_running_loop()
            readable = loop.create_future()
            fd = session.fileno()
            loop.add_reader(fd, _set_done, readable)
            try:
                await readable
            finally:
                loop.remove_reader(fd)

    def batches(self) -> Iterator[list[_E]]:
        """The events in lists, as they are read (a few thousand at most each), until the watcher
        ends: the fastest way to take a busy stream (``for batch in w.batches(): for ev in batch``)."""
        session = self._session
        while True:
            batch: list[_E] = session.poll(None)
            if batch:
                yield batch
            elif session.finished():
                return

    def poll(self, timeout: float | None = None) -> list[_E]:
        """All events ready within ``timeout`` seconds (``None``: wait for at least one)."""
        events: list[_E] = self._session.poll(_timeout(timeout))
        return events

    def _poll_into(self, timeout: float | None, into: list[_E]) -> None:
        """``poll()``, its events appended to ``into`` before it returns: a KeyboardInterrupt
        raised as the call returns (the interpreter runs signal handlers there) would drop a
        returned list, and the events in it with it."""
        self._session.poll(_timeout(timeout), into)

    def _read_text(
        self, formatter: _opentrace.Formatter, timeout: float | None, limit: int | None, into: list[tuple[str, int]]
    ) -> None:
        """The CLI's fast path: up to ``limit`` events as formatted text, and how many, appended
        to ``into`` (as ``_poll_into`` does)."""
        if limit is None:
            self._session.read_text(formatter, timeout, into=into)
        else:
            self._session.read_text(formatter, timeout, limit, into)

    def _read_columns(
        self, names: list[str], timeout: float | None, limit: int | None, into: list[tuple[int, list[_RawColumn]]]
    ) -> None:
        """The Parquet writers' fast path: up to ``limit`` open events as the Arrow buffers of
        the fields ``names`` (see ``_opentrace.open_columns``), and how many, appended to
        ``into`` (as ``_poll_into`` does)."""
        if limit is None:
            self._session.read_columns(names, timeout, into=into)
        else:
            self._session.read_columns(names, timeout, limit, into)

    def close(self) -> None:
        """Detach and free everything; idempotent, callable from any thread."""
        self._session.close()

    def _finished(self) -> bool:
        """Whether iteration is over (closed, or a pid watcher whose processes all exited)."""
        return self._session.finished()

    @property
    def closed(self) -> bool:
        return self._session.closed

    @property
    def lost(self) -> int:
        """Events that passed the filters but were not delivered; delivered + lost is every event.

        Counted: records the ring buffer had no room for (the reader fell behind), records the
        decoder refused (logged; none are expected), runs of the programs the kernel skipped
        (a tracepoint hit while another BPF program ran on that CPU), io_uring opens whose result
        never came, and opens whose entry the kernel could not remember for lack of memory. The
        last are counted at syscall entry, before the ``failed`` filter, so with ``failed=True``
        they may include opens that succeeded.
        """
        return self._session.lost

    @property
    def lost_by_shard(self) -> list[int]:
        """Of ``lost``, the events each ring buffer shard had no room for, by shard (CPU ``c``
        writes to shard ``c % ring_shards``): a shard whose CPUs are busier can overflow alone."""
        return self._session.lost_by_shard

    @property
    def ring_shards(self) -> int:
        """How many ring buffers the events are written to (``watch(ring_shards=)``)."""
        return self._session.ring_shards

    @property
    def syscalls(self) -> list[str]:
        """The syscalls actually traced (a tracepoint this kernel lacks is skipped); none for a
        ``watch_tracepoints()`` watcher."""
        return [] if self._tracepoints else sorted(self._session.attached)

    @property
    def tracepoints(self) -> list[str]:
        """The tracepoints a ``watch_tracepoints()`` watcher streams, as attached; none for opens."""
        return sorted(self._session.attached) if self._tracepoints else []

    def fileno(self) -> int:
        """A file descriptor that becomes readable when events may be ready (for selectors)."""
        return self._session.fileno()

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        if self._tracepoints:
            names = self.tracepoints
            shown = ",".join(names[:5]) + (f",... ({len(names)} in all)" if len(names) > 5 else "")
            return f"<opentrace.Watcher {state} tracepoints={shown} lost={self.lost}>"
        return f"<opentrace.Watcher {state} syscalls={','.join(self.syscalls)} lost={self.lost}>"


def _set_done(future: Any) -> None:
    if not future.done():
        future.set_result(None)


def _close_all() -> None:
    """At exit: the kernel's slow part of detaching (tens of ms per tracepoint, one after the
    other) goes to a short-lived child, so that the process ends at once."""
    for watcher in list(_live):
        watcher._session.close_in_background()


def _forget_all_in_child() -> None:
    """In a forked child: the parent's watchers stay the parent's (reading one raises)."""
    for watcher in list(_live):
        watcher._session.forget_after_fork()
    _live.clear()


atexit.register(_close_all)
os.register_at_fork(after_in_child=_forget_all_in_child)
