"""``watch_counts()``: opens counted in the kernel, handed out as a list of ``OpenCount`` per interval.

The exit programs count each open under a key (its file, or for a failed open its path, and
what the counts are grouped by) in a per-CPU map, and send only the first open of each key, which
names it. Counts not grouped by file are made by the exit programs alone (no entry program, no
event: the cheapest way to count), their cgroups named here by id. Every interval the reader sums
the map's counters: the differences are the interval's opens, so the intervals add up to every
open counted. Opens submitted through io_uring are paired with their results in user space, so
they are counted here, under keys made the same way.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import _opentrace
from ._opentrace import OpenEvent
from ._watch import DEFAULT_LATENCY, DEFAULT_RING_SIZE, SYSCALLS, Watcher, _checked, _int, _last_reads, _load, _seconds

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["BY", "CountWatcher", "OpenCount", "watch_counts"]

# What the counts can be grouped by, and the kernel's bit for each (abi::count::BY_*).
BY = {"pid": 1 << 0, "comm": 1 << 1, "cgroup": 1 << 2, "file": 1 << 3}
# By syscall too (the agent's metrics; OpenCount has no field for it): read with ``_by_syscall()``.
_BY_SYSCALL = 1 << 4
DEFAULT_BY = ("cgroup", "comm", "file")
DEFAULT_MAX_KEYS = 65536
_MAX_CGROUPS = 65536  # cgroup names remembered
MAX_KEYS = 1 << 24

# A key's bytes (abi::count::CountKey): cgroup_id, file, dir, pid, dev, errno, syscall, comm.
_KEY = struct.Struct("<QQQIIII16s")


@dataclass(frozen=True)
class _Cgroup:
    cgroup: str
    container_id: str | None


@dataclass(frozen=True)
class OpenCount:
    """The opens of one file (or, for failed opens, path) in one interval, per group.

    ``comm`` and ``pid`` are None unless the counts are grouped by them, ``cgroup`` and
    ``container_id`` unless grouped by cgroup; ``path`` is the full path (None when not grouped by
    file, or when the record naming the file was lost: said in the log); ``inode`` and ``dev`` are
    the file's when it was opened successfully. ``opens`` counts every open, ``failed`` those that
    failed, ``errors`` those by errno name.
    """

    comm: str | None
    pid: int | None
    cgroup: str | None
    container_id: str | None
    path: str | None
    inode: int | None
    dev: int | None
    opens: int
    failed: int
    errors: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """Every field, JSON-serialisable."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _by(value: object) -> int:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(f"by must be an iterable of names such as ('comm', 'file'), not {type(value).__name__}")
    bits = 0
    for name in value:
        if name not in BY:
            raise ValueError(f"by: unknown grouping {name!r}; choose from {', '.join(BY)}")
        bits |= BY[name]
    return bits


# watch()'s filters, which watch_counts() takes too, with watch()'s defaults.
_FILTERS: dict[str, Any] = {
    "pid": None, "descendants": False, "tid": None, "uid": None, "comm": None, "failed": False,
    "syscalls": SYSCALLS, "ring_size": DEFAULT_RING_SIZE, "latency": DEFAULT_LATENCY, "cgroup": None,
    "container": None, "paths": None,
}


def watch_counts(
    interval: float = 1.0, by: Iterable[str] = DEFAULT_BY, *, max_keys: int = DEFAULT_MAX_KEYS, **filters: Any
) -> CountWatcher:
    """Counts opens in the kernel; returns a ``CountWatcher`` that yields, every ``interval``
    seconds, a list of ``OpenCount`` (most opens first) for that interval.

    ``by`` groups the counts: any of ``"pid"``, ``"comm"``, ``"cgroup"``, ``"file"``. ``max_keys``
    bounds the kernel's table of keys; opens of keys past it are counted in ``lost`` and said in
    the log. Keys that stop counting leave it (unchanged for a minute, or since the last interval
    once it is three quarters full), their last counts read as they go. ``filters`` are
    ``watch()``'s (``pid``, ``descendants``, ``tid``, ``uid``, ``comm``,
    ``failed``, ``syscalls``, ``ring_size``, ``latency``, ``cgroup``, ``container``, ``paths``).
    """
    unknown = sorted(set(filters) - set(_FILTERS))
    if unknown:
        raise TypeError(f"watch_counts() got an unexpected keyword argument {unknown[0]!r}")
    seconds = _seconds("interval", interval, 86400.0)
    if seconds < 0.01:
        raise ValueError(f"interval must be at least 0.01 seconds, not {interval!r}")
    return _counting(seconds, _by(by), max_keys, filters)


def _counting(interval: float, by: int, max_keys: int, filters: dict[str, Any]) -> CountWatcher:
    """``watch_counts()`` by ``by`` (``BY``'s bits, and ``_BY_SYSCALL``)."""
    # A file's key is named by its full path. One ring: the events are one per new key (and per
    # io_uring open), and all of them are read before counts are handed out, in no order.
    config = _checked(full_path=bool(by & BY["file"]), ring_shards=1, **(_FILTERS | filters))
    config["counts"] = (by, _int("max_keys", max_keys, 1, MAX_KEYS))
    return CountWatcher(Watcher(_load(config)), interval, by, _last_reads(config["ring_size"]))


_T = TypeVar("_T")
# How long a read waits for the event naming a key the kernel has just counted (`_await_names`),
# and how many keys whose name never came it remembers not to wait for again.
_NAME_WAIT = 0.02
_MAX_UNNAMED = 65536


class CountWatcher:
    """Iterating it yields a ``list[OpenCount]`` per interval; ``close()`` (or leaving a ``with``
    block) detaches everything and ends the iteration. ``lost`` counts opens not counted."""

    def __init__(self, watcher: Watcher[OpenEvent], interval: float, by: int, most_held: int) -> None:
        self._watcher = watcher
        self._session = watcher._session
        self._interval = interval
        # The most events the ring can hold: a read before counts are handed out takes no more.
        self._most_held = most_held
        self._by = by
        self._next_at = time.monotonic() + interval
        # The first event of each key (its name), and opens counted here (io_uring's) since the
        # last interval.
        self._names: dict[bytes, OpenEvent] = {}
        # cgroup id -> what names it (an event from it, or its path looked up by id).
        self._cgroups: dict[int, _Cgroup | OpenEvent | None] = {}
        self._here: dict[bytes, int] = {}
        # Counts taken from the session and not handed out (a KeyboardInterrupt as they were).
        self._held: list[tuple[bytes, int]] = []
        # Keys whose name was waited for and did not come (see `_await_names`).
        self._unnamed: set[bytes] = set()
        # Events read from the ring; those before `_next` are taken in (see `_take`).
        self._unread: list[OpenEvent] = []
        self._next = 0
        self._done = False

    def __iter__(self) -> Iterator[list[OpenCount]]:
        return self

    def __next__(self) -> list[OpenCount]:
        if self._watcher.closed or self._done:
            raise StopIteration
        while (left := self._next_at - time.monotonic()) > 0 and not self._watcher._finished():
            self._read(left)
        if self._watcher.closed:
            raise StopIteration
        self._next_at = max(self._next_at + self._interval, time.monotonic())
        # A pid watcher whose processes have all exited: this interval is the last.
        self._done = self._watcher._finished()
        return self.read()

    def read(self) -> list[OpenCount]:
        """The counts since the last interval (or read), now, without waiting: for a last look
        before closing."""
        return self._handed_out(self._rows)

    def _handed_out(self, convert: Callable[[list[tuple[bytes, int]]], _T]) -> _T:
        """``convert`` of the (key, opens) since the last call: the kernel's counts, and the
        opens counted here (io_uring's) from what the ring holds now. A KeyboardInterrupt can be
        raised anywhere in here, even as a call returns (the interpreter runs signal handlers
        there): the counts taken stay held, by the session until told and then here, and the
        next call hands them out."""
        # Every event that names a key counted by now, however recent, read first.
        try:
            self._session.poll_now(self._most_held, self._unread)
        finally:
            self._take()
        counted = self._session.counts()
        self._await_names(counted)  # (may count more io_uring opens here: `_here` is read after it)
        counts = [*self._held, *counted, *self._here.items()]
        out = convert(counts)
        try:
            self._session.counts_told()
            self._here = {}
            self._held = []
        except BaseException:
            # Raised as one of these returned: the session has let go of its counts.
            self._held, self._here = counts, {}
            raise
        return out

    def _await_names(self, counts: list[tuple[bytes, int]]) -> None:
        """Reads the events naming the keys in ``counts`` that have none yet. The program that
        counts a new key sends its name right after, but a program preempted in between (a busy
        machine) leaves the count readable first, for as long as 150 µs here. Waits up to
        ``_NAME_WAIT`` for them, once per key: a name lost to a full ring (counted, and said in
        the log) is not waited for again, and its key's rows have no path."""
        if not self._by & BY["file"]:
            return
        missing = [key for key, _ in counts if key not in self._names and key not in self._unnamed]
        deadline = time.monotonic() + _NAME_WAIT
        while missing and time.monotonic() < deadline:
            time.sleep(_NAME_WAIT / 20)
            try:
                self._session.poll_now(self._most_held, self._unread)
            finally:
                self._take()
            missing = [key for key in missing if key not in self._names]
        if len(self._unnamed) + len(missing) > _MAX_UNNAMED:
            self._unnamed.clear()
        self._unnamed.update(missing)

    def _cgroup_named(self, cgroup_id: int) -> _Cgroup | None:
        raw = self._session.cgroup_path(cgroup_id)
        if raw is None:
            return None
        return _Cgroup(raw.decode(errors="surrogateescape"), _opentrace.cgroup_container_id(raw))

    def _by_syscall(self) -> list[tuple[int, str, int, int]]:
        """For the agent (counts by cgroup and syscall, counted at the exit alone): (cgroup id,
        syscall, errno or 0, opens) since the last call, io_uring's opens (counted here) with
        them."""
        def by_syscall(counts: list[tuple[bytes, int]]) -> list[tuple[int, str, int, int]]:
            out = []
            for key, opens in counts:
                cgroup_id, _, _, _, _, errno, syscall, _ = _KEY.unpack(key)
                out.append((cgroup_id, _opentrace.SYSCALLS[syscall], errno, opens))
            return out

        return self._handed_out(by_syscall)

    def _cgroup_of(self, cgroup_id: int, event: OpenEvent | None = None) -> _Cgroup | OpenEvent | None:
        """What names a cgroup: an event from it, else its path looked up by id (None: gone, and
        never named)."""
        named = self._cgroups.get(cgroup_id)
        if named is None:
            named = event if event is not None else self._cgroup_named(cgroup_id)
            if len(self._cgroups) >= _MAX_CGROUPS:  # ids are never reused: a long run piles them up
                self._cgroups.clear()
            self._cgroups[cgroup_id] = named
        return named

    def _cgroup_names(self, cgroup_id: int) -> tuple[str | None, str | None]:
        """A cgroup's path and container id, as its opens' events would name them."""
        named = self._cgroup_of(cgroup_id)
        return (named.cgroup, named.container_id) if named is not None else (None, None)

    def _read(self, timeout: float) -> int:
        """Reads the ring (io_uring's opens, and the events that name keys); how many events."""
        before = len(self._unread)
        try:
            self._watcher._poll_into(timeout, self._unread)
        finally:  # taken in, even when Ctrl-C interrupts the read as it returns (see Watcher._poll_into)
            read = len(self._unread) - before
            self._take()
        return read

    def _take(self) -> None:
        """Takes in the events read and not yet taken in, in order (the first of a key names it).
        A KeyboardInterrupt can be raised between any two calls in here; the next call goes on
        from where this one stopped, and takes no event in twice."""
        unread = self._unread
        while self._next < len(unread):
            ev = unread[self._next]
            key, counted = self._session.count_key(ev)
            self._names.setdefault(key, ev)
            if counted:
                self._next += 1
            else:
                opens = self._here.get(key, 0) + 1
                # No call between these stores, and the interpreter raises KeyboardInterrupt
                # only at calls and loops: an io_uring open is counted here exactly once.
                self._here[key] = opens
                self._next += 1
        del unread[:]
        self._next = 0

    def _rows(self, counts: list[tuple[bytes, int]]) -> list[OpenCount]:
        rows: dict[tuple[str | None, int | None, int | None, object], list[Any]] = {}
        for key, opens in counts:
            cgroup_id, file, directory, pid, dev, errno, _, comm = _KEY.unpack(key)
            name = self._names.get(key)
            path = name.full_path if name is not None and self._by & BY["file"] else None
            group = (
                comm.rstrip(b"\0").decode(errors="surrogateescape") if self._by & BY["comm"] else None,
                pid if self._by & BY["pid"] else None,
                cgroup_id if self._by & BY["cgroup"] else None,
                path if path is not None else (file, directory, dev),
            )
            row = rows.setdefault(group, [name, None, None, 0, 0, {}])
            if row[0] is None:
                row[0] = name
            if errno == 0 and name is not None:
                row[1], row[2] = name.inode, name.dev
            row[3] += opens
            if errno:
                row[4] += opens
                label = _opentrace.errno_name(errno)
                row[5][label] = row[5].get(label, 0) + opens
        out = []
        for (comm, pid, cgroup_id, where), (name, inode, dev, opens, failed, errors) in rows.items():
            cgroup = self._cgroup_of(cgroup_id, name) if cgroup_id is not None else None
            out.append(OpenCount(
                comm=comm, pid=pid,
                cgroup=cgroup.cgroup if cgroup is not None else None,
                container_id=cgroup.container_id if cgroup is not None else None,
                path=where if isinstance(where, str) else None,
                inode=inode, dev=dev, opens=opens, failed=failed, errors=errors,
            ))
        out.sort(key=lambda c: (-c.opens, c.path or ""))
        return out

    @property
    def lost(self) -> int:
        """Opens that passed the filters and were not counted (the table of keys was full)."""
        return self._watcher.lost

    def close(self) -> None:
        self._watcher.close()

    @property
    def closed(self) -> bool:
        return self._watcher.closed

    def __enter__(self) -> CountWatcher:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
