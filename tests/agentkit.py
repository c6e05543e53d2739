"""What the agent's tests share: the agent as users run it (``python -m opentrace agent ...`` in a
subprocess), its metrics as Prometheus's own parser reads them, a workload of known opens, a real
Prometheus server, and an OTLP/HTTP receiver that decodes what it gets with opentelemetry-proto."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .conftest import Child, wait_for

AGENT_START = 30.0  # seconds an agent may take to attach and say so


def unique_comm() -> str:
    """A command name no other process has (at most 15 bytes, the kernel's limit)."""
    return f"otag{uuid.uuid4().hex[:10]}"


def write_config(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


class Agent:
    """``opentrace agent ARGS`` in a subprocess, running: its 'agent running' line seen on stderr.
    Its stderr lines are gathered by a thread (``lines``)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, prefix: Sequence[str] = ()) -> None:
        self.argv = [*prefix, sys.executable, "-m", "opentrace", "agent", *args]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_for(lambda: self.running or self.proc.poll() is not None, "the agent's start", AGENT_START)
        assert self.running, f"the agent exited with {self.proc.returncode} before running:\n{self.stderr}"
        found = [w for line in self.lines for w in line.split() if w.startswith("http://") and "/metrics" in w]
        self.metrics_url = found[0].rstrip(",;") if found else None

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def running(self) -> bool:
        return any("agent running" in line for line in self.lines)

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """One scrape of /metrics, read by prometheus_client's parser: (name, labels) -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        assert self.metrics_url, "the agent was started without --metrics"
        with urllib.request.urlopen(self.metrics_url, timeout=10) as reply:
            text = reply.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def metric(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels``."""
        return sum(v for (n, ls), v in self.metrics().items() if n == name and set(labels.items()) <= set(ls))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Sends ``sig``; the exit status once it is gone (its stderr read to the end)."""
        self.proc.send_signal(sig)
        status = self.proc.wait(timeout)
        self._reader.join(10)
        self._close_pipe()
        return status

    def _close_pipe(self) -> None:
        if self.proc.stderr is not None and not self._reader.is_alive():
            self.proc.stderr.close()

    def summary(self) -> dict[str, dict[str, int]]:
        """The end line's counts: {"parquet": {"written": N, "dropped": M}, ..., "agent": {"events": N}}."""
        line = next(line for line in self.lines if "agent stopped:" in line)
        parts = line.split("agent stopped: ", 1)[1].split("; ")
        counts = {"agent": {"events": int(parts[0].split()[0])}}
        for part in parts[1:]:
            words = part.replace(",", "").split()
            counts[words[0]] = {"written": int(words[1]), "dropped": int(words[3]) if "dropped" in words else 0}
        return counts

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10)
        self._close_pipe()


def workload(comm: str, ops: list[list[object]]) -> tuple[Child, list[Any]]:
    """A child renamed ``comm`` that runs ``ops`` (tests/opener.py) once told; (child, results)."""
    child = Child([["rename", comm], *ops])
    results = child.go()
    assert results[0] == 0, "prctl(PR_SET_NAME) failed"
    return child, results[1:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- Prometheus -----------------------------------------------------------------------------------


class Prometheus:
    """Debian's prometheus, scraping ``target`` every second, on a free loopback port, with its
    configuration and data in ``workdir``."""

    def __init__(self, workdir: Path, target: str) -> None:
        exe = shutil.which("prometheus")
        assert exe, "no prometheus: run scripts/bootstrap (it installs Debian's prometheus package)"
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: opentrace\n    static_configs:\n      - targets: ['{target}']\n"
        )
        self.log = workdir / "prometheus.log"
        for _ in range(5):  # a port taken between free_port() and prometheus's bind: another one
            self.url = f"http://127.0.0.1:{free_port()}"
            with open(self.log, "wb") as log:
                self.proc = subprocess.Popen(
                    [exe, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                     f"--web.listen-address={self.url.removeprefix('http://')}"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            wait_for(lambda: self._ready() or self.proc.poll() is not None, "prometheus's start", 60)
            if self.proc.poll() is None:
                return
        raise AssertionError(f"prometheus did not start:\n{self.log.read_text()[-2000:]}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query through the HTTP API: the result vector."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as reply:
            answer = json.loads(reply.read())
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        """A query's single value (None when the vector is empty)."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- OTLP/HTTP receiver ----------------------------------------------------------------------------


def _value(any_value: Any) -> Any:
    """An OTLP AnyValue as Python."""
    kind = any_value.WhichOneof("value")
    return None if kind is None else getattr(any_value, kind)


class Receiver:
    """An OTLP/HTTP logs endpoint on loopback (``url``): every request body is decoded as an
    ExportLogsServiceRequest with opentelemetry-proto. ``records``: one dict per log record, its
    attributes by key, plus "_resource", "_body", "_event_name", "_time_unix_nano". ``refuse``:
    how many requests to answer 503 (retryable) before accepting."""

    def __init__(self, refuse: int = 0) -> None:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
            ExportLogsServiceRequest,
            ExportLogsServiceResponse,
        )

        self.records: list[dict[str, Any]] = []
        self.requests = 0
        self.refused = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    receiver.requests += 1
                    if receiver.refused < refuse:
                        receiver.refused += 1
                        self.send_response(503)
                        self.end_headers()
                        return
                request = ExportLogsServiceRequest()
                request.ParseFromString(body)
                found = []
                for resource_logs in request.resource_logs:
                    resource = {a.key: _value(a.value) for a in resource_logs.resource.attributes}
                    for scope_logs in resource_logs.scope_logs:
                        for record in scope_logs.log_records:
                            attrs = {a.key: _value(a.value) for a in record.attributes}
                            attrs.update(_resource=resource, _body=_value(record.body),
                                         _event_name=record.event_name, _time_unix_nano=record.time_unix_nano)
                            found.append(attrs)
                with lock:
                    receiver.records.extend(found)
                reply = ExportLogsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1/logs"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def refusing_port() -> Iterator[str]:
    """An OTLP URL where nothing listens: a port bound (so no one else takes it) but not listening,
    so that connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}/v1/logs"


def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Until ``condition()`` holds, checked every 0.1 s (a scrape, a query: not every 5 ms)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
        time.sleep(0.1)
