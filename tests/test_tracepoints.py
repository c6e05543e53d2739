"""Tracepoint discovery: the format parser (no privileges) and the live tracefs (root)."""

from __future__ import annotations

import pytest

import opentrace
from opentrace import Field, TracepointFormat

OPENAT = """\
name: sys_enter_openat
ID: 782
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;
\tfield:int flags;\toffset:32;\tsize:8;\tsigned:0;
\tfield:umode_t mode;\toffset:40;\tsize:8;\tsigned:0;

print fmt: "dfd: 0x%08lx, filename: 0x%08lx", ((unsigned long)(REC->dfd)), ((unsigned long)(REC->filename))
"""


def test_parse_reads_every_field_in_order() -> None:
    fmt = TracepointFormat.parse(OPENAT, category="syscalls")
    assert (fmt.name, fmt.category, fmt.id) == ("sys_enter_openat", "syscalls", 782)
    assert [f.name for f in fmt.fields] == [
        "common_type", "common_flags", "common_preempt_count", "common_pid",
        "__syscall_nr", "dfd", "filename", "flags", "mode",
    ]
    assert fmt.field("filename") == Field("filename", "const char *", 24, 8, False)
    assert fmt.field("common_pid").signed
    assert fmt.field("mode").type == "umode_t"
    assert fmt.print_fmt.startswith('"dfd: 0x%08lx')
    with pytest.raises(KeyError, match="no field 'nope'"):
        fmt.field("nope")


def test_parse_array_and_data_loc_fields() -> None:
    text = OPENAT.replace(
        "\tfield:umode_t mode;", "\tfield:char comm[16];\toffset:48;\tsize:16;\tsigned:0;\n"
        "\tfield:__data_loc char[] name;\toffset:64;\tsize:4;\tsigned:0;\n\tfield:umode_t mode;"
    )
    fmt = TracepointFormat.parse(text)
    assert fmt.field("comm") == Field("comm", "char[16]", 48, 16, False)
    assert fmt.field("name").type == "__data_loc char[]"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no name"),
        ("garbage\n", "line 1: unexpected text"),
        ("name: x\nID: twelve\n", "line 2: bad ID"),
        (OPENAT.replace("offset:24;", "offset:x;"), "line 11: bad offset"),
        (OPENAT.replace("const char * filename", ""), "line 11: cannot read declaration"),
        (OPENAT.replace("print fmt:", "prynt fmt:"), "unexpected text"),
        (OPENAT.split("print fmt")[0], "no print fmt"),
    ],
)
def test_parse_rejects_malformed_files(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TracepointFormat.parse(text)


def test_parse_wants_a_str() -> None:
    with pytest.raises(TypeError):
        TracepointFormat.parse(b"name: x")  # type: ignore[arg-type]


@pytest.mark.root
def test_tracepoints_lists_and_filters() -> None:
    names = opentrace.tracepoints()
    assert "syscalls:sys_enter_openat" in names and names == sorted(names)
    opens = opentrace.tracepoints("syscalls:sys_*_open*")
    assert "syscalls:sys_exit_openat2" in opens
    assert all(n.startswith("syscalls:sys_") for n in opens)
    assert opentrace.tracepoints("no-such-category:*") == []


@pytest.mark.root
@pytest.mark.parametrize("name", ["syscalls:sys_enter_openat", "syscalls:sys_enter_open", "syscalls:sys_enter_creat"])
def test_real_format_files_parse(name: str) -> None:
    fmt = opentrace.tracepoint_format(name)
    assert fmt.category == "syscalls" and name.endswith(fmt.name)
    assert fmt.fields[0] == Field("common_type", "unsigned short", 0, 2, False)
    path = fmt.field("pathname" if name.endswith("creat") else "filename")
    assert (path.type, path.size, path.signed) == ("const char *", 8, False)
    with open(f"/sys/kernel/tracing/events/syscalls/{fmt.name}/id") as f:
        assert fmt.id == int(f.read())


@pytest.mark.root
@pytest.mark.parametrize(
    "name", ["syscalls:sys_enter_nope", "nope:nope", "syscalls", "../../etc:passwd", "", "syscalls:enable"]
)
def test_unknown_tracepoint(name: str) -> None:
    with pytest.raises(opentrace.TracepointNotFound) as info:
        opentrace.tracepoint_format(name)
    assert isinstance(info.value, LookupError) and isinstance(info.value, opentrace.OpentraceError)
    assert "opentrace list" in str(info.value)
