"""Property tests: bad input to ``watch()`` and to the CLI fails cleanly, and before any loading.

``watch()`` must answer any value of any keyword with ValueError/TypeError naming the argument, or
(for a valid value) a working watcher; the CLI must answer any argv with a usage error (exit 2), or
run. Nothing else may escape: no OverflowError, SystemError, PanicException, traceback.

Unmarked tests never load BPF (``Session`` is replaced by a stub that fails the test if reached);
``root``-marked ones load for real and keep the valid examples few.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import inspect
import io
import math
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from decimal import Decimal
from fractions import Fraction
from unittest import mock

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import opentrace
from opentrace import _watch, cli

PAGE = os.sysconf("SC_PAGE_SIZE")
PID_MAX = (1 << 22) - 1  # PID_MAX_LIMIT - 1 on 64-bit: the largest pid the kernel hands out
MAX_RING = 1 << 30
SYSCALLS = ("open", "openat", "openat2", "creat")
KEYWORDS = ("pid", "tid", "uid", "comm", "failed", "syscalls", "ring_size", "ring_shards", "latency")
# Every keyword watch() takes (the ones above have value strategies here).
WATCH_KEYWORDS = frozenset(inspect.signature(opentrace.watch).parameters)
# A process that sleeps through the tests and opens nothing: a valid CLI trace of it sees nothing.
_SLEEPER = subprocess.Popen(["sleep", "86400"])
atexit.register(lambda: (_SLEEPER.kill(), _SLEEPER.wait()))
NO_PID = str(_SLEEPER.pid)
HUGE = 10**5000  # str() of it raises ValueError (Python's 4300-digit limit)

FAST = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# --------------------------------------------------------------------------------------------
# Values


class IntLike:
    """Duck-typed number: not an int, so not acceptable."""

    def __index__(self) -> int:
        return 5

    def __float__(self) -> float:
        return 0.5

    def __repr__(self) -> str:
        return "IntLike()"


class MyInt(int):
    """An int subclass: acceptable wherever an int is."""


class Names:
    """A re-iterable, non-container iterable of syscall names."""

    def __init__(self, *names: object) -> None:
        self.names = names

    def __iter__(self) -> Iterator[object]:
        return iter(self.names)

    def __repr__(self) -> str:
        return f"Names{self.names!r}"


BOUNDARY_INTS = [
    0, 1, -1, 2, 4095, 4096, 8192, 12288, PID_MAX - 1, PID_MAX, PID_MAX + 1, 2**31 - 1, 2**31,
    2**32 - 2, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 2**100,
    MAX_RING, MAX_RING * 2, MAX_RING + PAGE,
]  # fmt: skip

ints = st.one_of(
    st.integers(), st.integers(-(2**70), 2**70), st.sampled_from(BOUNDARY_INTS),
    st.integers(-3, 40).map(lambda e: 1 << e if e >= 0 else -(1 << -e)),
    st.integers(1, 50).map(MyInt),
)  # fmt: skip
floats = st.one_of(
    st.floats(),  # nan, inf and subnormals included
    st.sampled_from([math.nan, -math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.0000000000000002, 0.5, 4096.0]),
)
# st.characters() leaves out surrogates; mix them (and NUL, non-ASCII) back in.
chars = st.one_of(st.characters(), st.characters(categories=["Cs"]), st.sampled_from("\0\udcff\u00e9\u6f22"))
texts = st.one_of(
    st.text(chars, max_size=20),
    st.sampled_from(["", "\0", "a\0b", "\ud800", "x" * 15, "x" * 16, "\u00e9" * 7, "\u00e9" * 8, "openat", "x" * 5000]),
)
objects = st.one_of(
    st.none(),
    st.booleans(),
    st.binary(max_size=20),
    st.builds(bytearray, st.binary(max_size=4)),
    st.complex_numbers(),
    st.lists(st.one_of(st.integers(), st.text(max_size=5), st.sampled_from(SYSCALLS)), max_size=4),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.builds(object),
    st.just(IntLike()),
    st.just(Decimal("0.5")),
    st.just(Fraction(1, 2)),
    st.just(Decimal("NaN")),
    st.sampled_from([int, float, str, bytes, complex, frozenset]).flatmap(st.from_type),
    # Small ranges only: watch() list()s any iterable first (range(10**11) -> MemoryError, slowly).
    st.builds(range, st.integers(-2, 5), st.integers(-2, 10)),
)
anything = st.one_of(ints, floats, texts, objects)


def _containers(items: list[object]) -> st.SearchStrategy[object]:
    return st.sampled_from([list, tuple, set, frozenset, dict.fromkeys, lambda xs: Names(*xs)]).map(
        lambda make: make(items)
    )


syscall_items = st.one_of(
    st.sampled_from(SYSCALLS), st.sampled_from(["OPENAT", "openat ", "open\0", "close", "", "openat3"]),
    st.text(chars, max_size=8), st.binary(max_size=4), st.integers(0, 3), st.none(),
)  # fmt: skip
near_valid = {
    "pid": st.one_of(st.integers(-3, PID_MAX + 3), st.integers(PID_MAX - 3, PID_MAX + 3)),
    "tid": st.one_of(st.integers(-3, PID_MAX + 3), st.integers(PID_MAX - 3, PID_MAX + 3)),
    "uid": st.one_of(st.integers(-3, 70000), st.integers(2**32 - 4, 2**32 + 2)),
    "comm": st.text(chars, max_size=17),
    "failed": st.one_of(st.booleans(), st.sampled_from([0, 1, None, "yes", 1.0])),
    "syscalls": st.one_of(
        st.lists(st.sampled_from(SYSCALLS), max_size=5).flatmap(_containers),
        st.lists(syscall_items, max_size=4).flatmap(_containers),
        st.sampled_from(SYSCALLS),  # a bare str: bad type even though iterable
    ),
    "ring_size": st.one_of(
        st.integers(0, 34).map(lambda e: 1 << e),
        st.integers(-2, 5000).map(lambda n: n * PAGE),
        st.integers(0, 34).map(lambda e: (1 << e) + 1),
    ),
    "ring_shards": st.one_of(st.integers(-2, 70), st.sampled_from([None, 1.0, "2", True])),
    "latency": st.one_of(st.floats(-1, 2), st.sampled_from([0, 1, 0.0, 1.0, -0.0, 1.0000000000000002, 2, -1, 5e-324])),
}


def values(kw: str) -> st.SearchStrategy[object]:
    return st.one_of(anything, near_valid[kw])


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_valid(kw: str, v: object) -> bool:
    """The contract (API.md + _watch.py's documented bounds), written out independently."""
    if kw == "pid":  # a process that exists: a pid watcher follows one process
        return v is None or (_is_int(v) and 1 <= v <= PID_MAX and os.path.exists(f"/proc/{v}"))
    if kw == "tid":
        return v is None or (_is_int(v) and 1 <= v <= PID_MAX)
    if kw == "uid":
        return v is None or (_is_int(v) and 0 <= v <= 2**32 - 2)  # (uid_t)-1 is "no uid"
    if kw == "comm":
        if v is None:
            return True
        if not isinstance(v, str):
            return False
        try:
            raw = os.fsencode(v)
        except UnicodeError:
            return False
        return 1 <= len(raw) <= 15 and b"\0" not in raw
    if kw == "failed":
        return isinstance(v, bool)
    if kw == "syscalls":
        if isinstance(v, (str, bytes)) or not isinstance(v, Iterable):
            return False
        empty = True
        for x in v:  # lazily: a range(2**64) is already wrong at its first item
            if not (isinstance(x, str) and x in SYSCALLS):
                return False
            empty = False
        return not empty
    if kw == "ring_size":
        return _is_int(v) and PAGE <= v <= MAX_RING and v & (v - 1) == 0 and v % PAGE == 0
    if kw == "ring_shards":  # with the default ring_size (4M): a page each for up to 64
        return v is None or (_is_int(v) and 1 <= v <= 64)
    if kw == "latency":
        return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
    raise AssertionError(kw)


class Loaded(BaseException):
    """Raised by the stub Session: the call got past validation (BaseException: nothing catches it)."""


@contextlib.contextmanager
def no_loading() -> Iterator[mock.MagicMock]:
    """Replaces the compiled Session so that reaching it raises ``Loaded`` instead of loading."""
    stub = mock.MagicMock(side_effect=Loaded)
    with mock.patch.object(_watch._opentrace, "Session", stub):
        yield stub


def names_argument(kw: str, message: str) -> bool:
    return (kw[:-1] if kw == "syscalls" else kw) in message  # "unknown syscall 'x'" is fine


# --------------------------------------------------------------------------------------------
# 1. watch(): every keyword, arbitrary values


def safe_repr(v: object) -> str:
    """repr() that survives ints over Python's 4300-digit limit, shortened."""
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        text = repr(v)
    finally:
        sys.set_int_max_str_digits(limit)
    return text if len(text) <= 200 else f"{text[:100]}...({len(text)} chars)"


def check_rejected(kw: str, v: object, exc: BaseException) -> None:
    __tracebackhide__ = True
    what = f"watch({kw}={safe_repr(v)})"
    assert isinstance(exc, (ValueError, TypeError)), f"{what}: {type(exc).__name__}: {exc}"
    message = str(exc)
    assert names_argument(kw, message), f"{what}: message does not name {kw!r}: {message!r}"


bad_call = st.sampled_from(KEYWORDS).flatmap(
    lambda kw: values(kw).filter(lambda v: not is_valid(kw, v)).map(lambda v: (kw, v))
)


@settings(FAST, max_examples=600)
@given(call=bad_call)
# The nastiest values found (ints over 4300 digits: test_nasty_values_regressions, which keeps
# Hypothesis from printing them in full):
@example(call=("comm", "\ud800"))  # os.fsencode: UnicodeEncodeError whose message does not say "comm"
@example(call=("comm", "\udcff" * 16))  # surrogateescape: 16 bytes
@example(call=("syscalls", range(2**64)))  # list() first: OverflowError (range(10**11): MemoryError)
@example(call=("uid", 2**32 - 1))
@example(call=("syscalls", {}))
@example(call=("latency", Decimal("NaN")))
def test_invalid_values_raise_value_or_type_error_naming_the_argument(call: tuple[str, object]) -> None:
    kw, v = call
    with no_loading() as session:
        try:
            opentrace.watch(**{kw: v})  # type: ignore[arg-type]
        except Loaded:
            pytest.fail(f"watch({kw}={safe_repr(v)}) got past validation to loading")
        except BaseException as e:  # anything but ValueError/TypeError is a bug
            check_rejected(kw, v, e)
        else:
            pytest.fail(f"watch({kw}={safe_repr(v)}) returned")
    assert not session.called


@pytest.mark.parametrize(
    ("kw", "v"),
    [
        ("pid", HUGE),
        ("tid", -HUGE),
        ("uid", HUGE),
        ("ring_size", -HUGE),
        ("latency", HUGE),
        ("comm", "\ud800"),
        ("comm", "ab\udfff"),
        ("pid", 2**64),
        ("uid", 2**32 - 1),
        ("ring_size", 2**64),
        ("latency", math.nan),
        ("latency", Decimal("NaN")),
        ("comm", "x" * 16),
        ("comm", "\u00e9" * 8),  # 8 chars, 16 bytes
        ("comm", "a\0b"),
        ("syscalls", "openat"),
        ("syscalls", [b"openat"]),
        ("syscalls", ["openat", None]),
        ("syscalls", []),
        ("syscalls", {}),
        ("syscalls", range(2**64)),
        ("syscalls", range(1, 5)),
        ("failed", 1),
        ("pid", True),
        ("ring_size", 4096.0),
    ],
    ids=lambda x: safe_repr(x)[:24] if not isinstance(x, int) or abs(x) < 2**200 else "HUGE",
)
def test_nasty_values_regressions(kw: str, v: object) -> None:
    """The same check, one pytest item per nasty value (so each shows up on its own)."""
    assert not is_valid(kw, v)
    with no_loading() as session:
        with pytest.raises((ValueError, TypeError)) as info:
            opentrace.watch(**{kw: v})  # type: ignore[arg-type]
    check_rejected(kw, v, info.value)
    assert not session.called


@FAST
@given(st.data())
def test_several_arguments_the_error_names_a_bad_one(data: st.DataObject) -> None:
    chosen = data.draw(st.lists(st.sampled_from(KEYWORDS), min_size=2, max_size=len(KEYWORDS), unique=True))
    call = {kw: data.draw(values(kw), label=kw) for kw in chosen}
    bad = {kw for kw, v in call.items() if not is_valid(kw, v)}
    assume(bad)
    with no_loading():
        try:
            opentrace.watch(**call)  # type: ignore[arg-type]
        except Loaded:
            pytest.fail(f"watch(**{safe_repr(call)}) got past validation; bad: {sorted(bad)}")
        except BaseException as e:
            what = f"watch(**{safe_repr(call)})"
            assert isinstance(e, (ValueError, TypeError)), f"{what}: {type(e).__name__}: {e}"
            assert any(names_argument(kw, str(e)) for kw in bad), f"{what}: names none of {sorted(bad)}: {e}"
        else:
            pytest.fail("returned")


@FAST
@given(name=st.text(chars, max_size=12).filter(lambda k: k not in WATCH_KEYWORDS), value=anything)
def test_unknown_keywords_raise_type_error(name: str, value: object) -> None:
    with no_loading() as session, pytest.raises(TypeError) as info:
        opentrace.watch(**{name: value})  # type: ignore[arg-type]
    assert name in str(info.value)
    assert not session.called


@FAST
@given(args=st.lists(anything, min_size=1, max_size=3))
def test_positional_arguments_raise_type_error(args: list[object]) -> None:
    with no_loading() as session, pytest.raises(TypeError):
        opentrace.watch(*args)  # type: ignore[misc]
    assert not session.called


def test_an_empty_cgroup_is_refused_before_loading() -> None:
    """``cgroup=""`` would be the root cgroup (every task), silently: refused like any bad value."""
    with no_loading() as session, pytest.raises(ValueError, match="cgroup must name a cgroup"):
        opentrace.watch(cgroup="")
    assert not session.called


def test_an_empty_program_is_refused_before_anything_starts() -> None:
    """``run([""])`` names no program (exec would say "permission denied", trying PATH's directories)."""
    with no_loading() as session, pytest.raises(ValueError, match=r"the program to run, is empty"):
        opentrace.run([""])
    assert not session.called


def test_an_iterator_of_syscalls_is_consumed_once_and_accepted_or_checked() -> None:
    def names() -> Iterator[object]:
        yield "openat"
        yield 7

    with no_loading() as session, pytest.raises(TypeError, match="syscall"):
        opentrace.watch(syscalls=names())  # type: ignore[arg-type]
    assert not session.called
    with no_loading() as session, pytest.raises(Loaded):
        opentrace.watch(syscalls=iter(["openat", "openat"]))
    assert session.call_args.kwargs["syscalls"] == ["openat"]


@pytest.mark.root
@pytest.mark.parametrize("kw", KEYWORDS)
@settings(SLOW, max_examples=10)
@given(data=st.data())
def test_mixed_values_fail_cleanly_or_work(kw: str, data: st.DataObject) -> None:
    v = data.draw(values(kw), label=kw)
    valid = is_valid(kw, v)
    # Keep the (expensive) loading examples few and small.
    assume(not (valid and kw == "ring_size" and v > 1 << 22))
    try:
        w = opentrace.watch(**{kw: v})  # type: ignore[arg-type]
    except BaseException as e:
        # A pid is valid while its process lives: one that existed when drawn may have exited
        # before watch() looked (the suite's own short-lived children take low pids on a fresh
        # machine); watch() is then right to refuse it.
        valid = valid and is_valid(kw, v)
        assert not valid, f"watch({kw}={safe_repr(v)}) is valid but raised {type(e).__name__}: {e}"
        check_rejected(kw, v, e)
    else:
        try:
            assert valid, f"watch({kw}={safe_repr(v)}) is invalid but returned a watcher"
            assert not w.closed
            if kw == "syscalls":
                assert set(w.syscalls) <= set(v)  # type: ignore[arg-type]
        finally:
            w.close()
        assert w.closed


# --------------------------------------------------------------------------------------------
# 2. Nothing loaded half-way


def kernel_fds() -> list[str]:
    """This process's fds for BPF objects, perf events, epoll sets and eventfds."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the fd of the listing itself, gone by now
            continue
        if target.startswith(("anon_inode:bpf", "anon_inode:btf")) or target in (
            "anon_inode:[perf_event]", "anon_inode:[eventpoll]", "anon_inode:[eventfd]",
        ):  # fmt: skip
            found.append(target)
    return sorted(found)


@settings(FAST, max_examples=40)
@given(calls=st.lists(bad_call, min_size=1, max_size=25))
def test_bad_calls_leave_no_kernel_objects_behind(calls: list[tuple[str, object]]) -> None:
    before = kernel_fds()
    for kw, v in calls:  # the real thing: no stub
        with pytest.raises((ValueError, TypeError)):
            opentrace.watch(**{kw: v})  # type: ignore[arg-type]
    assert kernel_fds() == before


@pytest.mark.root
def test_kernel_fd_count_sees_a_live_watcher() -> None:
    """The counter above is not vacuous: a live watcher shows up in it, and goes away after close."""
    before = kernel_fds()
    w = opentrace.watch(comm="no-such-comm")
    during = kernel_fds()
    assert any(t.startswith("anon_inode:bpf") for t in during) and len(during) > len(before)
    w.close()
    del w
    gc.collect()
    assert kernel_fds() == before


# --------------------------------------------------------------------------------------------
# 3. CLI

BOOL_FLAGS = ["-x", "--failed", "-T", "--timestamp", "-U", "--print-uid", "-e", "--extended",
              "--json", "-q", "--quiet"]  # fmt: skip

int_text = st.one_of(
    ints.filter(lambda i: abs(i) < 10**4000).map(str),
    st.sampled_from(["", " 5", "5 ", "0x10", "1_000", "\u0663", "+7", "-0", "007", "1e3", "nan", "4194304"]),
    st.text(chars, max_size=6),
)
float_text = st.one_of(
    st.floats().map(repr),
    st.sampled_from(["0", "-0", "nan", "inf", "-inf", "1e-320", "0.01", "1e309", "", "0x1p-3", "1_0", " 1 "]),
    st.text(chars, max_size=6),
)
size_text = st.one_of(
    st.builds(
        lambda n, unit: f"{n}{unit}",
        st.one_of(st.integers(-10, 2**40), st.sampled_from([0, 1, 2, 4, 16, 1024, 4096, 2**64])),
        st.sampled_from(["", "", "K", "k", "M", "m", "G", "g", "T", "b", " "]),
    ),
    st.sampled_from(["", "K", "4096", "4K", "16M", "1_024K", "9" * 4299 + "G", "-4K", "1e3"]),
    st.text(chars, max_size=6),
)
name_text = st.one_of(texts.filter(lambda t: len(t) < 100), st.sampled_from(["sh", "-", "--", "x" * 16]))
syscall_text = st.one_of(st.sampled_from(SYSCALLS), st.sampled_from(["OPENAT", "open,openat", ""]), st.text(max_size=6))
VALUE_FLAGS = {
    "-p": int_text, "--pid": int_text, "-t": int_text, "--tid": int_text, "-u": int_text, "--uid": int_text,
    "-n": name_text, "--name": name_text, "-d": float_text, "--duration": float_text,
    "-c": int_text, "--count": int_text, "--syscall": syscall_text, "--ring-size": size_text,
}  # fmt: skip
JUNK = ["--", "-", "---", "--pi", "--sys", "--ring", "--json=1", "-xTU", "-xp", "-pd", "trace", "list",
        "format", "--duration", "-Z", "--nope", "-h", "junk", "-1", "-0.5"]  # fmt: skip


def _with_value(flag: str) -> st.SearchStrategy[list[str]]:
    value = VALUE_FLAGS[flag]
    forms: list[st.SearchStrategy[list[str]]] = [value.map(lambda v: [flag, v])]
    if flag.startswith("--"):
        forms.append(value.map(lambda v: [f"{flag}={v}"]))
    else:
        forms.append(value.map(lambda v: [flag + v]))  # -p123
    return st.one_of(forms)


clause = st.one_of(
    st.sampled_from(sorted(VALUE_FLAGS)).flatmap(_with_value),
    st.sampled_from(BOOL_FLAGS).map(lambda f: [f]),
    st.lists(st.sampled_from("xTUeq"), min_size=2, max_size=4).map(lambda cs: ["-" + "".join(cs)]),
    st.sampled_from(JUNK).map(lambda j: [j]),
    st.text(chars, max_size=8).map(lambda j: [j]),
)
options = st.lists(clause, max_size=6).map(lambda cs: [tok for c in cs for tok in c])
argvs = st.one_of(
    options,
    options.map(lambda o: ["trace", *o]),
    st.tuples(st.sampled_from(["list", "format"]), st.lists(st.one_of(st.text(chars, max_size=12),
              st.sampled_from(["syscalls:sys_enter_openat", "syscalls:*open*", "--json", "-h", "x:y", "../..:x", ":"])),
              max_size=3)).map(lambda t: [t[0], *t[1]]),
)  # fmt: skip

UNCLEAR = ("Traceback", "Exceeds the limit", "set_int_max_str_digits", "codec can't", "surrogates not allowed",
           "PanicException", "panicked", "os error", "NoneType", "object has no attribute")  # fmt: skip


def run_cli(argv: list[str]) -> tuple[object, str, str]:
    """main(argv) in-process: (exit status or the escaped exception, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status: object = cli.main(argv)
        except SystemExit as e:
            status = e.code
        except BaseException as e:  # reported by the caller
            status = e
    return status, out.getvalue(), err.getvalue()


def check_cli_outcome(argv: list[str], status: object, out: str, err: str) -> None:
    """Usage error (2: usage + error, or one line for a name that matches nothing), help (0),
    normal end (0) or a one-line runtime error (1)."""
    __tracebackhide__ = True
    if isinstance(status, Loaded):
        return  # (stubbed) got as far as loading: argv was valid
    assert not isinstance(status, BaseException), f"{argv!r}: {type(status).__name__} escaped: {status}"
    assert not any(word in err for word in UNCLEAR), f"{argv!r}: stderr is unclear:\n{err}"
    assert status in (0, 1, 2), f"{argv!r}: status {status!r}"
    if status == 2:
        one_line = err.count("\n") == 1 and err.startswith("opentrace: ")
        assert ("usage:" in err and "error:" in err) or one_line, f"{argv!r}: exit 2 without usage/error:\n{err}"
    elif status == 1:
        lines = err.strip("\n").split("\n")
        assert lines and lines[-1].startswith("opentrace: "), f"{argv!r}: exit 1 without a message: {err!r}"


@settings(FAST, max_examples=100)
@given(argv=argvs)
@example(argv=["--ring-size", "9" * 4299 + "G"])  # 'Exceeds the limit (4300 digits)...' as the error
@example(argv=["-n", "\ud800"])  # "'utf-8' codec can't encode ..." as the error (not via a real exec)
@example(argv=["-p", "0", "--syscall", "openat"])
@example(argv=["--ring-size", "0K"])
def test_cli_bad_usage_exits_2_with_usage_and_no_traceback(argv: list[str]) -> None:
    """Stubbed: a valid trace argv stops at loading (``Loaded``); list/format run for real.
    Anything else is bad usage, and exits 2: never 0 or 1 (list/format: 1 for a name or pattern
    that matches no tracepoint, a runtime error as API.md says)."""
    with no_loading():
        status, out, err = run_cli(argv)
    if isinstance(status, Loaded) or (status == 0 and "usage:" in out):
        return  # valid, or -h/--help
    if argv[:1] in (["list"], ["format"]) and status in (0, 1):
        # Listed or shown; or no such tracepoint, or, not root, tracefs unreadable (runtime errors).
        check_cli_outcome(argv, status, out, err)
        assert out if status == 0 else err, f"{argv!r}: exit {status} saying nothing"
        return
    check_cli_outcome(argv, status, out, err)
    assert status == 2, f"{argv!r}: status {status!r}, not 2:\n{err}"


def _would_be_huge_ring(argv: list[str]) -> bool:
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            ns = cli._trace_parser().parse_args(argv)
        except SystemExit:
            return False
    return ns.ring_size is not None and ns.ring_size > 1 << 22


def bounded(argv: list[str]) -> list[str]:
    """A trace argv that ends soon and sees (almost) nothing, with the same validity as ``argv``.

    ``-p NO_PID`` goes first so a generated ``-p`` overrides it (argparse: the last one wins;
    a generated invalid ``-p`` still fails); ``-d 0.05`` goes last so it overrides any generated
    duration (every ``-d`` value is still type-checked, so an invalid one still fails). A generated
    part ending in a flag that wants a value, or in ``--``, is invalid with or without the suffix.
    """
    if argv[:1] in (["list"], ["format"]):
        return argv
    head = argv[:1] if argv[:1] == ["trace"] else []
    return [*head, "-p", NO_PID, *argv[len(head) :], "-d", "0.05"]


@pytest.mark.root
@settings(SLOW, max_examples=20)
@given(argv=argvs)
@example(argv=["-c", str(2**64)])  # OverflowError from Session.read_text(limit: usize)
@example(argv=["-c", "1", "-d", "1e300", "--ring-size", "4K", "--syscall", "openat", "-xTUe", "--json"])
def test_cli_any_argv_exits_2_or_runs(argv: list[str]) -> None:
    argv = bounded(argv)
    assume(not _would_be_huge_ring(argv))
    status, out, err = run_cli(argv)
    if status == 0 and "usage:" in out:
        return
    check_cli_outcome(argv, status, out, err)


@pytest.mark.root
def test_cli_huge_count_has_no_traceback_in_a_real_process() -> None:
    argv = ["-c", str(2**64), "-p", NO_PID, "-d", "0.05", "-q"]
    proc = subprocess.run([sys.executable, "-m", "opentrace", *argv], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 2), (proc.returncode, proc.stderr)
