"""opentrace: file-open events from the Linux kernel, streamed into Python.

    import opentrace
    with opentrace.watch() as w:
        for ev in w:
            print(ev.pid, ev.comm, ev.path, ev.fd, ev.errno)
"""

from __future__ import annotations

from ._opentrace import OpenEvent
from ._tracepoints import Field, TracepointFormat, tracepoint_format, tracepoints
from ._watch import Watcher, watch
from .exceptions import OpentraceError, PermissionDenied, TracepointNotFound

__all__ = [
    "Field",
    "OpenEvent",
    "OpentraceError",
    "PermissionDenied",
    "TracepointFormat",
    "TracepointNotFound",
    "Watcher",
    "tracepoint_format",
    "tracepoints",
    "watch",
]
