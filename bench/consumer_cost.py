#!/usr/bin/env python3
"""What the Python loop costs per event, apart from the capture: a ring big enough to hold the
whole open storm is filled first (nothing reads it meanwhile), then read in a plain loop, timed
by the reader's CPU time alone; twice per watcher, as a new watcher's first burst and as a warm
one's (the reader's memory, and Python's, already grown). run.py's library rows measure the loop while the workload runs
beside it (on a 2-vCPU machine, on the sibling vCPU, which slows both); this measures it alone.

    sudo .venv/bin/python bench/consumer_cost.py [--ops 400000] [--rounds 5] [--ring-shards N] [--loops ...]

Another build of opentrace is measured by putting its package first on PYTHONPATH (the printed
header names the package read); older builds lack the CLI writer's entry point, so give them
``--loops event,batches,untouched`` (or fewer).

Each round, each way of reading: ``for ev in w`` and ``for batch in w.batches(): for ev in batch``,
both reading ``ev.pid`` (as bench/consumer.py counts the workload's events), ``for ev in w``
reading nothing, and the CLI's writer (its lines, with -T and with --json, to /dev/null). Prints
M events per CPU-second (median of the rounds, and the range) and the CPU time per event;
everything measured goes to bench/out/consumer-cost-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from common import BenchError, build_workload, check_root, ensure_tracefs, entry, machine_info, workspace, write_json

# Room for 400,000 records of ~200 bytes with no loss (the largest ring there is: 1 GiB).
RING_SIZE = 256 << 20


def by_event(w: Any, pid: int, want: int, start_ns: int) -> int:
    """``for ev in w``, reading ``ev.pid``, until ``want`` events of ``pid``; returns events read."""
    seen = mine = 0
    for ev in w:
        seen += 1
        if ev.pid == pid:
            mine += 1
            if mine == want:
                break
    return seen


def by_batch(w: Any, pid: int, want: int, start_ns: int) -> int:
    """``for batch in w.batches(): for ev in batch``, reading ``ev.pid``."""
    seen = mine = 0
    for batch in w.batches():
        for ev in batch:
            seen += 1
            if ev.pid == pid:
                mine += 1
        if mine >= want:
            break
    return seen


def untouched(w: Any, pid: int, want: int, start_ns: int) -> int:
    """``for ev in w`` reading nothing, until it read as many events as the workload made (any
    process's: the rate is of events read)."""
    seen = 0
    for _ in w:
        seen += 1
        if seen == want:
            break
    return seen


def cli_writer(**options: bool) -> Callable[[Any, int, int, int], int]:
    """The CLI's writer with these options (``opentrace [-T] [--json] > /dev/null``): lines made
    in Rust from the ring's records, written by Python, until it wrote as many as the workload
    made (any process's, as ``untouched``). Its clock starts before the burst, as the CLI's does."""

    def loop(w: Any, pid: int, want: int, start_ns: int) -> int:
        from opentrace._opentrace import Formatter

        formatter = Formatter(start_ns=start_ns, **options)
        seen = 0
        with open(os.devnull, "w") as out:
            while seen < want:
                read: list[tuple[str, int]] = []
                w._read_text(formatter, 1.0, None, read)
                for text, count in read:
                    out.write(text)
                    seen += count
        return seen

    return loop


# Each loop by its name for --loops, its label in the table, and the loop.
LOOPS: dict[str, tuple[str, Callable[[Any, int, int, int], int]]] = {
    "event": ("for ev in w (ev.pid)", by_event),
    "batches": ("w.batches() (ev.pid)", by_batch),
    "untouched": ("for ev in w (no attribute)", untouched),
    "cli": ("CLI lines > /dev/null", cli_writer()),
    "cli-T": ("CLI -T lines > /dev/null", cli_writer(timestamp=True)),
    "cli-json": ("CLI --json lines > /dev/null", cli_writer(json=True)),
}


def one(
    loop: Callable[[Any, int, int, int], int], workload: str, target: str, ops: int, shards: int | None
) -> tuple[float, float]:
    """Fills a ring (``shards`` of them: None, the default) with the storm's ``ops`` opens, then
    reads them, twice with one watcher; events per CPU-second, the first time and the second."""
    import opentrace

    rates = []
    with opentrace.watch(ring_size=RING_SIZE, **({} if shards is None else {"ring_shards": shards})) as w:
        for _ in range(2):
            start_ns = time.monotonic_ns()
            proc = subprocess.Popen([workload, target, str(ops), "1"], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL)
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.close()
            if proc.wait(timeout=300) != 0:
                raise BenchError(f"the workload failed with status {proc.returncode}")
            # The kernel counts what the ring had no room for as it happens: a loop that waits for
            # every event would otherwise wait for ever.
            if w.lost:
                raise BenchError(f"{w.lost} events lost: the ring ({RING_SIZE >> 20} MiB) did not hold the storm "
                                 "(fewer --ops, or fewer --ring-shards: the storm's thread writes to one "
                                 "shard, which has 1/N of the ring)")
            cpu = time.process_time()
            seen = loop(w, proc.pid, ops, start_ns)
            cpu = time.process_time() - cpu
            if w.lost:
                raise BenchError(f"{w.lost} events lost: the ring ({RING_SIZE >> 20} MiB) did not hold the storm")
            rates.append(seen / cpu)
    return rates[0], rates[1]


def spread(values: Iterable[float]) -> dict[str, float]:
    v = sorted(values)
    return {"median": statistics.median(v), "min": v[0], "max": v[-1]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", type=int, default=400_000, help="opens in the storm (default 400000)")
    p.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--ring-shards", type=int, help="ring buffers (default: the library's, one per 2 CPUs)")
    p.add_argument("--loops", default=",".join(LOOPS),
                   help=f"the loops to run, comma-separated (default: all of {','.join(LOOPS)}); the "
                        "event loops alone can read an older opentrace through PYTHONPATH")
    args = p.parse_args(argv)
    chosen = [name.strip() for name in args.loops.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in LOOPS]
    if unknown or not chosen:
        p.error(f"--loops: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(LOOPS)}")
    loops = {LOOPS[name][0]: LOOPS[name][1] for name in chosen}
    check_root("consumer_cost.py")
    ensure_tracefs()
    workload = str(build_workload())
    first: dict[str, list[float]] = {name: [] for name in loops}
    warm: dict[str, list[float]] = {name: [] for name in loops}
    with workspace("otconsumer-") as work:
        target = work / "f"
        target.write_text("")
        for rnd in range(1, args.rounds + 1):
            for name, loop in loops.items():
                cold, hot = one(loop, workload, str(target), args.ops, args.ring_shards)
                first[name].append(cold)
                warm[name].append(hot)
                print(f"  round {rnd} {name:<28} {cold / 1e6:5.2f} M events per CPU-second, then {hot / 1e6:5.2f} M",
                      file=sys.stderr, flush=True)
    info = machine_info()
    import opentrace

    print(f"machine: Linux {info['kernel']}, {info['cpus']} CPUs ({info['cpu_model']}); "
          f"python {info['python']}, opentrace {info['opentrace']} from {Path(opentrace.__file__).parent}")
    shards = "the default ring shards" if args.ring_shards is None else f"{args.ring_shards} ring shards"
    print(f"{args.ops} opens read from a ring filled beforehand ({shards}), {args.rounds} rounds; a watcher's "
          "first burst, then its second (warm)\n")
    print("| loop | M events per CPU-second, first burst | range | warm | range | CPU ns per event, warm |")
    print("|---|---:|---:|---:|---:|---:|")
    summary = {}
    for name in loops:
        c = spread(first[name])
        h = spread(warm[name])
        summary[name] = {"first": c, "warm": h}
        print(f"| {name} | {c['median'] / 1e6:.2f} | {c['min'] / 1e6:.2f}-{c['max'] / 1e6:.2f} | "
              f"{h['median'] / 1e6:.2f} | {h['min'] / 1e6:.2f}-{h['max'] / 1e6:.2f} | {1e9 / h['median']:.0f} |")
    path = write_json("consumer-cost", {"machine": info, "ops": args.ops, "rounds": args.rounds,
                                        "ring_shards": args.ring_shards,
                                        "ring_size": RING_SIZE, "first": first, "warm": warm,
                                        "summary": summary})
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(entry("bench/consumer_cost.py", main))
