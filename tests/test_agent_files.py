"""``opentrace agent --parquet`` and ``--json-file``: what DuckDB reads back is exactly what the
workload did (non-UTF-8 paths included); files roll by size and by age; a SIGTERM or SIGKILL in the
middle of a storm leaves no torn Parquet file; the JSON file rotates; a sink on a full disk is
counted and retried while the others go on. And the CLI's ``-o FILE.parquet``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from .agentkit import Agent, unique_comm, until, workload, write_config
from .conftest import Child

pytestmark = pytest.mark.root

# File names as bytes: ASCII, UTF-8, Latin-1 (not UTF-8), bytes that are no text at all.
NAMES = [b"plain", "caf\u00e9-utf8".encode(), b"caf\xe9-latin1", b"\xff\xfe-raw", "\u65e5\u672c".encode()]


def parquet_rows(directory: Path, where: str = "true") -> list[tuple[object, ...]]:
    """(path, opens, failed) per path, from every complete file in ``directory``, read by DuckDB."""
    glob = str(directory / "*.parquet").replace("'", "''")
    return duckdb.sql(
        f"SELECT path, count(*), count(*) FILTER (WHERE errno IS NOT NULL) FROM read_parquet('{glob}') "
        f"WHERE {where} GROUP BY path").fetchall()


def total_rows(directory: Path) -> int:
    if not list(directory.glob("*.parquet")):
        return 0
    glob = str(directory / "*.parquet").replace("'", "''")
    ((count,),) = duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall()
    assert isinstance(count, int)
    return count


def hidden(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.startswith(".")]


def test_duckdb_reads_exactly_the_workloads_opens(tmp_path: Path) -> None:
    comm = unique_comm()
    out = tmp_path / "parquet"
    base = os.fsencode(tmp_path)
    expected: dict[bytes, tuple[int, int]] = {}
    ops: list[list[object]] = []
    for n, name in enumerate(NAMES, start=1):
        path = base + b"/" + name
        open(path, "wb").close()
        ops.append(["loop", os.fsdecode(path), n])  # n x (openat + close)
        expected[path] = (n, 0)
    missing = base + b"/missing-\xff"
    ops += [["openat", None, os.fsdecode(missing), os.O_RDONLY, 0]] * 2
    expected[missing] = (2, 2)
    # Small row groups, and a file per row group: the events cross many files.
    config = write_config(tmp_path / "agent.toml", "[parquet]\nrow_group_rows = 4\nmax_file_bytes = 1\n")
    with Agent("--config", config, "--parquet", str(out), "-n", comm) as agent:
        child, results = workload(comm, ops)
        assert results[-2:] == [-2, -2]
        assert agent.stop() == 0
    assert len(list(out.glob("*.parquet"))) > 1 and hidden(out) == []
    rows = parquet_rows(out, f"pid = {child.pid}")
    assert {bytes(path): (n, failed) for path, n, failed in rows} == expected  # type: ignore[arg-type]
    glob = str(out / "*.parquet")
    views = duckdb.sql(f"SELECT DISTINCT path, path_str, comm, syscall FROM read_parquet('{glob}')").fetchall()
    for path, text, found_comm, syscall in views:
        assert text == bytes(path).decode("utf-8", "replace") and found_comm == comm and syscall == "openat"
    bad = duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}') WHERE (errno IS NULL) != (fd = ret AND ret >= 0) "
                     "OR (errno IS NOT NULL AND ret != -errno)").fetchall()
    assert bad == [(0,)]
    assert agent.summary()["parquet"] == {"written": sum(n for n, _ in expected.values()), "dropped": 0}


def test_a_parquet_file_is_rolled_by_age(tmp_path: Path) -> None:
    comm = unique_comm()
    out = tmp_path / "parquet"
    config = write_config(tmp_path / "agent.toml", "[parquet]\nmax_file_seconds = 0.5\n")
    marker = tmp_path / "marker"
    marker.write_text("x")
    with Agent("--config", config, "--parquet", str(out), "-n", comm) as agent:
        workload(comm, [["loop", str(marker), 3]])
        until(lambda: len(list(out.glob("*.parquet"))) == 1, "the first file's completion (by age)")
        assert total_rows(out) == 3  # readable while the agent runs: it is complete
        workload(comm, [["loop", str(marker), 4]])
        assert agent.stop() == 0
    sizes = sorted(total_rows_of(f) for f in out.glob("*.parquet"))
    assert sizes == [3, 4]


def total_rows_of(file: Path) -> int:
    ((count,),) = duckdb.sql(f"SELECT count(*) FROM read_parquet('{file}')").fetchall()
    assert isinstance(count, int)
    return count


def storm(comm: str, path: Path) -> Child:
    """A child renamed ``comm`` opening ``path`` as fast as it can, already started."""
    child = Child([["rename", comm], ["loop", str(path), 10**8]])
    assert child.proc.stdin is not None
    child.proc.stdin.write("go\n")
    child.proc.stdin.flush()
    return child


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_signal_mid_write_leaves_no_torn_parquet_file(tmp_path: Path, sig: int) -> None:
    comm = unique_comm()
    out = tmp_path / "parquet"
    marker = tmp_path / "marker"
    marker.write_text("x")
    config = write_config(tmp_path / "agent.toml", "[parquet]\nrow_group_rows = 500\nmax_file_bytes = \"32K\"\n")
    with Agent("--config", config, "--parquet", str(out), "-n", comm) as agent:
        child = storm(comm, marker)
        try:
            # Mid-write: files complete, and one being written.
            until(lambda: list(out.glob("*.parquet")) and hidden(out), "files written during the storm")
            status = agent.stop(sig)
        finally:
            child.proc.kill()
            child.proc.communicate()
    rows = total_rows(out)  # every *.parquet file reads
    assert rows > 0
    if sig == signal.SIGTERM:
        assert status == 0 and hidden(out) == []
        assert agent.summary()["parquet"]["written"] == rows
        return
    assert status == -signal.SIGKILL
    (torn,) = hidden(out)  # the file it was writing: never named *.parquet
    assert torn.name.endswith(".parquet.tmp")
    with Agent("--parquet", str(out), "-n", comm) as again:  # the next agent removes it
        assert "removed 1 incomplete files" in again.stderr
        assert again.stop() == 0
    assert hidden(out) == [] and total_rows(out) == rows


def test_the_json_file_rotates_by_size_and_keeps_max_files(tmp_path: Path) -> None:
    comm = unique_comm()
    target = tmp_path / "logs" / "opens.json"
    paths = [tmp_path / (f"{i:04d}-" + "x" * 100) for i in range(200)]
    for p in paths:
        p.write_text("x")
    with Agent("--json-file", str(target), "--max-size", "4K", "--max-files", "3", "-n", comm) as agent:
        workload(comm, [["openat", None, str(p), os.O_RDONLY, 0] for p in paths])
        assert agent.stop() == 0
    assert agent.summary()["json_file"] == {"written": 200, "dropped": 0}
    files = sorted(os.listdir(target.parent))
    assert files == ["opens.json", "opens.json.1", "opens.json.2"]
    lines = []
    for name in ["opens.json.2", "opens.json.1", "opens.json"]:  # oldest first
        data = (target.parent / name).read_bytes()
        assert 0 < len(data) <= 4096 and data.endswith(b"\n")
        lines += [json.loads(line) for line in data.splitlines()]
    # The newest lines, whole and in order: the workload's last opens.
    assert [line["path"] for line in lines] == [str(p) for p in paths[-len(lines):]]
    assert all(line["comm"] == comm and line["fd"] is not None for line in lines)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: full after a few files."""
    directory = tmp_path / "small"
    directory.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "opentrace-test", str(directory)], check=True)
    yield directory
    subprocess.run(["umount", str(directory)], check=True)


def test_a_sink_on_a_full_disk_is_counted_and_retried_while_the_others_go_on(tmp_path: Path, small_disk: Path) -> None:
    comm = unique_comm()
    marker = tmp_path / "marker"
    marker.write_text("x")
    journal = tmp_path / "opens.json"
    config = write_config(tmp_path / "agent.toml", "[parquet]\nrow_group_rows = 20\nmax_file_bytes = 1\n")
    with Agent("--config", config, "--parquet", str(small_disk), "--json-file", str(journal),
               "--metrics", "127.0.0.1:0", "-n", comm) as agent:
        workload(comm, [["loop", str(marker), 1000]])
        until(lambda: agent.metric("opentrace_sink_written_total", sink="json_file") == 1000,
              "the JSON file getting all 1000 events")
        assert agent.metric("opentrace_opens_total") == 1000
        until(lambda: agent.metric("opentrace_sink_dropped_total", sink="parquet") > 0, "the full disk's drops")
        assert agent.metric("opentrace_sink_errors_total", sink="parquet") >= 1
        assert "parquet: " in agent.stderr and "no space left on device" in agent.stderr
        assert agent.proc.poll() is None
        # Room again: the sink writes again once its pause is over (events meanwhile are dropped, counted).
        before = total_rows(small_disk)
        for file in small_disk.glob("*.parquet"):
            file.unlink()
        written = agent.metric("opentrace_sink_written_total", sink="parquet")

        def recovered() -> bool:
            workload(comm, [["loop", str(marker), 5]])
            return agent.metric("opentrace_sink_written_total", sink="parquet") > written

        until(recovered, "the Parquet sink writing again", timeout=90)
        assert agent.stop() == 0
    counts = agent.summary()
    events = counts["agent"]["events"]
    assert counts["json_file"] == {"written": events, "dropped": 0}
    assert counts["parquet"]["written"] + counts["parquet"]["dropped"] == events
    assert counts["parquet"]["written"] == before + total_rows(small_disk)
    assert "working again" in agent.stderr


def test_the_cli_writes_a_trace_as_parquet(tmp_path: Path) -> None:
    out = tmp_path / "trace.parquet"
    missing = tmp_path / "missing"
    done = subprocess.run(
        [sys.executable, "-m", "opentrace", "-q", "-o", str(out), "--", "sh", "-c",
         f"cat /etc/hostname >/dev/null; cat {missing} 2>/dev/null; true"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert hidden(tmp_path) == []
    rows = duckdb.sql(f"SELECT path_str, errno, comm FROM read_parquet('{out}') "
                      f"WHERE path_str IN ('/etc/hostname', '{missing}')").fetchall()
    assert sorted(rows, key=str) == sorted([("/etc/hostname", None, "cat"), (str(missing), 2, "cat")], key=str)
    columns = [c for c, *_ in duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{out}')").fetchall()]
    from .contract import OPEN_EVENT_DICT_KEYS

    assert [c for c in columns if not c.endswith("_str")] == list(OPEN_EVENT_DICT_KEYS)
    assert "path_str" in columns and "full_path_str" in columns


def test_the_cli_writes_every_event_of_a_storm_and_stops_at_a_count(tmp_path: Path) -> None:
    """-o FILE.parquet reads the ring as columns and encodes row groups in a thread of its own:
    100,000 opens of a child (two full row groups and a rest) are all in the file, in order, or
    counted lost; with -c 7, exactly the first 7."""
    target = tmp_path / "f"
    target.write_text("")
    for count, opens in ((None, 100_000), (7, 50)):
        child = Child([["loop", str(target), opens]])
        out = tmp_path / f"t-{opens}.parquet"
        argv = [sys.executable, "-m", "opentrace", "-p", str(child.pid), "-o", str(out)]
        trace = subprocess.Popen(argv + ([] if count is None else ["-c", str(count)]),
                                 stderr=subprocess.PIPE, text=True)
        assert trace.stderr is not None and trace.stderr.readline().startswith("opentrace: tracing")
        child.go()
        errors = trace.communicate(timeout=60)[1]
        assert trace.returncode == 0, errors
        lost = sum(int(n) for n in re.findall(r"opentrace: (\d+) events lost in all", errors))
        rows = duckdb.sql(f"SELECT timestamp_ns, path_str, fd FROM read_parquet('{out}')").fetchall()
        assert len(rows) + lost == (opens if count is None else count), errors
        assert {(path, fd is not None) for _, path, fd in rows} == {(str(target), True)}
        assert [t for t, _, _ in rows] == sorted(t for t, _, _ in rows)


def test_parquet_output_refuses_text_options(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "opentrace", "-o", str(tmp_path / "t.parquet"), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--json shape text output" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_every_parquet_column_is_the_events_field(tmp_path: Path) -> None:
    """Row for row and field for field, what DuckDB reads of a file is the events' ``to_dict()``
    (None where an event has no value, the extremes of each integer type, text that is not UTF-8
    replaced in the string columns, the paths' bytes exact), across row groups."""
    from opentrace import OpenEvent
    from opentrace.agent._parquet import ParquetOutput

    events = [
        OpenEvent(timestamp_ns=2**63 - 1, pid=2**31 - 1, tid=1, uid=2**32 - 1, comm=b"c\xffm", syscall="openat2",
                  path=b"/p/\xfe", dfd=-100, flags=2**64 - 1, mode=0o644, ret=7, inode=2**64 - 1, dev=0,
                  mnt_id=2**32 - 1, ppid=2**31 - 1, ns_pid=3, cgroup_id=2**64 - 1, cgroup=b"/system.slice/docker-"
                  + b"a" * 64 + b".scope", container_name="web", full_path=b"/full/\xfe"),
        OpenEvent(pid=5, comm="x", syscall="creat", path="relative", ret=-13),
        OpenEvent(),
    ] * 3
    out = tmp_path / "t.parquet"
    writer = ParquetOutput(str(out), row_group_rows=4)
    writer.write(events)
    writer.close()
    read = duckdb.sql(f"SELECT * FROM read_parquet('{out}')")
    rows = [dict(zip(read.columns, row, strict=True)) for row in read.fetchall()]
    assert len(rows) == len(events)
    for event, row in zip(events, rows, strict=True):
        expected = event.to_dict()
        expected["comm"] = event.comm.encode(errors="surrogateescape").decode(errors="replace")
        expected["path"] = event.path_bytes
        expected["path_str"] = event.path_bytes.decode(errors="replace")
        full = event.full_path_bytes
        expected["full_path"], expected["full_path_str"] = full, None if full is None else full.decode(errors="replace")
        assert {k: bytes(v) if isinstance(v, (bytearray, memoryview)) else v for k, v in row.items()} == expected
