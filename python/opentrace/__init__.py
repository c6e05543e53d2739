"""opentrace: file-open events from the Linux kernel, streamed into Python.

    import opentrace
    with opentrace.watch() as w:
        for ev in w:
            print(ev.pid, ev.comm, ev.path, ev.fd, ev.errno)
"""

from __future__ import annotations

from ._command import CommandWatcher, run
from ._opentrace import OpenEvent, TracepointEvent
from ._opentrace import __version__ as __version__
from ._watch import Watcher, watch
from .exceptions import OpentraceError, PermissionDenied, TracepointNotFound

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms)
if TYPE_CHECKING:
    from typing import Any

    from ._counts import CountWatcher, OpenCount, watch_counts
    from ._tracepoints import Field, TracepointFormat, tracepoint_format, tracepoints, watch_tracepoints

# Loaded on first use: most programs only watch, and dataclasses costs a start-up's worth of imports.
_LAZY = {"Field", "TracepointFormat", "tracepoint_format", "tracepoints", "watch_tracepoints"}
_LAZY_COUNTS = {"CountWatcher", "OpenCount", "watch_counts"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import _tracepoints

        return getattr(_tracepoints, name)
    if name in _LAZY_COUNTS:
        from . import _counts

        return getattr(_counts, name)
    raise AttributeError(f"module 'opentrace' has no attribute {name!r}")

__all__ = [
    "CommandWatcher",
    "CountWatcher",
    "Field",
    "OpenCount",
    "OpenEvent",
    "OpentraceError",
    "PermissionDenied",
    "TracepointEvent",
    "TracepointFormat",
    "TracepointNotFound",
    "Watcher",
    "__version__",
    "run",
    "tracepoint_format",
    "tracepoints",
    "watch",
    "watch_counts",
    "watch_tracepoints",
]
