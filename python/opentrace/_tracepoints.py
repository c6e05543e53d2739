"""Any tracepoint: what the kernel offers, how each tracepoint's record is laid out, and a stream of
any tracepoints' records decoded by those layouts."""

from __future__ import annotations

from dataclasses import dataclass

from . import _opentrace
from ._watch import DEFAULT_LATENCY, DEFAULT_RING_SIZE, SYSCALLS, Watcher, _checked
from .exceptions import TracepointNotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._opentrace import TracepointEvent

__all__ = ["Field", "TracepointFormat", "tracepoint_format", "tracepoints", "watch_tracepoints"]


@dataclass(frozen=True)
class Field:
    """One field of a tracepoint record, as its ``format`` file describes it."""

    name: str
    type: str
    offset: int
    size: int
    signed: bool


@dataclass(frozen=True)
class TracepointFormat:
    """The parsed ``events/<category>/<name>/format`` file of one tracepoint."""

    name: str
    category: str
    id: int
    fields: list[Field]
    print_fmt: str

    def field(self, name: str) -> Field:
        """The field called ``name``; ``KeyError`` if there is none."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"tracepoint {self.category}:{self.name} has no field {name!r}")

    @classmethod
    def parse(cls, text: str, category: str = "") -> TracepointFormat:
        """Parses the text of a ``format`` file; ``ValueError`` names the offending line."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        return _build(_opentrace.parse_format(text), category)


def _build(raw: tuple[str, int, list[tuple[str, str, int, int, bool]], str], category: str) -> TracepointFormat:
    name, id_, fields, print_fmt = raw
    return TracepointFormat(
        name=name,
        category=category,
        id=id_,
        fields=[Field(*f) for f in fields],
        print_fmt=print_fmt,
    )


def tracepoints(pattern: str | None = None) -> list[str]:
    """Available tracepoints as ``"category:name"``, sorted; ``pattern`` is a shell-style glob."""
    if pattern is not None and not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str or None, not {type(pattern).__name__}")
    names = _opentrace.tracepoints()
    if pattern is None:
        return names
    from fnmatch import fnmatchcase

    return [n for n in names if fnmatchcase(n, pattern)]


def tracepoint_format(name: str) -> TracepointFormat:
    """The parsed format of ``"category:name"``; ``TracepointNotFound`` if there is no such one."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str like 'syscalls:sys_enter_openat', not {type(name).__name__}")
    category = name.partition(":")[0]
    return _build(_opentrace.tracepoint_format(name), category)


_GLOB = set("*?[")


def _resolve(names: tuple[object, ...]) -> list[tuple[str, bool]]:
    """Each name as itself (it must exist), each glob as what it matches (something must):
    ``(name, named)`` pairs in the order given, each tracepoint once."""
    if not names:
        raise TypeError("watch_tracepoints() needs at least one tracepoint name or glob, e.g. 'sched:sched_switch'")
    resolved: dict[str, bool] = {}
    every: list[str] | None = None
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"tracepoint names must be str like 'sched:sched_switch', not {type(name).__name__}")
        if _GLOB.isdisjoint(name):
            tracepoint_format(name)  # TracepointNotFound, saying why
            resolved[name] = True
            continue
        if every is None:
            every = _opentrace.tracepoints()
        from fnmatch import fnmatchcase

        matched = [n for n in every if fnmatchcase(n, name)]
        if not matched:
            raise TracepointNotFound(f"no tracepoint matches {name!r} (see `opentrace list`)")
        for n in matched:
            resolved.setdefault(n, False)
    return list(resolved.items())


def watch_tracepoints(
    *names: str,
    pid: int | None = None,
    tid: int | None = None,
    uid: int | None = None,
    comm: str | None = None,
    ring_size: int = DEFAULT_RING_SIZE,
    ring_shards: int | None = None,
    latency: float = DEFAULT_LATENCY,
) -> Watcher[TracepointEvent]:
    """Stream the records of any tracepoints, decoded from their ``format`` files; returns a
    ``Watcher`` yielding ``TracepointEvent``.

    ``names`` are ``"category:name"`` or shell-style globs of them (``"syscalls:sys_enter_*"``);
    a name or glob that matches nothing raises ``TracepointNotFound``. A named tracepoint the
    program cannot use raises ``ValueError`` saying why; one a glob matched is skipped, and said
    on the ``opentrace`` logger. The filters (``pid``: a process, and the watcher ends when it
    exits; ``tid``, ``uid``, ``comm``) are decided in the kernel, before anything is copied;
    ``ring_size``, ``ring_shards`` and ``latency`` are ``watch()``'s.
    """
    resolved = _resolve(names)
    config = _checked(pid=pid, descendants=False, tid=tid, uid=uid, comm=comm, failed=False, syscalls=SYSCALLS,
                      ring_size=ring_size, latency=latency, full_path=False, ring_shards=ring_shards)
    config["tracepoints"] = resolved
    return Watcher(_opentrace.Session(**config), tracepoints=True)
