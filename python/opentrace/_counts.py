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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import _opentrace
from ._opentrace import OpenEvent
from ._watch import DEFAULT_LATENCY, DEFAULT_RING_SIZE, DRAIN_ROUNDS, SYSCALLS, Watcher, _checked, _int, _load, _seconds

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
    config = _checked(full_path=bool(by & BY["file"]), **(_FILTERS | filters))  # names a file's key
    config["counts"] = (by, _int("max_keys", max_keys, 1, MAX_KEYS))
    return CountWatcher(Watcher(_load(config)), interval, by)


class CountWatcher:
    """Iterating it yields a ``list[OpenCount]`` per interval; ``close()`` (or leaving a ``with``
    block) detaches everything and ends the iteration. ``lost`` counts opens not counted."""

    def __init__(self, watcher: Watcher[OpenEvent], interval: float, by: int) -> None:
        self._watcher = watcher
        self._session = watcher._session
        self._interval = interval
        self._by = by
        self._next_at = time.monotonic() + interval
        # The first event of each key (its name), and opens counted here (io_uring's) since the
        # last interval.
        self._names: dict[bytes, OpenEvent] = {}
        # cgroup id -> what names it (an event from it, or its path looked up by id).
        self._cgroups: dict[int, _Cgroup | OpenEvent | None] = {}
        self._here: dict[bytes, int] = {}
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
        return self._rows(self._counted_since())

    def _counted_since(self) -> list[tuple[bytes, int]]:
        """(key, opens) since the last call: the kernel's counts, and the opens counted here
        (io_uring's) from what the ring holds now."""
        for _ in range(DRAIN_ROUNDS):
            if not self._read(0):
                break
        counted = self._session.counts()
        here, self._here = self._here, {}
        return [*counted, *here.items()]

    def _cgroup_named(self, cgroup_id: int) -> _Cgroup | None:
        raw = self._session.cgroup_path(cgroup_id)
        if raw is None:
            return None
        return _Cgroup(raw.decode(errors="surrogateescape"), _opentrace.cgroup_container_id(raw))

    def _by_syscall(self) -> list[tuple[int, str, int, int]]:
        """For the agent (counts by cgroup and syscall, counted at the exit alone): (cgroup id,
        syscall, errno or 0, opens) since the last call, io_uring's opens (counted here) with
        them."""
        out = []
        for key, opens in self._counted_since():
            cgroup_id, _, _, _, _, errno, syscall, _ = _KEY.unpack(key)
            out.append((cgroup_id, _opentrace.SYSCALLS[syscall], errno, opens))
        return out

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
        events: list[OpenEvent] = []
        try:
            self._watcher._poll_into(timeout, events)
        finally:  # counted, even when Ctrl-C interrupts the read as it returns (see Watcher._poll_into)
            self._take(events)
        return len(events)

    def _take(self, events: list[OpenEvent]) -> None:
        for ev in events:
            key, counted = self._session.count_key(ev)
            self._names.setdefault(key, ev)
            if not counted:
                self._here[key] = self._here.get(key, 0) + 1

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
