"""OpenEvent as a value: construction, derived fields, repr, dict, pickling (no privileges)."""

from __future__ import annotations

import json
import pickle

import pytest

from opentrace import OpenEvent

from .contract import OPEN_EVENT_DICT_KEYS, OPEN_EVENT_FIELDS


def make(**overrides: object) -> OpenEvent:
    fields: dict[str, object] = dict(
        timestamp_ns=123, pid=10, tid=11, uid=1000, comm="cat", syscall="openat",
        path="/etc/passwd", dfd=-100, flags=0, mode=0, ret=3,
    )
    fields.update(overrides)
    return OpenEvent(**fields)  # type: ignore[arg-type]


def test_fields_and_derived_fd_errno() -> None:
    ok = make()
    assert (ok.pid, ok.tid, ok.uid, ok.comm, ok.syscall) == (10, 11, 1000, "cat", "openat")
    assert (ok.fd, ok.errno, ok.ret) == (3, None, 3)
    failed = make(ret=-2)
    assert (failed.fd, failed.errno) == (None, 2)


def test_non_utf8_path_round_trips_like_fsdecode() -> None:
    raw = b"/tmp/caf\xe9"
    ev = make(path=raw)
    assert ev.path_bytes == raw
    assert ev.path == raw.decode("utf-8", "surrogateescape")
    assert make(path=ev.path).path_bytes == raw


def test_immutable() -> None:
    ev = make()
    with pytest.raises(AttributeError):
        ev.pid = 1  # type: ignore[misc]


def test_repr_shows_path_and_result() -> None:
    assert repr(make()) == "OpenEvent(pid=10, tid=11, comm='cat', syscall='openat', path='/etc/passwd', fd=3)"
    assert "errno=13" in repr(make(ret=-13))


def test_to_dict_is_json_and_complete() -> None:
    d = make(ret=-2).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert set(d) == set(OPEN_EVENT_DICT_KEYS)
    assert all(hasattr(make(), name) for name in OPEN_EVENT_FIELDS)
    assert (d["fd"], d["errno"], d["path"]) == (None, 2, "/etc/passwd")


def test_equality_hash_and_pickle() -> None:
    ev = make(path=b"/x\xff")
    assert ev == make(path=b"/x\xff") and hash(ev) == hash(make(path=b"/x\xff"))
    assert ev != make(pid=99)
    assert ev != "not an event"
    assert pickle.loads(pickle.dumps(ev)) == ev


def test_fd_none_with_a_result_is_a_fixed_file_slot() -> None:
    # An io_uring open into a fixed-file slot: ret is 0 (or the slot chosen), and there is no fd.
    slot = make(syscall="io_uring", ret=0, fd=None)
    assert (slot.fd, slot.ret, slot.errno) == (None, 0, None)
    assert pickle.loads(pickle.dumps(slot)) == slot and slot != make(syscall="io_uring", ret=0)
    assert make(fd=3) == make() and make(ret=-2, fd=None) == make(ret=-2)
    assert make(fd=None, ret=-2).fd is None


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"syscall": "read"}, ValueError),
        ({"comm": "x" * 16}, ValueError),
        ({"pid": -1}, ValueError),
        ({"fd": 4}, ValueError),
        ({"fd": "3"}, TypeError),
        ({"errno": 2}, TypeError),
        ({"nope": 3}, TypeError),
        ({"path": 5}, TypeError),
    ],
)
def test_bad_construction(overrides: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        make(**overrides)
