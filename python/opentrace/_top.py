"""``opentrace top``: the files opened most, counted in the kernel (``watch_counts``), refreshed
every interval in place on a terminal; one table per interval otherwise; one JSON object per row
per interval with ``--json``."""

from __future__ import annotations

import argparse
import json
import time
from typing import TextIO

from ._counts import BY, DEFAULT_BY, DEFAULT_MAX_KEYS, OpenCount, watch_counts

PROG = "opentrace top"
CLEAR = "\x1b[H\x1b[2J"


def _parser() -> argparse.ArgumentParser:
    from .cli import _positive_float, _positive_int

    p = argparse.ArgumentParser(
        prog=PROG,
        description="The files opened most, counted in the kernel (no event per open), like top: "
        "OPENS FAILED ERRORS [COMM] [PID] [CONTAINER] PATH, most opens first, every interval.",
        epilog="examples:\n"
        "  opentrace top                      # every second, by container, command and file\n"
        "  opentrace top -i 5 --by comm,file  # every 5 seconds, by command and file\n"
        "  opentrace top -p 1234 --json -c 3  # one process, three intervals as JSON lines",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-i", "--interval", type=_positive_float, default=1.0, metavar="SECONDS",
                   help="seconds per refresh (default 1)")
    p.add_argument("--by", default=",".join(DEFAULT_BY), metavar="FIELDS",
                   help=f"what to group by, comma-separated, of {','.join(BY)} (default {','.join(DEFAULT_BY)})")
    p.add_argument("-r", "--rows", type=_positive_int, default=20, metavar="N",
                   help="rows shown per refresh (default 20; --json gives every row)")
    p.add_argument("-c", "--count", type=_positive_int, metavar="N", help="stop after N intervals")
    p.add_argument("-d", "--duration", type=_positive_float, metavar="SECONDS", help="stop after SECONDS")
    p.add_argument("--json", action="store_true", help="one JSON object per row per interval")
    p.add_argument("-q", "--quiet", action="store_true", help="no 'counting ...' line on stderr at start")
    p.add_argument("-p", "--pid", type=int, help="only this process id (ends when it exits)")
    p.add_argument("-u", "--uid", type=int, help="only this user id")
    p.add_argument("-n", "--name", metavar="NAME", help="only process names containing NAME")
    p.add_argument("-x", "--failed", action="store_true", help="only failed opens")
    p.add_argument("--cgroup", metavar="PATH", help="only tasks in this cgroup v2 or below it")
    p.add_argument("--container", metavar="NAME_OR_ID", help="only this container's tasks")
    p.add_argument("--path", dest="paths", action="append", metavar="P",
                   help="only opens whose full path matches P (repeatable): DIR/, *SUFFIX or an exact path")
    p.add_argument("--max-keys", type=_positive_int, default=DEFAULT_MAX_KEYS, metavar="N",
                   help=f"the kernel's table of keys (default {DEFAULT_MAX_KEYS}); opens past it are counted lost")
    return p


def _table(rows: list[OpenCount], by: list[str], limit: int) -> str:
    columns = [("OPENS", 7), ("FAILED", 7), ("ERRORS", 16)]
    if "comm" in by:
        columns.append(("COMM", 16))
    if "pid" in by:
        columns.append(("PID", 7))
    if "cgroup" in by:
        columns.append(("CONTAINER", 12))
    lines = [" ".join(f"{t:>{w}}" if t in ("OPENS", "FAILED") else f"{t:<{w}}" for t, w in columns) + " PATH"]
    from ._opentrace import printable

    for row in rows[:limit]:
        cells = [f"{row.opens:>7}", f"{row.failed:>7}", f"{','.join(sorted(row.errors)) or '-':<16}"]
        if "comm" in by:
            cells.append(f"{printable((row.comm or '').encode(errors='surrogateescape')):<16}")
        if "pid" in by:
            cells.append(f"{row.pid if row.pid is not None else '-':<7}")
        if "cgroup" in by:
            cells.append(f"{(row.container_id or '-')[:12]:<12}")
        path = "-" if row.path is None else printable(row.path.encode(errors="surrogateescape"))
        lines.append(" ".join(cells) + " " + path)
    return "\n".join(lines) + "\n"


def top(argv: list[str], stdout: TextIO | None, err: TextIO) -> int:
    from .cli import _log_to, _open_output, _Run

    args = _parser().parse_args(argv)
    by = [name.strip() for name in args.by.split(",") if name.strip()]
    unknown = [name for name in by if name not in BY]
    if unknown or not by:
        err.write(f"{PROG}: --by takes {','.join(BY)}, not {args.by!r}\n")
        return 2
    _log_to(err, quiet=True)
    out = _open_output(None, stdout)
    try:
        watcher = watch_counts(args.interval, by, max_keys=args.max_keys, pid=args.pid, uid=args.uid,
                               comm=args.name, failed=args.failed, cgroup=args.cgroup, container=args.container,
                               paths=args.paths)
    except (ValueError, TypeError) as e:
        err.write(f"{PROG}: {e}\n")
        return 2
    interactive = not args.json and out.stream.isatty()
    deadline = None if args.duration is None else time.monotonic() + args.duration

    def show(n: int, rows: list[OpenCount]) -> None:
        if args.json:
            stamp = time.time()
            out.write("".join(json.dumps({"interval": n, "time": stamp, **row.to_dict()}) + "\n" for row in rows))
        else:
            header = f"{time.strftime('%H:%M:%S')}  {sum(r.opens for r in rows)} opens, {len(rows)} rows"
            if watcher.lost:
                header += f", {watcher.lost} not counted"
            out.write((CLEAR if interactive else "") + header + "\n" + _table(rows, by, args.rows)
                      + ("" if interactive else "\n"))

    # (_Run: Ctrl-C or SIGTERM stops the counting while it waits for an interval, or once an
    # interval is shown; a second one does not cut the last interval short.)
    with watcher, _Run(err, True, "counting") as run_:
        n, intervals = 0, iter(watcher)
        try:
            # Said once a stop is caught (as `_Run.announce`): whoever stops us as soon as they see
            # the line gets what was counted, never a KeyboardInterrupt outside the block.
            if not args.quiet:
                err.write(f"{PROG}: counting opens every {args.interval:g} s by {','.join(by)} (Ctrl-C to stop)\n")
                err.flush()
            while not run_.stopped:
                rows = run_.reading(lambda: next(intervals))
                n += 1
                show(n, rows)
                if args.count is not None and n >= args.count:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
        except StopIteration:  # the processes counted are gone
            pass
        except KeyboardInterrupt:
            run_.last()
        if run_.stopped:  # Ctrl-C, SIGTERM: the interval under way, counted so far, is the last
            show(n + 1, watcher.read())
    return 0
