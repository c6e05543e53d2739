#!/usr/bin/env python3
"""The agent under a long open storm: its memory (RSS) and CPU over time, and what it counted.

    sudo .venv/bin/python bench/agent_soak.py [--duration 600] [--sinks metrics,parquet] [--threads 1]
                                              [--report-every 10] [--keep-files]
    make agent-soak ARGS="--duration 3600 --sinks metrics,parquet,json"

``opentrace agent`` runs system-wide with its metrics on a loopback port (always: the samples
come from them) and the chosen sinks besides: ``parquet`` (``--parquet DIR`` in a temporary
directory) and ``json`` (``--json-file`` there, rotated at 64 MiB, 2 files). Completed Parquet files
are deleted as they appear (their bytes counted) unless ``--keep-files``: ten minutes of storm make
gigabytes. The storm: bench/out/otbench (bench/workload.c) run over and over, --ops-per-run
openat+close each, for --duration seconds.

Every --report-every seconds: the agent's VmRSS and VmHWM and CPU time (from /proc), and its own
counts (opens, lost, each sink's written and dropped, from its metrics). At the end the agent is
stopped with SIGINT (it completes its files) and its final line is kept. RSS at the end of warm-up
(20% of the run, at most a minute) is compared with RSS at the end, with a least-squares slope
(MiB/min) over the samples after warm-up. Everything goes to bench/out/agent-soak-<timestamp>.json.
Needs root (and the agent extra: `pip install 'opentrace[agent]'`, in .venv by scripts/bootstrap).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from common import (
    PY,
    BenchError,
    CpuClock,
    LineReader,
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

WARMUP_FRACTION = 0.2
WARMUP_MAX = 60.0
START_TIMEOUT = 60.0
SINKS = ("metrics", "parquet", "json")


class Storm:
    """otbench over and over in a thread until stopped (the current run finishes)."""

    def __init__(self, binary: Path, target: Path, ops_per_thread: int, threads: int) -> None:
        self.argv = [str(binary), str(target), str(ops_per_thread), str(threads)]
        self.runs = 0
        self.ops = 0
        self.ns_per_op: list[float] = []
        self.error: str | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="storm", daemon=True)

    def _loop(self) -> None:
        try:
            while not self.stopping.is_set():
                proc = spawn(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                try:
                    lines = LineReader(proc, "otbench")
                    if (said := lines.readline(30)) != "armed":
                        raise BenchError(f"otbench said {said!r} instead of 'armed'")
                    assert proc.stdin is not None
                    proc.stdin.write(b"go\n")
                    proc.stdin.flush()
                    result = json.loads(lines.readline(600))
                finally:
                    stop(proc)
                self.runs += 1
                self.ops += result["total_ops"]
                self.ns_per_op.append(result["ns_per_op"])
        except (BenchError, OSError, ValueError, KeyError) as e:
            self.error = str(e)


_METRIC = re.compile(r'^(opentrace_\w+)(?:\{([^}]*)\})? (\S+)$', re.M)


def scrape(url: str) -> dict[str, float]:
    """The agent's own counts: opens, lost, and per sink written/dropped ("written:parquet")."""
    with urllib.request.urlopen(url, timeout=30) as reply:
        text = reply.read().decode()
    found: dict[str, float] = {}
    for name, labels, value in _METRIC.findall(text):
        sink = re.search(r'sink="(\w+)"', labels)
        key = {"opentrace_opens_total": "opens", "opentrace_events_lost_total": "lost"}.get(name)
        if key is None and sink and name in ("opentrace_sink_written_total", "opentrace_sink_dropped_total"):
            key = f"{name.split('_')[2]}:{sink.group(1)}"
        if key is not None:
            found[key] = found.get(key, 0.0) + float(value)
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/agent_soak.py", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds of storm (default 600)")
    p.add_argument("--sinks", default="metrics,parquet",
                   help=f"comma-separated, of {', '.join(SINKS)} (metrics always; default metrics,parquet)")
    p.add_argument("--threads", type=int, default=1, help="otbench threads (default 1)")
    p.add_argument("--report-every", type=float, default=10.0, help="seconds between samples (default 10)")
    p.add_argument("--ops-per-run", type=int, default=2_000_000,
                   help="openat+close per otbench run, split over the threads (default 2000000)")
    p.add_argument("--keep-files", action="store_true", help="keep the Parquet files (they are deleted as made)")
    args = p.parse_args(argv)
    args.sinks = [s.strip() for s in args.sinks.split(",") if s.strip()]
    if set(args.sinks) - set(SINKS):
        p.error(f"--sinks: choose from {', '.join(SINKS)}")
    if args.duration <= 0 or args.report_every <= 0 or args.threads < 1 or args.ops_per_run < args.threads:
        p.error("--duration, --report-every, --threads and --ops-per-run must be positive")
    return args


def soak(args: argparse.Namespace) -> int:
    check_root("agent_soak.py")
    ensure_tracefs()
    binary = build_workload()
    info = machine_info()
    warn_foreign_tracers(": they slow the storm")
    with workspace("otagent-") as workdir:
        return run(args, info, binary, workdir)


def run(args: argparse.Namespace, info: dict[str, Any], binary: Path, workdir: Path) -> int:
    parquet, journal = workdir / "parquet", workdir / "opens.json"
    argv = [PY, "-m", "opentrace", "agent", "--metrics", "127.0.0.1:0"]
    if "parquet" in args.sinks:
        argv += ["--parquet", str(parquet)]
    if "json" in args.sinks:
        argv += ["--json-file", str(journal), "--max-size", "64M", "--max-files", "2"]
    err = workdir / "agent.err"
    with open(err, "wb") as ferr:
        agent = spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=ferr)
    deadline = time.monotonic() + START_TIMEOUT
    while not (found := re.search(rb"metrics on (http://\S+/metrics)", err.read_bytes())):
        if agent.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"the agent did not start:\n{err.read_text(errors='replace')[-1500:]}")
        time.sleep(0.05)
    url = found.group(1).decode()
    target = workdir / "target"
    target.write_bytes(b"x")
    ops_per_thread = -(-args.ops_per_run // args.threads)
    storm = Storm(binary, target, ops_per_thread, args.threads)
    warmup = min(WARMUP_MAX, WARMUP_FRACTION * args.duration)
    clock = CpuClock(agent.pid)
    samples: list[dict[str, Any]] = []
    deleted_bytes = 0
    print(f"agent soak: Linux {info['kernel']}, {info['cpus']} CPUs; python {info['python']}, "
          f"opentrace {info['opentrace']}; sinks {', '.join(dict.fromkeys(['metrics', *args.sinks]))}")
    print(f"agent soak: {args.duration:g} s of otbench x {args.threads} thread(s), "
          f"{ops_per_thread * args.threads:,} opens per run; sample every {args.report_every:g} s; "
          f"warm-up {warmup:g} s")
    print(f"{'t s':>7} {'opens/s':>11} {'lost':>10} {'RSS MiB':>8} {'HWM MiB':>8} {'CPU s':>8} {'CPU %':>6} "
          f"{'parquet MiB':>11} {'dropped':>9} {'runs':>5}", flush=True)
    t0 = time.monotonic()

    def sample(phase: str) -> None:
        nonlocal deleted_bytes
        if "parquet" in args.sinks and not args.keep_files:
            for file in parquet.glob("*.parquet"):
                deleted_bytes += file.stat().st_size
                file.unlink()
        counts = scrape(url)
        rss, hwm, cpu = proc_status_kb(agent.pid, "VmRSS"), proc_status_kb(agent.pid, "VmHWM"), clock.seconds()
        prev = samples[-1] if samples else None
        t = time.monotonic() - t0
        dt = t - prev["t"] if prev else 0.0
        on_disk = sum(f.stat().st_size for f in parquet.glob("*.parquet")) if parquet.exists() else 0
        s: dict[str, Any] = {
            "t": round(t, 3), "phase": phase, "opens": counts.get("opens", 0), "lost": counts.get("lost", 0),
            "opens_per_s": round((counts.get("opens", 0) - prev["opens"]) / dt, 1) if prev and dt > 0 else None,
            "rss_mib": None if rss is None else round(rss / 1024, 3),
            "hwm_mib": None if hwm is None else round(hwm / 1024, 3),
            "cpu_s": None if cpu is None else round(cpu, 3),
            "parquet_mib": round((deleted_bytes + on_disk) / (1 << 20), 3),
            "written": {k.split(":")[1]: v for k, v in counts.items() if k.startswith("written:")},
            "dropped": {k.split(":")[1]: v for k, v in counts.items() if k.startswith("dropped:")},
            "runs": storm.runs,
        }
        samples.append(s)
        pct = (100 * (s["cpu_s"] - prev["cpu_s"]) / dt) if prev and dt > 0 and s["cpu_s"] and prev["cpu_s"] else None
        print(f"{s['t']:7.1f} {s['opens_per_s'] or 0:11,.0f} {s['lost']:10,.0f} {s['rss_mib'] or 0:8.2f} "
              f"{s['hwm_mib'] or 0:8.2f} {s['cpu_s'] or 0:8.2f} {pct or 0:6.0f} {s['parquet_mib']:11.1f} "
              f"{sum(s['dropped'].values()):9,.0f} {storm.runs:>5}" + ("" if phase == "run" else f"  {phase}"),
              flush=True)

    try:
        sample("start")
        storm.thread.start()
        while time.monotonic() - t0 < args.duration and storm.error is None:
            time.sleep(min(args.report_every, max(0.0, args.duration - (time.monotonic() - t0))))
            sample("run")
        storm.stopping.set()
        storm.thread.join(600)
        sample("storm over")
    finally:
        storm.stopping.set()
        clock.close()
        clean = stop(agent)
    final = [line for line in err.read_text(errors="replace").splitlines() if "agent stopped:" in line]
    trend = rss_trend(samples, warmup)
    end = samples[-1]
    summary = {
        "storm_s": end["t"], "runs": storm.runs, "storm_ops": storm.ops,
        "mean_ns_per_op": round(sum(storm.ns_per_op) / len(storm.ns_per_op), 1) if storm.ns_per_op else None,
        "opens": end["opens"], "lost": end["lost"], "written": end["written"], "dropped": end["dropped"],
        "cpu_s": end["cpu_s"], "hwm_mib": end["hwm_mib"], "stopped_cleanly": clean,
        "final_line": final[-1] if final else None, "storm_error": storm.error, **trend,
    }
    print("\nsummary")
    print(f"  storm      {end['t']:.0f} s, {storm.runs} otbench runs, {storm.ops:,} opens"
          + (f", mean {summary['mean_ns_per_op']:,.0f} ns/op" if storm.ns_per_op else ""))
    print(f"  agent      {end['opens']:,.0f} opens counted (system-wide), {end['lost']:,.0f} lost; "
          f"CPU {end['cpu_s'] or 0:.1f} s = {100 * (end['cpu_s'] or 0) / max(end['t'], 1e-9):.0f}% of a core")
    print(f"  sinks      written {end['written']}, dropped {end['dropped']}")
    if trend["growth_mib"] is None:
        print(f"  RSS        no sample after warm-up (t>={warmup:g} s); at the end {end['rss_mib']} MiB")
    else:
        slope = "n/a" if trend["slope_mib_per_min"] is None else f"{trend['slope_mib_per_min']:+.3f} MiB/min"
        print(f"  RSS        {trend['rss_warmup_mib']:.1f} MiB after warm-up (t>={warmup:g} s), "
              f"{trend['rss_end_mib']:.1f} MiB at the end ({trend['growth_mib']:+.1f} MiB); slope {slope}; "
              f"peak (VmHWM) {end['hwm_mib']:.1f} MiB")
    print(f"  end        {final[-1] if final else 'no final line (killed?)'}")
    path = write_json("agent-soak", {"machine": info, "args": vars(args), "argv": argv, "summary": summary,
                                     "samples": samples})
    print(f"  samples    {rel(path)}")
    return 1 if storm.error or not clean else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return entry("agent_soak", lambda: soak(args))


if __name__ == "__main__":
    sys.exit(main())
