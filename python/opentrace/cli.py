"""``opentrace``/``python -m opentrace``: opensnoop-style live tracing, and tracepoint discovery."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

from . import OpentraceError, __version__, watch
from ._opentrace import Formatter
from ._watch import DEFAULT_RING_SIZE, SYSCALLS

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms)
if TYPE_CHECKING:
    from typing import TextIO


PROG = "opentrace"

EXAMPLES = """\
examples:
  opentrace                       # trace all file opens
  opentrace -T                    # include a timestamp column
  opentrace -U                    # include a UID column
  opentrace -x                    # only show failed opens
  opentrace -p 181                # only trace PID 181
  opentrace -t 123                # only trace TID 123
  opentrace -u 1000               # only trace UID 1000
  opentrace -d 10                 # trace for 10 seconds only
  opentrace -n main               # only trace processes whose name contains "main"
  opentrace -e                    # show the open flags (and dfd) too
  opentrace -F                    # show the full path of what was opened
  opentrace -c 100 --json         # 100 events as JSON lines, then stop
  opentrace list 'syscalls:*open*'            # tracepoints matching a glob
  opentrace format syscalls:sys_enter_openat  # one tracepoint's record layout
"""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= sys.maxsize:
        raise argparse.ArgumentTypeError(f"must be between 1 and {sys.maxsize}: {text[:40]!r}")
    return value


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    scale = units.get(text[-1:].lower(), 1)
    digits = text[:-1] if scale != 1 else text
    try:
        return int(digits) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size in bytes (e.g. 4M): {text!r}") from None


def _trace_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Trace file opens (open, openat, openat2, creat) system-wide, live. "
        "Other commands: 'opentrace list [PATTERN]', 'opentrace format TRACEPOINT'.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-p", "--pid", type=int, help="only this process id")
    p.add_argument("-t", "--tid", type=int, help="only this thread id")
    p.add_argument("-u", "--uid", type=int, help="only this user id")
    p.add_argument("-n", "--name", metavar="NAME", help="only process names containing NAME")
    p.add_argument("-x", "--failed", action="store_true", help="only failed opens")
    p.add_argument("-d", "--duration", type=_positive_float, metavar="SECONDS", help="stop after SECONDS")
    p.add_argument("-c", "--count", type=_positive_int, metavar="N", help="stop after N events")
    p.add_argument("-T", "--timestamp", action="store_true", help="print a timestamp column (seconds)")
    p.add_argument("-U", "--print-uid", action="store_true", help="print a UID column")
    p.add_argument("-e", "--extended", action="store_true", help="print the open flags (octal) and the dfd")
    p.add_argument(
        "-F", "--full-path", action="store_true",
        help="print the full path of what was opened (unresolved ones as '? PATH')",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of columns")
    p.add_argument("-q", "--quiet", action="store_true", help="no 'tracing ...' line on stderr at start")
    p.add_argument(
        "--syscall",
        action="append",
        choices=sorted(SYSCALLS),
        help="trace only this syscall (repeatable; default: all)",
    )
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    p.add_argument(
        "--ring-size", type=_size, metavar="BYTES",
        help=f"ring buffer size, a power of two, e.g. 16M (default {DEFAULT_RING_SIZE >> 20}M)",
    )
    return p


class OutputError(OpentraceError):
    """The trace cannot be written where it goes (a full disk, a closed stdout, ...)."""


class _Output:
    """Where the trace goes. A write that fails (other than the reader going away, EPIPE) ends
    the run with a one-line message instead of a traceback."""

    def __init__(self, stream: TextIO | None, name: str) -> None:
        if stream is None:
            raise OutputError(f"cannot write the trace: {name} is closed")
        self.stream = stream
        self.name = name

    def write(self, text: str) -> None:
        if not text:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            _silence_stdout()  # the unwritten rest must not fail again at exit
            raise OutputError(f"cannot write the trace to {self.name}: {_describe(e)}") from None

    def fileno(self) -> int:
        return self.stream.fileno()


def _describe(e: OSError) -> str:
    """"no space left on device (ENOSPC)", as the library words OS errors."""
    import errno

    words = (e.strerror or str(e)).lower()
    name = errno.errorcode.get(e.errno or 0)
    return f"{words} ({name})" if name else words


# How often a quiet trace checks that someone still reads its output.
_IDLE_CHECK = 1.0


def _reader_gone(out: _Output) -> bool:
    """True when ``out`` is a pipe or socket whose reading end has gone (``| head`` finished)."""
    import select

    try:
        poller = select.poll()
        poller.register(out.fileno(), 0)
        return any(mask & (select.POLLERR | select.POLLHUP) for _, mask in poller.poll(0))
    except (OSError, ValueError):  # no real fd (e.g. a StringIO in tests)
        return False


def _log_to(err: TextIO, quiet: bool) -> None:
    """The library's diagnostics (lost events as they happen, tracefs mounted, the eBPF programs'
    own warnings) as ``opentrace: ...`` lines on stderr."""
    import logging

    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    logger = logging.getLogger(PROG)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def _trace(argv: list[str], stdout: TextIO | None, err: TextIO) -> int:
    parser = _trace_parser()
    args = parser.parse_args(argv)
    out = _Output(stdout, "standard output")
    _log_to(err, args.quiet)
    filters: dict[str, object] = {"failed": args.failed}
    for key, value in (("pid", args.pid), ("tid", args.tid), ("uid", args.uid), ("comm", args.name)):
        if value is not None:
            filters[key] = value
    if args.syscall:
        filters["syscalls"] = args.syscall
    if args.ring_size is not None:
        filters["ring_size"] = args.ring_size
    if args.full_path:
        filters["full_path"] = True
    try:
        watcher = watch(**filters)  # type: ignore[arg-type]
    except (ValueError, TypeError) as e:
        parser.error(str(e))

    with watcher:
        formatter = Formatter(
            json=args.json, timestamp=args.timestamp, uid=args.print_uid, extended=args.extended,
            full_path=args.full_path, start_ns=time.monotonic_ns(),
        )
        if not args.quiet:
            err.write(f"{PROG}: tracing {', '.join(watcher.syscalls)}; Ctrl-C to stop\n")
            err.flush()
        out.write(formatter.header())
        deadline = None if args.duration is None else time.monotonic() + args.duration
        remaining = args.count

        def show(timeout: float) -> int:
            """Prints what arrives within ``timeout``; returns how many events."""
            # Lines are formatted in Rust straight from the ring buffer records.
            text, count = watcher._read_text(formatter, timeout, remaining)
            out.write(text)
            return count

        try:
            try:
                while remaining != 0:
                    timeout = _IDLE_CHECK
                    if deadline is not None:
                        timeout = min(timeout, deadline - time.monotonic())
                        if timeout <= 0:
                            break
                    count = show(timeout)
                    if not count and _reader_gone(out):
                        return 0
                    if remaining is not None:
                        remaining -= count
            except KeyboardInterrupt:
                pass
            # What happened before the end (duration, Ctrl-C, SIGTERM) and is still in the ring.
            if remaining != 0:
                show(0)
        finally:
            watcher.close()
            # Read after close(): the count is final.
            lost = watcher.lost
            if lost:
                err.write(f"{PROG}: {lost} events lost in all\n")
    return 0


def _list(argv: list[str], stdout: TextIO | None, err: TextIO) -> int:
    parser = argparse.ArgumentParser(prog=f"{PROG} list", description="List available tracepoints.")
    parser.add_argument("pattern", nargs="?", help="shell-style glob, e.g. 'syscalls:*open*'")
    args = parser.parse_args(argv)
    out = _Output(stdout, "standard output")
    from ._tracepoints import tracepoints

    names = tracepoints(args.pattern)
    out.write("".join(f"{n}\n" for n in names))
    if not names and args.pattern is not None:
        hint = ""
        if args.pattern and ":" not in args.pattern:
            hint = f"; names look like category:name, try {'*' + args.pattern + '*'!r}"
        err.write(f"{PROG}: no tracepoint matches {args.pattern!r}{hint}\n")
    return 0


def _format(argv: list[str], stdout: TextIO | None, err: TextIO) -> int:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} format", description="Show the record layout of one tracepoint."
    )
    parser.add_argument("tracepoint", help="category:name, e.g. syscalls:sys_enter_openat")
    parser.add_argument("--json", action="store_true", help="print it as one JSON object")
    args = parser.parse_args(argv)
    out = _Output(stdout, "standard output")
    from ._tracepoints import tracepoint_format

    fmt = tracepoint_format(args.tracepoint)
    if args.json:
        import dataclasses
        import json

        out.write(json.dumps(dataclasses.asdict(fmt)) + "\n")
        return 0
    width = max(len(f.type) for f in fmt.fields)
    lines = [
        f"{fmt.category}:{fmt.name} (id {fmt.id})",
        f"  {'OFFSET':>6} {'SIZE':>4} {'SIGNED':<6} {'TYPE':<{width}} NAME",
        *(
            f"  {f.offset:>6} {f.size:>4} {'yes' if f.signed else 'no':<6} {f.type:<{width}} {f.name}"
            for f in fmt.fields
        ),
        f"print fmt: {fmt.print_fmt}",
    ]
    out.write("".join(line + "\n" for line in lines))
    return 0


_COMMANDS = {"trace": _trace, "list": _list, "format": _format}


def _silence_stdout() -> None:
    """After a failed write: point stdout at /dev/null so the interpreter's final flush stays quiet."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # None, or not a real file (tests)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 done, 1 runtime error, 2 bad usage)."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args and args[0] in _COMMANDS else "trace"
    out, err = sys.stdout, sys.stderr
    # SIGTERM ends a trace like Ctrl-C: clean detach, final report, status 0.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if in_main else None
    try:
        return _COMMANDS[command](args, out, err)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except OpentraceError as e:
        err.write(f"{PROG}: {e}\n")
        return 1
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
