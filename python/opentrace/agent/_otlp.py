"""``--otlp URL``: each open as an OpenTelemetry log record, sent as OTLP/HTTP protobuf by the
official SDK (``opentelemetry-sdk``'s batching processor, ``opentelemetry-exporter-otlp-proto-http``'s
exporter, which retries transient failures with backoff).

Attributes are named after OpenTelemetry's semantic conventions where one exists (``process.pid``,
``process.command``, ``file.path``, ``container.id``, ``error.type``, ...) and ``opentrace.*``
otherwise. Records waiting for export are bounded (``max_queue``): past it new ones are dropped
(``queue_full``); a batch the collector refuses or never answers is dropped (``export_failed``);
what is still queued when shutdown's ``flush_timeout`` is over is dropped (``shutdown``). Every
drop is counted.
"""

from __future__ import annotations

import errno as errno_names
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from .._opentrace import OpenEvent, __version__
from ._config import OtlpConfig
from ._extras import need
from ._sink import REPORT_EVERY, Sink

__all__ = ["OtlpSink", "attributes"]

log = logging.getLogger("opentrace")
_INT64_MAX = (1 << 63) - 1


def _int(value: int) -> int | str:
    """OTLP integers are int64: a larger value (a cgroup id, a device, flags as passed) goes as text."""
    return value if value <= _INT64_MAX else str(value)


def _text(raw: bytes) -> tuple[str, bool]:
    """A path as UTF-8 text, and whether that is exact (else undecodable bytes became U+FFFD)."""
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), False


# (attribute of OpenEvent, semantic-convention attribute) for the str fields set when known; the
# container's runtime names are there only where the runtime was asked.
_NAMED = (
    ("container_id", "container.id"),
    ("container_name", "container.name"),
    ("container_image", "container.image.name"),
    ("pod", "k8s.pod.name"),
    ("namespace", "k8s.namespace.name"),
    ("cgroup", "opentrace.cgroup"),
)


def attributes(ev: OpenEvent) -> dict[str, Any]:
    """One open's log record attributes."""
    path, exact = _text(ev.path_bytes)
    found: dict[str, Any] = {
        "process.pid": ev.pid,
        "process.parent_pid": ev.ppid,
        "process.vpid": ev.ns_pid,
        "process.command": ev.comm,
        "process.real_user.id": ev.uid,
        "thread.id": ev.tid,
        "file.path": path,
        "opentrace.syscall": ev.syscall,
        "opentrace.open.dfd": ev.dfd,
        "opentrace.open.flags": _int(ev.flags),
        "opentrace.open.mode": _int(ev.mode),
        "opentrace.open.ret": ev.ret,
        "opentrace.cgroup_id": _int(ev.cgroup_id),
    }
    if not exact:
        found["opentrace.path_bytes"] = ev.path_bytes
    if ev.fd is not None:
        found["opentrace.open.fd"] = ev.fd
    err = ev.errno
    if err is not None:
        found["error.type"] = errno_names.errorcode.get(err, str(err))
        found["opentrace.open.errno"] = err
    if ev.inode is not None:
        found["file.inode"] = str(ev.inode)
    if ev.dev is not None:
        found["opentrace.file.dev"] = _int(ev.dev)
    if ev.mnt_id is not None:
        found["opentrace.file.mnt_id"] = ev.mnt_id
    for name, key in _NAMED:
        value = getattr(ev, name, None)
        if value is not None:
            found[key] = value
    full = ev.full_path_bytes
    if full is not None:
        found["opentrace.full_path"], exact = _text(full)
        if not exact:
            found["opentrace.full_path_bytes"] = full
    return found


def _body(ev: OpenEvent, path: str) -> str:
    err = ev.errno
    outcome = str(ev.ret) if err is None else errno_names.errorcode.get(err, str(err))
    return f"{ev.comm} {ev.syscall} {path} = {outcome}"


class _LastWords(logging.Handler):
    """Keeps the SDK's last warning (why an export failed) for the agent's own report, instead of
    letting it print one line per failed batch."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()


def _quiet_sdk() -> _LastWords:
    handler = _LastWords()
    sdk = logging.getLogger("opentelemetry")
    sdk.handlers[:] = [handler]
    sdk.propagate = False
    sdk.setLevel(logging.WARNING)
    return handler


class _Counting:
    """The OTLP exporter, with the outcome of every batch counted in the sink."""

    def __init__(self, inner: Any, sink: OtlpSink, success: Any, failure: Any) -> None:
        self._inner, self._sink, self._success, self._failure = inner, sink, success, failure
        self.late = False  # shutdown's flush_timeout is over: what is left is dropped at once

    def export(self, batch: Sequence[Any]) -> Any:
        if self.late:
            self._sink.settled(len(batch), "shutdown")
            return self._failure
        try:
            result = self._inner.export(batch)
        except Exception:  # counted as a failed export, like the SDK's own failures
            result = self._failure
        self._sink.settled(len(batch), None if result == self._success else "export_failed")
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class OtlpSink(Sink):
    name = "otlp"

    def __init__(self, config: OtlpConfig) -> None:
        super().__init__()
        what = "--otlp"
        sdk = need("opentelemetry.sdk._logs", what, "opentelemetry-sdk")
        export = need("opentelemetry.sdk._logs.export", what, "opentelemetry-sdk")
        resources = need("opentelemetry.sdk.resources", what, "opentelemetry-sdk")
        api = need("opentelemetry._logs", what, "opentelemetry-api")
        http = need("opentelemetry.exporter.otlp.proto.http._log_exporter", what,
                    "opentelemetry-exporter-otlp-proto-http")
        self._config = config
        self._sdk_words = _quiet_sdk()
        self._lock = threading.RLock()
        self._emitted = 0  # records given to the SDK (this sink's thread)
        self._settled = 0  # of those, exported or dropped (the exporter's thread)
        self._exports_failing = False
        self._export_reported_at = 0.0
        self._exporter = _Counting(
            http.OTLPLogExporter(endpoint=config.endpoint, headers=config.headers or None, timeout=config.timeout),
            self, export.LogRecordExportResult.SUCCESS, export.LogRecordExportResult.FAILURE,
        )
        # The SDK's own queue has room for every record this sink lets through: drops happen (and
        # are counted) here, not silently there.
        processor = export.BatchLogRecordProcessor(
            self._exporter, schedule_delay_millis=config.schedule_delay * 1000,
            max_export_batch_size=min(config.batch_size, config.max_queue),
            max_queue_size=config.max_queue + config.batch_size,
        )
        resource = {"service.name": "opentrace", "service.version": __version__, "host.name": socket.gethostname()}
        if os.environ.get("NODE_NAME"):  # a DaemonSet's pod gets its node's name this way (deploy/)
            resource["k8s.node.name"] = os.environ["NODE_NAME"]
        self._provider = sdk.LoggerProvider(resource=resources.Resource.create(resource), shutdown_on_exit=False)
        self._provider.add_log_record_processor(processor)
        self._logger = self._provider.get_logger("opentrace", __version__)
        self._info = api.SeverityNumber.INFO

    def _write(self, events: list[OpenEvent]) -> None:
        room = self._config.max_queue - (self._emitted - self._settled)
        if room < len(events):
            self.drop("queue_full", len(events) - max(room, 0))
            events = events[: max(room, 0)]
        now = time.time_ns()
        offset = now - time.monotonic_ns()
        emit, info = self._logger.emit, self._info
        for ev in events:
            found = attributes(ev)
            emit(timestamp=ev.timestamp_ns + offset, observed_timestamp=now, severity_number=info,
                 severity_text="INFO", body=_body(ev, found["file.path"]), attributes=found,
                 event_name="opentrace.open")
        self._emitted += len(events)

    def settled(self, n: int, dropped: str | None) -> None:
        """The exporter's word on ``n`` records: sent (``dropped`` None), or dropped and why."""
        with self._lock:
            if dropped is None:
                self.written += n
            else:
                self.drop(dropped, n)
            self._settled += n
        now = time.monotonic()
        if dropped == "export_failed":
            self.errors += 1
            if not self._exports_failing or now - self._export_reported_at >= REPORT_EVERY:
                log.warning("otlp: exporting to %s failed (%s); %d records dropped so far",
                            self._config.endpoint, self._sdk_words.last or "no reason given",
                            self.dropped.get("export_failed", 0))
                self._export_reported_at = now
            self._exports_failing = True
        elif dropped is None and self._exports_failing:
            log.warning("otlp: exporting to %s again", self._config.endpoint)
            self._exports_failing = False

    def drop(self, reason: str, n: int) -> None:
        with self._lock:  # counted from this sink's thread and the exporter's
            super().drop(reason, n)

    def _close(self) -> None:
        timer = threading.Timer(self._config.flush_timeout, self._give_up)
        timer.daemon = True
        timer.start()
        try:
            self._provider.shutdown()
        finally:
            timer.cancel()
        left = self._emitted - self._settled
        if left > 0:
            self.drop("shutdown", left)

    def _give_up(self) -> None:
        self._exporter.late = True
        self._exporter.shutdown()  # ends the exporter's retries at once
