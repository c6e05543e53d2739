"""The CLI's output formats, written in Rust: checked against Python's own json and the columns."""

from __future__ import annotations

import base64
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


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("ret", [5, -13])
def test_json_lines_are_json_dumps_of_to_dict_with_the_exact_bytes(path: bytes, ret: int) -> None:
    """A JSON line is ``json.dumps(ev.to_dict())``, plus ``path_b64`` after ``path`` when the path
    is not UTF-8: the surrogate escapes in ``path`` round-trip only through Python's json."""
    ev = event(path, ret)
    line = Formatter(json=True).format([ev])
    expected = {}
    for key, value in ev.to_dict().items():
        expected[key] = value
        if key == "path" and not _is_utf8(path):
            expected["path_b64"] = base64.b64encode(path).decode()
    assert line == json.dumps(expected) + "\n"
    parsed = json.loads(line)
    assert parsed["path"] == ev.path
    assert ("path_b64" in parsed) == (not _is_utf8(path))
    if "path_b64" in parsed:
        assert base64.b64decode(parsed["path_b64"]) == ev.path_bytes


def test_columns_and_header() -> None:
    f = Formatter(timestamp=True, uid=True, extended=True, start_ns=250_000_000)
    assert f.header().split() == ["TIME(s)", "UID", "PID", "COMM", "FD", "ERR", "CONTAINER", "FLAGS", "DFD", "PATH"]
    lines = f.format([event(b"/etc/passwd"), event(b"/nope", ret=-2)]).splitlines()
    assert lines == [  # the events' dfd is 7; no container
        "2.000    1000    42     cat                3   0 -            00002101    7 /etc/passwd",
        "2.000    1000    42     cat               -1   2 -            00002101    7 /nope",
    ]
    contained = OpenEvent(pid=1, comm="sh", syscall="open", path="/x", cgroup=f"/docker/{'ab' * 32}")
    assert Formatter(container=True).format([contained]).split()[4] == "ab" * 6
    assert Formatter().format([event(b"/x")]) == "42     cat                3   0 /x\n"
    assert Formatter(json=True).header() == ""


def test_full_path_column_and_json() -> None:
    f = Formatter(full_path=True)
    resolved = OpenEvent(pid=1, comm="cat", syscall="openat", path=b"rel", full_path=b"/abs/rel", ret=3)
    unresolved = OpenEvent(pid=1, comm="cat", syscall="openat", path=b"rel", ret=3)
    assert f.format([resolved, unresolved]).splitlines() == [
        "1      cat                3   0 /abs/rel",
        "1      cat                3   0 ? rel",
    ]
    line = Formatter(json=True).format([resolved])
    assert json.loads(line)["full_path"] == "/abs/rel" and line == json.dumps(resolved.to_dict()) + "\n"


def test_columns_keep_one_event_on_one_line() -> None:
    text = Formatter().format([event(p, comm="we\tird") for p in PATHS])
    assert len(text.splitlines()) == len(PATHS)
    assert "/tmp/new\\nline\\ttab\\x1b[31m\\x7f" in text
    assert "/tmp/bad\\xff\\xfe-\\xe9-" in text
    assert "/tmp/caf\u00e9 \U0001f600" in text  # printable non-ASCII stays readable
    assert "\\u202e-bidi" in text
    assert " we\\tird " in text
