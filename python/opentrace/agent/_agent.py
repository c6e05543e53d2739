"""The agent's loop: one watcher, its batches to every sink, until stopped (SIGTERM, Ctrl-C) or,
with a pid filter, until the watched processes are gone.

The capture thread only counts (the metrics) and hands each batch to the other sinks' queues;
each of those writes in its own thread (see ``_sink``). With metrics alone there are no events:
the kernel counts the opens, and the loop reads its counts once a second. At the end: what is
still in the ring is read and handed on, the programs are detached, every sink writes what it has and closes its file
(a Parquet file is completed and renamed into place), and the counts are reported.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

from .._opentrace import OpenEvent, __version__
from .._watch import DEFAULT_RING_SIZE, _last_reads, watch
from ..exceptions import OpentraceError
from ._config import AgentConfig
from ._sink import Batch, Runner, Sink, SinkView, describe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .._opentrace import _RawColumn
    from .._watch import Watcher
    from ._metrics import OpenCounts

__all__ = ["Agent"]

log = logging.getLogger("opentrace")

POLL = 0.25  # seconds the loop waits for events before it looks at the clock and the stop flag
CLOSE_TIMEOUT = 30.0  # per sink, at the end
# watch()'s keywords that only shape events (the rest are watch_counts()'s too): counting in the
# kernel has none to shape.
_NOT_FOR_COUNTING = {"full_path", "file_id", "ring_shards"}


class Agent:
    """Runs a configuration: ``run()`` until ``stop()`` (thread- and signal-safe)."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.events = 0  # delivered by the kernel side, handed to every sink
        self.lost = 0  # passed the filters, never delivered (ring full)
        self.metrics_url: str | None = None
        self._stop = threading.Event()
        self._runners: list[Runner] = []
        self._next_tick = 0.0

    def stop(self) -> None:
        self._stop.set()

    def sinks(self) -> list[SinkView]:
        return [runner.view() for runner in self._runners]

    def run(self, ready: Callable[[Agent], None] | None = None) -> None:
        """Captures and exports until stopped; ``ready(self)`` once the programs are attached and
        the sinks open. Raises ``OpentraceError`` (a sink that cannot start, no privileges),
        ``ValueError``/``TypeError`` (bad filters) before anything runs."""
        with contextlib.ExitStack() as stack:
            stack.callback(self._close_sinks)
            for sink in self._open_sinks():
                self._runners.append(Runner(sink, self.config.queue_events))
            counts = None
            if self.config.metrics is not None:  # served from before the programs are attached: all zero
                from ._metrics import MetricsServer, OpenCounts

                m = self.config.metrics
                counts = OpenCounts(m.max_containers, m.container_label, m.container_idle)
                server = MetricsServer(m, counts, lambda: self.lost, self._ring_bytes(), self.sinks, __version__)
                stack.callback(server.close)
                self.metrics_url = server.url
            if counts is not None and not self._runners:
                self._count_in_kernel(counts, ready)
                return
            watcher = watch(**self.config.filters)
            stack.callback(watcher.close)
            if ready is not None:
                ready(self)
            read, count = self._reading(watcher, counts)
            for batch in self._batches(watcher, read):
                if len(batch):
                    self.events += len(batch)
                    if count is not None:
                        count(batch, time.monotonic())
                    for runner in self._runners:
                        runner.put(batch)
                if counts is not None and self._tick():
                    counts.forget_idle(time.monotonic())
                self.lost = watcher.lost
            watcher.close()
            self.lost = watcher.lost  # final once closed

    def _reading(
        self, watcher: Watcher[OpenEvent], counts: OpenCounts | None
    ) -> tuple[Callable[[float], Batch], Callable[[Batch, float], None] | None]:
        """How the ring is read, and the batches counted: as events, or, when Parquet is the
        only output besides metrics, as columns (no Python object per event: a pyarrow table,
        which the metrics count grouped by cgroup, syscall and errno)."""
        if not all(runner.sink.name == "parquet" for runner in self._runners):
            return watcher.poll, None if counts is None else counts.add
        from ._parquet import Columns

        columns = Columns("--parquet")

        def read(timeout: float) -> Batch:
            got: list[tuple[int, list[_RawColumn]]] = []
            watcher._read_columns(columns.names, timeout, None, got)
            return columns.table_of(*got[0])

        return read, None if counts is None else counts.add_table

    def _count_in_kernel(self, counts: OpenCounts, ready: Callable[[Agent], None] | None) -> None:
        """Metrics alone: the opens are counted in the kernel by cgroup, syscall and result, at
        the syscalls' exits alone (no event is sent; io_uring's opens still are, counted here),
        and the counts read once a second."""
        from .._counts import _BY_SYSCALL, BY, DEFAULT_MAX_KEYS, _counting

        filters = {k: v for k, v in self.config.filters.items() if k not in _NOT_FOR_COUNTING}
        with _counting(1.0, BY["cgroup"] | _BY_SYSCALL, DEFAULT_MAX_KEYS, filters) as watcher:
            if ready is not None:
                ready(self)

            def take() -> None:
                rows = watcher._by_syscall()
                self.events += sum(row[3] for row in rows)
                counts.add_counted(rows, time.monotonic(), watcher._cgroup_names)

            while not self._stop.is_set() and not watcher._watcher._finished():
                watcher._read(POLL)  # io_uring's opens, as events
                if self._tick():
                    take()
                    counts.forget_idle(time.monotonic())
                self.lost = watcher.lost
            take()
        self.lost = watcher.lost  # final once closed

    def _batches(self, watcher: Watcher[OpenEvent], read: Callable[[float], Batch]) -> Iterator[Batch]:
        """Batches (``read(timeout)``) until stopped, then what is left in the ring; an empty one
        now and then so that the clock-driven work runs on a quiet machine too."""
        while not self._stop.is_set() and not watcher._finished():
            yield read(POLL)
        # Until the ring is empty (nothing held back for later records any more), at most what
        # it can hold.
        watcher._session.end_reading()
        left = _last_reads(self._ring_bytes())
        while left > 0:
            batch = read(0)
            if not len(batch):
                break
            left -= len(batch)
            yield batch

    def _tick(self) -> bool:
        now = time.monotonic()
        if now < self._next_tick:
            return False
        self._next_tick = now + 1.0
        return True

    def _ring_bytes(self) -> int:
        size = self.config.filters.get("ring_size", DEFAULT_RING_SIZE)
        return size if isinstance(size, int) else DEFAULT_RING_SIZE

    def _open_sinks(self) -> Iterator[Sink]:
        """The configured sinks, opened (a directory made, a file created): a sink that cannot even
        start is the configuration's fault, an ``OpentraceError``."""
        c = self.config
        full_path = bool(c.filters.get("full_path", False))
        opening: list[tuple[str, Callable[[], Sink]]] = []
        if c.parquet is not None:
            from ._parquet import ParquetSink

            parquet = c.parquet
            opening.append((f"write Parquet files in {parquet.dir}", lambda: ParquetSink(parquet)))
        if c.json_file is not None:
            from ._jsonfile import JsonFileSink

            json_file = c.json_file
            opening.append((f"write {json_file.path}", lambda: JsonFileSink(json_file, full_path)))
        if c.otlp is not None:
            from ._otlp import OtlpSink

            otlp = c.otlp
            opening.append((f"export to {otlp.endpoint}", lambda: OtlpSink(otlp)))
        for what, open_sink in opening:
            try:
                yield open_sink()
            except OSError as e:
                raise OpentraceError(f"cannot {what}: {describe(e)}") from None

    def _close_sinks(self) -> None:
        deadline = time.monotonic() + CLOSE_TIMEOUT
        for runner in self._runners:  # all at once: each writes its rest in its own thread
            runner.finish()
        for runner in self._runners:
            runner.join(max(0.0, deadline - time.monotonic()))

    def summary(self) -> str:
        """What happened, in one line."""
        parts = [f"{self.events} events"]
        for view in self.sinks():
            dropped = sum(view.dropped.values())
            part = f"{view.name} {view.written} written"
            if dropped:
                why = ", ".join(f"{reason} {n}" for reason, n in sorted(view.dropped.items()))
                part += f", {dropped} dropped ({why})"
            parts.append(part)
        return "; ".join(parts)
