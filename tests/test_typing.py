"""Users' programs type-check under ``mypy --strict`` against the installed package.

Each program is what a user writes; mypy runs on it as a separate process (no root needed: mypy
only reads the code). ``reveal_type`` lines pin the types the annotations promise, and one program
that must be refused proves the check can fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Each program's lines ``reveal_type(x)  # T`` must reveal exactly T.
PROGRAMS = {
    # A bare Watcher, as written before Watcher was generic, means Watcher[OpenEvent].
    "bare_watcher": """
        import opentrace

        w: opentrace.Watcher = opentrace.watch(failed=True)
        reveal_type(w)  # opentrace._watch.Watcher[opentrace._opentrace.OpenEvent]
        for ev in w:
            reveal_type(ev)  # opentrace._opentrace.OpenEvent
            path: str = ev.path
            print(path, ev.pid, ev.errno)
        with opentrace.watch() as again:
            batch: list[opentrace.OpenEvent] = again.poll(0.1)
            print(batch)
    """,
    "bare_watcher_parameter": """
        from opentrace import OpenEvent, Watcher, watch

        def first(w: Watcher) -> OpenEvent:
            return next(iter(w))

        reveal_type(first(watch()))  # opentrace._opentrace.OpenEvent
    """,
    "tracepoints": """
        import opentrace

        t = opentrace.watch_tracepoints("sched:sched_switch")
        reveal_type(t)  # opentrace._watch.Watcher[opentrace._opentrace.TracepointEvent]
        for ev in t:
            reveal_type(ev)  # opentrace._opentrace.TracepointEvent
            print(ev.tracepoint, ev.fields)
        explicit: opentrace.Watcher[opentrace.TracepointEvent] = t
        print(explicit)
    """,
    "run": """
        import opentrace

        r = opentrace.run(["true"])
        reveal_type(r)  # opentrace._command.CommandWatcher
        as_watcher: opentrace.Watcher = r
        for ev in r:
            reveal_type(ev)  # opentrace._opentrace.OpenEvent
            print(ev.path)
        print(as_watcher, r.returncode)
    """,
    "async": """
        import opentrace

        async def paths() -> list[str]:
            found: list[str] = []
            async for ev in opentrace.watch():
                reveal_type(ev)  # opentrace._opentrace.OpenEvent
                found.append(ev.path)
            return found
    """,
}

# Programs mypy must refuse, with the error each must draw.
REFUSED = {
    "no_such_attribute": (
        """
        import opentrace

        w: opentrace.Watcher = opentrace.watch()
        for ev in w:
            print(ev.nosuchattr)
        """,
        '"OpenEvent" has no attribute "nosuchattr"',
    ),
    # The default is OpenEvent only: a tracepoint watcher is not a bare Watcher.
    "tracepoints_as_bare_watcher": (
        """
        import opentrace

        w: opentrace.Watcher = opentrace.watch_tracepoints("sched:sched_switch")
        """,
        'expression has type "Watcher[TracepointEvent]", variable has type "Watcher[OpenEvent]"',
    ),
}


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module's runs (mypy checks that it is current): the stdlib once."""
    return tmp_path_factory.mktemp("mypy-cache")


def _mypy(tmp_path: Path, cache: Path, sources: dict[str, str]) -> subprocess.CompletedProcess[str]:
    files = []
    for name, source in sources.items():
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        files.append(str(path))
    # Not the repository's configuration: a user's own strict run, from outside the checkout.
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--show-error-codes",
         "--config-file", os.devnull, "--cache-dir", str(cache), *files],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )


def _reveals(sources: dict[str, str]) -> list[tuple[str, int, str]]:
    """(file, line, type) for each ``reveal_type(...)  # type`` line of the programs."""
    wanted = []
    for name, source in sources.items():
        for number, line in enumerate(textwrap.dedent(source).splitlines(), 1):
            if "reveal_type(" in line:
                wanted.append((f"{name}.py", number, line.split("#", 1)[1].strip()))
    return wanted


def test_users_programs_pass_strict(tmp_path: Path, mypy_cache: Path) -> None:
    result = _mypy(tmp_path, mypy_cache, PROGRAMS)
    lines = result.stdout.splitlines()
    errors = [line for line in lines if ": error:" in line]
    assert not errors, result.stdout + result.stderr
    notes = [line for line in lines if "Revealed type is" in line]
    expected = [f'{name}:{line}: note: Revealed type is "{kind}"' for name, line, kind in _reveals(PROGRAMS)]
    assert sorted(notes) == sorted(expected), result.stdout + result.stderr
    # reveal_type notes make mypy exit 1; nothing else may be reported.
    assert len(lines) == len(notes), result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_wrong_program_is_refused(tmp_path: Path, mypy_cache: Path, name: str) -> None:
    source, message = REFUSED[name]
    result = _mypy(tmp_path, mypy_cache, {name: source})
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stdout + result.stderr
