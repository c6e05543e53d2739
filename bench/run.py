#!/usr/bin/env python3
"""Overhead, capture, start time and memory of opentrace vs bpftrace vs opensnoop, in one table.

    sudo .venv/bin/python bench/run.py [--rounds 3] [--ops 200000] [--threads 1,2] [--tools ...] [--quick]

A C workload (bench/workload.c, comm "otbench") does N x (openat + close) of one unique file
per thread while each tool traces file opens system-wide; the modes alternate round by round
(the order rotates each round) so that drift of the machine hits every tool alike.

Per measurement: start the workload (its threads wait on a barrier), start the tracer, wait
until a probe path that this script opens every ~1 ms shows up in the tracer's output (that is
both the readiness check and the start-to-first-event time), stop the probe, send "go", read
the workload's ns/op, let the tracer drain (until its CPU time and output stop growing), read
its peak RSS (VmHWM), stop it with SIGINT, then count the target path in its output.

Only the standard library plus opentrace. Needs root; installs bpftrace/libbpf-tools if missing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import re
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
WORKLOAD_SRC = BENCH / "workload.c"
WORKLOAD_BIN = OUT / "otbench"  # the comm the tracers see
CONSUMER = BENCH / "consumer.py"
PY = sys.executable
OPENSNOOP = "/usr/sbin/opensnoop"
TRACEFS = Path("/sys/kernel/tracing")

ATTACH_TIMEOUT = 10.0  # a tracer not seen attached within this is an error
STOP_TIMEOUT = 15.0  # SIGINT to exit; then SIGKILL and an error
DRAIN_MIN = 0.5  # seconds a tracer gets after the workload, at least
DRAIN_MAX = 30.0
PROBE_PERIOD = 0.001
CLK_TCK = os.sysconf("SC_CLK_TCK")

BPFTRACE_PRINTF = 'tracepoint:syscalls:sys_enter_openat { printf("%d %s %s\\n", pid, comm, str(args->filename)); }'
# The in-kernel floor: count the workload's opens in a map. The else branch (only for this
# script's pid, never for the workload) prints the probe path, so readiness is seen like the others.
BPFTRACE_COUNT = (
    'tracepoint:syscalls:sys_enter_openat { if (comm == "otbench") { @c = count(); } '
    'else if (pid == %d) { printf("%%s\\n", str(args->filename)); } }'
)


@dataclass(frozen=True)
class Tool:
    name: str
    label: str
    peer: str | None = None  # "bpftrace" / "opensnoop": a Debian package must be installed
    count: str = "lines"  # how captured events are counted: lines | consumer | bpftrace-map


TOOLS = {
    t.name: t
    for t in (
        Tool("untraced", "untraced"),
        Tool("opentrace-lib", "opentrace library (Python loop)", count="consumer"),
        Tool("opentrace-cli", "opentrace CLI > file"),
        Tool("bpftrace-printf", "bpftrace printf > file", peer="bpftrace"),
        Tool("opensnoop", "opensnoop (libbpf-tools) > file", peer="opensnoop"),
        Tool("bpftrace-count", "bpftrace count-only (in-kernel floor)", peer="bpftrace", count="bpftrace-map"),
    )
}


class BenchError(Exception):
    """A failure that ends the run with a clear message."""


# ---------------------------------------------------------------------------------------------
# processes: every child is tracked and killed on the way out, whatever happens


_children: list[subprocess.Popen[bytes]] = []


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    # A new session: a Ctrl-C on the terminal reaches only this script, which stops them itself.
    try:
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
    except OSError as e:
        raise BenchError(f"cannot start {argv[0]}: {e}") from e
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, timeout: float = STOP_TIMEOUT) -> bool:
    """Signal ``proc`` and reap it; SIGKILL after ``timeout``. True if it exited by itself."""
    clean = True
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            clean = False
            proc.kill()
            proc.wait()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
    if proc in _children:
        _children.remove(proc)
    return clean


def stop_all() -> None:
    for proc in list(_children):
        stop(proc, timeout=5.0)


class LineReader:
    """Lines from a child's stdout pipe, with a timeout."""

    def __init__(self, proc: subprocess.Popen[bytes], what: str) -> None:
        assert proc.stdout is not None
        self.proc, self.what, self.fd, self.buf = proc, what, proc.stdout.fileno(), b""

    def readline(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.fd, selectors.EVENT_READ)
            while b"\n" not in self.buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"{self.what}: no output within {timeout:.0f} s")
                if sel.select(left):
                    chunk = os.read(self.fd, 65536)
                    if not chunk:
                        raise BenchError(f"{self.what} exited (status {self.proc.wait()}) before answering")
                    self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()


# ---------------------------------------------------------------------------------------------
# /proc readings


def proc_status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class CpuClock:
    """utime+stime of one process (all its threads), read from a kept-open /proc/<pid>/stat."""

    def __init__(self, pid: int) -> None:
        self.fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)

    def seconds(self) -> float | None:
        try:
            raw = os.pread(self.fd, 4096, 0).decode()
        except OSError:
            return None
        fields = raw.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)

    def close(self) -> None:
        os.close(self.fd)


def foreign_tracers() -> list[str]:
    """Other processes with eBPF programs attached through perf events (bpftrace, opensnoop, opentrace...).

    They would run on the workload's syscalls too and skew every mode, "untraced" included.
    """
    ours = {os.getpid()} | {p.pid for p in _children}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in ours:
            continue
        kinds = set()
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    kinds.add(os.readlink(f"/proc/{entry}/fd/{fd}"))
        if "anon_inode:bpf-prog" in kinds and "anon_inode:[perf_event]" in kinds:
            comm = ""
            with contextlib.suppress(OSError):
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
            found.append(f"{entry} {comm}")
    return found


# ---------------------------------------------------------------------------------------------
# setup


def check_root() -> None:
    if os.geteuid() != 0:
        raise BenchError("must run as root (loads eBPF programs): sudo .venv/bin/python bench/run.py")


def ensure_tracefs() -> None:
    if (TRACEFS / "events").is_dir():
        return
    r = subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True, text=True)
    if not (TRACEFS / "events").is_dir():
        raise BenchError(f"tracefs is not mounted at {TRACEFS} and mounting it failed: {r.stderr.strip()}")


def peers_missing(peers: set[str]) -> list[str]:
    missing = []
    if "bpftrace" in peers and shutil.which("bpftrace") is None:
        missing.append("bpftrace")
    if "opensnoop" in peers and not os.access(OPENSNOOP, os.X_OK):
        missing.append("opensnoop")
    if peers and shutil.which("stdbuf") is None:
        missing.append("stdbuf")
    return missing


def ensure_peers(peers: set[str]) -> None:
    if not peers_missing(peers):
        return
    print("bench: installing bpftrace and libbpf-tools (apt-get)...", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "bpftrace", "libbpf-tools", "coreutils"]
    if subprocess.run(install, env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env)
        subprocess.run(install, env=env)
    still = peers_missing(peers)
    if still:
        raise BenchError(f"missing after apt-get install bpftrace libbpf-tools: {', '.join(still)}")


def build_workload() -> Path:
    """gcc -O2 -pthread bench/workload.c into bench/out/otbench, only when the source changed."""
    OUT.mkdir(exist_ok=True)
    digest = hashlib.sha256(WORKLOAD_SRC.read_bytes()).hexdigest()
    stamp = OUT / "otbench.sha256"
    if WORKLOAD_BIN.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return WORKLOAD_BIN
    if shutil.which("gcc") is None:
        raise BenchError("gcc not found: apt-get install -y gcc (or run scripts/bootstrap)")
    tmp = OUT / "otbench.tmp"
    r = subprocess.run(["gcc", "-O2", "-pthread", "-Wall", "-o", str(tmp), str(WORKLOAD_SRC)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"compiling {WORKLOAD_SRC} failed:\n{r.stderr}")
    tmp.replace(WORKLOAD_BIN)
    stamp.write_text(digest + "\n")
    return WORKLOAD_BIN


def first_line(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    text = (r.stdout or r.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def machine_info(peers: set[str]) -> dict[str, Any]:
    from importlib import metadata

    cpu_model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    try:
        ot_version = metadata.version("opentrace")
    except metadata.PackageNotFoundError:
        ot_version = "unknown"
    info: dict[str, Any] = {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "opentrace": ot_version,
        "gcc": first_line(["gcc", "--version"]),
    }
    if "bpftrace" in peers:
        info["bpftrace"] = first_line(["bpftrace", "--version"])
    if "opensnoop" in peers:
        info["libbpf-tools"] = first_line(["dpkg-query", "-W", "-f", "${Version}", "libbpf-tools"])
    return info


# ---------------------------------------------------------------------------------------------
# one measurement


class Prober:
    """Opens ``path`` every ~1 ms from this process until stopped: the tracers' readiness signal."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="prober", daemon=True)

    def _run(self) -> None:
        while not self.done.is_set():
            with contextlib.suppress(OSError):
                os.close(os.open(self.path, os.O_RDONLY))
            self.done.wait(PROBE_PERIOD)

    def __enter__(self) -> Prober:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


def tracer_argv(tool: Tool, probe: Path, workload_pid: int) -> list[str]:
    if tool.name == "opentrace-lib":
        return [PY, str(CONSUMER), str(workload_pid), str(probe)]
    if tool.name == "opentrace-cli":
        return [PY, "-m", "opentrace", "-q"]
    if tool.name == "bpftrace-printf":
        return ["bpftrace", "-e", BPFTRACE_PRINTF]
    if tool.name == "opensnoop":
        return ["stdbuf", "-oL", OPENSNOOP]
    if tool.name == "bpftrace-count":
        return ["bpftrace", "-e", BPFTRACE_COUNT % os.getpid()]
    raise AssertionError(tool.name)


def tail(path: Path, limit: int = 1500) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode(errors="replace").strip()


def wait_for_probe(proc: subprocess.Popen[bytes], out: Path, err: Path, probe: bytes, label: str) -> None:
    """Until ``probe`` appears in ``out`` (the tracer is attached); error after ATTACH_TIMEOUT."""
    deadline = time.monotonic() + ATTACH_TIMEOUT
    fd = os.open(out, os.O_RDONLY)
    try:
        seen = b""
        while True:
            chunk = os.read(fd, 1 << 20)
            if chunk:
                seen = seen[-len(probe):] + chunk
                if probe in seen:
                    return
                continue
            if proc.poll() is not None:
                raise BenchError(f"{label} exited with status {proc.returncode} before attaching:\n"
                                 f"{tail(err) or tail(out)}")
            if time.monotonic() > deadline:
                raise BenchError(f"{label} was not seen attached within {ATTACH_TIMEOUT:.0f} s "
                                 f"(no event for the probe path in its output):\n{tail(err)}")
            time.sleep(0.002)
    finally:
        os.close(fd)


def drain(proc: subprocess.Popen[bytes], out: Path) -> tuple[float, bool]:
    """Wait until the tracer has caught up: CPU time and output size stop growing. (seconds, timed out)"""
    t0 = time.monotonic()
    clock = CpuClock(proc.pid)
    try:
        time.sleep(DRAIN_MIN)
        cpu, size = clock.seconds(), out.stat().st_size
        while time.monotonic() - t0 < DRAIN_MAX:
            time.sleep(0.25)
            cpu2, size2 = clock.seconds(), out.stat().st_size
            if cpu is None or cpu2 is None or proc.poll() is not None:
                break
            if cpu2 - cpu <= 2 / CLK_TCK and size2 == size:
                return time.monotonic() - t0, False
            cpu, size = cpu2, size2
        else:
            return time.monotonic() - t0, True
    finally:
        clock.close()
    return time.monotonic() - t0, False


_LOST = re.compile(rb"(?:Lost (\d+) events|opentrace: (\d+) events lost in all)")


def count_lines(out: Path, err: Path, target: bytes) -> tuple[int, int]:
    """(lines with ``target``, lost events the tool reported on stdout/stderr)."""
    captured = lost = 0
    with open(out, "rb") as f:
        for line in f:
            if target in line:
                captured += 1
            elif line.startswith(b"Lost "):
                m = _LOST.search(line)
                lost += int(m.group(1)) if m else 0
    tool_err = err.read_bytes() if err.exists() else b""
    if tool_err:
        matches = list(_LOST.finditer(tool_err))
        if any(m.group(2) for m in matches):  # opentrace CLI: only its final total
            lost += sum(int(m.group(2)) for m in matches if m.group(2))
        else:
            lost += sum(int(m.group(1)) for m in matches if m.group(1))
    return captured, lost


@dataclass
class Measurement:
    tool: str
    threads: int
    round: int
    ops_per_thread: int
    ns_per_op: float = 0.0
    thread_ns_per_op: list[float] = field(default_factory=list)
    wall_ns: int = 0
    open_errors: int = 0
    expected: int = 0
    captured: int | None = None
    lost: int | None = None
    spawn_to_first_ms: float | None = None
    watch_ms: float | None = None  # library mode: how long opentrace.watch() took
    watch_to_first_ms: float | None = None  # library mode: just before watch() to first probe event
    peak_rss_mb: float | None = None
    tracer_cpu_s: float | None = None
    drain_s: float | None = None
    drain_timed_out: bool = False
    stop_ms: float | None = None
    stopped_cleanly: bool | None = None
    foreign_tracers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def measure(tool: Tool, threads: int, ops: int, rnd: int, workdir: Path, target: Path, seq: int) -> Measurement:
    m = Measurement(tool.name, threads, rnd, ops, expected=ops * threads)
    m.foreign_tracers = foreign_tracers()
    tag = f"{seq:03d}-{tool.name}-t{threads}"
    workload = spawn([str(WORKLOAD_BIN), str(target), str(ops), str(threads)],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    tracer: subprocess.Popen[bytes] | None = None
    out, err = workdir / f"{tag}.out", workdir / f"{tag}.err"
    try:
        lines = LineReader(workload, "workload")
        if (armed := lines.readline(10)) != "armed":
            raise BenchError(f"workload said {armed!r} instead of 'armed'")

        if tool.name != "untraced":
            probe = workdir / f"probe-{tag}"
            probe.touch()
            with open(out, "wb") as fout, open(err, "wb") as ferr, Prober(probe):
                t_spawn = time.perf_counter()
                tracer = spawn(tracer_argv(tool, probe, workload.pid),
                               stdin=subprocess.DEVNULL, stdout=fout, stderr=ferr)
                wait_for_probe(tracer, out, err, os.fsencode(probe), tool.label)
                m.spawn_to_first_ms = (time.perf_counter() - t_spawn) * 1e3
            time.sleep(0.05)  # let the last probe events through before the clock starts

        assert workload.stdin is not None
        workload.stdin.write(b"go\n")
        workload.stdin.flush()
        result = json.loads(lines.readline(3600))
        workload.wait(10)
        m.ns_per_op = result["ns_per_op"]
        m.thread_ns_per_op = result["thread_ns_per_op"]
        m.wall_ns = result["wall_ns"]
        m.open_errors = result["errors"]
        if m.open_errors:
            m.notes.append(f"{m.open_errors} opens failed in the workload")
        if result["total_ops"] != m.expected:
            raise BenchError(f"workload did {result['total_ops']} ops, expected {m.expected}")
        if tracer is None:
            return m

        m.drain_s, m.drain_timed_out = drain(tracer, out)
        if m.drain_timed_out:
            m.notes.append(f"still busy after {DRAIN_MAX:.0f} s of drain")
        hwm = proc_status_kb(tracer.pid, "VmHWM")
        m.peak_rss_mb = None if hwm is None else hwm / 1024
        clock = CpuClock(tracer.pid)
        m.tracer_cpu_s = clock.seconds()
        clock.close()
        if tracer.poll() is not None:
            raise BenchError(f"{tool.label} died during the run (status {tracer.returncode}):\n{tail(err)}")
        t_stop = time.perf_counter()
        m.stopped_cleanly = stop(tracer)
        m.stop_ms = (time.perf_counter() - t_stop) * 1e3
        if not m.stopped_cleanly:
            m.notes.append(f"did not exit within {STOP_TIMEOUT:.0f} s of SIGINT (killed)")

        target_b = os.fsencode(target)
        if tool.count == "lines":
            m.captured, m.lost = count_lines(out, err, target_b)
        elif tool.count == "consumer":
            report = _last_json(out)
            if report is None:
                raise BenchError(f"{tool.label} printed no final report:\n{tail(err) or tail(out)}")
            m.captured, m.lost = report["count"], report["lost"]
            m.watch_ms, m.watch_to_first_ms = report["watch_ms"], report["first_event_ms"]
        else:  # bpftrace-map
            found = re.search(rb"^@c: (\d+)", out.read_bytes(), re.MULTILINE)
            m.captured = int(found.group(1)) if found else 0
            m.lost = count_lines(out, err, target_b)[1]
        return m
    finally:
        if tracer is not None:
            stop(tracer)
        stop(workload, signal.SIGKILL, 5.0)
        for p in (out, err):
            p.unlink(missing_ok=True)


def _last_json(path: Path) -> dict[str, Any] | None:
    for line in reversed(path.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                return json.loads(line)  # type: ignore[no-any-return]
    return None


# ---------------------------------------------------------------------------------------------
# summary


def _median(values: list[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return statistics.median(xs) if xs else None


def summarize(results: list[Measurement], tools: list[str], threads: list[int]) -> list[dict[str, Any]]:
    untraced = {(m.threads, m.round): m.ns_per_op for m in results if m.tool == "untraced"}
    rows = []
    for t in threads:
        for name in tools:
            ms = [m for m in results if m.tool == name and m.threads == t]
            if not ms:
                continue
            ratios = [m.ns_per_op / untraced[(t, m.round)] for m in ms if (t, m.round) in untraced]
            captured = [m.captured for m in ms if m.captured is not None]
            expected = [m.expected for m in ms if m.captured is not None]
            rows.append({
                "tool": name,
                "label": TOOLS[name].label,
                "threads": t,
                "rounds": len(ms),
                "ns_per_op": _median([m.ns_per_op for m in ms]),
                "ratio": _median(list(ratios)),
                "captured": sum(captured) if captured else None,
                "expected": sum(expected) if captured else None,
                "captured_min_pct": min((100 * c / e for c, e in zip(captured, expected, strict=True)),
                                        default=None),
                "lost": sum(m.lost for m in ms if m.lost is not None) if name != "untraced" else None,
                "spawn_to_first_ms": _median([m.spawn_to_first_ms for m in ms]),
                "watch_ms": _median([m.watch_ms for m in ms]),
                "watch_to_first_ms": _median([m.watch_to_first_ms for m in ms]),
                "peak_rss_mb": _median([m.peak_rss_mb for m in ms]),
                "tracer_cpu_s": _median([m.tracer_cpu_s for m in ms]),
                "notes": _notes(ms),
            })
    return rows


def _notes(ms: list[Measurement]) -> list[str]:
    notes = sorted({n for m in ms for n in m.notes})
    contaminated = sum(1 for m in ms if m.foreign_tracers)
    if contaminated:
        names = sorted({p.split(" ", 1)[-1] for m in ms for p in m.foreign_tracers})
        notes.append(f"other eBPF tracers ({', '.join(names)}) were running in {contaminated} of {len(ms)} "
                     "rounds: skewed")
    return notes


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def table(rows: list[dict[str, Any]]) -> str:
    head = ["tool", "T", "ns/op", "x untraced", "captured", "lost", "start->1st event ms",
            "peak RSS MiB", "tracer CPU s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for r in rows:
        if r["captured"] is None:
            captured = "n/a"
        else:
            pct = 100 * r["captured"] / r["expected"]
            captured = f"{pct:.1f}% ({r['captured']}/{r['expected']})"
            if r["rounds"] > 1 and r["captured_min_pct"] < pct:
                captured += f", worst round {r['captured_min_pct']:.1f}%"
        start = _fmt(r["spawn_to_first_ms"], ".0f")
        if r["tool"] == "bpftrace-count":
            start = "n/a"
        elif r["tool"] == "opentrace-lib" and r["watch_to_first_ms"] is not None:
            start = (f"{r['watch_to_first_ms']:.0f} in-process (watch() {r['watch_ms']:.0f}); "
                     f"{start} from spawn")
        lines.append("| " + " | ".join([
            r["label"], str(r["threads"]), _fmt(r["ns_per_op"], ".0f"),
            _fmt(r["ratio"], ".2f"), captured, "n/a" if r["lost"] is None else str(r["lost"]),
            start, _fmt(r["peak_rss_mb"], ".1f"), _fmt(r["tracer_cpu_s"], ".2f"),
        ]) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark opentrace (library and CLI) against bpftrace and opensnoop: "
        "workload slowdown, captured events, start-to-first-event time and peak RSS.",
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds; every mode runs once per round (default 3)")
    p.add_argument("--ops", type=int, default=200_000, help="openat+close per thread (default 200000)")
    p.add_argument("--threads", default="1,2", help="comma-separated workload thread counts (default 1,2)")
    p.add_argument("--tools", default=",".join(TOOLS),
                   help=f"comma-separated subset of: {', '.join(TOOLS)} (untraced is always run)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round of 50000 ops per thread")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.ops = 1, 50_000
    try:
        args.threads = [int(x) for x in args.threads.split(",") if x.strip()]
    except ValueError:
        p.error(f"--threads must be comma-separated integers, not {args.threads!r}")
    tools = [x.strip() for x in args.tools.split(",") if x.strip()]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        p.error(f"unknown tool(s) {', '.join(unknown)}; choose from {', '.join(TOOLS)}")
    args.tools = ["untraced"] + [t for t in TOOLS if t in tools and t != "untraced"]
    if args.rounds < 1 or args.ops < 1 or not args.threads or min(args.threads) < 1:
        p.error("--rounds, --ops and --threads must be positive")
    return args


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="otbench-"))
    try:
        yield path
    finally:
        stop_all()  # nothing may still write into it
        shutil.rmtree(path, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    check_root()
    ensure_tracefs()
    peers = {TOOLS[t].peer for t in args.tools if TOOLS[t].peer}
    ensure_peers(peers)  # type: ignore[arg-type]
    build_workload()
    info = machine_info(peers)  # type: ignore[arg-type]
    print(f"machine: Linux {info['kernel']}, {info['cpus']} CPUs ({info['cpu_model']}); "
          f"python {info['python']}, opentrace {info['opentrace']}")
    print("peers: " + ("; ".join(f"{k} {info[k]}" for k in ("bpftrace", "libbpf-tools") if k in info) or "none"))
    print(f"rounds {args.rounds}, {args.ops} openat+close per thread, threads {args.threads}", flush=True)
    others = foreign_tracers()
    if others:
        print(f"warning: other eBPF tracers are running ({', '.join(others)}); they slow the workload's "
              "syscalls in every mode, so the numbers below are skewed", file=sys.stderr, flush=True)

    results: list[Measurement] = []
    with workspace() as workdir:
        target = workdir / f"target-{os.getpid()}-{time.time_ns()}"
        target.write_bytes(b"x")
        # Warm-up, discarded: page in the workload, the dentry and the file.
        measure(TOOLS["untraced"], max(args.threads), min(args.ops, 20_000), 0, workdir, target, 0)
        seq = 0
        for rnd in range(1, args.rounds + 1):
            # Rotate the order every round so no tool always runs first (or right after another).
            shift = (rnd - 1) % len(args.tools)
            order = args.tools[shift:] + args.tools[:shift]
            for t in args.threads:
                for name in order:
                    seq += 1
                    m = measure(TOOLS[name], t, args.ops, rnd, workdir, target, seq)
                    results.append(m)
                    cap = "" if m.captured is None else f" captured {m.captured}/{m.expected}"
                    first = "" if m.spawn_to_first_ms is None else f" first {m.spawn_to_first_ms:.0f} ms"
                    print(f"  round {rnd} T={t} {name:<16} {m.ns_per_op:8.0f} ns/op{cap}{first}",
                          file=sys.stderr, flush=True)

    rows = summarize(results, args.tools, args.threads)
    print()
    print(table(rows))
    notes = [f"{r['label']} T={r['threads']}: {n}" for r in rows for n in r["notes"]]
    for n in notes:
        print(f"note: {n}")

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = OUT / f"results-{stamp}.json"
    path.write_text(json.dumps({
        "machine": info,
        "args": {"rounds": args.rounds, "ops": args.ops, "threads": args.threads, "tools": args.tools},
        "commands": {name: _describe(TOOLS[name]) for name in args.tools if name != "untraced"},
        "summary": rows,
        "measurements": [vars(m) for m in results],
    }, indent=2) + "\n")
    print(f"\nresults: {path.relative_to(BENCH.parent)}")
    return 0


def _describe(tool: Tool) -> str:
    argv = tracer_argv(tool, Path("PROBE"), 0)
    return " ".join(argv).replace(PY, "python").replace(str(BENCH.parent) + "/", "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGINT handled here (even if the shell started us with it ignored, which children would inherit);
    # SIGTERM too, so that every path out goes through the cleanup below.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return run(args)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
