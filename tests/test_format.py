"""The CLI's output formats, written in Rust: checked against Python's own json and the columns."""

from __future__ import annotations

import json

import pytest

from opentrace import OpenEvent
from opentrace._opentrace import Formatter

PATHS = [
    b"/etc/passwd",
    b"",
    b"/tmp/caf\xc3\xa9 \xf0\x9f\x98\x80",
    b"/tmp/bad\xff\xfe-\xe9-",
    b'/tmp/q"uote\\back',
    b"/tmp/new\nline\ttab\x1b[31m\x7f",
    b"/tmp/\xe2\x80\xae-bidi",
    b"\xf0\x9f\x98",  # a truncated 4-byte sequence
]


def event(path: bytes, ret: int = 3, comm: str = "cat") -> OpenEvent:
    return OpenEvent(
        timestamp_ns=2_250_000_000, pid=42, tid=43, uid=1000, comm=comm, syscall="openat2",
        path=path, dfd=7, flags=0o2101, mode=0o640, ret=ret,
    )


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("ret", [5, -13])
def test_json_lines_are_exactly_json_dumps_of_to_dict(path: bytes, ret: int) -> None:
    ev = event(path, ret)
    line = Formatter(json=True).format([ev])
    assert line == json.dumps(ev.to_dict()) + "\n"
    assert json.loads(line)["path"] == ev.path


def test_columns_and_header() -> None:
    f = Formatter(timestamp=True, uid=True, extended=True, start_ns=250_000_000)
    assert f.header().split() == ["TIME(s)", "UID", "PID", "COMM", "FD", "ERR", "FLAGS", "PATH"]
    lines = f.format([event(b"/etc/passwd"), event(b"/nope", ret=-2)]).splitlines()
    assert lines == [
        "2.000    1000    42     cat                3   0 00002101 /etc/passwd",
        "2.000    1000    42     cat               -1   2 00002101 /nope",
    ]
    assert Formatter().format([event(b"/x")]) == "42     cat                3   0 /x\n"
    assert Formatter(json=True).header() == ""


def test_columns_keep_one_event_on_one_line() -> None:
    text = Formatter().format([event(p, comm="we\tird") for p in PATHS])
    assert len(text.splitlines()) == len(PATHS)
    assert "/tmp/new\\nline\\ttab\\x1b[31m\\x7f" in text
    assert "/tmp/bad\\xff\\xfe-\\xe9-" in text
    assert "/tmp/caf\u00e9 \U0001f600" in text  # printable non-ASCII stays readable
    assert "\\u202e-bidi" in text
    assert " we\\tird " in text
