"""``opentrace``/``python -m opentrace``: opensnoop-style live tracing, and tracepoint discovery."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

from . import CommandWatcher, OpentraceError, Watcher, __version__, run, watch
from ._opentrace import Formatter, OpenEvent, errno_text, summary
from ._watch import DEFAULT_RING_SIZE, MAX_RING_SHARDS, SYSCALLS, _last_reads, _ring_size, _show
from .exceptions import TracepointNotFound

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TextIO, TypeVar

    _T = TypeVar("_T")

    from ._opentrace import _RawColumn as RawColumn
    from .agent._parquet import ParquetOutput


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
  opentrace -p 181 --descendants  # PID 181 and everything it starts
  opentrace -o trace.txt -- make  # the opens of a build, its output apart
  opentrace -F --summary -- make  # each file the build opened, once, with counts
  opentrace -C --cgroup /system.slice  # only tasks in that cgroup, with a CONTAINER column
  opentrace --container web       # only the container docker or podman calls web
  opentrace list 'syscalls:*open*'            # tracepoints matching a glob
  opentrace format syscalls:sys_enter_openat  # one tracepoint's record layout
  opentrace watch sched:sched_process_exec    # any tracepoint's records, decoded
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
    """``--ring-size``: bytes, or with a K, M or G suffix; checked as ``watch()`` checks it."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    scale = units.get(text[-1:].lower(), 1)
    digits = text[:-1] if scale != 1 else text
    try:
        value = int(digits) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size in bytes (e.g. 4M): {_show(text)}") from None
    try:
        return _ring_size(value, shown=_show(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("ring_size ")) from None


def _shards(text: str) -> int:
    """``--ring-shards``: 1 to MAX_RING_SHARDS (whether the ring size splits that far is
    ``watch()``'s check)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {_show(text)}") from None
    if not 1 <= value <= MAX_RING_SHARDS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_RING_SHARDS}, not {_show(text)}")
    return value


def _glue_sizes(argv: list[str]) -> list[str]:
    """``--ring-size -4M`` as ``--ring-size=-4M``: argparse takes a value starting with '-' only
    when it is a plain number, and would call ``-4M`` a missing value instead of refusing it."""
    glued: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--":
            glued += [arg, *args]
            break
        if len(arg) >= 8 and "--ring-size".startswith(arg):  # argparse takes abbreviations too
            value = next(args, None)
            if value is not None and value[:1] == "-" and value[1:2].isdigit():
                glued.append(f"{arg}={value}")
                continue
            glued += [arg] if value is None else [arg, value]
            continue
        glued.append(arg)
    return glued


def _trace_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} [options]\n       {PROG} [options] -- CMD [ARGS...]",
        description="Trace file opens (open, openat, openat2, creat, and io_uring open requests) "
        "system-wide, live; or, with -- CMD, "
        "those of CMD and everything it starts, exiting with CMD's status. "
        "Other commands: 'opentrace list [PATTERN]', 'opentrace format TRACEPOINT', "
        "'opentrace watch TRACEPOINT...' (any tracepoints' records).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-p", "--pid", type=int, help="only this process id (the trace ends when it exits)")
    p.add_argument("--descendants", action="store_true",
                   help="with -p: also every process descended from it, already running or started later")
    p.add_argument("-t", "--tid", type=int, help="only this thread id")
    p.add_argument("-u", "--uid", type=int, help="only this user id")
    p.add_argument("-n", "--name", metavar="NAME", help="only process names containing NAME")
    p.add_argument("-x", "--failed", action="store_true", help="only failed opens")
    p.add_argument("-d", "--duration", type=_positive_float, metavar="SECONDS", help="stop after SECONDS")
    p.add_argument("-c", "--count", type=_positive_int, metavar="N", help="stop after N events")
    p.add_argument("-T", "--timestamp", action="store_true", help="print a timestamp column (seconds)")
    p.add_argument("-U", "--print-uid", action="store_true", help="print a UID column")
    p.add_argument("-e", "--extended", action="store_true", help="print the open flags (octal) and the dfd")
    p.add_argument("-C", dest="container_column", action="store_true",
                   help="print a CONTAINER column (the container's name, else its id, short)")
    p.add_argument("--cgroup", metavar="PATH", help="only tasks in this cgroup v2 (or below it)")
    p.add_argument("--container", metavar="NAME_OR_ID",
                   help="only this container's tasks (a name or id as docker, podman or containerd know it)")
    p.add_argument(
        "-F", "--full-path", action="store_true",
        help="print the full path of what was opened (unresolved ones as '? PATH')",
    )
    p.add_argument("--path", dest="paths", action="append", metavar="P",
                   help="only opens whose full path matches P, decided in the kernel (repeatable, up to 64): "
                        "DIR/ (ending in /) is that directory and everything under it, *SUFFIX a suffix "
                        "('*.so'), anything else one exact path")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of columns")
    p.add_argument("-o", "--output", metavar="FILE", help="write the trace to FILE instead of standard output")
    p.add_argument("--summary", action="store_true",
                   help="at the end, one line per distinct file instead of one per open: opens, failures, errors")
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
    p.add_argument(
        "--ring-shards", type=_shards, metavar="N",
        help="split the ring buffer into N, each written by a group of CPUs "
             f"(default: one per 2 CPUs, at most {MAX_RING_SHARDS}; 1 on 2 CPUs or fewer)",
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
    """"no space left on device (ENOSPC)": worded by the compiled half, as every message is."""
    return errno_text(e.errno) if e.errno else str(e).lower()


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


def _split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``OPTIONS -- CMD ARGS...``: the options, and the command (None without ``--``)."""
    if "--" not in argv:
        return argv, None
    at = argv.index("--")
    return argv[:at], argv[at + 1 :]


def _trace(argv: list[str], stdout: TextIO | None, err: TextIO) -> int:
    parser = _trace_parser()
    options, command = _split_command(argv)
    args = parser.parse_args(_glue_sizes(options))
    if command is not None and not command:
        parser.error("nothing after --: give the command to run, e.g. opentrace -- make -j2")
    if command and not command[0]:
        parser.error("the command after -- is empty (''): give the program to run, e.g. opentrace -- make -j2")
    if command is not None and (args.pid is not None or args.tid is not None or args.descendants or args.cgroup
                                or args.container is not None):
        parser.error("-p, -t, --descendants, --cgroup and --container pick what to trace; with -- CMD, the command "
                     "is traced")
    if args.descendants and args.pid is None:
        parser.error("--descendants needs -p PID: the process whose descendants to follow")
    parquet = _parquet_output(args, parser)
    # (With -o FILE.parquet nothing is written to `out`.)
    out = _open_output(args.output, stdout) if parquet is None else _Output(stdout or err, "standard output")
    _log_to(err, args.quiet)
    options_ = _watch_options(args)
    try:
        if command is None:
            watcher: Watcher[OpenEvent] = watch(
                pid=args.pid, descendants=args.descendants, tid=args.tid, cgroup=args.cgroup,
                container=args.container, **options_,  # type: ignore[arg-type]
            )
        else:
            watcher = run(command, **options_)  # type: ignore[arg-type]
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    except OpentraceError:
        raise
    except OSError as e:  # the command could not be started: as a shell says it, and its status
        if not command:
            raise OpentraceError(_describe(e)) from None
        import errno

        not_found = e.errno == errno.ENOENT
        err.write(f"{PROG}: cannot run {command[0]!r}: {'not found' if not_found else _describe(e)}\n")
        return 127 if not_found else 126

    forwarding = _forward_signals(watcher.pid) if isinstance(watcher, CommandWatcher) else None
    unwritable = False
    what = ", ".join(watcher.syscalls)
    if isinstance(watcher, CommandWatcher):
        what = f"{' '.join(command or [])} (pid {watcher.pid}) and what it starts"
    try:
        # (_Run: a second Ctrl-C does not cut the end of the trace short, its "lost" line included.)
        with watcher, _Run(err, args.quiet, f"tracing {what}") as run_:
            try:
                formatter = None
                if not args.summary and parquet is None:
                    formatter = Formatter(
                        json=args.json, timestamp=args.timestamp, uid=args.print_uid, extended=args.extended,
                        full_path=args.full_path, container=args.container_column, start_ns=time.monotonic_ns(),
                    )
                    # Before the line that says we are tracing: whoever stops us once they see it
                    # gets the header (and, from _stream, what was in the ring).
                    out.write(formatter.header())
                if parquet is not None:
                    _write_parquet(watcher, args, parquet, run_)
                elif formatter is None:
                    _summarize(watcher, args, out, run_)
                else:
                    _stream(watcher, formatter, args, out, run_)
            except (BrokenPipeError, OutputError) as e:
                if not isinstance(watcher, CommandWatcher):
                    raise
                # The trace has nowhere to go, but CMD is not ours to end: tracing stops, CMD
                # runs to its end, and its status is ours.
                if isinstance(e, OutputError):
                    err.write(f"{PROG}: {e}\n")
                    unwritable = True
                else:
                    _silence_stdout()
            # About to exit: the kernel's slow part of detaching need not hold the exit up.
            watcher._session.close_in_background()
            # Read after close(): the count is final.
            if watcher.lost:
                err.write(f"{PROG}: {watcher.lost} events lost in all\n")
        if isinstance(watcher, CommandWatcher):
            status = _exit_status(watcher.wait())
            # A trace that could not be written is a failure, unless CMD's own says more.
            return (status or 1) if unwritable else status
    finally:
        if forwarding is not None:
            forwarding()
    return 0


def _open_output(path: str | None, stdout: TextIO | None) -> _Output:
    if path is None:
        return _Output(stdout, "standard output")
    try:
        return _Output(open(path, "w", encoding="utf-8", errors="surrogateescape"), path)
    except OSError as e:
        raise OutputError(f"cannot write the trace to {path}: {_describe(e)}") from None


def _watch_options(args: argparse.Namespace) -> dict[str, object]:
    """The options ``watch()`` and ``run()`` share."""
    # The text lines show no file identity: the exit program need not read it for them.
    shows_identity = args.json or (args.output or "").endswith(".parquet")
    options: dict[str, object] = {"failed": args.failed, "full_path": args.full_path, "file_id": shows_identity}
    if args.uid is not None:
        options["uid"] = args.uid
    if args.name is not None:
        options["comm"] = args.name
    if args.syscall:
        options["syscalls"] = args.syscall
    if args.ring_size is not None:
        options["ring_size"] = args.ring_size
    if args.ring_shards is not None:
        options["ring_shards"] = args.ring_shards
    if args.paths:
        options["paths"] = [os.fsencode(p) for p in args.paths]
    return options


def _exit_status(returncode: int) -> int:
    """A command's status as a shell reports it: 128+N when signal N killed it."""
    return returncode if returncode >= 0 else 128 - returncode


def _forward_signals(pid: int) -> Callable[[], None]:
    """While a command runs, signals for the tracer go to the command, as a shell passes them on;
    the trace goes on until the command (and what it started) ends. Ctrl-C at a terminal reaches
    the command by itself (it is in the terminal's foreground process group): it is not sent again.
    Returns what restores the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def forward(signum: int, frame: object) -> None:
        if signum in (signal.SIGINT, signal.SIGQUIT) and _terminal_sent_it():
            return
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    previous = {sig: signal.signal(sig, forward) for sig in signals}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def _terminal_sent_it() -> bool:
    """Whether this process is in its terminal's foreground process group (where Ctrl-C goes)."""
    for fd in (0, 1, 2):
        try:
            return os.tcgetpgrp(fd) == os.getpgrp()
        except OSError:
            continue
    return False


class _Run:
    """A trace's start and end as its user sees them.

    ``announce()`` says on stderr that the trace is on (unless quiet). The read loops call it
    inside the block that catches Ctrl-C: whoever stops us once they see the line gets what was in
    the ring by then, however soon they stop us.

    Entered, it keeps the end of a trace whole. The first Ctrl-C or SIGTERM stops the reading: a
    KeyboardInterrupt if it comes during a read of the ring (``reading()``: the read keeps what it
    drained for the next one), else ``stopped`` for the read loop to see; never while what was read
    is being written, which a KeyboardInterrupt would cut short. After that, and from ``last()`` on
    (the last read has begun: a duration or count reached), these signals only say once on stderr
    that the trace is being finished: a second Ctrl-C does not drop the events still in the ring,
    or a Parquet file being closed. Ctrl-\\ (SIGQUIT) still quits at once. Handlers other than
    Python's default one (with ``-- CMD``: forwarded to the command) are left as they are."""

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, err: TextIO, quiet: bool, doing: str) -> None:
        self._err, self._quiet, self._doing = err, quiet, doing
        self.stopped = self._reading = self._said = False
        self._previous: dict[int, Any] = {}

    def announce(self) -> None:
        if not self._quiet:
            self._err.write(f"{PROG}: {self._doing}; Ctrl-C to stop\n")
            self._err.flush()

    def last(self) -> None:
        self.stopped = True

    def reading(self, read: Callable[[], _T]) -> _T:
        """``read()``, a read of the ring: the one place where a stop is a KeyboardInterrupt."""
        self._reading = True
        try:
            return read()
        finally:
            self._reading = False

    def __enter__(self) -> _Run:
        if threading.current_thread() is threading.main_thread():
            for sig in self._SIGNALS:
                if signal.getsignal(sig) is signal.default_int_handler:
                    self._previous[sig] = signal.signal(sig, self._signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _signal(self, signum: int, frame: object) -> None:
        if not self.stopped:
            self.stopped = True
            if self._reading:
                raise KeyboardInterrupt
            return
        if not self._said:
            self._said = True
            try:
                self._err.write(f"{PROG}: stopping: writing what the trace read first (Ctrl-\\ quits at once)\n")
                self._err.flush()
            except (OSError, RuntimeError):  # (RuntimeError: a write to err under way, reentered)
                pass


def _stream(watcher: Watcher[Any], formatter: Formatter, args: argparse.Namespace, out: _Output, run_: _Run) -> None:
    """``run_.announce()``, then one line (or JSON object) per event, until the duration or count is
    reached, Ctrl-C, or a pid watcher's processes have all exited. (The caller has written the
    header.)"""
    deadline = None if args.duration is None else time.monotonic() + args.duration
    remaining = args.count

    def show(timeout: float) -> int:
        """Prints what arrives within ``timeout``; returns how many events."""
        nonlocal remaining
        # Lines are formatted in Rust straight from the ring buffer records. What was read is
        # printed even when Ctrl-C interrupts the read as it returns (see Watcher._poll_into).
        read: list[tuple[str, int]] = []
        try:
            run_.reading(lambda: watcher._read_text(formatter, timeout, remaining, read))
        finally:
            for text, count in read:
                out.write(text)
                if remaining is not None:
                    remaining -= count
        return sum(count for _, count in read)

    try:
        run_.announce()
        while remaining != 0 and not watcher._finished() and not run_.stopped:
            timeout = _IDLE_CHECK
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
                if timeout <= 0:
                    break
            if not show(timeout) and _reader_gone(out):
                return
    except KeyboardInterrupt:
        pass
    # What happened before the end (duration, Ctrl-C, SIGTERM) and is still in the ring.
    _finish(watcher, args, run_, lambda: show(0) if remaining != 0 else 0)


def _summarize(watcher: Watcher[OpenEvent], args: argparse.Namespace, out: _Output, run_: _Run) -> None:
    """One line per distinct file (the full path with -F), most opened first: opens, failures,
    and the errors seen; with --json one object per file."""
    files: dict[bytes, list[Any]] = {}

    def take(events: list[OpenEvent]) -> None:
        for ev in events:
            key = ev.path_bytes
            if args.full_path and ev.full_path_bytes is not None:
                key = ev.full_path_bytes
            entry = files.setdefault(key, [0, 0, {}])
            entry[0] += 1
            if ev.errno is not None:
                entry[1] += 1
                entry[2][ev.errno] = entry[2].get(ev.errno, 0) + 1

    _each_batch(watcher, args, take, run_)
    out.write(_summary_text(files, args.json))


def _each_batch(
    watcher: Watcher[OpenEvent],
    args: argparse.Namespace,
    take: Callable[[list[OpenEvent]], None],
    run_: _Run,
) -> None:
    """``take(events)`` for each batch, as ``_read_loop`` reads them."""

    def read(timeout: float, limit: int | None, took: Callable[[int], None]) -> None:
        events: list[OpenEvent] = []
        try:
            run_.reading(lambda: watcher._poll_into(timeout, events))
        finally:  # what was read, even when Ctrl-C interrupts the read as it returns
            if limit is not None:
                events = events[:limit]
            took(len(events))
            take(events)

    _read_loop(watcher, args, read, run_)


def _read_loop(
    watcher: Watcher[OpenEvent],
    args: argparse.Namespace,
    read: Callable[[float, int | None, Callable[[int], None]], None],
    run_: _Run,
) -> None:
    """``run_.announce()`` (as ``_stream``), then ``read(timeout, limit, took)`` (it takes at most
    ``limit`` events, None: any number, and says how many to ``took`` whatever happens) until the
    duration or count (-c: at most that many events in all) is reached, Ctrl-C (SIGTERM), or a pid
    watcher's processes have all exited; then until the ring is empty (see ``_finish``)."""
    deadline = None if args.duration is None else time.monotonic() + args.duration
    remaining = args.count

    def took(n: int) -> None:
        nonlocal remaining
        if remaining is not None:
            remaining -= n

    try:
        run_.announce()
        while remaining != 0 and not watcher._finished() and not run_.stopped:
            timeout = _IDLE_CHECK if deadline is None else min(_IDLE_CHECK, deadline - time.monotonic())
            if timeout <= 0:
                break
            read(timeout, remaining, took)
    except KeyboardInterrupt:
        pass
    def read_rest() -> int:
        taken = 0

        def count(n: int) -> None:
            nonlocal taken
            taken += n
            took(n)

        if remaining != 0:
            read(0, remaining, count)
        return taken

    _finish(watcher, args, run_, read_rest)


def _finish(watcher: Watcher[Any], args: argparse.Namespace, run_: _Run, read_rest: Callable[[], int]) -> None:
    """The read is ending: from now on a second Ctrl-C does not cut it short (see ``_Run``), and
    nothing is held back for later records. Then ``read_rest()`` (how many events it took, 0 when
    it wants no more) until the ring is empty, and no further than the ring can hold."""
    run_.last()
    watcher._session.end_reading()
    left = _last_reads(args.ring_size)
    while left > 0:
        taken = read_rest()
        if not taken:
            break
        left -= taken


def _parquet_output(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ParquetOutput | None:
    """``-o FILE.parquet``: the events as a Parquet file (its columns: ``to_dict()``'s keys), written
    under a hidden temporary name and put in place when the trace ends."""
    if args.output is None or not args.output.endswith(".parquet"):
        return None
    shaping = [flag for flag, on in (("--summary", args.summary), ("--json", args.json), ("-T", args.timestamp),
                                      ("-U", args.print_uid), ("-e", args.extended)) if on]
    if shaping:
        parser.error(f"{', '.join(shaping)} shape text output; -o FILE.parquet writes every field of every event")
    from .agent._parquet import ParquetOutput

    try:
        return ParquetOutput(args.output)
    except OSError as e:
        raise OutputError(f"cannot write the trace to {args.output}: {_describe(e)}") from None


def _write_parquet(watcher: Watcher[OpenEvent], args: argparse.Namespace, output: ParquetOutput, run_: _Run) -> None:
    """The trace into ``output``, complete (renamed into place) at the end; a write that fails
    leaves no file."""

    def read(timeout: float, limit: int | None, took: Callable[[int], None]) -> None:
        got: list[tuple[int, list[RawColumn]]] = []
        try:
            run_.reading(lambda: watcher._read_columns(output.names, timeout, limit, got))
        finally:  # what was read, even when Ctrl-C interrupts the read as it returns
            for rows, columns in got:
                took(rows)
                try:
                    output.write_columns(rows, columns)
                except OSError as e:
                    raise OutputError(f"cannot write the trace to {args.output}: {_describe(e)}") from None

    try:
        _read_loop(watcher, args, read, run_)
        output.close()  # (a second Ctrl-C does not abandon it: see _Run)
    except OSError as e:
        output.abort()
        raise OutputError(f"cannot write the trace to {args.output}: {_describe(e)}") from None
    except BaseException:
        output.abort()
        raise


def _summary_text(files: dict[bytes, list[Any]], as_json: bool) -> str:
    rows = [(path, opens, failed, list(errs.items())) for path, (opens, failed, errs) in files.items()]
    return summary(rows, as_json)


def _list(argv: list[str], stdout: TextIO | None, err: TextIO) -> int:
    parser = argparse.ArgumentParser(prog=f"{PROG} list", description="List available tracepoints.")
    parser.add_argument("pattern", nargs="?", help="shell-style glob, e.g. 'syscalls:*open*'")
    args = parser.parse_args(argv)
    out = _Output(stdout, "standard output")
    from ._tracepoints import tracepoints

    names = tracepoints(args.pattern)
    if not names and args.pattern is not None:
        hint = ""
        if args.pattern and ":" not in args.pattern:
            hint = f"; names look like category:name, try {'*' + args.pattern + '*'!r}"
        raise TracepointNotFound(f"no tracepoint matches {args.pattern!r}{hint}")
    out.write("".join(f"{n}\n" for n in names))
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


def _watch_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{PROG} watch",
        description="Stream the records of any tracepoints, decoded from their format files: one line per "
        "record (TIME CPU PID COMM TRACEPOINT name=value ...), or JSON objects.",
        epilog="examples:\n"
        "  opentrace watch sched:sched_process_exec        # every program started, with its filename\n"
        "  opentrace watch 'syscalls:sys_enter_unlink*'    # every unlink, with its path\n"
        "  opentrace watch sched:sched_process_fork -c 10 --json\n"
        "  opentrace watch 'syscalls:sys_enter_*' -p 1234  # every syscall of one process, its arguments",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("tracepoint", nargs="+", help="category:name, or a shell-style glob of them")
    p.add_argument("-p", "--pid", type=int, help="only this process id (the stream ends when it exits)")
    p.add_argument("-t", "--tid", type=int, help="only this thread id")
    p.add_argument("-u", "--uid", type=int, help="only this user id")
    p.add_argument("-n", "--name", metavar="NAME", help="only process names containing NAME")
    p.add_argument("-d", "--duration", type=_positive_float, metavar="SECONDS", help="stop after SECONDS")
    p.add_argument("-c", "--count", type=_positive_int, metavar="N", help="stop after N records")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("-o", "--output", metavar="FILE", help="write the records to FILE instead of standard output")
    p.add_argument("-q", "--quiet", action="store_true", help="no 'watching ...' line on stderr at start")
    p.add_argument(
        "--ring-size", type=_size, metavar="BYTES",
        help=f"ring buffer size, a power of two, e.g. 16M (default {DEFAULT_RING_SIZE >> 20}M)",
    )
    p.add_argument(
        "--ring-shards", type=_shards, metavar="N",
        help="split the ring buffer into N, each written by a group of CPUs "
             f"(default: one per 2 CPUs, at most {MAX_RING_SHARDS}; 1 on 2 CPUs or fewer)",
    )
    return p


def _watch(argv: list[str], stdout: TextIO | None, err: TextIO) -> int:
    parser = _watch_parser()
    args = parser.parse_args(_glue_sizes(argv))
    out = _open_output(args.output, stdout)
    _log_to(err, args.quiet)
    from ._tracepoints import watch_tracepoints

    options: dict[str, Any] = {"pid": args.pid, "tid": args.tid, "uid": args.uid, "comm": args.name}
    if args.ring_size is not None:
        options["ring_size"] = args.ring_size
    if args.ring_shards is not None:
        options["ring_shards"] = args.ring_shards
    try:
        watcher = watch_tracepoints(*args.tracepoint, **options)
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    names = watcher.tracepoints
    shown = ", ".join(names) if len(names) <= 4 else f"{len(names)} tracepoints"
    with watcher, _Run(err, args.quiet, f"watching {shown}") as run_:
        formatter = Formatter.for_tracepoints(json=args.json, start_ns=time.monotonic_ns())
        out.write(formatter.header())
        _stream(watcher, formatter, args, out, run_)
        watcher._session.close_in_background()
        if watcher.lost:
            err.write(f"{PROG}: {watcher.lost} events lost in all\n")
    return 0


def _top(argv: list[str], stdout: TextIO | None, err: TextIO) -> int:
    from ._top import top

    return top(argv, stdout, err)


_COMMANDS = {"trace": _trace, "list": _list, "format": _format, "watch": _watch, "top": _top}


def _agent(argv: list[str], stdout: TextIO | None, err: TextIO) -> int:
    from .agent._cli import agent

    return agent(argv, stdout, err)


_COMMANDS["agent"] = _agent


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
    """Run the CLI; returns the exit status, the same rule for every command: 0 done, 2 bad usage
    (argparse's own errors), 1 a runtime error, a tracepoint name or pattern that matches nothing
    included (``-- CMD``: CMD's status)."""
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
    except OpentraceError as e:  # an unknown tracepoint too (API.md: a runtime error, status 1)
        err.write(f"{PROG}: {e}\n")
        return 1
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
