"""Check, for real, which open-tracing tools get a set of hard cases wrong.

    sudo .venv/bin/python bench/peers_check.py [--loop N] [--tools opentrace,bpftrace,opensnoop]

Tools compared: opentrace (this project), bpftrace with the one-liner a user would write (one
``sys_enter_*`` probe printing ``str()`` of the path and one ``sys_exit_*`` probe printing ``ret``
per syscall, default settings, so ``str()`` is limited by BPFTRACE_STRLEN's default), and
libbpf-tools' ``opensnoop -e -p PID`` (run under ``stdbuf -oL``). The peers come from
``sudo scripts/bootstrap bench``; a missing one is an error.

Each case runs tests/opener.py as a child, attaches the tool with a pid filter on the child, lets
the child do its syscalls, and compares what the tool printed with what the child got back.
The result is a Markdown table on stdout (case x tool: "ok" or what went wrong). Needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    OPENSNOOP,
    PY,
    ROOT,
    BenchError,
    LineCollector,
    check_root,
    ensure_tracefs,
    entry,
    require,
    spawn,
    stop,
    tool_versions,
    workspace,
)

import opentrace

OPENER = ROOT / "tests" / "opener.py"
SYSCALLS = ("open", "openat", "openat2", "creat")
AT_FDCWD = -100
ENOENT = 2
SETTLE = 1.0  # seconds of collection after the child is done
TOOLS = ("opentrace", "bpftrace", "opensnoop")
NEEDS = {"opentrace": (), "bpftrace": ("bpftrace",), "opensnoop": ("stdbuf", OPENSNOOP)}  # for `require`
LOST_RE = re.compile(rb"lost (\d+) events", re.IGNORECASE)


# --------------------------------------------------------------------------- records and cases


@dataclass
class Record:
    """One open as a tool reported it (None: the tool does not report that field)."""

    syscall: str | None
    path: bytes
    ret: int | None
    dfd: int | None = None


@dataclass
class Capture:
    records: list[Record]
    results: list[int]  # what the child got back, one per op
    lost: int | None = None  # events the tool says it dropped (None: it said nothing)
    notes: list[str] = field(default_factory=list)


@dataclass
class Target:
    """An op whose event we look for: its syscall, path and the index of its result."""

    label: str
    syscall: str
    path: bytes
    op: int
    check_dfd: bool = False


@dataclass
class Case:
    name: str
    ops: list[list[object]]
    targets: list[Target]
    loop: int = 0  # for the lost-events case: the number of opens


def s(path: bytes) -> str:
    """A path as opener.py wants it (non-UTF-8 bytes as surrogate escapes)."""
    return os.fsdecode(path)


def make_cases(tmp: Path, loop: int) -> list[Case]:
    t = os.fsencode(tmp)
    existing = t + b"/existing"
    Path(os.fsdecode(existing)).write_bytes(b"x")

    # ~4000-byte absolute path: nested directories of 200-char names, then a file.
    long_dir = t
    component = 1
    while len(long_dir) + 201 + 100 < 4000:
        long_dir += b"/" + (b"%03d" % component) + b"d" * 197
        component += 1
    long_name = b"f" * (4000 - len(long_dir) - 1)
    long_path = long_dir + b"/" + long_name
    os.makedirs(long_dir)
    Path(os.fsdecode(long_path)).write_bytes(b"x")

    unfaulted = t + b"/unfaulted-target"
    Path(os.fsdecode(unfaulted)).write_bytes(b"x")

    non_utf8 = t + b"/caf\xe9\xff"
    Path(os.fsdecode(non_utf8)).write_bytes(b"x")

    subdir = t + b"/dir"
    os.mkdir(subdir)
    Path(os.fsdecode(subdir + b"/relative-name")).write_bytes(b"x")

    loop_file = t + b"/loop"
    Path(os.fsdecode(loop_file)).write_bytes(b"x")

    o2 = t + b"/created-by-openat2"
    op_path = t + b"/existing"
    cr = t + b"/created-by-creat"
    missing = t + b"/missing"
    return [
        Case(
            "1. openat2 (O_CREAT|O_WRONLY, 0600)",
            [["openat2", s(o2), os.O_CREAT | os.O_WRONLY, 0o600, 0]],
            [Target("openat2", "openat2", o2, 0)],
        ),
        Case(
            "2. open(2) and creat(2)",
            [["open", s(op_path), os.O_RDONLY, 0], ["creat", s(cr), 0o644]],
            [Target("open", "open", op_path, 0), Target("creat", "creat", cr, 1)],
        ),
        Case(
            "3. result: fd and -ENOENT",
            [["openat", None, s(existing), os.O_RDONLY, 0], ["openat", None, s(missing), os.O_RDONLY, 0]],
            [Target("fd", "openat", existing, 0), Target("ENOENT", "openat", missing, 1)],
        ),
        Case(
            f"4. {len(long_path)}-byte absolute path",
            [["openat", None, s(long_path), os.O_RDONLY, 0]],
            [Target("long", "openat", long_path, 0)],
        ),
        Case(
            "5. path in a page not faulted in",
            [["unfaulted", s(unfaulted)]],
            [Target("unfaulted", "openat", unfaulted, 0)],
        ),
        Case(
            "6. non-UTF-8 path (caf\\xe9\\xff)",
            [["openat", None, s(non_utf8), os.O_RDONLY, 0]],
            [Target("non-UTF-8", "openat", non_utf8, 0)],
        ),
        Case(
            "7. dirfd-relative openat",
            [["openat", s(subdir), "relative-name", os.O_RDONLY, 0]],
            [Target("relative", "openat", b"relative-name", 0, check_dfd=True)],
        ),
        Case(
            f"8. lost events ({loop} opens)",
            [["loop", s(loop_file), loop]],
            [Target("loop", "openat", loop_file, 0)],
            loop=loop,
        ),
    ]


# --------------------------------------------------------------------------- processes


class Child:
    """tests/opener.py, started and waiting for "go"."""

    def __init__(self, ops: list[list[object]]) -> None:
        self.proc = spawn([PY, str(OPENER), json.dumps(ops)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.pid = int(json.loads(self.proc.stdout.readline())["pid"])
        self._results: list[int] | None = None
        self._done = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        with contextlib.suppress(ValueError):
            self._results = json.loads(line)
        self._done.set()

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def results(self, timeout: float) -> list[int]:
        if not self._done.wait(timeout) or self._results is None:
            raise BenchError("child did not report its results")
        return self._results

    def kill(self) -> None:
        stop(self.proc, signal.SIGKILL, 5.0)


def collect(child: Child, loop: int) -> list[int]:
    """Let the child run, wait for its results, then give the tracer SETTLE seconds more."""
    child.go()
    results = child.results(timeout=120 + loop / 1000)
    time.sleep(SETTLE)
    return results


# --------------------------------------------------------------------------- the tools


def run_opentrace(case: Case) -> Capture:
    child = Child(case.ops)
    try:
        watcher = opentrace.watch(pid=child.pid)
        try:
            records: list[Record] = []

            def take(timeout: float) -> None:
                for e in watcher.poll(timeout):
                    records.append(Record(e.syscall, e.path_bytes, e.ret, e.dfd))

            child.go()
            deadline = time.monotonic() + 120 + case.loop / 1000
            while not child.done and time.monotonic() < deadline:
                take(0.1)
            results = child.results(timeout=1)
            end = time.monotonic() + SETTLE
            while time.monotonic() < end:
                take(0.1)
            return Capture(records, results, lost=watcher.lost)
        finally:
            watcher.close()
    finally:
        child.kill()


def enter_format(syscall: str) -> opentrace.TracepointFormat | None:
    """The record of ``syscalls:sys_enter_<syscall>``; None if this kernel has no such tracepoint."""
    try:
        return opentrace.tracepoint_format(f"syscalls:sys_enter_{syscall}")
    except opentrace.TracepointNotFound:
        return None


def path_field(fmt: opentrace.TracepointFormat) -> str:
    """The name of the record's path argument: its one ``const char *`` field (filename, pathname)."""
    names = [f.name for f in fmt.fields if f.type == "const char *"]
    if len(names) != 1:
        raise BenchError(f"{fmt.category}:{fmt.name} has {len(names)} const char * fields, expected one path")
    return names[0]


def bpftrace_script(pid: int) -> str:
    """The obvious per-syscall one-liners, joined."""
    probes = []
    for sc in SYSCALLS:
        fmt = enter_format(sc)
        if fmt is None:
            continue
        arg = path_field(fmt)
        probes.append(
            f'tracepoint:syscalls:sys_enter_{sc} /pid == {pid}/ {{ printf("E {sc} %s\\n", str(args->{arg})); }}'
        )
        probes.append(f'tracepoint:syscalls:sys_exit_{sc} /pid == {pid}/ {{ printf("X {sc} %d\\n", args->ret); }}')
    return "\n".join(probes)


def run_bpftrace(case: Case) -> Capture:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPFTRACE_")}  # defaults, as a user has them
    child = Child(case.ops)
    tracer = None
    try:
        tracer = LineCollector(["bpftrace", "-e", bpftrace_script(child.pid)], lambda line: b"Attaching" in line, env)
        tracer.wait_ready(60)
        time.sleep(0.5)
        results = collect(child, case.loop)
    finally:
        if tracer is not None:
            tracer.stop()
        child.kill()
    records: list[Record] = []
    pending: dict[str, Record] = {}
    for line in tracer.out:
        body = line[:-1] if line.endswith(b"\n") else line
        kind, _, rest = body.partition(b" ")
        sc, _, value = rest.partition(b" ")
        name = sc.decode(errors="replace")
        if kind == b"E":
            pending[name] = Record(name, value, None)
            records.append(pending[name])
        elif kind == b"X" and name in pending:
            with contextlib.suppress(ValueError):
                pending.pop(name).ret = int(value)
    return Capture(records, results, lost=lost_count(tracer))


OPENSNOOP_LINE = re.compile(rb"^(\d+) +(.*?) +(-?\d+) +(\d+) +([0-7]+) (.*)$", re.DOTALL)


def run_opensnoop(case: Case) -> Capture:
    child = Child(case.ops)
    tracer = None
    try:
        tracer = LineCollector(
            ["stdbuf", "-oL", OPENSNOOP, "-e", "-p", str(child.pid)], lambda line: line.startswith(b"PID")
        )
        try:
            tracer.wait_ready(10)
        except BenchError:
            if tracer.proc.poll() is not None:
                raise
        time.sleep(1.0)
        results = collect(child, case.loop)
    finally:
        if tracer is not None:
            tracer.stop()
        child.kill()
    records = []
    for line in tracer.out:
        m = OPENSNOOP_LINE.match(line[:-1] if line.endswith(b"\n") else line)
        if m is None:
            continue
        fd, err = int(m.group(3)), int(m.group(4))
        records.append(Record(None, m.group(6), fd if fd >= 0 else -err))
    return Capture(records, results, lost=lost_count(tracer))


def lost_count(tracer: LineCollector) -> int | None:
    counts = [int(m.group(1)) for line in tracer.out + tracer.err for m in LOST_RE.finditer(line)]
    return sum(counts) if counts else None


RUNNERS: dict[str, Callable[[Case], Capture]] = {
    "opentrace": run_opentrace,
    "bpftrace": run_bpftrace,
    "opensnoop": run_opensnoop,
}


# --------------------------------------------------------------------------- judging


def find(target: Target, capture: Capture, others: set[bytes]) -> tuple[Record | None, str]:
    """The record for a target: exact path, else a truncated one, else the last with the right result.

    ``others``: the paths of the case's other targets; a record with one of them is not a candidate.
    """
    expected = capture.results[target.op]
    cands = [r for r in capture.records if r.syscall in (None, target.syscall)]
    for r in cands:
        if r.path == target.path:
            return r, "exact"
    cands = [r for r in cands if r.path not in others]
    prefixes = [r for r in cands if r.path and len(r.path) >= 16 and target.path.startswith(r.path)]
    if prefixes:
        return max(prefixes, key=lambda r: len(r.path)), "prefix"
    same_ret = [r for r in cands if r.ret is not None and r.ret == expected]
    if same_ret:
        return same_ret[-1], "other"
    if cands and all(r.ret is None for r in cands):
        return cands[-1], "other"
    return None, "none"


def short(path: bytes) -> str:
    text = repr(path)
    return text if len(text) <= 40 else text[:37] + "..."


def judge_target(target: Target, capture: Capture, others: set[bytes]) -> str:
    record, how = find(target, capture, others)
    if record is None:
        return "not seen"
    problems = []
    if how == "prefix":
        problems.append(f"path truncated to {len(record.path)} of {len(target.path)} bytes")
    elif how == "other":
        problems.append("empty path" if not record.path else f"wrong path {short(record.path)}")
    expected = capture.results[target.op]
    if record.ret is None:
        problems.append("no fd/errno")
    elif record.ret != expected:
        problems.append(f"result {record.ret}, expected {expected}")
    if target.check_dfd:
        if record.dfd is None:
            problems.append(f"no dfd (only the relative path {short(record.path)})")
        elif record.dfd == AT_FDCWD:
            problems.append("dfd reported as AT_FDCWD")
        else:
            problems.append(f"dfd={record.dfd}")
    return "; ".join(problems) or "ok"


def judge_loop(case: Case, capture: Capture) -> str:
    target = case.targets[0]
    seen = sum(1 for r in capture.records if r.syscall in (None, target.syscall) and r.path == target.path)
    if capture.lost is None:
        told = "no loss reported"
    else:
        told = f"reports {capture.lost} lost"
    if seen == case.loop and not capture.lost:
        return f"ok ({seen}/{case.loop}, {told})"
    return f"{seen}/{case.loop} captured; {told}"


def judge(case: Case, capture: Capture) -> str:
    if case.loop:
        return judge_loop(case, capture)
    paths = {t.path for t in case.targets}
    cells = [(t.label, judge_target(t, capture, paths - {t.path})) for t in case.targets]
    if len(cells) == 1:
        text = cells[0][1]
    elif all(c == "ok" for _, c in cells):
        text = "ok"
    else:
        text = "; ".join(f"{label}: {c}" for label, c in cells)
    if case.targets[0].check_dfd and text.startswith("dfd="):
        text = f"ok ({text})"
    return text


# --------------------------------------------------------------------------- setup and main


DEBUGFS = Path("/sys/kernel/debug")


def ensure_environment(tools: list[str]) -> bool:
    """Check root and the peers, mount tracefs if needed; True if debugfs was mounted here (to undo).

    libbpf-tools 0.26 opensnoop looks for tracepoints under /sys/kernel/debug/tracing only and
    silently skips open(2) when it is absent; a stock Debian system has debugfs mounted, so it
    is mounted here for the run if it is not.
    """
    check_root("peers_check.py")
    require(c for t in tools for c in NEEDS[t])
    ensure_tracefs()
    if "opensnoop" in tools and not (DEBUGFS / "tracing" / "events").is_dir():
        r = subprocess.run(["mount", "-t", "debugfs", "debugfs", str(DEBUGFS)], capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"mounting debugfs at {DEBUGFS} (for opensnoop) failed: {r.stderr.strip()}")
        return True
    return False


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def check(tools: list[str], loop: int) -> int:
    mounted_debugfs = ensure_environment(tools)

    table: dict[str, dict[str, str]] = {}
    try:
        with workspace("peers-check-") as tmp:
            cases = make_cases(tmp, loop)
            for case in cases:
                row = table.setdefault(case.name, {})
                for tool in tools:
                    print(f"[{tool}] {case.name}", file=sys.stderr, flush=True)
                    try:
                        row[tool] = judge(case, RUNNERS[tool](case))
                    except Exception as exc:  # report and go on with the other cells
                        row[tool] = f"error: {exc}".replace("\n", " ")[:120]
                    print(f"    -> {row[tool]}", file=sys.stderr, flush=True)
    finally:
        if mounted_debugfs:
            subprocess.run(["umount", str(DEBUGFS)], check=False)

    print("| case | " + " | ".join(tools) + " |")
    print("|---|" + "---|" * len(tools))
    for name, row in table.items():
        print(f"| {cell(name)} | " + " | ".join(cell(row[t]) for t in tools) + " |")
    print()
    print(f"Kernel {os.uname().release}; opentrace from {Path(opentrace.__file__).parent}.")
    versions = tool_versions(c for t in tools for c in NEEDS[t])
    if "bpftrace" in tools:
        print(
            f"bpftrace: {versions['bpftrace']}, default BPFTRACE_STRLEN, one probe per "
            "sys_enter_*/sys_exit_* tracepoint printing str(path) / ret."
        )
        openat = enter_format("openat")
        if openat is not None and any(f.name == "dfd" for f in openat.fields):
            print("bpftrace: the one-liner prints no dfd; sys_enter_openat does offer args->dfd (as a number).")
    if "opensnoop" in tools:
        print(
            f"opensnoop: libbpf-tools {versions['libbpf-tools']}, run as `stdbuf -oL opensnoop -e -p PID`"
            + (" (debugfs mounted for the run, as on a stock system)." if mounted_debugfs else ".")
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/peers_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--loop", type=int, default=200_000, help="opens in the lost-events case")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of " + ",".join(TOOLS))
    args = parser.parse_args(argv)
    tools = [t for t in args.tools.split(",") if t]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tools: {', '.join(sorted(unknown))}")
    return entry("peers_check", lambda: check(tools, args.loop))


if __name__ == "__main__":
    sys.exit(main())
