"""``opentrace agent``: one long-running process, the programs attached once, feeding what a fleet
already runs: Prometheus metrics, OTLP log records, Parquet files, a rotated JSON-lines file.

The sinks' libraries are the ``agent`` extra (``pip install 'opentrace[agent]'``); each is imported
only when its sink is configured, so that ``import opentrace`` stays small.

    from opentrace.agent import Agent, load_config
    Agent(load_config({"metrics": {"listen": "127.0.0.1:9477"}})).run()
"""

from __future__ import annotations

from ._agent import Agent
from ._config import AgentConfig, ConfigError, load_config, read_toml

__all__ = ["Agent", "AgentConfig", "ConfigError", "load_config", "read_toml"]
