"""Tracepoint discovery: what the kernel offers and how each tracepoint's record is laid out."""

from __future__ import annotations

from dataclasses import dataclass

from . import _opentrace

__all__ = ["Field", "TracepointFormat", "tracepoint_format", "tracepoints"]


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
