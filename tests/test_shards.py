"""Sharded ring buffers (``ring_shards``), on the real kernel with producers pinned to CPUs: one
thread's events in their order whichever CPU wrote them, opens that happen one after the other
on two CPUs in that order whatever ring each went to (the iterator, async iteration, ``poll()``
and the CLI's text), delivered + lost exact, and a shard that overflows counted alone."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import opentrace

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin producers to"),
]

CPUS = sorted(os.sched_getaffinity(0))[:2]
PAGE = os.sysconf("SC_PAGE_SIZE")

# The producers: a child process (started before the watcher, so its start-up is not traced) that
# waits for a line on stdin, runs one plan, prints "done" and exits. Paths that do not exist: each
# open fails (ENOENT) and is an event all the same, so nothing is left open.
PRODUCER = r"""
import os, sys, threading
plan, base, cpus = sys.argv[1], sys.argv[2], [int(c) for c in sys.argv[3:5]]
rounds = int(sys.argv[5])

def pin(cpu):
    os.sched_setaffinity(0, {cpu})  # this thread

def attempt(path):
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError:
        pass

def lockstep():
    # Each thread opens only after the other's open returned: the opens happen in one order.
    turns = [threading.Semaphore(1), threading.Semaphore(0)]
    def run(i):
        pin(cpus[i])
        for n in range(rounds):
            turns[i].acquire()
            attempt(f"{base}.{i}.{n}")
            turns[1 - i].release()
    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    return threads

def free():
    # Two threads pinned to a CPU each, one hopping between them every 8 opens.
    def run(i):
        for n in range(rounds):
            if n % 8 == 0:
                pin(cpus[i] if i < 2 else cpus[(n // 8) % 2])
            attempt(f"{base}.{i}.{n}")
    return [threading.Thread(target=run, args=(i,)) for i in (0, 1, 2)]

def overflow():
    # A burst on the first CPU, then a few opens on the second.
    def run():
        pin(cpus[0])
        for n in range(rounds):
            attempt(f"{base}.0.{n}")
        pin(cpus[1])
        for n in range(5):
            attempt(f"{base}.1.{n}")
    return [threading.Thread(target=run)]

threads = {"lockstep": lockstep, "free": free, "overflow": overflow}[plan]()
print(os.getpid(), flush=True)
sys.stdin.readline()
for t in threads:
    t.start()
for t in threads:
    t.join()
print("done", flush=True)
"""


class Producer:
    def __init__(self, plan: str, base: Path, rounds: int) -> None:
        argv = [sys.executable, "-c", PRODUCER, plan, str(base), *map(str, CPUS), str(rounds)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.pid = int(self.proc.stdout.readline())

    def go(self) -> None:
        out, _ = self.proc.communicate("go\n", timeout=120)
        assert self.proc.returncode == 0 and out.strip() == "done", out


def ours(events: Iterator[opentrace.OpenEvent] | list[opentrace.OpenEvent], base: Path) -> list[str]:
    """The producers' paths (`base.THREAD.N`), in the order delivered."""
    prefix = f"{base}."
    return [e.path[len(prefix):] for e in events if e.path.startswith(prefix)]


def lockstep_order(rounds: int) -> list[str]:
    return [f"{i}.{n}" for n in range(rounds) for i in (0, 1)]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return tmp_path / "shard"


def test_opens_one_after_the_other_on_two_cpus_come_in_that_order(base: Path) -> None:
    """Each open on one CPU starts after the last one on the other CPU returned: they are
    delivered alternating, not as one ring's records then the other's."""
    rounds = 3000
    producer = Producer("lockstep", base, rounds)
    with opentrace.watch(pid=producer.pid, ring_shards=2) as w:
        assert w.ring_shards == 2
        producer.go()
        delivered = ours(w, base)  # the watcher ends once the producer has exited
        assert w.lost == 0
    assert delivered == lockstep_order(rounds)


def test_each_thread_keeps_its_order_and_nothing_is_lost(base: Path) -> None:
    rounds = 20000
    producer = Producer("free", base, rounds)
    with opentrace.watch(pid=producer.pid, ring_shards=2, ring_size=64 << 20) as w:
        producer.go()
        events = list(w)
        lost, by_shard = w.lost, w.lost_by_shard
    delivered = ours(events, base)
    assert (lost, by_shard) == (0, [0, 0])
    assert len(delivered) == 3 * rounds
    by_thread: dict[str, list[int]] = {}
    for name in delivered:
        thread, n = name.split(".")
        by_thread.setdefault(thread, []).append(int(n))
    assert by_thread == {str(t): list(range(rounds)) for t in range(3)}
    # One thread's events carry one tid, in time order.
    for tid in {e.tid for e in events}:
        stamps = [e.timestamp_ns for e in events if e.tid == tid]
        assert stamps == sorted(stamps)


def test_a_full_shard_loses_alone_and_exactly(base: Path) -> None:
    """Nothing is read while the producer runs: the first CPU's ring (one page) overflows, the
    second's holds its five opens. Lost is counted where it happened, and in all."""
    rounds = 3000
    producer = Producer("overflow", base, rounds)
    with opentrace.watch(pid=producer.pid, ring_shards=2, ring_size=2 * PAGE) as w:
        producer.go()
        delivered = ours(w, base)
        lost, by_shard = w.lost, w.lost_by_shard
    first, second = CPUS[0] % 2, CPUS[1] % 2  # CPU c writes to shard c % ring_shards
    burst = [d for d in delivered if d.startswith("0.")]
    assert [d for d in delivered if d.startswith("1.")] == [f"1.{n}" for n in range(5)]
    assert by_shard[second] == 0
    assert by_shard[first] > 0
    assert len(burst) + by_shard[first] == rounds
    assert lost == sum(by_shard)
    assert burst == sorted(burst, key=lambda d: int(d.split(".")[1]))  # in order, with gaps


def test_poll_and_async_iteration_merge_too(base: Path) -> None:
    rounds = 1000
    producer = Producer("lockstep", base, rounds)
    with opentrace.watch(pid=producer.pid, ring_shards=2) as w:
        producer.go()
        polled: list[opentrace.OpenEvent] = []
        while not w._finished():
            polled += w.poll(1.0)
    assert ours(polled, base) == lockstep_order(rounds)

    producer = Producer("lockstep", base, rounds)

    async def take(w: opentrace.Watcher) -> list[opentrace.OpenEvent]:
        return [e async for e in w]

    with opentrace.watch(pid=producer.pid, ring_shards=2) as w:
        producer.go()
        events = asyncio.run(take(w))
    assert ours(events, base) == lockstep_order(rounds)


def test_batches_are_lists_in_order(base: Path) -> None:
    rounds = 2000
    producer = Producer("lockstep", base, rounds)
    with opentrace.watch(pid=producer.pid, ring_shards=2) as w:
        producer.go()
        batches = list(w.batches())
    assert all(isinstance(b, list) and b for b in batches)
    assert ours([e for b in batches for e in b], base) == lockstep_order(rounds)


def test_the_cli_merges_its_text(base: Path) -> None:
    rounds = 1000
    producer = Producer("lockstep", base, rounds)
    cli = subprocess.Popen(
        [sys.executable, "-m", "opentrace", "-p", str(producer.pid), "--ring-shards", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert cli.stdout is not None
    header = cli.stdout.readline()  # printed once attached
    assert "PATH" in header
    producer.go()
    out, err = cli.communicate(timeout=60)  # it ends when the producer has exited
    assert cli.returncode == 0, err
    prefix = f"{base}."
    paths = [line.split()[-1][len(prefix):] for line in out.splitlines() if prefix in line]
    assert paths == lockstep_order(rounds)


def test_one_shard_per_two_cpus_by_default() -> None:
    cpus = os.cpu_count() or 1
    expected = 1 if cpus <= 2 else min(64, (cpus + 1) // 2)
    with opentrace.watch(pid=os.getpid()) as w:
        assert w.ring_shards == expected
        assert len(w.lost_by_shard) == expected
    # A default never makes a shard smaller than a page.
    with opentrace.watch(pid=os.getpid(), ring_size=PAGE) as w:
        assert w.ring_shards == 1


@pytest.mark.parametrize(
    ("shards", "error", "words"),
    [
        (0, ValueError, "between 1 and 64"),
        (65, ValueError, "between 1 and 64"),
        ("2", TypeError, "must be an int"),
        (True, TypeError, "must be an int"),
        (2.0, TypeError, "must be an int"),
    ],
)
def test_bad_ring_shards(shards: object, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        opentrace.watch(ring_shards=shards)  # type: ignore[arg-type]


def test_ring_shards_that_leave_less_than_a_page_are_refused() -> None:
    with pytest.raises(ValueError, match="less than a page"):
        opentrace.watch(ring_size=PAGE, ring_shards=2)
    out = subprocess.run([sys.executable, "-m", "opentrace", "--ring-size", str(PAGE), "--ring-shards", "2"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "less than a page" in out.stderr
