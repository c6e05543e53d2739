#!/usr/bin/env python3
"""Overhead, capture, start time and memory of opentrace vs bpftrace vs opensnoop, in one table.

    sudo .venv/bin/python bench/run.py [--rounds 3] [--ops 200000] [--threads 1,2] [--tools ...] [--quick]
                                       [--row-timeout 300]
    make bench ARGS="--rounds 5"

A C workload (bench/workload.c, comm "otbench") does N x (openat + close) of one unique file
per thread while each tool traces file opens system-wide; the modes alternate round by round
(the order rotates each round) so that drift of the machine hits every tool alike. Each row is
compared with the untraced run of the same round ("x untraced"). A measurement that fails, or
takes longer than --row-timeout seconds (its processes are killed then), is a note on its row.
The table and every measurement go to bench/out/results-<timestamp>.json.

Needs root, and the peers installed by `sudo scripts/bootstrap bench` (`make bench` runs it).
"""

# This file is the list of what is measured: add a row to TRACERS or WORKLOADS below. How it is
# measured (the protocol of one measurement, the summary and the table) is in bench/overhead.py.

from __future__ import annotations

import os
import sys

from common import BENCH, IDLE_CGROUP, OPENSNOOP, bench_cgroups, entry
from overhead import (
    Context,
    Tracer,
    Workload,
    agent,
    cli,
    cli_parquet,
    comm_target,
    library,
    parse_args,
    relative_args,
    relative_target,
    run,
    storm_args,
)

BPFTRACE_PRINTF = 'tracepoint:syscalls:sys_enter_openat { printf("%d %s %s\\n", pid, comm, str(args->filename)); }'
# The in-kernel floor: count the workload's opens in a map. The else branch (only for this
# script's pid, never for the workload) prints the probe path, so readiness is seen like the others.
BPFTRACE_COUNT = (
    'tracepoint:syscalls:sys_enter_openat {{ if (comm == "{comm}") {{ @c = count(); }} '
    'else if (pid == {pid}) {{ printf("%s\\n", str(args->filename)); }} }}'
)

# Counting at the syscall's exit alone, by cgroup and result, as `opentrace agent --metrics` does
# (comm first in the key, for the map's reading; the probe is seen at its exit).
BPFTRACE_COUNT_EXIT = (
    'tracepoint:syscalls:sys_exit_openat {{ if (comm == "{comm}") {{ '
    '@[comm, cgroup, args->ret < 0 ? -args->ret : 0] = count(); }} '
    'else if (pid == {pid}) {{ printf("probe-seen\\n"); }} }}'
)

# The attach floor at the exit, where `opentrace top` counts: a program on sys_exit_openat that
# does nothing for the workload (it reads the pid and compares it with this script's, whose opens
# print the readiness line). What any tool counting there pays before its own work.
BPFTRACE_EXIT_EMPTY = (
    'tracepoint:syscalls:sys_exit_openat {{ if (pid == {pid}) {{ printf("probe-seen\\n"); }} }}'
)

# Counting per command and file, system-wide, as `opentrace top` does (bpftrace's keys hold the
# path string; the else branch prints the probe path for readiness, as above).
BPFTRACE_COUNT_PATHS = (
    'tracepoint:syscalls:sys_enter_openat {{ if (pid != {pid}) {{ @[comm, str(args->filename)] = count(); }} '
    'else {{ printf("%s\\n", str(args->filename)); }} }}'
)


def top_watch(c: Context) -> dict[str, object]:
    """`opentrace top`'s counting (by comm and file) of the workload's command."""
    return {"counts": {"interval": 1.0, "by": ["comm", "file"]}, "count_comm": c.workload_comm}


# One row per workload and thread count, in this order; the first is the baseline the others are
# compared with. ``argv`` gets a Context (probe path, workload pid and comm, this script's pid).
# A new configuration is one more line, e.g.
#     library("opentrace-lib-full", "opentrace library, full_path=True", {"full_path": True}),
#     cli("opentrace-cli-F", "opentrace CLI -F > file", "-F"),
#     library("opentrace-lib-pid", "opentrace library, pid filter", lambda c: {"pid": c.workload_pid},
#             attached=b"ready "),  # filtered to the workload, it never sees the probe path
TRACERS: list[Tracer] = [
    Tracer("untraced", "untraced", None),
    library("opentrace-lib", "opentrace library (Python loop)"),
    cli("opentrace-cli", "opentrace CLI > file"),
    library("opentrace-lib-F", "opentrace library, full_path=True", {"full_path": True}),
    cli("opentrace-cli-F", "opentrace CLI -F > file", "-F"),
    # The node agent, filtered to the workload's comm: counting for Prometheus only, and writing Parquet.
    agent("opentrace-agent-metrics", "opentrace agent --metrics (Prometheus)", "--metrics", "127.0.0.1:0"),
    # As a fleet runs it: no filter, every open on the machine counted (the workload's by its cgroup).
    agent("opentrace-agent-metrics-all", "opentrace agent --metrics, system-wide (no filter)",
          "--metrics", "127.0.0.1:0", system_wide=True),
    agent("opentrace-agent-parquet", "opentrace agent --parquet DIR", "--parquet", "{dir}"),
    # The same events written by the CLI's -o FILE.parquet (the agent's target: this row + 0.1x).
    cli_parquet("opentrace-cli-parquet", "opentrace CLI -n COMM -o trace.parquet"),
    # Filters that leave the workload out, decided at syscall entry: what a filter costs the rest.
    library("opentrace-lib-pid-other", "opentrace library, pid filter excluding the workload",
            lambda c: {"pid": c.bench_pid}, attached=b"ready "),
    library("opentrace-lib-cgroup-other", "opentrace library, cgroup filter excluding the workload",
            {"cgroup": IDLE_CGROUP}, attached=b"ready "),
    # Path filters. Entries that are all existing directories are decided by the opened file's
    # ancestors (dentries, learned at start); any other entry (here one that does not exist, or a
    # suffix) makes the kernel build the full path and compare it: both, excluding and matching.
    library("opentrace-lib-path-other", "opentrace library, --path DIR/ excluding the workload (dentries)",
            {"paths": ["/usr/share/"]}, attached=b"ready "),
    library("opentrace-lib-path-other-str", "opentrace library, --path DIR/ excluding the workload (strings)",
            {"paths": ["/nonexistent-opentrace-bench/"]}, attached=b"ready "),
    # Matching: the events carry no full path unless asked (-F), so a directory entry decided by
    # dentries walks no path; with strings, or with -F, the full path is walked.
    library("opentrace-lib-path", "opentrace library, --path DIR/ matching the workload (dentries)",
            lambda c: {"paths": [f"{c.probe.parent}/"]}),
    library("opentrace-lib-path-F", "opentrace library, --path DIR/ matching the workload, full_path=True",
            lambda c: {"paths": [f"{c.probe.parent}/"], "full_path": True}),
    library("opentrace-lib-path-str", "opentrace library, --path DIR/ matching the workload (strings)",
            lambda c: {"paths": [f"{c.probe.parent}/", "*.opentrace-bench-never"]}),
    # The CLI's matching rows, to set beside its default and -F rows.
    cli("opentrace-cli-path", "opentrace CLI --path DIR/ > file, matching the workload (dentries)",
        "--path", lambda c: f"{c.probe.parent}/"),
    cli("opentrace-cli-path-F", "opentrace CLI --path DIR/ -F > file, matching the workload",
        "-F", "--path", lambda c: f"{c.probe.parent}/"),
    Tracer("bpftrace-printf", "bpftrace printf > file", lambda c: ["bpftrace", "-e", BPFTRACE_PRINTF],
           needs=("bpftrace",)),
    Tracer("opensnoop", "opensnoop (libbpf-tools) > file", lambda c: ["stdbuf", "-oL", OPENSNOOP],
           needs=("stdbuf", OPENSNOOP)),
    Tracer("bpftrace-count", "bpftrace count-only (in-kernel floor)",
           lambda c: ["bpftrace", "-e", BPFTRACE_COUNT.format(comm=c.workload_comm, pid=c.bench_pid)],
           needs=("bpftrace",), count="bpftrace-map", show_start=False),
    Tracer("bpftrace-count-exit", "bpftrace @[comm, cgroup, errno] = count() at sys_exit",
           lambda c: ["bpftrace", "-e", BPFTRACE_COUNT_EXIT.format(comm=c.workload_comm, pid=c.bench_pid)],
           needs=("bpftrace",), count="bpftrace-map", show_start=False, attached=b"probe-seen"),
    # In-kernel counting by command and file (`opentrace top`, `watch_counts`) beside bpftrace's.
    library("opentrace-top", "opentrace watch_counts by comm,file (opentrace top)", top_watch,
            attached=b"ready "),
    Tracer("bpftrace-exit-empty", "bpftrace at sys_exit doing nothing for the workload (attach floor)",
           lambda c: ["bpftrace", "-e", BPFTRACE_EXIT_EMPTY.format(pid=c.bench_pid)],
           needs=("bpftrace",), show_start=False, attached=b"probe-seen"),
    Tracer("bpftrace-count-paths", "bpftrace @[comm, str(filename)] = count()",
           lambda c: ["bpftrace", "-e", BPFTRACE_COUNT_PATHS.format(pid=c.bench_pid)],
           needs=("bpftrace",), count="bpftrace-map", show_start=False),
]

# Any tracepoint: sched_switch through a context-switch storm, every syscall entry through a
# syscall storm, beside bpftrace printing the same records.
SWITCH = "sched:sched_switch"
# Lines as `opentrace watch` prints the fields, so that both are counted by "prev_comm=otpingpong".
BPFTRACE_SWITCH = ('tracepoint:sched:sched_switch { printf("prev_comm=%s prev_pid=%d next_comm=%s next_pid=%d\\n", '
                   'args->prev_comm, args->prev_pid, args->next_comm, args->next_pid); }')
# (bpftrace 0.17 cannot build `args` for every sys_enter_* here: it fails on landlock's types.) The
# probe path is printed by a probe attached after all the others (bpftrace attaches in program
# order, ~30 s for these): seeing it means they are all attached.
BPFTRACE_SYSCALLS = (
    'tracepoint:syscalls:sys_enter_* {{ printf("%d %s\\n", pid, comm); }} '
    'tracepoint:syscalls:sys_exit_openat {{ if (pid == {pid}) {{ printf("probe-seen\\n"); }} }}'
)
TRACERS += [
    library("opentrace-tp-switch", f"opentrace watch_tracepoints('{SWITCH}') (Python loop)",
            {"tracepoints": [SWITCH], "count_comm": "otpingpong"}, attached=b"ready ", workloads=("pingpong",)),
    cli("opentrace-watch-switch", f"opentrace watch {SWITCH} > file", "watch", SWITCH, attached=b"TIME",
        workloads=("pingpong",)),
    Tracer("bpftrace-switch", "bpftrace sched_switch printf > file", lambda c: ["bpftrace", "-e", BPFTRACE_SWITCH],
           needs=("bpftrace",), attached=b"Attaching", workloads=("pingpong",)),
    library("opentrace-tp-syscalls", "opentrace watch_tracepoints('syscalls:sys_enter_*') (Python loop)",
            {"tracepoints": ["syscalls:sys_enter_*"]}, attached=b"ready ", workloads=("syscall-storm",)),
    Tracer("bpftrace-syscalls", "bpftrace syscalls:sys_enter_* printf > file",
           lambda c: ["bpftrace", "-e", BPFTRACE_SYSCALLS.format(pid=c.bench_pid)], needs=("bpftrace",),
           attached=b"probe-seen",
           workloads=("syscall-storm",)),
]

# Before/after in one run: OPENTRACE_BASELINE_PYTHON names an interpreter with another opentrace
# installed (e.g. a venv built from an earlier commit); its library, CLI, top and path-filter rows
# are added.
BASELINE = os.environ.get("OPENTRACE_BASELINE_PYTHON")
if BASELINE:
    TRACERS[2:2] = [
        library("baseline-lib", "baseline: opentrace library (Python loop)", python=BASELINE),
        cli("baseline-cli", "baseline: opentrace CLI > file", python=BASELINE),
    ]
    TRACERS.append(library("baseline-top", "baseline: opentrace watch_counts by comm,file", top_watch,
                           attached=b"ready ", python=BASELINE))
    TRACERS.append(library("baseline-path-other", "baseline: opentrace library, --path DIR/ excluding the workload "
                           "(dentries)", {"paths": ["/usr/share/"]}, attached=b"ready ", python=BASELINE))
    TRACERS.append(library("baseline-lib-F", "baseline: opentrace library, full_path=True", {"full_path": True},
                           python=BASELINE))
    TRACERS.append(library("baseline-path", "baseline: opentrace library, --path DIR/ matching the workload "
                           "(dentries)", lambda c: {"paths": [f"{c.probe.parent}/"]}, python=BASELINE))

# Each is a C program in bench/ speaking otbench's protocol (see overhead.Workload); every tracer
# above runs on each. A new one is one more entry, with ``setup`` / ``args`` when it needs more
# than one target file (a directory tree, a project).
URING = BENCH / "uring.c"
WORKLOADS: list[Workload] = [
    Workload("open-storm", "openat+close storm, one file per thread", "openat+close"),
    Workload("open-relative", "openat+close of a relative path 8 directories deep", "openat+close (relative)",
             setup=relative_target, args=relative_args),
    # Only an io_uring-aware tracer sees these opens; the syscall tracers' rows show 0%.
    Workload("uring-open", "io_uring open storm (IORING_OP_OPENAT, then close)", "IORING_OP_OPENAT+close",
             source=URING, comm="oturing", gcc_flags=("-luring",),
             args=lambda target, ops, threads: ["open", *storm_args(target, ops, threads)]),
    # No opens at all: what tracing io_uring opens costs a process doing other io_uring requests.
    Workload("uring-read", "io_uring read storm (IORING_OP_READ of 64 bytes; no opens)", "IORING_OP_READ",
             source=URING, comm="oturing", gcc_flags=("-luring",), events_per_op=0,
             args=lambda target, ops, threads: ["read", *storm_args(target, ops, threads)]),
    # For the tracepoint rows: a round trip of a byte to a child process and back (two context
    # switches at least; how many sched_switch records that makes is the scheduler's to say).
    Workload("pingpong", "pipe ping-pong with a child process (context switches)", "round trip",
             source=BENCH / "pingpong.c", comm="otpingpong", events_per_op=0, only_listed=True,
             setup=comm_target("prev_comm=otpingpong")),
    # The open storm again, for syscalls:sys_enter_*: openat + close, two records per op.
    Workload("syscall-storm", "openat+close storm, every sys_enter_* tracepoint watched", "openat+close",
             events_per_op=2, only_listed=True, setup=comm_target("otbench")),
]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, TRACERS, WORKLOADS, __doc__ or "")
    def body() -> int:
        with bench_cgroups():
            return run(args, TRACERS, WORKLOADS)

    return entry("bench", body)


if __name__ == "__main__":
    sys.exit(main())
