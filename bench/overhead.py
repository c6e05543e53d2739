"""The engine behind bench/run.py: measure workloads untraced and under tracers, side by side.

bench/run.py declares *what* is measured (its ``TRACERS`` and ``WORKLOADS`` tables); this module
is *how*. A ``Workload`` is a C program that speaks otbench's protocol; a ``Tracer`` is a command
line (or ``None``: the untraced baseline) and how its captured events are counted. Every selected
tracer runs on every selected workload and thread count once per round, the order rotating each
round, and each traced run is compared with the untraced run of the same round.

Per measurement: start the workload (its threads wait on a barrier), start the tracer, wait until a
probe path that this process opens every ~1 ms shows up in the tracer's output (that is both the
readiness check and the start-to-first-event time), stop the probe, send "go", read the workload's
ns/op, let the tracer drain (until its CPU time and output stop growing), read its peak RSS
(VmHWM), stop it with SIGINT, then count the workload's events in its output.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

from common import (
    BENCH,
    CLK_TCK,
    CONSUMER,
    PY,
    STOP_TIMEOUT,
    WORKLOAD_CGROUP,
    WORKLOAD_COMM,
    WORKLOAD_SRC,
    BenchError,
    CpuClock,
    LineReader,
    Watchdog,
    bpf_program_ids,
    build_c,
    check_root,
    ensure_tracefs,
    foreign_tracers,
    machine_info,
    move_to_cgroup,
    proc_status_kb,
    rel,
    require,
    spawn,
    stop,
    tool_versions,
    wait_programs_gone,
    warn_foreign_tracers,
    workspace,
    write_json,
)

SETTLE = 0.5  # after a tracer's programs are gone: the kernel's deferred frees (RCU) finish
ATTACH_TIMEOUT = 60.0  # a tracer not seen attached within this is an error (bpftrace: ~30 s for 360 probes)
# The bound on one measurement (--row-timeout): at most ATTACH_TIMEOUT + DRAIN_MAX + STOP_TIMEOUT in
# waits, plus the workload. Past it, its processes are killed and the row says "timed out after N s".
ROW_TIMEOUT = 300.0
DRAIN_MIN = 0.5  # seconds a tracer gets after the workload, at least
DRAIN_MAX = 30.0
DRAIN_TRICKLE = 64 << 10  # bytes of output per 0.25 s that still count as caught up
PROBE_PERIOD = 0.001
WARMUP_OPS = 20_000  # per thread, of the discarded untraced run that starts each workload


# ---------------------------------------------------------------------------------------------
# what can be measured


@dataclass(frozen=True)
class Context:
    """What a tracer's command line may refer to."""

    probe: Path  # the path this process opens every ~1 ms until it shows up in the tracer's output
    workload_pid: int
    workload_comm: str
    bench_pid: int


Count = Literal["lines", "consumer", "bpftrace-map", "agent-metrics", "agent-parquet", "parquet-file"]


@dataclass(frozen=True)
class Tracer:
    """One row per workload and thread count of the table; its stdout and stderr go to files.

    ``count`` says how its captured events are counted:
      lines         lines of its stdout that contain the workload's ``Target.match`` (and "Lost N
                    events" lines, or "opentrace: N events lost in all" on stderr, as lost);
      consumer      the final JSON line of bench/consumer.py (see ``library``);
      bpftrace-map  the "@c: N" map bpftrace prints on exit;
      agent-metrics `opentrace agent --metrics`: its opentrace_opens_total and _events_lost_total,
                    scraped before it is stopped (see ``agent``); with ``workload_cgroup``, only
                    the series of the workload's cgroup (``container="/opentrace-bench-workload"``);
      agent-parquet `opentrace agent --parquet DIR`: the rows of the files in DIR once it stopped;
                    lost: the events its ring lost and those its Parquet sink dropped.
      parquet-file  the CLI's ``-o FILE.parquet`` (see ``cli_parquet``): the file's rows once it
                    stopped; lost: "opentrace: N events lost in all" on its stderr.
    """

    name: str  # for --tools and the JSON
    label: str  # the table's first column
    argv: Callable[[Context], list[str]] | None  # None: the untraced baseline
    needs: tuple[str, ...] = ()  # commands it runs (checked up front; `scripts/bootstrap bench` installs them)
    count: Count = "lines"
    show_start: bool = True  # False: the probe is not one of its events, start->1st event is "n/a"
    # What its stdout shows once it is attached, for a tracer that cannot see the probe (one filtered
    # to the workload); start->1st event is then the time to this. None: the probe path.
    attached: bytes | None = None
    attached_on_stderr: bool = False  # `attached` shows on its stderr (it writes nothing to stdout)
    # The workloads it runs on (None: every workload that is not `only_listed`).
    workloads: tuple[str, ...] | None = None
    # The workload runs in WORKLOAD_CGROUP (moved there before the tracer starts): a system-wide
    # tracer's counts of it are those of that cgroup.
    workload_cgroup: bool = False

    def runs_on(self, workload: Workload) -> bool:
        if self.argv is None:
            return True
        if self.workloads is not None:
            return workload.name in self.workloads
        return not workload.only_listed


Watch: TypeAlias = Mapping[str, Any] | Callable[[Context], Mapping[str, Any]]


def library(name: str, label: str, watch: Watch | None = None, attached: bytes | None = None,
            python: str = PY, workloads: tuple[str, ...] | None = None) -> Tracer:
    """A row for bench/consumer.py: ``opentrace.watch(**watch)`` in a plain Python loop that counts
    the workload's events (by pid). ``watch`` (JSON values; a function of the Context for, e.g., the
    workload's pid) is none by default: system-wide. ``attached=b"ready "`` for a filtered one.
    ``python`` is the interpreter (another one has another opentrace: a before/after row)."""

    def argv(c: Context) -> list[str]:
        kwargs = watch(c) if callable(watch) else watch
        extra = [json.dumps(dict(kwargs), sort_keys=True)] if kwargs else []
        return [python, str(CONSUMER), str(c.workload_pid), str(c.probe), *extra]

    return Tracer(name, label, argv, count="consumer", attached=attached, workloads=workloads)


def agent(name: str, label: str, *options: str, python: str = PY, system_wide: bool = False) -> Tracer:
    """A row for ``python -m opentrace agent OPTIONS... -n <the workload's comm>``: only the
    workload's opens pass its filter, so its counts are the workload's; it cannot see the probe
    path, so it is attached once it says it runs. ``{dir}`` in OPTIONS is a directory of its own in
    the work directory (``--parquet {dir}``); with ``--parquet`` its files' rows are counted, else
    its metrics (OPTIONS must then serve them: ``--metrics 127.0.0.1:0``).

    ``system_wide``: no filter, as a fleet runs it; the workload runs in a cgroup of its own and
    the agent labels series by cgroup path (a config file in its directory says so), so its counts
    are the series of that cgroup."""

    def argv(c: Context) -> list[str]:
        given = [o.replace("{dir}", str(agent_dir(c))) for o in options]
        if not system_wide:
            return [python, "-m", "opentrace", "agent", *given, "-n", c.workload_comm]
        agent_dir(c).mkdir(exist_ok=True)
        config = agent_dir(c) / "agent.toml"
        config.write_text('[metrics]\ncontainer_label = "cgroup"\n')
        return [python, "-m", "opentrace", "agent", "--config", str(config), *given]

    count: Count = "agent-parquet" if "--parquet" in options else "agent-metrics"
    return Tracer(name, label, argv, count=count, attached=b"agent running", attached_on_stderr=True,
                  workload_cgroup=system_wide)


def agent_dir(c: Context) -> Path:
    return c.probe.with_name(f"agent-{c.probe.name}")


_METRIC = re.compile(rb"^(opentrace_opens_total|opentrace_events_lost_total)(\{[^}]*\})? (\S+)$", re.M)


def scrape_agent(err: Path, container: str | None = None) -> tuple[int, int]:
    """(opens, lost) from the metrics of the agent whose stderr is ``err``, as it runs; the opens
    of the series whose ``container`` label is ``container`` alone, if given."""
    found = re.search(rb"metrics on (http://\S+/metrics)", err.read_bytes())
    if not found:
        raise BenchError(f"the agent said nowhere where its metrics are:\n{tail(err)}")
    with urllib.request.urlopen(found.group(1).decode(), timeout=30) as reply:
        text = reply.read()
    sums = {b"opentrace_opens_total": 0.0, b"opentrace_events_lost_total": 0.0}
    wanted = None if container is None else f'container="{container}"'.encode()
    for name, labels, value in _METRIC.findall(text):
        if name == b"opentrace_opens_total" and wanted is not None and wanted not in labels:
            continue
        sums[name] += float(value)
    return int(sums[b"opentrace_opens_total"]), int(sums[b"opentrace_events_lost_total"])


def settled_scrape(err: Path, container: str | None = None) -> tuple[int, int]:
    """``scrape_agent`` until two scrapes a counting period apart agree: with metrics alone the
    agent reads the kernel's counts once a second."""
    now = scrape_agent(err, container)
    for _ in range(10):
        time.sleep(1.2)
        now, then = scrape_agent(err, container), now
        if now == then:
            break
    return now


def count_agent_parquet(directory: Path, err: Path) -> tuple[int, int]:
    """(rows in the Parquet files in ``directory``, events lost or dropped) once the agent (or the
    CLI, into ``directory``/trace.parquet) stopped."""
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in directory.glob("*.parquet"))
    text = err.read_bytes()
    lost = re.search(rb"opentrace: (\d+) events lost in all", text)
    dropped = re.search(rb"parquet \d+ written, (\d+) dropped", text)
    return rows, sum(int(m.group(1)) for m in (lost, dropped) if m)


def cli_parquet(name: str, label: str, python: str = PY) -> Tracer:
    """A row for ``python -m opentrace -n <the workload's comm> -o DIR/trace.parquet``: the events
    the agent's ``--parquet`` row writes, written by the CLI itself (one file, its row groups
    encoded by a thread of the CLI's). It cannot see the probe path: attached once it says it
    traces."""

    def argv(c: Context) -> list[str]:
        agent_dir(c).mkdir(exist_ok=True)
        return [python, "-m", "opentrace", "-n", c.workload_comm, "-o", str(agent_dir(c) / "trace.parquet")]

    return Tracer(name, label, argv, count="parquet-file", attached=b"opentrace: tracing", attached_on_stderr=True)


def cli(name: str, label: str, *options: str | Callable[[Context], str], attached: bytes | None = None,
        python: str = PY, workloads: tuple[str, ...] | None = None) -> Tracer:
    """A row for ``python -m opentrace -q OPTIONS...`` (system-wide unless OPTIONS filter; OPTIONS
    may start with a command, ``watch ...``; an option may be made from the run's context)."""
    def argv(c: Context) -> list[str]:
        made = [o if isinstance(o, str) else o(c) for o in options]
        if made and made[0] == "watch":
            return [python, "-m", "opentrace", "watch", "-q", *made[1:]]
        return [python, "-m", "opentrace", "-q", *made]

    return Tracer(name, label, argv, attached=attached, workloads=workloads)


@dataclass(frozen=True)
class Target:
    path: Path  # what the workload is pointed at (its first argument)
    match: bytes  # a tracer's output line that contains this is one of the workload's events
    directory: Path | None = None  # where the workload runs, when ``path`` is relative to it


def file_target(workdir: Path) -> Target:
    """A file in the work directory; the workload makes <path>.<thread> next to it and opens those."""
    path = workdir / f"target-{os.getpid()}-{time.time_ns()}"
    path.write_bytes(b"x")
    return Target(path, os.fsencode(path))


def comm_target(comm: str) -> Callable[[Path], Target]:
    """A file target (see ``file_target``) whose events are counted by the workload's comm in
    text output (tracepoint records carry no path)."""

    def setup(workdir: Path) -> Target:
        return Target(file_target(workdir).path, comm.encode())

    return setup


def storm_args(target: Target, ops: int, threads: int) -> list[str]:
    return [str(target.path), str(ops), str(threads)]


DEEP = Path(*"abcdefgh")  # eight directories


def relative_target(workdir: Path) -> Target:
    """A file eight directories below the work directory, named relative to it (the workload
    changes into the work directory first: see ``relative_args``)."""
    name = DEEP / f"target-{os.getpid()}-{time.time_ns()}"
    (workdir / name).parent.mkdir(parents=True, exist_ok=True)
    (workdir / name).write_bytes(b"x")
    return Target(name, os.fsencode(name), workdir)


def relative_args(target: Target, ops: int, threads: int) -> list[str]:
    return [*storm_args(target, ops, threads), str(target.directory)]


@dataclass(frozen=True)
class Workload:
    """A C program in bench/, built into bench/out/<comm>, that speaks otbench's protocol.

    It starts THREADS threads that wait, prints "armed", waits for "go" on stdin, has each thread
    do OPS operations, and prints one JSON line: ``ns_per_op`` (mean over threads of each thread's
    wall ns/op), ``thread_ns_per_op``, ``wall_ns``, ``total_ops`` (must be OPS x THREADS: each op
    is one event a tracer should capture) and ``errors`` (failed ops).
    """

    name: str  # for --workloads and the JSON
    label: str  # headings, when more than one workload runs
    op: str  # what one op is, for the header: "openat+close"
    source: Path = WORKLOAD_SRC
    comm: str = WORKLOAD_COMM  # the binary's name in bench/out/, so the comm tracers see
    gcc_flags: tuple[str, ...] = ()  # besides -O2 -pthread -Wall, e.g. ("-luring",)
    setup: Callable[[Path], Target] = file_target  # once per run, in the work directory
    args: Callable[[Target, int, int], list[str]] = storm_args  # (target, ops, threads) -> argv[1:]
    events_per_op: int = 1  # 0: the ops are not opens (what the tracers cost the rest)
    # Only the tracers that name it run on it (not every opens tracer).
    only_listed: bool = False

    def build(self) -> Path:
        return build_c(self.source, self.comm, self.gcc_flags)


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


def tail(path: Path, limit: int = 1500) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode(errors="replace").strip()


def wait_for_probe(proc: subprocess.Popen[bytes], out: Path, err: Path, probe: bytes, label: str) -> None:
    """Until ``probe`` (the probe path, or ``Tracer.attached``) appears in ``out``: the tracer is
    attached. Error after ATTACH_TIMEOUT."""
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
    """Wait until the tracer has caught up: CPU time and output size (nearly) stop growing.
    (seconds, timed out)"""
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
            # A system-wide tracer of busy tracepoints (sched_switch) never stops writing: the
            # machine's own switches go on. Caught up is a trickle then.
            if cpu2 - cpu <= 2 / CLK_TCK and size2 - size < DRAIN_TRICKLE:
                return time.monotonic() - t0, False
            cpu, size = cpu2, size2
        else:
            return time.monotonic() - t0, True
    finally:
        clock.close()
    return time.monotonic() - t0, False


_LOST = re.compile(rb"(?:Lost (\d+) events|opentrace: (\d+) events lost in all)")


def count_lines(out: Path, err: Path, match: bytes) -> tuple[int, int]:
    """(lines with ``match``, lost events the tool reported on stdout/stderr)."""
    captured = lost = 0
    with open(out, "rb") as f:
        for line in f:
            if match in line:
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


def _last_json(path: Path) -> dict[str, Any] | None:
    for line in reversed(path.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                return json.loads(line)  # type: ignore[no-any-return]
    return None


@dataclass
class Measurement:
    tool: str
    workload: str
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
    consumer_events: int | None = None  # library mode: every event the Python loop took
    consumer_cpu_s: float | None = None  # library mode: the CPU time of that loop
    peak_rss_mb: float | None = None
    tracer_cpu_s: float | None = None
    drain_s: float | None = None
    drain_timed_out: bool = False
    stop_ms: float | None = None
    stopped_cleanly: bool | None = None
    foreign_tracers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: str | None = None  # the error that ended this measurement (it counts in no median)


@dataclass(frozen=True)
class Prepared:
    """A workload ready to run: built, its target set up in the work directory."""

    workload: Workload
    binary: Path
    target: Target


def measure(tracer: Tracer, work: Prepared, threads: int, ops: int, rnd: int, workdir: Path, seq: int,
            timeout: float = ROW_TIMEOUT) -> Measurement:
    """One run of the workload under ``tracer``. A ``BenchError`` if it failed, "timed out after N s"
    when it took longer than ``timeout`` (its processes, and theirs, are killed then: no stall)."""
    watchdog = Watchdog(timeout)
    try:
        return _measure(tracer, work, threads, ops, rnd, workdir, seq, watchdog)
    except Exception as e:
        if not watchdog.expired.is_set():
            raise
        raise BenchError(f"timed out after {timeout:g} s ({type(e).__name__}: {e})".splitlines()[0]) from e
    finally:
        watchdog.cancel()


def _measure(tracer: Tracer, work: Prepared, threads: int, ops: int, rnd: int, workdir: Path, seq: int,
             watchdog: Watchdog) -> Measurement:
    m = Measurement(tracer.name, work.workload.name, threads, rnd, ops,
                    expected=ops * threads * work.workload.events_per_op)
    m.foreign_tracers = foreign_tracers()
    tag = f"{seq:03d}-{tracer.name}-t{threads}"
    programs_before = bpf_program_ids()
    workload = watchdog.guard(spawn([str(work.binary), *work.workload.args(work.target, ops, threads)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE))
    proc: subprocess.Popen[bytes] | None = None
    out, err = workdir / f"{tag}.out", workdir / f"{tag}.err"
    try:
        lines = LineReader(workload, "workload")
        if (armed := lines.readline(10)) != "armed":
            raise BenchError(f"workload said {armed!r} instead of 'armed'")
        if tracer.workload_cgroup:
            move_to_cgroup(workload.pid, WORKLOAD_CGROUP)

        if tracer.argv is not None:
            probe = workdir / f"probe-{tag}"
            probe.touch()
            ctx = Context(probe, workload.pid, work.workload.comm, os.getpid())
            with open(out, "wb") as fout, open(err, "wb") as ferr, Prober(probe):
                t_spawn = time.perf_counter()
                proc = watchdog.guard(spawn(tracer.argv(ctx), stdin=subprocess.DEVNULL, stdout=fout, stderr=ferr))
                wait_for_probe(proc, err if tracer.attached_on_stderr else out, err,
                               tracer.attached or os.fsencode(probe), tracer.label)
                m.spawn_to_first_ms = (time.perf_counter() - t_spawn) * 1e3
            time.sleep(0.05)  # let the last probe events through before the clock starts

        assert workload.stdin is not None
        workload.stdin.write(b"go\n")
        workload.stdin.flush()
        result = json.loads(lines.readline(watchdog.seconds))  # the watchdog ends it first
        workload.wait(10)
        m.ns_per_op = result["ns_per_op"]
        m.thread_ns_per_op = result["thread_ns_per_op"]
        m.wall_ns = result["wall_ns"]
        m.open_errors = result["errors"]
        if m.open_errors:
            m.notes.append(f"{m.open_errors} opens failed in the workload")
        if result["total_ops"] != ops * threads:
            raise BenchError(f"workload did {result['total_ops']} ops, expected {ops * threads}")
        if proc is None:
            return m

        m.drain_s, m.drain_timed_out = drain(proc, out)
        if m.drain_timed_out:
            m.notes.append(f"still busy after {DRAIN_MAX:.0f} s of drain")
        hwm = proc_status_kb(proc.pid, "VmHWM")
        m.peak_rss_mb = None if hwm is None else hwm / 1024
        clock = CpuClock(proc.pid)
        m.tracer_cpu_s = clock.seconds()
        clock.close()
        if proc.poll() is not None:
            raise BenchError(f"{tracer.label} died during the run (status {proc.returncode}):\n{tail(err)}")
        if tracer.count == "agent-metrics":  # while it runs
            m.captured, m.lost = settled_scrape(err, WORKLOAD_CGROUP if tracer.workload_cgroup else None)
        t_stop = time.perf_counter()
        m.stopped_cleanly = stop(proc)
        m.stop_ms = (time.perf_counter() - t_stop) * 1e3
        if not m.stopped_cleanly:
            m.notes.append(f"did not exit within {STOP_TIMEOUT:.0f} s of SIGINT (killed)")

        if tracer.count in ("agent-parquet", "parquet-file"):
            m.captured, m.lost = count_agent_parquet(agent_dir(ctx), err)
            shutil.rmtree(agent_dir(ctx), ignore_errors=True)
        if tracer.count.startswith("agent-") or tracer.count == "parquet-file":
            return m
        if tracer.count == "lines":
            m.captured, m.lost = count_lines(out, err, work.target.match)
        elif tracer.count == "consumer":
            report = _last_json(out)
            if report is None:
                raise BenchError(f"{tracer.label} printed no final report:\n{tail(err) or tail(out)}")
            m.captured, m.lost = report["count"], report["lost"]
            m.consumer_events, m.consumer_cpu_s = report["events"], report["loop_cpu_s"]
            m.watch_ms, m.watch_to_first_ms = report["watch_ms"], report["first_event_ms"]
        else:  # bpftrace-map
            # "@c: N", or per-key entries "@[comm, path]: N" (the workload's summed).
            comm = re.escape(work.workload.comm.encode())
            text = out.read_bytes()
            single = re.search(rb"^@c: (\d+)", text, re.MULTILINE)
            keyed = re.findall(rb"^@\[" + comm + rb", [^\n]*\]: (\d+)", text, re.MULTILINE)
            m.captured = int(single.group(1)) if single else sum(int(n) for n in keyed)
            m.lost = count_lines(out, err, work.target.match)[1]
        return m
    finally:
        if proc is not None:
            stop(proc)
            if wait_programs_gone(programs_before):
                m.notes.append("its programs were still loaded 60 s after it exited")
            time.sleep(SETTLE)
        stop(workload, signal.SIGKILL, 5.0)
        for p in (out, err):
            p.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# summary


def _median(values: list[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return statistics.median(xs) if xs else None


def summarize(results: list[Measurement], tracers: Sequence[Tracer], workloads: Sequence[Workload],
              threads: list[int]) -> list[dict[str, Any]]:
    """One row per workload, thread count and tracer (medians over rounds; captured and lost summed)."""
    baseline = {t.name for t in tracers if t.argv is None}
    untraced = {(m.workload, m.threads, m.round): m.ns_per_op for m in results
                if m.tool in baseline and not m.failed}
    rows = []
    for w in workloads:
        for t in threads:
            for tracer in tracers:
                tried = [m for m in results if m.tool == tracer.name and m.workload == w.name and m.threads == t]
                if not tried:
                    continue
                ms = [m for m in tried if not m.failed]
                ratios = [m.ns_per_op / untraced[(w.name, t, m.round)]
                          for m in ms if (w.name, t, m.round) in untraced]
                captured = [m.captured for m in ms if m.captured is not None]
                expected = [m.expected for m in ms if m.captured is not None]
                rows.append({
                    "tool": tracer.name,
                    "label": tracer.label,
                    "workload": w.name,
                    "threads": t,
                    "rounds": len(ms),
                    "ns_per_op": _median([m.ns_per_op for m in ms]),
                    "ratio": _median(list(ratios)),
                    "captured": sum(captured) if captured else None,
                    "expected": sum(expected) if captured else None,
                    "captured_min_pct": min((100 * c / e for c, e in zip(captured, expected, strict=True) if e),
                                            default=None),
                    "lost": sum(m.lost for m in ms if m.lost is not None) if tracer.argv is not None and ms else None,
                    "spawn_to_first_ms": _median([m.spawn_to_first_ms for m in ms]),
                    "watch_ms": _median([m.watch_ms for m in ms]),
                    "watch_to_first_ms": _median([m.watch_to_first_ms for m in ms]),
                    "peak_rss_mb": _median([m.peak_rss_mb for m in ms]),
                    "tracer_cpu_s": _median([m.tracer_cpu_s for m in ms]),
                    # Library rows: events the Python loop took per second of its CPU time.
                    "consumer_events_per_cpu_s": _median([
                        m.consumer_events / m.consumer_cpu_s if m.consumer_events and m.consumer_cpu_s else None
                        for m in ms
                    ]),
                    "notes": _notes(ms) + _failures(tried),
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


def _failures(tried: list[Measurement]) -> list[str]:
    failed = [m for m in tried if m.failed]
    if not failed:
        return []
    lines = [line.strip() for line in (failed[0].failed or "").splitlines() if line.strip()]
    # The error's first line, and its last (a tool's own last word on stderr, often the cause).
    why = " ".join(lines[:1] + lines[-1:] if len(lines) > 1 else lines)
    return [f"failed in {len(failed)} of {len(tried)} rounds (its numbers are from the others, n/a if none): {why}"]


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def table(rows: list[dict[str, Any]], tracers: Mapping[str, Tracer]) -> str:
    """The Markdown table of README.md's Performance section."""
    head = ["tool", "T", "ns/op", "x untraced", "captured", "lost", "start->1st event ms",
            "peak RSS MiB", "tracer CPU s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for r in rows:
        tracer = tracers[r["tool"]]
        if r["captured"] is None:
            captured = "n/a"
        elif not r["expected"]:
            captured = f"{r['captured']} (none expected)"
        else:
            pct = 100 * r["captured"] / r["expected"]
            captured = f"{pct:.1f}% ({r['captured']}/{r['expected']})"
            if r["rounds"] > 1 and r["captured_min_pct"] < pct:
                captured += f", worst round {r['captured_min_pct']:.1f}%"
        start = _fmt(r["spawn_to_first_ms"], ".0f")
        if not tracer.show_start:
            start = "n/a"
        elif tracer.count == "consumer" and r["watch_to_first_ms"] is not None:
            start = (f"{r['watch_to_first_ms']:.0f} in-process (watch() {r['watch_ms']:.0f}); "
                     f"{start} from spawn")
        lines.append("| " + " | ".join([
            r["label"], str(r["threads"]), _fmt(r["ns_per_op"], ".0f"),
            _fmt(r["ratio"], ".2f"), captured, "n/a" if r["lost"] is None else str(r["lost"]),
            start, _fmt(r["peak_rss_mb"], ".1f"), _fmt(r["tracer_cpu_s"], ".2f"),
        ]) + " |")
    return "\n".join(lines)


def describe(tracer: Tracer, comm: str) -> str:
    """A tracer's command line for the JSON, with placeholders for the probe and the workload's pid.
    The probe lies in a scratch directory (an argv may write files beside it: the agent's config)."""
    assert tracer.argv is not None
    with tempfile.TemporaryDirectory(prefix="opentrace-describe-") as scratch:
        argv = tracer.argv(Context(Path(scratch) / "PROBE", 0, comm, os.getpid()))
        line = " ".join(argv).replace(scratch + "/", "")
    return line.replace(PY, "python").replace(str(BENCH.parent) + "/", "")


# ---------------------------------------------------------------------------------------------
# the run


def _choose(p: argparse.ArgumentParser, option: str, value: str, names: Sequence[str]) -> list[str]:
    chosen = [x.strip() for x in value.split(",") if x.strip()]
    unknown = [x for x in chosen if x not in names]
    if unknown:
        p.error(f"unknown {option}(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    return [n for n in names if n in chosen]  # in table order


def parse_args(argv: list[str] | None, tracers: Sequence[Tracer], workloads: Sequence[Workload],
               doc: str) -> argparse.Namespace:
    tools, works = [t.name for t in tracers], [w.name for w in workloads]
    if [t.argv is None for t in tracers].count(True) != 1 or tracers[0].argv is not None:
        raise AssertionError("the tracer table starts with the untraced baseline (argv=None), and has only that one")
    p = argparse.ArgumentParser(prog="bench/run.py", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="rounds; every mode runs once per round (default 3)")
    p.add_argument("--ops", type=int, default=200_000, help="ops (openat+close) per thread (default 200000)")
    p.add_argument("--threads", default="1,2", help="comma-separated workload thread counts (default 1,2)")
    p.add_argument("--tools", default=",".join(tools),
                   help=f"comma-separated subset of: {', '.join(tools)} ({tools[0]} is always run)")
    p.add_argument("--workloads", default=",".join(works),
                   help=f"comma-separated subset of: {', '.join(works)} (default: all)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round of 50000 ops per thread")
    p.add_argument("--row-timeout", type=float, default=ROW_TIMEOUT, metavar="SECONDS",
                   help="bound on one measurement: past it its processes are killed and its row says "
                        f"\"timed out\" (default {ROW_TIMEOUT:g})")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.ops = 1, 50_000
    try:
        args.threads = [int(x) for x in args.threads.split(",") if x.strip()]
    except ValueError:
        p.error(f"--threads must be comma-separated integers, not {args.threads!r}")
    args.tools = [tools[0], *(t for t in _choose(p, "tool", args.tools, tools) if t != tools[0])]
    args.workloads = _choose(p, "workload", args.workloads, works)
    if args.rounds < 1 or args.ops < 1 or not args.threads or min(args.threads) < 1 or not args.row_timeout > 0:
        p.error("--rounds, --ops, --threads and --row-timeout must be positive")
    if not args.workloads:
        p.error("--workloads: choose at least one")
    return args


def run(args: argparse.Namespace, all_tracers: Sequence[Tracer], all_workloads: Sequence[Workload]) -> int:
    tracers = [t for t in all_tracers if t.name in args.tools]
    workloads = [w for w in all_workloads if w.name in args.workloads]
    check_root("run.py")
    ensure_tracefs()
    needs = [c for t in tracers for c in t.needs]
    require(needs)
    binaries = [w.build() for w in workloads]
    info = machine_info(needs)
    peers = tool_versions(needs)
    print(f"machine: Linux {info['kernel']}, {info['cpus']} CPUs ({info['cpu_model']}); "
          f"python {info['python']}, opentrace {info['opentrace']}")
    print("peers: " + ("; ".join(f"{k} {v}" for k, v in peers.items()) or "none")
          + (f"; RLIMIT_MEMLOCK {info['memlock']}" if peers else ""))
    ops = " / ".join(dict.fromkeys(w.op for w in workloads))
    print(f"rounds {args.rounds}, {args.ops} {ops} per thread, threads {args.threads}"
          + (f", workloads {', '.join(w.name for w in workloads)}" if len(workloads) > 1 else ""), flush=True)
    warn_foreign_tracers("; they slow the workload's syscalls in every mode, so the numbers below are skewed")

    results: list[Measurement] = []
    with workspace() as workdir:
        prepared = [Prepared(w, b, w.setup(workdir)) for w, b in zip(workloads, binaries, strict=True)]
        for work in prepared:
            # Warm-up, discarded: page in the workload, the dentry and the file.
            measure(tracers[0], work, max(args.threads), min(args.ops, WARMUP_OPS), 0, workdir, 0,
                    args.row_timeout)
        seq, width = 0, max(16, *(len(t.name) for t in tracers))
        for rnd in range(1, args.rounds + 1):
            # Rotate the order every round so no tool always runs first (or right after another).
            shift = (rnd - 1) % len(tracers)
            order = tracers[shift:] + tracers[:shift]
            for work in prepared:
                which = f" {work.workload.name}" if len(prepared) > 1 else ""
                for t in args.threads:
                    for tracer in order:
                        if not tracer.runs_on(work.workload):
                            continue
                        seq += 1
                        try:
                            m = measure(tracer, work, t, args.ops, rnd, workdir, seq, args.row_timeout)
                        except BenchError as e:
                            # One tool failing (bpftrace not attaching 360 probes in time, say) or
                            # timing out is a finding about that tool, not the end of a 30-minute
                            # run. (An untraced run that fails leaves its round's rows without a ratio.)
                            results.append(Measurement(tracer.name, work.workload.name, t, rnd, args.ops,
                                                       failed=str(e)))
                            print(f"  round {rnd}{which} T={t} {tracer.name:<{width}} FAILED: {e}",
                                  file=sys.stderr, flush=True)
                            continue
                        results.append(m)
                        cap = "" if m.captured is None else f" captured {m.captured}/{m.expected}"
                        first = "" if m.spawn_to_first_ms is None else f" first {m.spawn_to_first_ms:.0f} ms"
                        print(f"  round {rnd}{which} T={t} {tracer.name:<{width}} {m.ns_per_op:8.0f} ns/op{cap}{first}",
                              file=sys.stderr, flush=True)

    rows = summarize(results, tracers, workloads, args.threads)
    by_name = {t.name: t for t in tracers}
    for w in workloads:
        print()
        if len(workloads) > 1:
            print(f"{w.label} ({w.name})\n")
        print(table([r for r in rows if r["workload"] == w.name], by_name))
    for r in rows:
        if r["consumer_events_per_cpu_s"]:
            print(f"consumer: {r['label']} {r['workload']} T={r['threads']}: "
                  f"{r['consumer_events_per_cpu_s'] / 1e6:.2f} M events per CPU-second of the Python loop")
        for n in r["notes"]:
            which = f" {r['workload']}" if len(workloads) > 1 else ""
            print(f"note: {r['label']}{which} T={r['threads']}: {n}")
    failed = sorted({m.tool for m in results if m.failed})
    ours = [name for name in failed if not by_name[name].needs]  # peers are the tools with commands to install
    if failed:
        print(f"\nfailed: {', '.join(failed)} (see the notes above)", file=sys.stderr)

    path = write_json("results", {
        "machine": info,
        "args": {"rounds": args.rounds, "ops": args.ops, "threads": args.threads, "tools": args.tools,
                 "workloads": args.workloads, "row_timeout": args.row_timeout},
        "commands": {t.name: describe(t, workloads[0].comm) for t in tracers if t.argv is not None},
        "workloads": {w.name: f"{rel(w.source)} ({w.op}) as bench/out/{w.comm}" for w in workloads},
        "summary": rows,
        "measurements": [vars(m) for m in results],
    })
    print(f"\nresults: {rel(path)}")
    return 1 if ours else 0
