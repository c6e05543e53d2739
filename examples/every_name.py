"""Uses every public name of opentrace with types spelled out: `mypy --strict` checks it against the
package's annotations and stubs (part of `make test`). It also runs (as root):

    python examples/every_name.py
"""

from __future__ import annotations

import asyncio
import itertools
import json

import opentrace
from opentrace import (
    CommandWatcher,
    Field,
    OpenEvent,
    OpentraceError,
    PermissionDenied,
    TracepointEvent,
    TracepointFormat,
    TracepointNotFound,
    Watcher,
    run,
    tracepoint_format,
    tracepoints,
    watch,
    watch_tracepoints,
)


def describe(ev: OpenEvent) -> str:
    result = f"fd {ev.fd}" if ev.fd is not None else f"errno {ev.errno}"
    fields: tuple[int, int, int, int, str, str, str, bytes, int, int, int, int] = (
        ev.timestamp_ns, ev.pid, ev.tid, ev.uid, ev.comm, ev.syscall, ev.path, ev.path_bytes,
        ev.dfd, ev.flags, ev.mode, ev.ret,
    )
    return f"{fields[4]}[{fields[1]}] {ev.path!r} -> {result}"


def discover() -> Field:
    names: list[str] = tracepoints("syscalls:sys_enter_open*")
    assert names
    fmt: TracepointFormat = tracepoint_format("syscalls:sys_enter_openat")
    try:
        tracepoint_format("syscalls:no_such_tracepoint")
    except TracepointNotFound as e:
        assert isinstance(e, LookupError)
    return fmt.field("filename")


def sync_part() -> None:
    w: Watcher[OpenEvent]
    with watch(comm="cat", failed=False, syscalls=["openat", "openat2"], ring_size=1 << 20, latency=0.01) as w:
        batch: list[OpenEvent] = w.poll(timeout=0.2)
        for ev in itertools.chain(batch, itertools.islice(w.poll(0.1), 1)):
            print(describe(ev), json.dumps(ev.to_dict()))
        lost: int = w.lost
        print("lost", lost, "fd", w.fileno(), "syscalls", w.syscalls, "closed", w.closed)


async def async_part() -> int:
    with opentrace.watch(comm="no-such-comm") as w:
        try:
            ev = await asyncio.wait_for(anext(w), 0.2)
        except asyncio.TimeoutError:  # TimeoutError itself only from Python 3.11
            return 0
        return ev.pid


def tracepoint_part() -> None:
    with watch_tracepoints("sched:sched_process_exec", "syscalls:sys_enter_unlink*", comm="true") as w:
        with run(["true"]) as command:
            command_watcher: CommandWatcher = command
            print("exit status", command_watcher.wait())
        events: list[TracepointEvent] = w.poll(0.5)
        for ev in events:
            value: int | str | bytes | list[int] | None = ev["pid"] if "pid" in ev else None
            print(ev.tracepoint, ev.cpu, ev.pid, ev.comm, ev.fields, value, json.dumps(ev.to_dict()))
        print("tracepoints", len(w.tracepoints))


def main() -> None:
    try:
        print(discover())
        sync_part()
        tracepoint_part()
        print(asyncio.run(async_part()))
    except PermissionDenied as e:
        print("needs privileges:", e)
    except OpentraceError as e:
        print("failed:", e)


if __name__ == "__main__":
    main()
