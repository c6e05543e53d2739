"""The exceptions opentrace raises (the compiled half raises these same classes)."""

from __future__ import annotations

__all__ = ["OpentraceError", "PermissionDenied", "TracepointNotFound"]


class OpentraceError(Exception):
    """Base of every error opentrace raises on its own account."""


class PermissionDenied(OpentraceError, PermissionError):
    """The kernel refused: tracing needs root, or CAP_BPF and CAP_PERFMON."""


class TracepointNotFound(OpentraceError, LookupError):
    """No tracepoint of that name on this kernel."""
