"""``opentrace agent --otlp``: the official exporter sends to a receiver here that decodes the
protobuf with opentelemetry-proto; every record's attributes match the workload's opens; a
collector that refuses at first is retried; one that is down is counted as dropped while the
agent and its other sinks go on."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from .agentkit import Agent, Receiver, refusing_port, unique_comm, until, workload, write_config

pytestmark = pytest.mark.root

FAST = "[otlp]\nschedule_delay = 0.1\n"


def test_every_record_carries_the_opens_fields_under_semantic_convention_names(tmp_path: Path) -> None:
    comm = unique_comm()
    base = os.fsencode(tmp_path)
    paths = [base + b"/plain", base + b"/caf\xe9-latin1"]
    for path in paths:
        open(path, "wb").close()
    missing = base + b"/missing"
    ops: list[list[object]] = [["openat", None, os.fsdecode(p), os.O_RDONLY, 0] for p in [*paths, missing]]
    receiver = Receiver()
    try:
        config = write_config(tmp_path / "agent.toml", FAST)
        before = time.time_ns()
        with Agent("--config", config, "--otlp", receiver.url, "-n", comm) as agent:
            child, results = workload(comm, ops)
            until(lambda: len(receiver.records) >= 3, "the receiver getting the 3 records")
            assert agent.stop() == 0
        after = time.time_ns()
    finally:
        receiver.close()
    records = sorted(receiver.records, key=lambda r: r["_time_unix_nano"])
    assert len(records) == 3
    for record, path, ret in zip(records, [*paths, missing], results, strict=True):
        text = path.decode("utf-8", "replace")
        assert record["process.pid"] == child.pid and record["thread.id"] == child.tid
        assert record["process.parent_pid"] == os.getpid() and record["process.vpid"] == child.pid
        assert record["process.command"] == comm and record["process.real_user.id"] == os.getuid()
        assert record["file.path"] == text
        assert record.get("opentrace.path_bytes") == (None if path == paths[0] or path == missing else path)
        assert record["opentrace.syscall"] == "openat" and record["opentrace.open.dfd"] == -100
        assert record["opentrace.open.flags"] == os.O_RDONLY and record["opentrace.open.ret"] == ret
        if ret >= 0:
            assert record["opentrace.open.fd"] == ret and "error.type" not in record
            assert record["file.inode"] == str(os.stat(path).st_ino)
        else:
            assert record["error.type"] == "ENOENT" and record["opentrace.open.errno"] == 2
            assert "opentrace.open.fd" not in record and "file.inode" not in record
        assert record["_event_name"] == "opentrace.open"
        assert record["_body"] == f"{comm} openat {text} = {ret if ret >= 0 else 'ENOENT'}"
        assert before <= record["_time_unix_nano"] <= after
        assert record["_resource"]["service.name"] == "opentrace"
    assert agent.summary()["otlp"] == {"written": 3, "dropped": 0}


def test_a_collector_that_refuses_at_first_gets_the_records_on_retry(tmp_path: Path) -> None:
    comm = unique_comm()
    receiver = Receiver(refuse=1)  # 503: the exporter backs off and sends the batch again
    try:
        config = write_config(tmp_path / "agent.toml", FAST)
        with Agent("--config", config, "--otlp", receiver.url, "--metrics", "127.0.0.1:0", "-n", comm) as agent:
            workload(comm, [["loop", "/etc/hostname", 5]])
            until(lambda: len(receiver.records) >= 5, "the records arriving after the retry")
            assert receiver.refused == 1 and receiver.requests >= 2
            assert agent.metric("opentrace_sink_dropped_total", sink="otlp") == 0
            assert agent.stop() == 0
    finally:
        receiver.close()
    assert len(receiver.records) == 5


def test_with_the_collector_down_the_agent_goes_on_and_counts_what_it_dropped(tmp_path: Path) -> None:
    comm = unique_comm()
    journal = tmp_path / "opens.json"
    config = write_config(tmp_path / "agent.toml", FAST + "timeout = 1.0\nflush_timeout = 0.5\n")
    with refusing_port() as url, Agent("--config", config, "--otlp", url, "--json-file", str(journal),
                                       "--metrics", "127.0.0.1:0", "-n", comm) as agent:
        workload(comm, [["loop", "/etc/hostname", 100]])
        until(lambda: agent.metric("opentrace_sink_dropped_total", sink="otlp") == 100,
              "the 100 records counted as dropped")
        assert agent.metric("opentrace_sink_dropped_total", sink="otlp", reason="export_failed") == 100
        assert agent.metric("opentrace_sink_written_total", sink="otlp") == 0
        assert agent.metric("opentrace_sink_errors_total", sink="otlp") >= 1
        assert agent.metric("opentrace_sink_written_total", sink="json_file") == 100  # the others go on
        assert agent.proc.poll() is None
        workload(comm, [["loop", "/etc/hostname", 10]])  # and so does the capture
        until(lambda: agent.metric("opentrace_opens_total") == 110, "the next opens counted")
        assert agent.stop() == 0
    assert f"otlp: exporting to {url} failed" in agent.stderr
    counts = agent.summary()
    assert counts["otlp"]["written"] == 0 and counts["otlp"]["dropped"] == 110
    assert counts["json_file"] == {"written": 110, "dropped": 0}


def test_past_max_queue_new_records_are_dropped_and_counted(tmp_path: Path) -> None:
    comm = unique_comm()
    config = write_config(tmp_path / "agent.toml", FAST + "timeout = 1.0\nmax_queue = 20\nbatch_size = 10\n")
    with refusing_port() as url, Agent("--config", config, "--otlp", url, "--metrics", "127.0.0.1:0",
                                       "-n", comm) as agent:
        workload(comm, [["loop", "/etc/hostname", 2000]])
        until(lambda: agent.metric("opentrace_sink_dropped_total", sink="otlp") == 2000, "the 2000 records dropped")
        assert agent.metric("opentrace_sink_dropped_total", sink="otlp", reason="queue_full") > 0
        assert agent.stop() == 0
