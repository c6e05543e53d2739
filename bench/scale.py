#!/usr/bin/env python3
"""How the price of capture grows with the number of producers: the open storm at 1 to 16 threads
(each thread opening its own file), untraced, under a watcher that filters the workload out, under
the CLI capturing everything, and under the library's Python loop; x = wall time per op against
untraced at the same thread count, in the same round.

    sudo .venv/bin/python bench/scale.py [--threads 1,2,4,8,16] [--ops 200000] [--rounds 1]
                                         [--single] [--ring-shards N] [--workload PATH]
                                         [--row-timeout 300]

--single adds the CLI and library rows with one ring buffer (--ring-shards 1 / ring_shards=1), to
compare with the default (one shard per two CPUs), or with N shards (--ring-shards N: to see
sharding where the default is one ring, on two CPUs). --workload runs a prebuilt otbench (a statically
linked build of bench/workload.c, for a machine without a compiler) instead of building one.

Prints the table of issue 20 (each cell: x untraced, and how much of the workload's opens the
tracer delivered), then the library loop's events per CPU-second; everything measured goes to
bench/out/scale-<timestamp>.json. Measured by bench/overhead.py's engine, as bench/run.py is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from common import BenchError, check_root, ensure_tracefs, entry, machine_info, workspace, write_json
from overhead import Measurement, Prepared, Tracer, Workload, cli, library, measure, summarize

WORKLOAD = Workload("open-storm", "openat+close storm, one file per thread", "openat+close")



def columns(shards: int | None, single: bool) -> list[tuple[str, Tracer]]:
    """(column, tracer), the untraced baseline first; the capturing ones with ``shards`` ring
    buffers (None: the default), and with ``single`` the same with one."""
    cli_options = () if shards is None else ("--ring-shards", str(shards))
    watch = {} if shards is None else {"ring_shards": shards}
    shown = "" if shards is None else f", {shards} shards"
    chosen = [
        ("untraced", Tracer("untraced", "untraced", None)),
        ("watcher that filters the workload out",
         library("opentrace-lib-pid-other", "opentrace library, pid filter excluding the workload",
                 lambda c: {"pid": c.bench_pid, **watch}, attached=b"ready ")),
        (f"CLI full capture{shown}", cli("opentrace-cli", "opentrace CLI > file", *cli_options)),
        (f"library loop{shown}", library("opentrace-lib", "opentrace library (Python loop)", watch)),
    ]
    return chosen + (SINGLE if single else [])


SINGLE: list[tuple[str, Tracer]] = [
    ("CLI, one ring", cli("opentrace-cli-1ring", "opentrace CLI --ring-shards 1 > file", "--ring-shards", "1")),
    ("library, one ring", library("opentrace-lib-1ring", "opentrace library, ring_shards=1", {"ring_shards": 1})),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/scale.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1,2,4,8,16", help="comma-separated thread counts (default 1,2,4,8,16)")
    p.add_argument("--ops", type=int, default=200_000, help="ops per thread (default 200000)")
    p.add_argument("--rounds", type=int, default=1, help="rounds (default 1)")
    p.add_argument("--single", action="store_true", help="also the CLI and library with one ring buffer")
    p.add_argument("--ring-shards", type=int, metavar="N",
                   help="ring buffer shards of the capturing rows (default: the watchers' own)")
    p.add_argument("--workload", type=Path, metavar="PATH", help="a prebuilt otbench to run instead of building one")
    p.add_argument("--row-timeout", type=float, default=300.0, metavar="SECONDS", help="bound on one measurement")
    args = p.parse_args(argv)
    try:
        args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        p.error(f"--threads must be comma-separated integers, not {args.threads!r}")
    if not args.threads or min(args.threads) < 1 or args.ops < 1 or args.rounds < 1:
        p.error("--threads, --ops and --rounds must be positive")
    return args


def cell(row: dict[str, Any] | None, capturing: bool) -> str:
    """x untraced, and for a tracer that captures the workload how much of it it delivered."""
    if row is None or row["ratio"] is None:
        return "n/a"
    text = f"{row['ratio']:.2f}x"
    if capturing and row["expected"] and row["captured"] is not None:
        pct = 100 * row["captured"] / row["expected"]
        text += " (100%)" if row["captured"] == row["expected"] else f" ({pct:.1f}%, lost {row['lost']})"
    return text


def table(rows: list[dict[str, Any]], columns: list[tuple[str, Tracer]], threads: list[int]) -> str:
    shown = columns[1:]
    lines = ["| threads | untraced ns/op | " + " | ".join(name for name, _ in shown) + " |",
             "|---:|---:|" + "---:|" * len(shown)]
    for t in threads:
        by_tool = {r["tool"]: r for r in rows if r["threads"] == t}
        base = by_tool.get(columns[0][1].name)
        ns = "n/a" if base is None or base["ns_per_op"] is None else f"{base['ns_per_op']:.0f}"
        cells = [cell(by_tool.get(tr.name), tr.attached is None) for _, tr in shown]
        lines.append(f"| {t} | {ns} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    check_root("scale.py")
    ensure_tracefs()
    chosen = columns(args.ring_shards, args.single)
    tracers = [tracer for _, tracer in chosen]
    binary = args.workload.resolve() if args.workload else WORKLOAD.build()
    info = machine_info()
    print(f"machine: Linux {info['kernel']}, {info['cpus']} CPUs ({info['cpu_model']}); "
          f"python {info['python']}, opentrace {info['opentrace']}")
    print(f"open storm, {args.ops} openat+close per thread, threads {args.threads}, rounds {args.rounds}",
          flush=True)
    results: list[Measurement] = []
    seq = 0
    with workspace() as workdir:
        work = Prepared(WORKLOAD, binary, WORKLOAD.setup(workdir))
        measure(tracers[0], work, max(args.threads), min(args.ops, 20_000), 0, workdir, 0, args.row_timeout)
        for rnd in range(1, args.rounds + 1):
            shift = (rnd - 1) % len(tracers)
            order = tracers[shift:] + tracers[:shift]
            for t in args.threads:
                for tracer in order:
                    seq += 1
                    try:
                        m = measure(tracer, work, t, args.ops, rnd, workdir, seq, args.row_timeout)
                    except BenchError as e:
                        results.append(Measurement(tracer.name, WORKLOAD.name, t, rnd, args.ops, failed=str(e)))
                        print(f"  round {rnd} T={t} {tracer.name} FAILED: {e}", file=sys.stderr, flush=True)
                        continue
                    results.append(m)
                    cap = "" if m.captured is None else f" captured {m.captured}/{m.expected} lost {m.lost}"
                    print(f"  round {rnd} T={t} {tracer.name:<24} {m.ns_per_op:8.0f} ns/op{cap}",
                          file=sys.stderr, flush=True)
    rows = summarize(results, tracers, [WORKLOAD], args.threads)
    print()
    print(table(rows, chosen, args.threads))
    print()
    for r in rows:
        if r["consumer_events_per_cpu_s"] and r["tool"] != "opentrace-lib-pid-other":
            print(f"consumer: {r['label']} T={r['threads']}: "
                  f"{r['consumer_events_per_cpu_s'] / 1e6:.2f} M events per CPU-second of the Python loop")
        for note in r["notes"]:
            print(f"note: {r['label']} T={r['threads']}: {note}")
    path = write_json("scale", {
        "machine": info,
        "args": {"threads": args.threads, "ops": args.ops, "rounds": args.rounds, "single": args.single,
                 "ring_shards": args.ring_shards},
        "summary": rows,
        "measurements": [vars(m) for m in results],
    })
    print(f"\nresults: {path}")
    return 1 if any(m.failed for m in results) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return entry("scale", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
