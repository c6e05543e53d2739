"""The agent's configuration: a TOML file (``--config``) and flags, one shape for both.

The file's tables are the flags' groups; a flag given on the command line overrides the same
setting in the file::

    [filters]            # watch()'s keywords: comm, uid, pid, failed, syscalls, cgroup, full_path, ...
    [metrics]            # listen = "HOST:PORT" (--metrics), max_containers, container_label, container_idle
    [otlp]               # endpoint = URL (--otlp), headers, timeout, max_queue, batch_size, schedule_delay
    [parquet]            # dir (--parquet), max_file_bytes, max_file_seconds, row_group_rows, compression
    [json_file]          # path (--json-file), max_size (--max-size), max_files (--max-files)
    [agent]              # queue_events: events a sink may have waiting before new ones are dropped

A sink is on when its table names where it goes (``listen``, ``endpoint``, ``dir``, ``path``).
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "AgentConfig",
    "ConfigError",
    "JsonFileConfig",
    "MetricsConfig",
    "OtlpConfig",
    "ParquetConfig",
    "load_config",
    "merge",
    "parse_size",
    "read_toml",
]


class ConfigError(ValueError):
    """A configuration that cannot be run: the message names the setting and what is wrong."""


@dataclass(frozen=True)
class MetricsConfig:
    host: str
    port: int
    # Distinct values of the `container` label; opens of further containers count under "other".
    max_containers: int = 100
    container_label: str = "id"  # "id": the container id ("" outside containers); "cgroup": the cgroup path
    # A container not seen for this long gives its series (and its place under the cap) back; 0: never.
    container_idle: float = 600.0


@dataclass(frozen=True)
class OtlpConfig:
    endpoint: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 10.0  # seconds per export, retries included
    max_queue: int = 20_000  # records waiting for export; past it new ones are dropped (counted)
    batch_size: int = 512
    schedule_delay: float = 1.0  # seconds between exports of a partial batch
    flush_timeout: float = 5.0  # at shutdown, for what is still queued


@dataclass(frozen=True)
class ParquetConfig:
    dir: Path
    max_file_bytes: int = 64 << 20
    max_file_seconds: float = 300.0
    row_group_rows: int = 65_536
    compression: str = "zstd"


@dataclass(frozen=True)
class JsonFileConfig:
    path: Path
    max_size: int = 100 << 20
    max_files: int = 5  # the file and its rotated copies PATH.1 ... PATH.{max_files - 1}


@dataclass(frozen=True)
class AgentConfig:
    filters: dict[str, Any] = field(default_factory=dict)
    metrics: MetricsConfig | None = None
    otlp: OtlpConfig | None = None
    parquet: ParquetConfig | None = None
    json_file: JsonFileConfig | None = None
    queue_events: int = 65_536  # per sink: events waiting for it; past it new ones are dropped (counted)


# --- values -------------------------------------------------------------------------------------

_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: object, where: str) -> int:
    """Bytes: an int, or a str with a K/M/G/T suffix ("64M")."""
    number: object = value
    if isinstance(value, str):
        text = value.strip()
        scale = _UNITS.get(text[-1:].lower(), 1)
        digits = text[:-1] if scale != 1 else text
        try:
            number = int(digits) * scale
        except ValueError:
            raise ConfigError(f"{where} must be a size in bytes such as 1048576 or \"64M\", not {value!r}") from None
    return _count(number, where)


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where} must be a positive integer, not {value!r}")
    if value < 1:
        raise ConfigError(f"{where} must be at least 1, not {value}")
    return value


def _seconds(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{where} must be a number of seconds (0 or more), not {value!r}")
    return float(value)


def _positive_seconds(value: object, where: str) -> float:
    seconds = _seconds(value, where)
    if seconds <= 0:
        raise ConfigError(f"{where} must be more than 0 seconds, not {value!r}")
    return seconds


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string, not {value!r}")
    return value


def _path(value: object, where: str) -> Path:
    return Path(_text(value, where))


def _url(value: object, where: str) -> str:
    text = _text(value, where)
    if not text.startswith(("http://", "https://")):
        raise ConfigError(f"{where} must be an http:// or https:// URL (OTLP/HTTP), such as "
                          f"http://localhost:4318/v1/logs, not {value!r}")
    return text


def _headers(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConfigError(f"{where} must be a table of strings, such as {{ authorization = \"Bearer ...\" }}")
    return dict(value)


def _one_of(*choices: str) -> Callable[[object, str], str]:
    def check(value: object, where: str) -> str:
        if value not in choices:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, choices))}, not {value!r}")
        return str(value)

    return check


def parse_listen(value: object, where: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6, ``:PORT`` for every address; port 0: any free port)."""
    text = _text(value, where)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{where} must be HOST:PORT, such as 127.0.0.1:9477 or :9477, not {value!r}")
    host = host.removeprefix("[").removesuffix("]") or "0.0.0.0"
    return host, int(port)


# --- tables -------------------------------------------------------------------------------------

Check = Callable[[object, str], object]

# Per table: its settings and how each is checked; the first names where the sink goes.
_TABLES: dict[str, dict[str, Check]] = {
    "metrics": {"listen": parse_listen, "max_containers": _count, "container_label": _one_of("id", "cgroup"),
                "container_idle": _seconds},
    "otlp": {"endpoint": _url, "headers": _headers, "timeout": _positive_seconds, "max_queue": _count,
             "batch_size": _count, "schedule_delay": _positive_seconds, "flush_timeout": _seconds},
    "parquet": {"dir": _path, "max_file_bytes": parse_size, "max_file_seconds": _positive_seconds,
                "row_group_rows": _count, "compression": _one_of("zstd", "snappy", "gzip", "lz4", "none")},
    "json_file": {"path": _path, "max_size": parse_size, "max_files": _count},
    "agent": {"queue_events": _count},
}
_FLAGS = {"metrics.listen": "--metrics", "otlp.endpoint": "--otlp", "parquet.dir": "--parquet",
          "json_file.path": "--json-file", "json_file.max_size": "--max-size", "json_file.max_files": "--max-files"}


def _where(table: str, key: str) -> str:
    """How a message names a setting: its table and key, and its flag if it has one."""
    flag = _FLAGS.get(f"{table}.{key}")
    return f"[{table}] {key}" + (f" ({flag})" if flag else "")


def _filters(filters: dict[str, Any]) -> dict[str, Any]:
    """``watch()``'s keywords, checked as ``watch()`` checks them (nothing is loaded yet)."""
    from .._watch import _checked, watch

    signature = inspect.signature(watch)
    for key in filters:
        if key not in signature.parameters:
            raise ConfigError(f"[filters] has no setting {key!r}; the filters are watch()'s keywords: "
                              f"{', '.join(signature.parameters)}")
    if isinstance(filters.get("ring_size"), str):
        filters["ring_size"] = parse_size(filters["ring_size"], "[filters] ring_size")
    bound = signature.bind(**filters)
    bound.apply_defaults()
    try:
        _checked(**bound.arguments)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"filters: {e}") from None
    return filters


def _table(raw: Mapping[str, Any], name: str) -> dict[str, Any]:
    table = raw.get(name, {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{name}] must be a table")
    return dict(table)


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over``'s settings on top of ``base``'s, table by table (flags over the file)."""
    merged = {name: dict(table) if isinstance(table, Mapping) else table for name, table in base.items()}
    for name, table in over.items():
        if isinstance(table, Mapping) and isinstance(merged.get(name), dict):
            merged[name].update(table)
        else:
            merged[name] = dict(table) if isinstance(table, Mapping) else table
    return merged


def load_config(raw: Mapping[str, Any]) -> AgentConfig:
    """An ``AgentConfig`` from the file's shape (tables of settings), every value checked."""
    unknown = set(raw) - {*_TABLES, "filters"}
    if unknown:
        raise ConfigError(f"unknown table {sorted(unknown)[0]!r}; the tables are "
                          f"{', '.join(sorted({*_TABLES, 'filters'}))}")
    filters = _filters(_table(raw, "filters"))
    sinks: dict[str, dict[str, Any]] = {}
    for name, checks in _TABLES.items():
        table = _table(raw, name)
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in checks:
                raise ConfigError(f"[{name}] has no setting {key!r}; it has {', '.join(checks)}")
            values[key] = checks[key](value, _where(name, key))
        sinks[name] = values
    built: dict[str, Any] = {"filters": filters}
    for name, kind in (("metrics", MetricsConfig), ("otlp", OtlpConfig), ("parquet", ParquetConfig),
                       ("json_file", JsonFileConfig)):
        values = sinks[name]
        where = next(iter(_TABLES[name]))
        if where not in values:
            if values:
                given = ", ".join(_where(name, k) for k in values)
                needs = _where(name, where)
                raise ConfigError(f"{given} without {needs}: say where the {name.replace('_', ' ')} output goes")
            continue
        if name == "metrics":
            values["host"], values["port"] = values.pop("listen")
        built[name] = kind(**values)
    config = AgentConfig(**built, **sinks["agent"])
    if not (config.metrics or config.otlp or config.parquet or config.json_file):
        raise ConfigError("nothing to export: give at least one of --metrics HOST:PORT, --otlp URL, "
                          "--parquet DIR, --json-file PATH (or their tables in --config)")
    return config


def read_toml(path: str) -> dict[str, Any]:
    """The file's tables; a ``ConfigError`` saying why it cannot be read."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - the agent extra installs tomli there
        from ._extras import need

        tomllib = need("tomli", "--config on Python 3.10")
    try:
        with open(path, "rb") as f:
            data: dict[str, Any] = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read the config file {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    return data
