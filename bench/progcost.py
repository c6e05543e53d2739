#!/usr/bin/env python3
"""Where the time goes in the kernel: each opentrace program's mean run time (ns per run), from
the kernel's own BPF statistics (kernel.bpf_stats_enabled), for the default capture and for
full_path=True over paths of different depths.

    sudo .venv/bin/python bench/progcost.py [--ops 200000]

The workload (bench/workload.c) opens one path in a loop; every program run is timed by the
kernel (the statistics themselves add ~20 ns per run, the same for every row). From two depths,
the cost of one path component of the full-path walk and the walk's fixed cost follow; the same
for the path filter's two ways of deciding an open that it excludes (its directories' dentries
met on the way up, or the full path built and compared), and for one that it matches.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common import WORKLOAD_COMM, build_workload, check_root, entry, workspace, write_json

import opentrace

STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


@contextmanager
def bpf_stats() -> Iterator[None]:
    before = STATS.read_text().strip()
    STATS.write_text("1")
    try:
        yield
    finally:
        STATS.write_text(before)


def program_costs() -> dict[str, tuple[int, float]]:
    """(runs, mean ns) of every loaded BPF program with runs, by name."""
    progs = json.loads(subprocess.check_output(["bpftool", "-j", "prog", "show"]))
    return {p["name"]: (p["run_cnt"], p["run_time_ns"] / p["run_cnt"]) for p in progs if p.get("run_cnt")}


def start_workload(binary: Path, directory: Path, path: str, ops: int) -> subprocess.Popen[str]:
    """The workload, told to go once armed."""
    workload = subprocess.Popen([str(binary), path, str(ops), "1", str(directory)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert workload.stdin is not None and workload.stdout is not None
    if workload.stdout.readline().strip() != "armed":
        raise RuntimeError("the workload did not start")
    workload.stdin.write("go\n")
    workload.stdin.flush()
    return workload


def measure(binary: Path, directory: Path, path: str, ops: int, **options: object) -> dict[str, float]:
    """Mean ns per run of the entry and exit programs while the workload opens ``path`` (0 for an
    entry program not attached); with ``counts=True`` under ``watch_counts(by=("comm", "file"))``
    (``events``: the opens counted)."""
    if options.pop("counts", False):
        with opentrace.watch_counts(interval=0.5, by=("comm", "file"), comm=WORKLOAD_COMM) as counting:
            start_workload(binary, directory, path, ops).wait()
            costs = program_costs()
            delivered = sum(c.opens for c in counting.read())
    else:
        with opentrace.watch(comm=WORKLOAD_COMM, ring_size=64 << 20, **options) as w:  # type: ignore[arg-type]
            workload = start_workload(binary, directory, path, ops)
            delivered = 0
            while workload.poll() is None:
                delivered += len(w.poll(0.05))
            while batch := w.poll(0.2):
                delivered += len(batch)
            costs = program_costs()
            if w.lost:
                raise RuntimeError(f"{w.lost} events lost: raise ring_size")
    # Counting at the exit alone runs no entry program, and its own exit program.
    exit_ns = costs["sys_exit"][1] if "sys_exit" in costs else costs["count_exit"][1]
    return {"enter_ns": costs.get("sys_enter_openat", (0, 0.0))[1], "exit_ns": exit_ns, "events": delivered}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", type=int, default=200_000, help="opens per case (default 200000)")
    args = p.parse_args()
    check_root("progcost.py")
    binary = build_workload()
    with workspace() as work, bpf_stats():
        shallow = work / "f"  # /tmp/otbench-XXX/f: three components
        deep = work.joinpath(*"abcdefghijkl") / "f"  # twelve more
        deep.parent.mkdir(parents=True)
        depth = {shallow: len(shallow.parts) - 1, deep: len(deep.parts) - 1}
        cases: list[tuple[str, dict[str, object]]] = [
            ("default", {}),
            ("full_path", {"full_path": True}),
            # Excluding the workload at entry, by its pid (this process's own): the floor of a
            # filter.
            ("pid filter", {"pid": os.getpid()}),
            # Excluding the workload: an existing directory is decided by dentries, a missing
            # one by the built path.
            ("paths, dentries", {"paths": ["/usr/share/"]}),
            ("paths, strings", {"paths": ["/nonexistent-opentrace-bench/"]}),
            # Matching it (its directory, decided by dentries): the walk up to the directory, and
            # no full path (not asked for).
            ("paths, matching", {"paths": [f"{work}/"]}),
            # The same, with the full path the event then carries, walked from the file up to the
            # directory (whose own path was kept when it was learned).
            ("paths + full_path, matching", {"paths": [f"{work}/"], "full_path": True}),
            # The same with the deep file's own directory as the entry: the walk stops one level up.
            ("paths + full_path, matching its directory", {"paths": [f"{deep.parent}/"], "full_path": True}),
            # Counting by comm and file (opentrace top) instead of sending each open.
            ("counting", {"counts": True}),
        ]
        rows = []
        for label, options in cases:
            for target in (shallow, deep):
                if label in ("default", "pid filter") and target is deep:
                    continue
                if label.endswith("matching its directory") and target is shallow:
                    continue  # the same directory as "paths + full_path, matching"'s
                m = measure(binary, work, str(target), args.ops, **options)
                rows.append({"case": label, "components": depth[target], **m})
                print(f"  {label:42} {depth[target]:2} components: enter {m['enter_ns']:.0f} ns, "
                      f"exit {m['exit_ns']:.0f} ns, {m['events']} events", file=sys.stderr)
    base = rows[0]
    print("| case | components | sys_enter | sys_exit |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['components']} | {r['enter_ns']:.0f} ns | {r['exit_ns']:.0f} ns |")
    costs = {}
    for label in ("full_path", "paths, dentries", "paths, strings", "paths, matching", "paths + full_path, matching"):
        short, long = (r for r in rows if r["case"] == label)
        per_component = (long["exit_ns"] - short["exit_ns"]) / (long["components"] - short["components"])
        fixed = short["exit_ns"] - base["exit_ns"] - per_component * short["components"]
        costs[label] = {"fixed_ns": fixed, "per_component_ns": per_component}
        print(f"\n{label}: {fixed:.0f} ns per open over the default exit + {per_component:.0f} ns per path component")
    out = write_json("progcost", {"rows": rows, "costs": costs})
    print(f"\nresults: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(entry("progcost", main))
