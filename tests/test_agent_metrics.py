"""``opentrace agent --metrics``: a real Prometheus scrapes the agent while a workload makes known
opens, and PromQL through Prometheus's HTTP API gives back exactly those; the container label's cap."""

from __future__ import annotations

import os
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .agentkit import Agent, Prometheus, unique_comm, until, workload, write_config
from .conftest import Child, cgroup2_mount

pytestmark = pytest.mark.root


def opens(tmp_path: Path, ok: int, failed: int) -> list[list[object]]:
    """``ok`` opens of distinct existing files and ``failed`` of missing ones (openat)."""
    ops: list[list[object]] = []
    for i in range(ok):
        (tmp_path / f"marker-{i}").write_text("x")
        ops.append(["openat", None, str(tmp_path / f"marker-{i}"), os.O_RDONLY, 0])
    ops += [["openat", None, str(tmp_path / f"missing-{i}"), os.O_RDONLY, 0] for i in range(failed)]
    return ops


def test_prometheus_scrapes_exactly_the_workloads_opens(tmp_path: Path) -> None:
    comm = unique_comm()
    with Agent("--metrics", "127.0.0.1:0", "-n", comm) as agent:
        assert agent.metrics_url is not None
        port = urllib.parse.urlsplit(agent.metrics_url).port
        prometheus = Prometheus(tmp_path, f"127.0.0.1:{port}")
        try:
            _, results = workload(comm, opens(tmp_path, ok=7, failed=3))
            assert sum(r >= 0 for r in results) == 7 and sum(r == -2 for r in results) == 3  # ENOENT
            total = 'sum(opentrace_opens_total{job="opentrace"})'
            until(lambda: (prometheus.value(total) or 0) >= 10, "Prometheus scraping the 10 opens")
            assert prometheus.value(total) == 10
            by = {(r["metric"].get("result"), r["metric"].get("errno", "")): float(r["value"][1])
                  for r in prometheus.query("sum by (result, errno, syscall) (opentrace_opens_total)")}
            assert by == {("ok", ""): 7, ("error", "ENOENT"): 3}
            assert {r["metric"]["syscall"] for r in prometheus.query("opentrace_opens_total")} == {"openat"}
            assert prometheus.value("opentrace_events_lost_total") == 0
            assert (prometheus.value('opentrace_ring_bytes{job="opentrace"}') or 0) >= 4096
            assert (prometheus.value('process_resident_memory_bytes{job="opentrace"}') or 0) > 10 << 20
        finally:
            prometheus.close()
        assert agent.stop() == 0


@pytest.fixture
def containers() -> Iterator[list[Path]]:
    """Three cgroups named as docker names a container's (removed afterwards)."""
    mount = cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup2 hierarchy mounted")
    top = mount / f"opentrace-agent-{os.getpid()}"
    scopes = [top / f"docker-{uuid.uuid4().hex * 2}.scope" for _ in range(3)]
    for scope in scopes:
        scope.mkdir(parents=True)
    yield scopes
    for directory in [*scopes, top]:
        directory.rmdir()


def test_the_container_label_is_capped_and_the_rest_is_other(tmp_path: Path, containers: list[Path]) -> None:
    comm = unique_comm()
    config = write_config(tmp_path / "agent.toml", "[metrics]\nmax_containers = 2\n")
    with Agent("--config", config, "--metrics", "127.0.0.1:0", "-n", comm) as agent:
        for n, scope in enumerate(containers, start=1):  # one after the other: the first two get a series
            child = Child([["rename", comm], *opens(tmp_path, ok=n, failed=0)])
            (scope / "cgroup.procs").write_text(str(child.pid))
            child.go()
        until(lambda: agent.metric("opentrace_opens_total") >= 6, "the agent counting the 6 opens")
        series = {dict(labels)["container"]: value for (name, labels), value in agent.metrics().items()
                  if name == "opentrace_opens_total"}
        ids = [scope.name.removeprefix("docker-").removesuffix(".scope") for scope in containers]
        assert series == {ids[0]: 1, ids[1]: 2, "other": 3}
        assert agent.metric("opentrace_containers") == 2
        assert agent.stop() == 0


def test_an_idle_containers_series_go_and_give_their_place_back(tmp_path: Path, containers: list[Path]) -> None:
    comm = unique_comm()
    config = write_config(tmp_path / "agent.toml", "[metrics]\nmax_containers = 1\ncontainer_idle = 0.5\n")
    ids = [scope.name.removeprefix("docker-").removesuffix(".scope") for scope in containers]

    def opens_in(scope: Path) -> None:
        child = Child([["rename", comm], *opens(tmp_path, ok=1, failed=0)])
        (scope / "cgroup.procs").write_text(str(child.pid))
        child.go()

    def series() -> set[str]:
        return {dict(labels)["container"] for (name, labels), _ in agent.metrics().items()
                if name == "opentrace_opens_total"}

    with Agent("--config", config, "--metrics", "127.0.0.1:0", "-n", comm) as agent:
        opens_in(containers[0])
        until(lambda: series() == {ids[0]}, "the first container's series")
        until(lambda: series() == set(), "the idle container's series going")
        opens_in(containers[1])  # its place is free again
        until(lambda: series() == {ids[1]}, "the second container's own series")
        assert agent.stop() == 0


def test_each_syscall_and_result_has_its_series(tmp_path: Path) -> None:
    """Metrics alone are counted in the kernel, at the syscalls' exits: the syscall and the errno
    come from there, not from events."""
    comm = unique_comm()
    marker = tmp_path / "marker"
    marker.write_text("x")
    ops: list[list[object]] = [
        ["open", str(marker), os.O_RDONLY, 0], ["open", str(marker), os.O_RDONLY, 0],
        ["creat", str(tmp_path / "made"), 0o600],
        ["openat2", str(marker), os.O_RDONLY, 0, 0], ["openat2", str(marker / "x"), os.O_RDONLY, 0, 0],
        *opens(tmp_path, ok=2, failed=1),
    ]
    with Agent("--metrics", "127.0.0.1:0", "-n", comm) as agent:
        _, results = workload(comm, ops)
        assert results[4] == -20  # ENOTDIR
        until(lambda: agent.metric("opentrace_opens_total") >= 8, "the agent counting the 8 opens")
        series = {(labels["syscall"], labels["result"], labels["errno"]): value
                  for (name, raw), value in agent.metrics().items() if name == "opentrace_opens_total"
                  for labels in [dict(raw)]}
        assert series == {("open", "ok", ""): 2, ("creat", "ok", ""): 1, ("openat2", "ok", ""): 1,
                          ("openat2", "error", "ENOTDIR"): 1, ("openat", "ok", ""): 2,
                          ("openat", "error", "ENOENT"): 1}
        assert agent.stop() == 0


@pytest.mark.parametrize("also", [[], ["--json-file", "{tmp}/events.jsonl"], ["--parquet", "{tmp}/parquet"]],
                         ids=["metrics-alone", "with-events", "with-parquet-columns"])
def test_opens_and_lost_add_up_to_every_open(tmp_path: Path, also: list[str]) -> None:
    """A ring of one page, a storm of opens. Metrics alone are counted in the kernel, with no
    event sent: all of them, none lost. With a sink that takes the events, the metrics count
    them as they come (with Parquet alone, from the columns the ring is read as), and what the
    ring had no room for is counted as lost."""
    comm = unique_comm()
    marker = tmp_path / "marker"
    marker.write_text("x")
    extra = [arg.format(tmp=tmp_path) for arg in also]
    with Agent("--metrics", "127.0.0.1:0", "--ring-size", "4K", "-n", comm, *extra) as agent:
        workload(comm, [["loop", str(marker), 100_000]])
        until(lambda: agent.metric("opentrace_opens_total") + agent.metric("opentrace_events_lost_total") == 100_000,
              "opens + lost adding up to the workload's 100000")
        if not also:
            assert agent.metric("opentrace_events_lost_total") == 0
        assert agent.stop() == 0
