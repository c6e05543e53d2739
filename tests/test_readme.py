"""The README's examples run, against the real kernel, so that they cannot rot."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import cgroup2_mount, in_cgroup

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)


def test_readme_starts_with_the_two_commands() -> None:
    lines = README.read_text().splitlines()
    assert lines[:5] == ["# opentrace", "", "```", "make run", "make test"]
    makefile = (README.parent / "Makefile").read_text()
    assert re.search(r"^run: ", makefile, re.M) and re.search(r"^test: ", makefile, re.M)


def test_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 4


def _stimulate(stop: threading.Event, container: Path, uring_helper: Path) -> None:
    """Opens that every example waits for: cat (ok and failing, and in a container's cgroup), an
    open through io_uring, and a python that fails one."""
    while not stop.is_set():
        subprocess.run(["cat", "/etc/hostname"], stdout=subprocess.DEVNULL)
        in_cgroup(container, "cat", "/etc/hostname")
        subprocess.run([str(uring_helper), "open:/etc/hostname"], stdout=subprocess.DEVNULL)
        subprocess.run(["cat", "/nonexistent-opentrace-readme"], stderr=subprocess.DEVNULL)
        code = "import os\ntry: os.open('/nonexistent-py', 0)\nexcept OSError: pass"
        subprocess.run([sys.executable, "-S", "-c", code])
        time.sleep(0.1)


@pytest.fixture
def container() -> Iterator[Path]:
    """A cgroup named as docker names a container's."""
    mount = cgroup2_mount()
    assert mount is not None, "no cgroup2 hierarchy mounted"
    top = mount / f"opentrace-readme-{os.getpid()}"
    scope = top / f"docker-{uuid.uuid4().hex * 2}.scope"
    scope.mkdir(parents=True)
    yield scope
    for directory in (scope, top):
        directory.rmdir()


@pytest.mark.root
@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code: str, tmp_path: Path, container: Path, uring_helper: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()
    stimulus = threading.Thread(target=_stimulate, args=(stop, container, uring_helper))
    stimulus.start()
    try:
        out, err = proc.communicate(timeout=8)
        interrupted = False
    except subprocess.TimeoutExpired:
        # The first example watches forever, as it should: end it the way a user would.
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=5)
        interrupted = True
    finally:
        stop.set()
        stimulus.join()
    if interrupted:
        # Only the first example is meant to run until interrupted.
        assert code == BLOCKS[0], f"the example did not finish: {err}"
        assert err.rstrip().endswith("KeyboardInterrupt"), err
    else:
        assert proc.returncode == 0, err
        assert err == ""
    assert out.strip(), "the example printed nothing"
