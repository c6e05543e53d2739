"""``opentrace agent``: its command line (the trace mode's filters, the sinks' flags, ``--config``)."""

from __future__ import annotations

import argparse
import copy
import inspect
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any, TextIO

from .. import cli
from .._watch import watch
from ._agent import Agent
from ._config import ConfigError, load_config, merge, read_toml

__all__ = ["agent"]

PROG = f"{cli.PROG} agent"

EXAMPLES = """\
examples:
  opentrace agent --metrics :9477                      # Prometheus metrics of every open
  opentrace agent --metrics 127.0.0.1:9477 --parquet /var/lib/opentrace
  opentrace agent --otlp http://collector:4318/v1/logs -x    # failed opens as OTLP log records
  opentrace agent --json-file /var/log/opentrace/opens.json --max-size 100M --max-files 5
  opentrace agent --config /etc/opentrace/agent.toml   # settings from a file (flags override it)

SIGTERM or Ctrl-C stops it: what is in the ring is read, every file is completed, the counts are
reported. Needs what tracing needs (root, or CAP_BPF + CAP_PERFMON; see deploy/ in the sources).
"""

# The trace mode's options that choose what is traced (its filters and the ring's size), taken
# over as they are (those this version's watch() takes); the rest of its options shape text output.
_FILTERS = ("pid", "descendants", "tid", "uid", "name", "failed", "cgroup", "container", "path", "full_path",
            "syscall", "ring_size", "ring_shards")
# Their names as watch() keywords, where they differ.
_KEYWORDS = {"name": "comm", "syscall": "syscalls", "path": "paths"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Trace file opens as one long-running process (the programs attached once) and export "
        "them to what a fleet already runs: Prometheus metrics, OpenTelemetry (OTLP/HTTP) log records, "
        "Parquet files, a rotated JSON-lines file. Any number of these at once; they share the filters.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", help="a TOML file of settings; flags override it")
    p.add_argument("--metrics", metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (:PORT for every address)")
    p.add_argument("--otlp", metavar="URL", help="send OTLP/HTTP log records to URL (http://HOST:4318/v1/logs)")
    p.add_argument("--parquet", metavar="DIR", help="write Parquet files into DIR (rolled by size and age)")
    p.add_argument("--json-file", metavar="PATH", help="append one JSON object per open to PATH (rotated)")
    p.add_argument("--max-size", metavar="BYTES", help="rotate the JSON file at this size, e.g. 100M (default 100M)")
    p.add_argument("--max-files", type=cli._positive_int, metavar="N",
                   help="keep N JSON files in all: PATH and PATH.1 ... PATH.N-1 (default 5)")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings on stderr, not the start and end lines")
    filters = p.add_argument_group("filters (as in trace mode)")
    keywords = inspect.signature(watch).parameters
    for action in cli._trace_parser()._actions:
        if action.dest in _FILTERS and _KEYWORDS.get(action.dest, action.dest) in keywords:
            action = copy.copy(action)
            if action.dest == "full_path":
                action.help = "resolve and export the full path of what was opened"
            filters._add_action(action)
    return p


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, in the config file's shape (so that they override it)."""
    filters = {_KEYWORDS.get(dest, dest): getattr(args, dest) for dest in _FILTERS
               if getattr(args, dest, None) not in (None, False)}
    raw: dict[str, Any] = {"filters": filters}
    for table, key, value in (("metrics", "listen", args.metrics), ("otlp", "endpoint", args.otlp),
                              ("parquet", "dir", args.parquet), ("json_file", "path", args.json_file),
                              ("json_file", "max_size", args.max_size), ("json_file", "max_files", args.max_files)):
        if value is not None:
            raw.setdefault(table, {})[key] = value
    return raw


def _stop_on_signals(stop: Callable[[], None]) -> Callable[[], None]:
    """SIGTERM and SIGINT end the agent cleanly; returns what restores the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, lambda signum, frame: stop()) for sig in signals}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def _announce(agent: Agent) -> None:
    c = agent.config
    where = []
    if agent.metrics_url:
        where.append(f"metrics on {agent.metrics_url}")
    if c.otlp:
        where.append(f"OTLP log records to {c.otlp.endpoint}")
    if c.parquet:
        where.append(f"Parquet files in {c.parquet.dir}")
    if c.json_file:
        where.append(f"JSON lines to {c.json_file.path}")
    logging.getLogger(cli.PROG).info("agent running (pid %d): %s; SIGTERM or Ctrl-C to stop", os.getpid(),
                                     ", ".join(where))


def agent(argv: list[str], stdout: TextIO | None, err: TextIO) -> int:
    p = parser()
    args = p.parse_args(cli._glue_sizes(argv))
    cli._log_to(err, args.quiet)
    try:
        raw = read_toml(args.config) if args.config else {}
        config = load_config(merge(raw, _flags(args)))
    except ConfigError as e:
        p.error(str(e))
    runner = Agent(config)
    restore = _stop_on_signals(runner.stop)
    try:
        runner.run(ready=_announce)
    finally:
        restore()
    logging.getLogger(cli.PROG).info("agent stopped: %s", runner.summary())
    if runner.lost:
        err.write(f"{cli.PROG}: {runner.lost} events lost in all\n")
    return 0
