"""``async for``: the ring's fd in the running loop, pauses between batches, clean cancellation."""

from __future__ import annotations

import asyncio
import selectors
import threading
from pathlib import Path

import pytest

import opentrace

from .conftest import Child

pytestmark = pytest.mark.root


def reading(fd: int) -> bool:
    """Whether the running loop watches ``fd`` for reading: an ``async for`` waiting for events."""
    loop = asyncio.get_running_loop()
    key = loop._selector.get_map().get(fd)  # type: ignore[attr-defined]  # the default (selector) loop's
    return key is not None and bool(key.events & selectors.EVENT_READ)


async def until_reading(fd: int) -> None:
    """Until an iteration waits on ``fd`` in the running loop (the others run meanwhile)."""
    async def poll() -> None:
        while not reading(fd):
            await asyncio.sleep(0)

    await asyncio.wait_for(poll(), 10)


def test_async_for_sees_a_childs_opens(marker: Path) -> None:
    marker.write_text("")
    n = 20000
    child = Child([["openat", None, str(marker), 0, 0], ["loop", str(marker), n]])

    async def main() -> int:
        count = 0
        with opentrace.watch(pid=child.pid) as w:
            threading.Thread(target=child.go).start()
            async for ev in w:
                assert ev.pid == child.pid and ev.path == str(marker)
                count += 1
                if count == n + 1:
                    assert w.lost == 0
                    break
        return count

    assert asyncio.run(asyncio.wait_for(main(), 30)) == n + 1


def test_cancelling_a_waiting_iteration_leaves_the_watcher_usable(marker: Path) -> None:
    child = Child([["openat", None, str(marker), 0, 0]])

    async def main() -> None:
        with opentrace.watch(pid=child.pid) as w:
            waiting = asyncio.ensure_future(anext(w))
            await until_reading(w.fileno())  # cancelled while it waits on the ring's fd
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert not asyncio.get_running_loop().remove_reader(w.fileno())  # nothing left registered
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(anext(w), 0.2)
            threading.Thread(target=child.go).start()
            ev = await asyncio.wait_for(anext(w), 5)
            assert ev.path == str(marker)

    asyncio.run(main())


def test_close_from_another_thread_ends_async_iteration() -> None:
    async def main() -> bool:
        w = opentrace.watch(comm="no-such-comm")

        async def close_once_waiting() -> None:
            await until_reading(w.fileno())
            threading.Thread(target=w.close).start()

        closer = asyncio.ensure_future(close_once_waiting())
        async for _ in w:
            pytest.fail("no event can match this filter")
        await closer
        return w.closed

    assert asyncio.run(asyncio.wait_for(main(), 30))


def test_async_iteration_after_close_stops_at_once() -> None:
    async def main() -> list[object]:
        w = opentrace.watch()
        w.close()
        return [ev async for ev in w]

    assert asyncio.run(main()) == []
