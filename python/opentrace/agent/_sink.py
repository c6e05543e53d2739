"""What the agent's sinks share: their counts, what happens when one fails, and the thread that
feeds each from a bounded queue.

A sink that fails (a full disk, a file it cannot create) loses the events it was given and
whatever it held that the failure spoils, counts them as dropped, says so once, and tries again
after a pause that doubles up to a minute (events given to it meanwhile are dropped and counted).
It never raises into the capture loop, and one sink's trouble never holds up another: each runs
in its own thread behind a queue of at most ``queue_events`` events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._opentrace import OpenEvent

__all__ = ["Batch", "Runner", "Sink", "SinkFailed", "SinkView"]

# What a sink is given at a time: events, or (the Parquet sink alone) a pyarrow table of them.
Batch = list[OpenEvent] | Any

log = logging.getLogger("opentrace")

RETRY_FIRST = 1.0
RETRY_MAX = 60.0
REPORT_EVERY = 60.0  # while a sink keeps failing, how often it says so again
TICK = 1.0  # a sink's clock (rolling files by age) runs at least this often


@dataclass(frozen=True)
class SinkView:
    """One sink's counts, as a scrape shows them."""

    name: str
    written: int
    dropped: dict[str, int]
    errors: int
    queued: int


class SinkFailed(Exception):
    """A write that failed part way: ``lost`` of its events are lost (the rest were delivered)."""

    def __init__(self, cause: BaseException, lost: int) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.lost = lost


def describe(e: BaseException) -> str:
    """An error in one line, OS errors worded as the CLI words them."""
    from ..cli import _describe

    if isinstance(e, SinkFailed):
        e = e.cause
    if isinstance(e, OSError):
        where = f"{e.filename}: " if e.filename else ""
        return where + _describe(e)
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


class Sink:
    """Base of the sinks. Subclasses write in ``_write`` (raising on failure), roll or flush on
    time in ``_tick``, finish in ``_close``, and say in ``_discard`` how many held events a failure
    spoils (dropping them). ``written`` and ``dropped`` are theirs to count; this class counts
    failures and decides when to try again."""

    name = "sink"

    def __init__(self) -> None:
        self.written = 0
        self.dropped: dict[str, int] = {}
        self.errors = 0
        self._retry_at = 0.0
        self._pause = RETRY_FIRST
        self._failing = False
        self._lost_failing = 0
        self._reported_at = 0.0

    def _write(self, events: list[OpenEvent]) -> None:
        raise NotImplementedError

    def _tick(self, now: float) -> None:
        pass

    def _close(self) -> None:
        pass

    def _discard(self) -> int:
        return 0

    def drop(self, reason: str, n: int) -> None:
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    def write(self, events: Batch, now: float) -> None:
        if now < self._retry_at:
            self._lose(len(events))
            return
        self._guard(lambda: self._write(events), len(events), now)

    def tick(self, now: float) -> None:
        if now >= self._retry_at:
            self._guard(lambda: self._tick(now), 0, now)

    def close(self) -> None:
        self._guard(self._close, 0, time.monotonic())
        if self._lost_failing:
            log.warning("%s: %d events dropped in all while failing", self.name, self._lost_failing)

    def _lose(self, n: int) -> None:
        self.drop("error", n)
        self._lost_failing += n

    def _guard(self, action: Callable[[], None], given: int, now: float) -> None:
        try:
            action()
        except Exception as e:  # a sink's failure is counted and retried, never the capture's end
            lost = (e.lost if isinstance(e, SinkFailed) else given) + self._discard()
            self._failed(e, lost, now)
            return
        if self._failing:
            log.warning("%s: working again (%d events dropped while it failed)", self.name, self._lost_failing)
            self._failing, self._pause, self._lost_failing = False, RETRY_FIRST, 0

    def _failed(self, e: Exception, lost: int, now: float) -> None:
        self.errors += 1
        self._lose(lost)
        if not self._failing or now - self._reported_at >= REPORT_EVERY:
            log.warning("%s: %s; %d events dropped so far, trying again in %.0f s",
                        self.name, describe(e), self._lost_failing, self._pause)
            self._reported_at = now
        self._failing = True
        self._retry_at = now + self._pause
        self._pause = min(self._pause * 2, RETRY_MAX)


class Runner:
    """A sink fed by its own thread from a queue of at most ``max_events`` events: a slow or stuck
    sink (a collector that does not answer, a disk that hangs) holds up neither the capture nor the
    other sinks; what does not fit in its queue is dropped and counted (``queue_full``)."""

    def __init__(self, sink: Sink, max_events: int) -> None:
        self.sink = sink
        self.queue_full = 0  # counted by the capture thread (the sink's own counts are its thread's)
        self._max = max_events
        self._queue: deque[Batch] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"opentrace-{sink.name}", daemon=True)
        self._thread.start()

    def put(self, events: Batch) -> None:
        with self._cond:
            if self._queued + len(events) > self._max:
                self.queue_full += len(events)
                return
            self._queue.append(events)
            self._queued += len(events)
            self._cond.notify()

    def view(self) -> SinkView:
        dropped = dict(self.sink.dropped)
        if self.queue_full:
            dropped["queue_full"] = dropped.get("queue_full", 0) + self.queue_full
        return SinkView(self.sink.name, self.sink.written, dropped, self.sink.errors, self._queued)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue and not self._closing:
                    self._cond.wait(TICK)
                batches = list(self._queue)
                self._queue.clear()
                self._queued = 0
                closing = self._closing
            now = time.monotonic()
            if all(isinstance(b, list) for b in batches):  # events: one write
                batches = [[ev for b in batches for ev in b]] if len(batches) > 1 else batches
            for batch in batches:
                self.sink.write(batch, now)
            self.sink.tick(now)
            if closing:
                break
        self.sink.close()

    def finish(self) -> None:
        """No more events: the sink writes what is queued and closes (see ``join``)."""
        with self._cond:
            self._closing = True
            self._cond.notify()

    def join(self, timeout: float) -> bool:
        """Waits for ``finish()`` to be done; False if it took longer than ``timeout``."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s: still busy %.0f s after the end; what it had not written is lost", self.sink.name, timeout)
            return False
        return True
