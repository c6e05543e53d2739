"""Prometheus metrics: opens counted in the kernel (metrics alone) or from the event stream (with
other sinks, which take the events anyway), with few series.

``opentrace_opens_total{syscall, result, errno, container}`` has at most 5 syscalls x (1 + the errno
names seen) x (``max_containers`` + 2) series: the container label is the container id ("" outside
containers), and past ``max_containers`` distinct ones further containers count under "other".
A container not seen for ``container_idle`` seconds gives its series and its place back.
prometheus_client is imported only when the server starts.
"""

from __future__ import annotations

import errno as errno_names
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from operator import attrgetter
from typing import Any

from .._opentrace import OpenEvent
from ._config import MetricsConfig
from ._extras import need
from ._sink import SinkView

__all__ = ["OTHER", "MetricsServer", "OpenCounts"]

OTHER = "other"
# cgroup id -> label: cgroups are few, but ids are never reused, so a long run could pile them up.
_MAX_CGROUPS_REMEMBERED = 65_536


class OpenCounts:
    """The values of ``opentrace_opens_total``: (syscall, errno or None, container label) -> opens.

    Fed batch by batch from the capture loop; read (copied) by the scraping thread.
    """

    def __init__(self, max_containers: int = 100, label: str = "id", idle: float = 600.0) -> None:
        self.counts: dict[tuple[str, int | None, str], int] = {}
        self._max = max_containers
        self._by_cgroup_path = label == "cgroup"
        self._idle = idle
        self._label_of: dict[int, str] = {}  # cgroup id -> its label
        self._last_seen: dict[str, float] = {}  # container label that has a series -> when last seen
        self._key = attrgetter("syscall", "errno", "cgroup_id")

    def add(self, events: list[OpenEvent], now: float) -> None:
        counts = self.counts
        labels = self._label_of
        seen: set[str] = set()
        for (syscall, err, cgroup_id), n in Counter(map(self._key, events)).items():
            label = labels.get(cgroup_id)
            if label is None:
                label = self._learn(cgroup_id, events)
            key = (syscall, err, label)
            counts[key] = counts.get(key, 0) + n
            seen.add(label)
        for label in seen:
            if label in self._last_seen:
                self._last_seen[label] = now

    def add_table(self, table: Any, now: float) -> None:
        """A pyarrow table of events (``Columns.table_of``), counted grouped by cgroup, syscall
        and errno (as ``add_counted`` counts the kernel's counts)."""
        grouped = table.group_by(["cgroup_id", "syscall", "errno"], use_threads=False).aggregate(
            [("timestamp_ns", "count"), ("cgroup", "first"), ("container_id", "first")])
        rows = grouped.to_pylist()
        names = {row["cgroup_id"]: (row["cgroup_first"], row["container_id_first"]) for row in rows}
        self.add_counted([(row["cgroup_id"], row["syscall"], row["errno"] or 0, row["timestamp_ns_count"])
                          for row in rows], now, names.__getitem__)

    def add_counted(
        self, rows: list[tuple[int, str, int, int]], now: float, name: Callable[[int], tuple[str | None, str | None]]
    ) -> None:
        """Counts made in the kernel: (cgroup id, syscall, errno or 0, opens); ``name(cgroup id)``
        gives the cgroup's path and container id. Which of the containers first seen in one
        reading get series of their own is not in the order they opened (the kernel's counts do
        not say it) but in their cgroups' (the order the cgroups were made in)."""
        counts = self.counts
        for cgroup_id, syscall, err, n in sorted(rows):
            label = self._label_of.get(cgroup_id)
            if label is None:
                label = self._learn_named(cgroup_id, *name(cgroup_id))
            key = (syscall, err or None, label)
            counts[key] = counts.get(key, 0) + n
            if label in self._last_seen:
                self._last_seen[label] = now

    def _learn(self, cgroup_id: int, events: list[OpenEvent]) -> str:
        ev = next(ev for ev in events if ev.cgroup_id == cgroup_id)
        return self._learn_named(cgroup_id, ev.cgroup, ev.container_id)

    def _learn_named(self, cgroup_id: int, cgroup: str | None, container_id: str | None) -> str:
        value = (cgroup if self._by_cgroup_path else container_id) or ""
        if value and value not in self._last_seen:
            if len(self._last_seen) < self._max:
                self._last_seen[value] = 0.0
            else:
                value = OTHER
        if len(self._label_of) >= _MAX_CGROUPS_REMEMBERED:
            self._label_of.clear()
        self._label_of[cgroup_id] = value
        return value

    @property
    def containers(self) -> int:
        """Containers with series of their own."""
        return len(self._last_seen)

    def forget_idle(self, now: float) -> list[str]:
        """Containers not seen for ``idle`` seconds lose their series (and their place under the
        cap); returns them."""
        if not self._idle:
            return []
        gone = [label for label, seen in self._last_seen.items() if now - seen > self._idle]
        if gone:
            for label in gone:
                del self._last_seen[label]
            dead = set(gone)
            for key in [key for key in self.counts if key[2] in dead]:
                del self.counts[key]
            self._label_of.clear()  # cgroups counted under "other" may now have a place
        return gone

    def samples(self) -> Iterator[tuple[list[str], int]]:
        """``[syscall, result, errno, container]`` label values and opens, for a scrape."""
        for (syscall, err, container), n in self.counts.copy().items():
            if err is None:
                yield [syscall, "ok", "", container], n
            else:
                yield [syscall, "error", errno_names.errorcode.get(err, str(err)), container], n


class _Collector:
    """Reads the agent's counts when Prometheus scrapes (nothing is kept twice)."""

    def __init__(self, counts: OpenCounts, lost: Callable[[], int], ring_bytes: int,
                 sinks: Callable[[], Iterable[SinkView]], version: str) -> None:
        self._counts, self._lost, self._ring_bytes = counts, lost, ring_bytes
        self._sinks, self._version = sinks, version
        core = need("prometheus_client.core", "--metrics", "prometheus-client")
        self._counter, self._gauge = core.CounterMetricFamily, core.GaugeMetricFamily

    def collect(self) -> Iterator[Any]:
        counter, gauge = self._counter, self._gauge
        opens = counter("opentrace_opens", "File opens traced (those that passed the agent's filters).",
                        labels=["syscall", "result", "errno", "container"])
        for labels, n in self._counts.samples():
            opens.add_metric(labels, n)
        yield opens
        yield counter("opentrace_events_lost", "Opens that passed the filters but were never delivered "
                      "(the ring buffer was full): with opentrace_opens_total, every open.", value=self._lost())
        yield gauge("opentrace_ring_bytes", "Size of the ring buffer(s) the kernel side writes events to.",
                    value=self._ring_bytes)
        yield gauge("opentrace_containers", "Containers with series of their own in opentrace_opens_total "
                    "(the others count under container=\"other\").", value=self._counts.containers)
        views = list(self._sinks())
        written = counter("opentrace_sink_written", "Events a sink delivered (wrote to a complete file, "
                          "or the collector accepted).", labels=["sink"])
        dropped = counter("opentrace_sink_dropped", "Events a sink could not deliver, by reason: error "
                          "(write failed, or failing and waiting to retry), queue_full (the sink fell behind), "
                          "export_failed (the collector refused or did not answer), shutdown.",
                          labels=["sink", "reason"])
        errors = counter("opentrace_sink_errors", "Failures of a sink (each is retried).", labels=["sink"])
        queued = gauge("opentrace_sink_queue_events", "Events waiting for a sink.", labels=["sink"])
        for view in views:
            written.add_metric([view.name], view.written)
            for reason, n in sorted(view.dropped.items()):
                dropped.add_metric([view.name, reason], n)
            errors.add_metric([view.name], view.errors)
            queued.add_metric([view.name], view.queued)
        yield from (written, dropped, errors, queued)
        info = gauge("opentrace_info", "Always 1; the version as a label.", labels=["version"])
        info.add_metric([self._version], 1)
        yield info


class MetricsServer:
    """The /metrics endpoint (prometheus_client's server in its own thread), with the process's
    RSS, CPU time and open fds (its process collector)."""

    def __init__(self, config: MetricsConfig, counts: OpenCounts, lost: Callable[[], int], ring_bytes: int,
                 sinks: Callable[[], Iterable[SinkView]], version: str) -> None:
        client = need("prometheus_client", "--metrics", "prometheus-client")
        registry = client.CollectorRegistry(auto_describe=False)
        client.ProcessCollector(registry=registry)
        registry.register(_Collector(counts, lost, ring_bytes, sinks, version))
        try:
            self._server, self._thread = client.start_http_server(config.port, addr=config.host, registry=registry)
        except OSError as e:
            from ..cli import _describe
            from ..exceptions import OpentraceError

            raise OpentraceError(f"cannot serve metrics on {config.host}:{config.port}: {_describe(e)}") from None
        host, port = self._server.server_address[:2]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
