#!/usr/bin/env python3
"""Tracing a command and everything it starts: the wall time of real work untraced, under
`opentrace -- CMD` (every open of the tree to a file) and under `strace -f` (the open family to a
file), in one run, rounds alternating; and what following a process tree adds per fork.

    sudo .venv/bin/python bench/build.py [--rounds 5] [--files 120] [--row-timeout 600]

Workloads:
- a C project of --files source files built with `make -j2` (compile and link, cleaned between
  runs);
- CPython importing a good part of its standard library, ten times over (`python3 -c "import ..."`);
- a fork storm: a process that forks and waits for a child that exits at once, N and 2N times
  (the cost of following children, per fork, from the difference).

A run that fails, or takes longer than --row-timeout seconds (then it is killed, with every
process it started), is a note under the table; its cell is the median of the other rounds.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import BENCH, PY, BenchError, build_c, check_root, entry, machine_info, require, workspace, write_json

IMPORTS = (
    "import json, email.parser, http.client, xml.dom.minidom, asyncio, decimal, fractions, csv, sqlite3, "
    "argparse, logging.handlers, urllib.request, unittest, pydoc, tarfile, zipfile, difflib, statistics"
)
FORKER = BENCH / "forker.c"


def c_project(directory: Path, files: int) -> None:
    """``files`` C sources with a shared header, and a Makefile that compiles and links them."""
    directory.mkdir(parents=True)
    headers = ("stdio.h", "stdlib.h", "string.h", "math.h", "time.h", "ctype.h", "errno.h", "fcntl.h",
               "unistd.h", "sys/stat.h", "sys/types.h", "signal.h", "pthread.h", "stdint.h", "limits.h")
    (directory / "common.h").write_text("".join(f"#include <{h}>\n" for h in headers)
                                        + "".join(f"int f{i}(int);\n" for i in range(files)))
    for i in range(files):
        (directory / f"f{i}.c").write_text(
            f'#include "common.h"\nint f{i}(int x) {{ char b[64]; snprintf(b, sizeof b, "%d", x); '
            f"for (int k = 0; k < x; k++) b[k % 63] = (char)toupper(b[k % 63]); "
            f"return (int)strlen(b) + (int)sqrt((double)x) + {i}; }}\n")
    (directory / "main.c").write_text(
        '#include "common.h"\nint main(void) { int s = 0;\n'
        + "".join(f"  s += f{i}({i});\n" for i in range(files)) + '  printf("%d\\n", s); return 0; }\n')
    objects = " ".join(f"f{i}.o" for i in range(files))
    (directory / "Makefile").write_text(
        f"CFLAGS = -O2 -Wall\nprog: main.o {objects}\n\t$(CC) -o $@ $^ -lm\n"
        "%.o: %.c common.h\n\t$(CC) $(CFLAGS) -c $< -o $@\nclean:\n\trm -f prog *.o\n")


ROW_TIMEOUT = 600.0  # seconds one run may take (--row-timeout); ~60 s is the slowest here (make under strace -f)


def timed(argv: list[str], cwd: Path, timeout: float) -> float:
    """The wall time of ``argv``; a ``BenchError`` if it fails, or takes over ``timeout`` seconds
    (then its process group, every process it started, is killed: a make's compilers too)."""
    started = time.monotonic()
    with subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise BenchError(f"timed out after {timeout:g} s") from None
    took = time.monotonic() - started
    if proc.returncode != 0:
        last = err.strip().splitlines()[-1:] or [""]
        raise BenchError(f"failed (status {proc.returncode}): {last[0][:200]}")
    return took


def _median(times: list[float]) -> float | None:
    return statistics.median(times) if times else None


def _cell(value: float | None, base: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f} s" + (f" ({value / base:.2f}x)" if base else "")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="rounds; each mode runs once per round (default 5)")
    p.add_argument("--files", type=int, default=120, help="C source files in the project (default 120)")
    p.add_argument("--forks", type=int, default=20000, help="forks in the fork storm (default 20000)")
    p.add_argument("--row-timeout", type=float, default=ROW_TIMEOUT, metavar="SECONDS",
                   help=f"bound on one run; past it the run is killed and noted (default {ROW_TIMEOUT:g})")
    args = p.parse_args()
    if not args.row_timeout > 0:
        p.error("--row-timeout must be positive")
    check_root("build.py")
    require(["strace", "make", "gcc"])
    forker = build_c(FORKER, "otforker")
    results: dict[str, dict[str, list[float]]] = {}
    notes: list[str] = []
    with workspace("otbuild-") as work:
        project = work / "project"
        c_project(project, args.files)
        workloads = {
            "make -j2 (C project)": (["make", "-s", "-j2"], project, ["make", "-s", "clean"]),
            "python3 imports x10": (["sh", "-c", f'for i in 1 2 3 4 5 6 7 8 9 10; do {PY} -c "{IMPORTS}"; done'],
                                    work, None),
            "fork storm": ([str(forker), str(args.forks)], work, None),
            "fork storm x2": ([str(forker), str(2 * args.forks)], work, None),
        }
        modes = {
            "untraced": [],
            "opentrace -- CMD": [PY, "-m", "opentrace", "-q", "-o", str(work / "trace.txt"), "--"],
            "strace -f": ["strace", "-f", "-qq", "-o", str(work / "strace.txt"),
                          "-e", "trace=open,openat,openat2,creat", "--"],
        }
        for name, (argv, cwd, clean) in workloads.items():
            results[name] = {mode: [] for mode in modes}
            try:
                timed(argv, cwd, args.row_timeout)  # warm the caches
            except BenchError as e:
                notes.append(f"{name}: the warm-up run (untraced, discarded) {e}")
            for rnd in range(args.rounds):
                order = list(modes.items())
                order = order[rnd % len(order):] + order[:rnd % len(order)]
                for mode, prefix in order:
                    try:
                        if clean:
                            timed(clean, cwd, args.row_timeout)
                        took = timed([*prefix, *argv], cwd, args.row_timeout)
                    except BenchError as e:
                        # A finding about that mode, not the end of the run.
                        notes.append(f"{name}: {mode}: round {rnd + 1} {e}")
                        print(f"  {name}: {mode} FAILED: {e}", file=sys.stderr)
                        continue
                    results[name][mode].append(took)
                    print(f"  {name}: {mode} {took:.3f} s", file=sys.stderr)
    print(f"rounds {args.rounds}; median wall time and ratio to untraced\n")
    print("| workload | untraced s | opentrace -- CMD | strace -f |")
    print("|---|---:|---:|---:|")
    summary: dict[str, dict[str, float | None]] = {}
    for name, by_mode in results.items():
        medians = {mode: _median(times) for mode, times in by_mode.items()}
        base = medians["untraced"]
        summary[name] = medians
        cells = [_cell(medians[m], base) for m in ("opentrace -- CMD", "strace -f")]
        print(f"| {name} | {'n/a' if base is None else f'{base:.2f}'} | " + " | ".join(cells) + " |")
    # From the difference of the two storms: start-up and exit costs cancel out.
    once, twice = summary["fork storm"], summary["fork storm x2"]
    per_fork: dict[str, float | None] = {}
    for m in once:
        a, b = once[m], twice[m]
        per_fork[m] = None if a is None or b is None else (b - a) / args.forks * 1e6
    us = {m: "n/a" if v is None else f"{v:.1f} us" for m, v in per_fork.items()}
    base_fork, ot_fork = per_fork["untraced"], per_fork["opentrace -- CMD"]
    extra = "" if base_fork is None or ot_fork is None else f" (+{ot_fork - base_fork:.1f})"
    print(f"\nper fork+exit+wait: untraced {us['untraced']}, opentrace (following children) "
          f"{us['opentrace -- CMD']}{extra}, strace -f {us['strace -f']}")
    for note in notes:
        print(f"note: {note}")
    out = write_json("build", {"machine": machine_info(["strace"]), "args": vars(args), "runs": results,
                               "medians": summary, "per_fork_us": per_fork, "notes": notes})
    print(f"\nresults: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(entry("build", main))
