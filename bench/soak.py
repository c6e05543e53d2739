#!/usr/bin/env python3
"""Soak test: trace a continuous open storm for a long time; rate, loss, memory and CPU over time.

    sudo .venv/bin/python bench/soak.py [--duration 600] [--threads 1] [--report-every 10]
    make soak ARGS="--duration 3600 --threads 2"

The storm: a background thread runs bench/out/otbench (bench/workload.c, built by bench/common.py)
over and over, --ops-per-run openat+close of one file per run, so that opens come at full rate for
the whole --duration.

The consumer is this script's main thread: a plain ``for ev in opentrace.watch():`` loop over the
whole system that counts every event, and as the storm's the events of an otbench pid stamped after
that run's "go" (so the dynamic loader's opens before "armed" are not counted). A reporter thread
prints every --report-every seconds: events/s delivered to the loop, cumulative ``w.lost``, this
process's VmRSS and VmHWM, and its CPU time (all threads, and the consumer thread alone).

The tail: at the end the storm is stopped between runs (the current run finishes), so every storm
open belongs to a run whose total_ops is known. Once the last otbench has exited, each of its opens
is in the ring or counted in ``lost``; the reporter waits until delivered + lost reaches expected
(nothing left in flight) or the storm's count has not moved for 1 s, takes the last sample, then
closes the watcher, which ends the loop. RSS at the end of warm-up (20% of the run, at most a
minute) is compared with RSS at the end, and a least-squares slope (MiB/min) is fitted to the
samples after warm-up.

Ctrl-C (or SIGTERM) kills the current otbench run (its opens are left out of the comparison),
drains the tail as above and prints the summary; a second Ctrl-C stops waiting for the tail.
Samples and summary are written to bench/out/soak-<timestamp>.json. Needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import (
    BenchError,
    build_workload,
    check_root,
    ensure_tracefs,
    entry,
    machine_info,
    proc_status_kb,
    rel,
    rss_trend,
    spawn,
    stop,
    warn_foreign_tracers,
    workspace,
    write_json,
)

import opentrace

WARMUP_FRACTION = 0.2
WARMUP_MAX = 60.0
SETTLE_AFTER = 30.0  # a finished run leaves the consumer's pid table this long after it ended
TAIL_QUIET = 1.0  # the tail is over when the storm's count has not moved for this long...
TAIL_MAX = 60.0  # ...or after this, whatever happens
RUN_TIMEOUT = 600.0  # one otbench run (arming included)


class Counts:
    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events = 0  # every event the loop received (all processes)


@dataclass(slots=True, eq=False)
class Run:
    """One otbench process. ``seen`` is counted by the consumer loop, the rest by the storm thread."""

    pid: int
    go_ns: int  # CLOCK_MONOTONIC just before "go": the storm's opens are stamped after it
    seen: int = 0
    total_ops: int | None = None  # from otbench's JSON line; None while running or if killed
    ns_per_op: float | None = None
    errors: int = 0
    ended: float | None = None
    killed: bool = False


@dataclass
class Totals:
    """Runs folded in once settled (their events long consumed), so the pid table stays small."""

    runs: int = 0
    expected: int = 0
    seen: int = 0
    ns_per_op_sum: float = 0.0
    open_errors: int = 0
    runs_off: int = 0  # completed runs whose seen != total_ops (only losses can explain it)
    killed: int = 0
    killed_seen: int = 0


class Storm:
    """otbench over and over in a background thread, until stopped."""

    def __init__(self, binary: Path, target: Path, ops_per_thread: int, threads: int, done: threading.Event) -> None:
        self.argv = [str(binary), str(target), str(ops_per_thread), str(threads)]
        self.runs: dict[int, Run] = {}  # pid -> run; the consumer loop only calls .get (atomic)
        self.totals = Totals()
        self.error: str | None = None
        self.done = done  # set when the thread ends, whyever
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._killing = False
        self._proc: subprocess.Popen[bytes] | None = None
        self.thread = threading.Thread(target=self._loop, name="storm", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, kill: bool = False) -> None:
        """No new run; with ``kill``, the current one is killed too (else it finishes)."""
        self._stopping.set()
        if kill:
            with self._lock:
                self._killing = True
                proc = self._proc
            if proc is not None:
                with contextlib.suppress(OSError):
                    proc.kill()

    def _loop(self) -> None:
        try:
            while not self._stopping.is_set():
                self._run_once()
        except (BenchError, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
            self.error = f"storm: {e}"
        finally:
            self.done.set()

    def _run_once(self) -> None:
        proc = spawn(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        run: Run | None = None
        line = b""
        try:
            with self._lock:
                self._proc = proc
                if self._killing:
                    proc.kill()
            if proc.stdout.readline() == b"armed\n":
                run = Run(proc.pid, time.monotonic_ns())
                with self._lock:
                    self.runs[proc.pid] = run
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write(b"go\n")
                    proc.stdin.flush()
                line = proc.stdout.readline()
            rc = proc.wait(RUN_TIMEOUT)
            err = proc.stderr.read().decode(errors="replace").strip()
        finally:
            stop(proc, signal.SIGKILL, 5.0)
            with self._lock:
                self._proc = None
                killing = self._killing
            if run is not None:
                run.ended = time.monotonic()
        if rc == 0 and run is not None and line.startswith(b"{"):
            result = json.loads(line)
            run.total_ops, run.ns_per_op, run.errors = result["total_ops"], result["ns_per_op"], result["errors"]
        elif killing:
            if run is not None:
                run.killed = True
        else:
            raise BenchError(f"otbench exited with status {rc}: {err or line.decode(errors='replace')}")

    def settle(self, everything: bool = False) -> None:
        """Fold runs that ended SETTLE_AFTER ago (``everything``: all ended runs) into the totals."""
        now = time.monotonic()
        with self._lock:
            for pid, run in list(self.runs.items()):
                if run.ended is None or not (everything or now - run.ended >= SETTLE_AFTER):
                    continue
                del self.runs[pid]
                t = self.totals
                if run.total_ops is not None:
                    t.runs += 1
                    t.expected += run.total_ops
                    t.seen += run.seen
                    t.ns_per_op_sum += run.ns_per_op or 0.0
                    t.open_errors += run.errors
                    t.runs_off += run.seen != run.total_ops
                else:
                    t.killed += 1
                    t.killed_seen += run.seen

    def snapshot(self) -> tuple[int, int, int, int]:
        """(expected, seen) over completed runs, storm events seen in all, completed runs."""
        with self._lock:
            t = self.totals
            expected, seen, seen_all, runs = t.expected, t.seen, t.seen + t.killed_seen, t.runs
            for run in self.runs.values():
                seen_all += run.seen
                if run.total_ops is not None:
                    expected += run.total_ops
                    seen += run.seen
                    runs += 1
        return expected, seen, seen_all, runs


def consume(w: opentrace.Watcher, counts: Counts, runs: dict[int, Run]) -> None:
    """The consumer under test: a plain loop over every event; returns once ``w`` is closed."""
    lookup = runs.get
    for ev in w:
        counts.events += 1
        run = lookup(ev.pid)
        if run is not None and ev.timestamp_ns >= run.go_ns:
            run.seen += 1


class Reporter:
    """Samples and prints every --report-every seconds; at the end stops the storm, waits for the
    tail, takes the last sample and closes the watcher (which ends the consumer loop)."""

    HEAD = (f"{'t s':>7} {'events/s':>11} {'storm ev/s':>11} {'lost':>10} {'RSS MiB':>8} {'HWM MiB':>8} "
            f"{'CPU s':>8} {'CPU %':>6} {'loop CPU s':>10} {'runs':>5}")

    def __init__(self, w: opentrace.Watcher, counts: Counts, storm: Storm, args: argparse.Namespace,
                 wake: threading.Event) -> None:
        self.w, self.counts, self.storm, self.args, self.wake = w, counts, storm, args, wake
        main_ident = threading.main_thread().ident
        assert main_ident is not None
        self.loop_clock = time.pthread_getcpuclockid(main_ident)  # the consumer thread's CPU time
        self.interrupted = threading.Event()
        self.samples: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        self.t_stop = self.t_storm_end = self.t_tail = self.t0
        self.events_at_storm_end = 0
        self.tail_in_flight: int | None = None
        self.tail_how = ""
        self.thread = threading.Thread(target=self._run, name="reporter", daemon=True)

    def interrupt(self) -> None:
        self.interrupted.set()
        self.wake.set()

    def sample(self, phase: str) -> dict[str, Any]:
        now = time.monotonic()
        events, lost = self.counts.events, self.w.lost
        _, _, storm_seen, runs = self.storm.snapshot()
        pid = os.getpid()
        rss, hwm = proc_status_kb(pid, "VmRSS"), proc_status_kb(pid, "VmHWM")
        cpu, loop_cpu = time.process_time(), time.clock_gettime(self.loop_clock)
        prev = self.samples[-1] if self.samples else None
        dt = now - self.t0 - prev["t"] if prev else 0.0
        s: dict[str, Any] = {
            "t": round(now - self.t0, 3),
            "phase": phase,
            "events": events,
            "events_per_s": round((events - prev["events"]) / dt, 1) if prev and dt > 0 else None,
            "storm_events": storm_seen,
            "storm_events_per_s": round((storm_seen - prev["storm_events"]) / dt, 1) if prev and dt > 0 else None,
            "lost": lost,
            "rss_mib": None if rss is None else round(rss / 1024, 3),
            "hwm_mib": None if hwm is None else round(hwm / 1024, 3),
            "cpu_s": round(cpu, 3),
            "cpu_pct": round(100 * (cpu - prev["cpu_s"]) / dt, 1) if prev and dt > 0 else None,
            "loop_cpu_s": round(loop_cpu, 3),
            "runs": runs,
        }
        self.samples.append(s)

        def f(v: float | None, spec: str) -> str:
            return "-" if v is None else format(v, spec)

        print(f"{s['t']:7.1f} {f(s['events_per_s'], ',.0f'):>11} {f(s['storm_events_per_s'], ',.0f'):>11} "
              f"{lost:>10,} {f(s['rss_mib'], '.2f'):>8} {f(s['hwm_mib'], '.2f'):>8} {cpu:8.2f} "
              f"{f(s['cpu_pct'], '.0f'):>6} {loop_cpu:10.2f} {runs:>5}" + ("" if phase == "run" else f"  {phase}"),
              flush=True)
        return s

    def _run(self) -> None:
        try:
            self._storm_phase()
            self._tail()
            self.storm.settle(everything=True)
            self.sample("end")
        finally:
            self.w.close()  # ends the consumer loop

    def _storm_phase(self) -> None:
        every, deadline = self.args.report_every, self.t0 + self.args.duration
        next_report = self.t0 + every
        while True:
            if self.wake.wait(max(0.0, min(next_report, deadline) - time.monotonic())):
                break  # interrupted, or the storm failed
            now = time.monotonic()
            if now >= deadline:
                break
            if now >= next_report:
                self.sample("run")
                while next_report <= now:
                    next_report += every
            self.storm.settle()
        self.t_stop = time.monotonic()
        if self.interrupted.is_set():
            print("interrupted: killing the current otbench run, draining the tail (Ctrl-C again to skip)",
                  file=sys.stderr, flush=True)
        self.storm.stop(kill=self.interrupted.is_set())
        self.storm.thread.join()
        self.t_storm_end = time.monotonic()
        self.events_at_storm_end = self.counts.events

    def _tail(self) -> None:
        """Every otbench has exited: its opens are in the ring or in lost. Wait until they are all read."""
        last_seen, last_change = -1, time.monotonic()
        while True:
            expected, seen, _, _ = self.storm.snapshot()
            lost = self.w.lost
            now = time.monotonic()
            if self.w.closed:
                self.tail_how = "not waited for (second interrupt)"
                break
            if seen + lost == expected:
                self.tail_how = "delivered + lost reached expected"
                break
            if seen != last_seen:
                last_seen, last_change = seen, now
            elif now - last_change >= TAIL_QUIET:
                self.tail_how = f"storm count quiet for {TAIL_QUIET:.0f} s"
                break
            if now - self.t_storm_end >= TAIL_MAX:
                self.tail_how = f"gave up after {TAIL_MAX:.0f} s"
                break
            time.sleep(0.01)
        self.tail_in_flight = max(0, expected - seen - lost)
        self.t_tail = time.monotonic()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/soak.py", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of storm (default 600)")
    p.add_argument("--threads", type=int, default=1, help="otbench threads (default 1)")
    p.add_argument("--report-every", type=float, default=10.0, help="seconds between samples (default 10)")
    p.add_argument("--ops-per-run", type=int, default=2_000_000,
                   help="openat+close per otbench run, split over the threads (default 2000000)")
    p.add_argument("--ring-size", type=int, default=None, help="watch(ring_size=...) in bytes (default: library's)")
    p.add_argument("--latency", type=float, default=None, help="watch(latency=...) in seconds (default: library's)")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.report_every <= 0:
        p.error("--duration and --report-every must be positive")
    if args.threads < 1 or args.threads > 1024 or args.ops_per_run < args.threads:
        p.error("--threads must be 1..1024 and --ops-per-run at least --threads")
    return args


def soak(args: argparse.Namespace) -> int:
    check_root("soak.py")
    ensure_tracefs()
    binary = build_workload()
    info = machine_info()
    warn_foreign_tracers(": they slow the storm")
    with workspace("otsoak-") as workdir:
        return trace_storm(args, info, binary, workdir)


def trace_storm(args: argparse.Namespace, info: dict[str, Any], binary: Path, workdir: Path) -> int:
    kwargs: dict[str, Any] = {}
    if args.ring_size is not None:
        kwargs["ring_size"] = args.ring_size
    if args.latency is not None:
        kwargs["latency"] = args.latency
    ops_per_thread = -(-args.ops_per_run // args.threads)
    warmup = min(WARMUP_MAX, WARMUP_FRACTION * args.duration)
    target = workdir / "target"
    target.write_bytes(b"x")
    wake = threading.Event()
    w = opentrace.watch(**kwargs)
    storm = Storm(binary, target, ops_per_thread, args.threads, wake)
    try:
        counts = Counts()
        rep = Reporter(w, counts, storm, args, wake)
        print(f"soak: Linux {info['kernel']}, {info['cpus']} CPUs; python {info['python']}, "
              f"opentrace {info['opentrace']}; watch({', '.join(f'{k}={v}' for k, v in kwargs.items())})")
        print(f"soak: {args.duration:g} s of otbench x {args.threads} thread(s), {ops_per_thread * args.threads:,} "
              f"opens per run; system-wide Python loop; sample every {args.report_every:g} s; warm-up {warmup:g} s")
        print(Reporter.HEAD, flush=True)
        rep.sample("start")
        storm.start()
        rep.thread.start()
        while not w.closed:
            try:
                consume(w, counts, storm.runs)
            except KeyboardInterrupt:
                if not rep.interrupted.is_set():
                    rep.interrupt()
                else:
                    print("second interrupt: not waiting for the tail", file=sys.stderr, flush=True)
                    storm.stop(kill=True)
                    w.close()
        rep.thread.join()
    finally:
        storm.stop(kill=True)
        storm.thread.join(10)
        w.close()
    lost = w.lost  # final: read after the programs were detached

    t = storm.totals
    storm_s = rep.t_storm_end - rep.t0  # until the last otbench exited
    diff = t.seen + lost - t.expected
    tail_done = rep.tail_how != "" and not rep.tail_how.startswith("not waited")
    if diff == 0:
        verdict, ok = "exact match", True
    elif diff > 0 and lost >= diff:
        verdict, ok = (f"lost exceeds the storm's missing events by {diff:,}: lost also counts other processes' "
                       "events (and an interrupted run's) dropped while the ring was full"), True
    else:
        verdict, ok = f"MISMATCH by {diff:+,}", not tail_done
    trend = rss_trend(rep.samples, warmup)
    end = rep.samples[-1]
    summary: dict[str, Any] = {
        "storm_s": round(storm_s, 3),
        "last_run_s": round(rep.t_storm_end - rep.t_stop, 3),  # stop requested -> last otbench exited
        "tail_s": round(rep.t_tail - rep.t_storm_end, 3),  # last otbench exited -> nothing in flight
        "tail": rep.tail_how,
        "tail_in_flight": rep.tail_in_flight,
        "interrupted": rep.interrupted.is_set(),
        "storm_error": storm.error,
        "events": counts.events,
        "events_per_s": round(rep.events_at_storm_end / storm_s, 1) if storm_s > 0 else None,
        "lost": lost,
        "runs": asdict(t),
        "storm_expected": t.expected,
        "storm_delivered": t.seen,
        "storm_diff": diff,
        "verdict": verdict,
        "mean_ns_per_op": round(t.ns_per_op_sum / t.runs, 1) if t.runs else None,
        "cpu_s": end["cpu_s"],
        "loop_cpu_s": end["loop_cpu_s"],
        "hwm_mib": end["hwm_mib"],
        **trend,
    }

    def mib(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f} MiB"

    print("\nsummary")
    print(f"  duration   {storm_s:.1f} s of storm (stopped at {rep.t_stop - rep.t0:.1f} s, last otbench exited "
          f"{summary['last_run_s']:.1f} s later), then {summary['tail_s']:.2f} s of tail; {t.runs} otbench runs"
          + (f", mean {summary['mean_ns_per_op']:,.0f} ns/op" if t.runs else "")
          + (f"; {t.killed} run killed ({t.killed_seen:,} of its opens seen, not compared)" if t.killed else ""))
    print(f"  events     {counts.events:,} delivered to the loop (all processes), "
          f"{summary['events_per_s'] or 0:,.0f}/s during the storm; lost {lost:,}")
    print(f"  storm      expected {t.expected:,} opens; delivered {t.seen:,} + lost {lost:,} = {t.seen + lost:,}: "
          f"{verdict}")
    how = "the current run killed" if rep.interrupted.is_set() else "the last run finished"
    print(f"  tail       storm stopped ({how}), last otbench exited, then {rep.tail_how or 'not reached'} "
          f"({rep.tail_in_flight or 0:,} still in flight)")
    if trend["growth_mib"] is None:
        rss = f"no sample after warm-up (t>={warmup:g} s); at the end {mib(end['rss_mib'])}"
    else:
        slope = "n/a" if trend["slope_mib_per_min"] is None else f"{trend['slope_mib_per_min']:+.4f} MiB/min"
        growth = round(trend["growth_mib"], 2) + 0.0  # no "-0.00"
        rss = (f"{mib(trend['rss_warmup_mib'])} after warm-up (t>={warmup:g} s), {mib(trend['rss_end_mib'])} at the "
               f"end ({growth:+.2f} MiB); slope {slope} over {trend['samples_after_warmup']} samples")
    print(f"  RSS        {rss}; peak (VmHWM) {mib(end['hwm_mib'])}")
    start = rep.samples[0]
    cpu, loop_cpu, wall = end["cpu_s"] - start["cpu_s"], end["loop_cpu_s"] - start["loop_cpu_s"], end["t"] - start["t"]
    print(f"  CPU        {end['cpu_s']:.2f} s process, {end['loop_cpu_s']:.2f} s consumer thread (cumulative); "
          f"since the storm started {cpu:.2f} s = {100 * cpu / wall:.0f}% of a core, consumer thread {loop_cpu:.2f} s"
          + (f" = {1e9 * loop_cpu / counts.events:.0f} ns/event" if counts.events else ""))
    if storm.error:
        print(f"  error      {storm.error}")

    path = write_json("soak", {
        "machine": info,
        "args": vars(args),
        "watch": kwargs,
        "ops_per_thread": ops_per_thread,
        "summary": summary,
        "samples": rep.samples,
    })
    print(f"  samples    {rel(path)}")
    if storm.error or not ok:
        return 1
    return 130 if rep.interrupted.is_set() else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return entry("soak", lambda: soak(args))


if __name__ == "__main__":
    sys.exit(main())
