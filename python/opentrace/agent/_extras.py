"""The ``agent`` extra's packages, imported when a sink needs them, with one message when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..exceptions import OpentraceError

INSTALL = "pip install 'opentrace[agent]'"


class MissingExtra(OpentraceError):
    """A package of the ``agent`` extra is not installed."""


def need(module: str, what: str, distribution: str | None = None) -> ModuleType:
    """``import module``, or a ``MissingExtra`` that says what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        name = distribution or module.split(".")[0]
        raise MissingExtra(
            f"{what} needs the Python package {name}, which is not installed ({e.msg}): {INSTALL}"
        ) from None
