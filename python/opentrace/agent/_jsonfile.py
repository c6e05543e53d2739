"""``--json-file PATH``: one JSON object per line (as ``opentrace --json`` writes them), rotated for a
log shipper (Fluent Bit, Vector, Filebeat) to tail.

A file never grows past ``max_size`` bytes (unless one line is longer): the line that would take it
past is the first of a fresh file, after PATH becomes PATH.1, PATH.1 becomes PATH.2, ..., keeping
``max_files`` files in all (PATH.{max_files - 1} is the oldest; with 1, the old lines go). Lines are
never split: a write that fails (a full disk) is cut back to the last whole line.
"""

from __future__ import annotations

import os

from .._opentrace import Formatter, OpenEvent
from ._config import JsonFileConfig
from ._sink import Sink, SinkFailed

__all__ = ["JsonFileSink"]


class JsonFileSink(Sink):
    name = "json_file"

    def __init__(self, config: JsonFileConfig, full_path: bool) -> None:
        super().__init__()
        self._config = config
        self._formatter = Formatter(json=True, full_path=full_path)
        self._fd: int | None = None
        self._size = 0
        config.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()

    def _open(self) -> int:
        fd = os.open(self._config.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._fd, self._size = fd, os.fstat(fd).st_size
        return fd

    def _write(self, events: list[OpenEvent]) -> None:
        data = self._formatter.format(events).encode("utf-8", "surrogateescape")
        limit = self._config.max_size
        if self._size + len(data) <= limit:
            self._put(data, len(events), len(events))
            return
        lines = data.splitlines(keepends=True)
        chunk: list[bytes] = []
        chunk_size = 0
        left = len(lines)
        for line in lines:
            if chunk_size + len(line) > limit - self._size and (self._size or chunk):
                self._put(b"".join(chunk), len(chunk), left)
                left -= len(chunk)
                chunk, chunk_size = [], 0
                try:
                    self._rotate()
                except OSError as e:
                    raise SinkFailed(e, left) from e
            chunk.append(line)
            chunk_size += len(line)
        self._put(b"".join(chunk), len(chunk), left)

    def _put(self, data: bytes, lines: int, left: int) -> None:
        """Appends ``data`` (``lines`` whole lines) or nothing; a failure loses the ``left`` lines
        not yet written."""
        if not data:
            return
        try:
            fd = self._open() if self._fd is None else self._fd
        except OSError as e:
            raise SinkFailed(e, left) from e
        start = self._size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as e:
            try:
                os.ftruncate(fd, start)  # no torn line for the tailer
            except OSError:
                pass
            raise SinkFailed(e, left) from e
        self._size += len(data)
        self.written += lines

    def _rotate(self) -> None:
        path = self._config.path
        keep = self._config.max_files - 1
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if keep == 0:
            os.unlink(path)
        else:
            for i in range(keep - 1, 0, -1):
                if os.path.exists(f"{path}.{i}"):
                    os.rename(f"{path}.{i}", f"{path}.{i + 1}")
            os.rename(path, f"{path}.1")
        self._open()

    def _discard(self) -> int:
        if self._fd is not None:  # opened afresh on the next write (the file may be gone)
            os.close(self._fd)
            self._fd = None
        return 0

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
