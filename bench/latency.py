"""How long an event takes to reach Python, and what an idle watcher costs.

    sudo .venv/bin/python bench/latency.py [--samples 50] [--idle 10] [--busy-ops 1000000]

- idle latency: one open every 100 ms (a quiet machine): delay from the syscall's entry
  (``ev.timestamp_ns``, CLOCK_MONOTONIC) to the moment the Python loop holds the event;
- busy latency: the same delay for events of an open storm (bench/out/otbench), where the reader
  pauses ``latency`` (default 2 ms) between drains;
- idle cost: CPU time the watching process uses while nothing matching happens.

Results go to bench/out/latency-<timestamp>.json. Needs root.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import build_workload, check_root, entry, rel, spawn, stop, workspace, write_json

import opentrace


def stats(delays_ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(delays_ms, n=100, method="inclusive")
    return {"median_ms": statistics.median(delays_ms), "p99_ms": q[98], "max_ms": max(delays_ms),
            "events": len(delays_ms)}


def summary(s: dict[str, float]) -> str:
    return (f"median {s['median_ms']:.3f} ms, p99 {s['p99_ms']:.3f} ms, max {s['max_ms']:.3f} ms "
            f"({s['events']:.0f} events)")


def idle_latency(samples: int, path: Path) -> list[float]:
    delays: list[float] = []
    with opentrace.watch(comm="cat") as w:
        for _ in range(samples):
            subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL)
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                ev = next(w)
                if ev.path == str(path):
                    delays.append((time.monotonic_ns() - ev.timestamp_ns) / 1e6)
                    break
            time.sleep(0.1)
    return delays


def busy_latency(path: Path, ops: int) -> list[float]:
    storm = spawn([str(build_workload()), str(path), str(ops), "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert storm.stdin is not None and storm.stdout is not None
    storm.stdout.readline()  # armed
    delays: list[float] = []
    with opentrace.watch(pid=storm.pid) as w:
        storm.stdin.write(b"go\n")
        storm.stdin.flush()
        seen = 0
        for ev in w:
            seen += 1
            if seen % 1000 == 0:
                delays.append((time.monotonic_ns() - ev.timestamp_ns) / 1e6)
            if seen == ops:
                break
        lost = w.lost
    storm.wait()
    stop(storm)
    print(f"busy: {seen} events, {lost} lost")
    return delays


def idle_cost(seconds: float) -> float:
    w = opentrace.watch(comm="no-such-comm")  # nothing can match
    reader = threading.Thread(target=lambda: [None for _ in w])
    before = resource.getrusage(resource.RUSAGE_SELF)
    reader.start()
    time.sleep(seconds)
    after = resource.getrusage(resource.RUSAGE_SELF)
    w.close()
    reader.join()
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def latency(args: argparse.Namespace) -> int:
    check_root("latency.py")
    with workspace("otlat-") as tmp:
        path = tmp / "target"
        path.write_text("x")
        idle = stats(idle_latency(args.samples, path))
        print("idle latency:", summary(idle))
        busy = stats(busy_latency(path, args.busy_ops))
        print("busy latency:", summary(busy))
    cpu = idle_cost(args.idle)
    print(f"idle watcher: {cpu * 1000:.1f} ms of CPU in {args.idle:.0f} s ({cpu / args.idle * 100:.3f}% of a core)")
    result = write_json("latency", {"idle": idle, "busy": busy, "idle_cpu_s": cpu, "idle_s": args.idle})
    print(f"results: {rel(result)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/latency.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=50, help="idle opens to time (default 50)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle watching (default 10)")
    parser.add_argument("--busy-ops", type=int, default=1_000_000,
                        help="opens in the storm of the busy latency, one in 1000 timed (default 1000000)")
    args = parser.parse_args(argv)
    if args.samples < 2 or args.idle <= 0 or args.busy_ops < 2000:
        parser.error("--samples must be at least 2, --idle positive and --busy-ops at least 2000")
    return entry("latency", lambda: latency(args))


if __name__ == "__main__":
    sys.exit(main())
