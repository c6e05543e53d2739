"""Library-mode consumer for bench/run.py: count one process's opens with ``opentrace.watch()``.

    python bench/consumer.py TARGET_PID PROBE_PATH [WATCH_KWARGS_JSON]

Traces system-wide (no kernel filter, unless WATCH_KWARGS_JSON, a JSON object of keyword
arguments for ``opentrace.watch()``, says otherwise; with a "tracepoints" list in it,
``opentrace.watch_tracepoints()`` of those) and does the counting in Python, the way a naive
user would. Protocol on stdout (each line flushed):

    ready <watch_ms>                    after watch() returned
    first <probe_path> <ms>             first event whose path is PROBE_PATH (ms since just before watch())
    {"count": ..., "lost": ..., ...}    on SIGINT (or SIGTERM), then exit 0

Started and measured by bench/overhead.py (its ``library()`` rows). It imports nothing from
bench/common.py on purpose: every module it loads counts in the peak RSS that run.py reports.
"""

from __future__ import annotations

import json
import signal
import sys
import time

import opentrace


def main() -> int:
    target_pid = int(sys.argv[1])
    probe = sys.argv[2]
    kwargs = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    out = sys.stdout
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    n = 0
    events = 0
    first_ms: float | None = None
    t0 = time.perf_counter()
    # {"tracepoints": [...], ...}: opentrace.watch_tracepoints(*names, **the rest).
    names = kwargs.pop("tracepoints", None)
    # {"count_comm": NAME}: count the events of tasks named NAME rather than of TARGET_PID.
    count_comm = kwargs.pop("count_comm", None)
    # {"counts": {...}}: opentrace.watch_counts(**those): the opens counted in the kernel.
    counting = kwargs.pop("counts", None)
    if counting is not None:
        return counts(kwargs | counting, count_comm, t0, out)
    w = opentrace.watch(**kwargs) if names is None else opentrace.watch_tracepoints(*names, **kwargs)
    watch_ms = (time.perf_counter() - t0) * 1e3
    out.write(f"ready {watch_ms:.3f}\n")
    out.flush()
    cpu0 = time.process_time()
    try:
        try:
            for ev in w:
                events += 1
                if ev.pid == target_pid if count_comm is None else ev.comm == count_comm:
                    n += 1
                elif first_ms is None and names is None and ev.path == probe:
                    first_ms = (time.perf_counter() - t0) * 1e3
                    out.write(f"first {probe} {first_ms:.3f}\n")
                    out.flush()
        except KeyboardInterrupt:
            pass
        lost = w.lost
        # The loop's CPU time (the reader's decoding in it), not loading and attaching before it.
        loop_cpu_s = time.process_time() - cpu0
    finally:
        w.close()
    out.write(json.dumps({"count": n, "lost": lost, "events": events, "watch_ms": watch_ms,
                          "first_event_ms": first_ms, "loop_cpu_s": loop_cpu_s}) + "\n")
    out.flush()
    return 0



def counts(kwargs: dict[str, object], count_comm: str, t0: float, out: object) -> int:
    """``opentrace.watch_counts(**kwargs)``: the opens of tasks named ``count_comm``, summed over
    the intervals (and a last read on SIGINT)."""
    import io

    assert isinstance(out, io.TextIOBase)
    w = opentrace.watch_counts(**kwargs)  # type: ignore[arg-type]
    watch_ms = (time.perf_counter() - t0) * 1e3
    out.write(f"ready {watch_ms:.3f}\n")
    out.flush()
    cpu0 = time.process_time()
    n = rows = 0
    try:
        try:
            for interval in w:
                rows += len(interval)
                n += sum(r.opens for r in interval if r.comm == count_comm)
        except KeyboardInterrupt:
            pass
        interval = w.read()
        rows += len(interval)
        n += sum(r.opens for r in interval if r.comm == count_comm)
        lost = w.lost
        loop_cpu_s = time.process_time() - cpu0
    finally:
        w.close()
    out.write(json.dumps({"count": n, "lost": lost, "events": rows, "watch_ms": watch_ms,
                          "first_event_ms": None, "loop_cpu_s": loop_cpu_s}) + "\n")
    out.flush()
    return 0

if __name__ == "__main__":
    sys.exit(main())
