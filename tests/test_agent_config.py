"""``opentrace agent``'s configuration (flags, TOML file) and the ``agent`` extra: a bad setting is
bad usage (exit 2, one line naming it), a missing extra is a runtime error saying what to install,
and ``import opentrace`` never loads the extra's packages. None of this needs root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from opentrace.agent import ConfigError, load_config
from opentrace.agent._config import merge, parse_size
from opentrace.cli import main


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "nothing to export"),
        (["--max-size", "1M", "--metrics", ":0"], "[json_file] max_size (--max-size) without [json_file] path"),
        (["--json-file", "x", "--max-size", "lots"], "--max-size) must be a size in bytes"),
        (["--metrics", "nowhere"], "(--metrics) must be HOST:PORT"),
        (["--otlp", "collector:4318"], "must be an http:// or https:// URL"),
        (["--config", "/nonexistent/agent.toml"], "cannot read the config file /nonexistent/agent.toml"),
        (["--metrics", ":0", "--max-files", "0"], "argument --max-files: must be between 1"),
        (["--metrics", ":0", "-n", "x" * 16], "comm must be 1 to 15 bytes"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["agent", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[metrics\n", "is not valid TOML"),
        ("[metrics]\nlisten = ':0'\n[sinks]\n", "unknown table 'sinks'"),
        ("[parquet]\ndir = '/x'\nmax_bytes = 1\n", "[parquet] has no setting 'max_bytes'"),
        ("[filters]\nname = 'nginx'\n[metrics]\nlisten = ':0'\n", "[filters] has no setting 'name'"),
        ("[filters]\nuid = 'root'\n[metrics]\nlisten = ':0'\n", "filters: uid must be an int"),
        ("[metrics]\nlisten = ':0'\ncontainer_label = 'pod'\n", "container_label must be one of 'id', 'cgroup'"),
        ("[otlp]\nendpoint = 'http://c:4318/v1/logs'\nheaders = { a = 1 }\n", "[otlp] headers must be a table"),
    ],
)
def test_a_bad_config_file_exits_2_naming_the_setting(text: str, says: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(text)
    with pytest.raises(SystemExit) as info:
        main(["agent", "--config", str(config)])
    assert info.value.code == 2
    assert says in capsys.readouterr().err


def test_flags_override_the_file_and_the_file_fills_in() -> None:
    file = {"filters": {"comm": "nginx", "failed": True, "ring_size": "8M"},
            "metrics": {"listen": "0.0.0.0:9477", "max_containers": 7},
            "json_file": {"path": "/var/log/a.json", "max_files": 2}}
    flags = {"filters": {"comm": "python"}, "metrics": {"listen": "127.0.0.1:0"}, "json_file": {"max_size": "1K"}}
    config = load_config(merge(file, flags))
    assert config.filters == {"comm": "python", "failed": True, "ring_size": 8 << 20}
    assert config.metrics is not None and (config.metrics.host, config.metrics.port) == ("127.0.0.1", 0)
    assert config.metrics.max_containers == 7
    assert config.json_file is not None and (config.json_file.max_size, config.json_file.max_files) == (1024, 2)
    assert config.parquet is None and config.otlp is None


def test_sizes() -> None:
    assert [parse_size(v, "x") for v in (1, "1", "4K", "64M", "2g")] == [1, 1, 4096, 64 << 20, 2 << 30]
    for bad in (0, -1, "", "M", "1.5M", True, 2.0):
        with pytest.raises(ConfigError):
            parse_size(bad, "x")


# A Python whose imports of the agent extra's packages fail, as where it is not installed.
WITHOUT_EXTRA = """
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"pyarrow", "prometheus_client", "opentelemetry", "tomli"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Missing())
from opentrace.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    ("argv", "package"),
    [(["--metrics", "127.0.0.1:0"], "prometheus-client"), (["--parquet", "{tmp}"], "pyarrow"),
     (["--otlp", "http://127.0.0.1:9/v1/logs"], "opentelemetry-sdk"), (["-o", "{tmp}/t.parquet"], "pyarrow")],
)
def test_without_the_extra_the_error_says_what_to_install(argv: list[str], package: str, tmp_path: Path) -> None:
    command = ["agent", *argv] if argv[0] != "-o" else argv
    command = [a.replace("{tmp}", str(tmp_path)) for a in command]
    done = subprocess.run([sys.executable, "-c", WITHOUT_EXTRA, *command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.splitlines()
    assert package in line and "pip install 'opentrace[agent]'" in line


def test_importing_opentrace_loads_none_of_the_extra() -> None:
    code = ("import sys, opentrace, opentrace.cli, opentrace.agent\n"
            "heavy = {'pyarrow', 'prometheus_client', 'opentelemetry', 'duckdb'}\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "[]"
