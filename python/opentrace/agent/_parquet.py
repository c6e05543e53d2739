"""Events as Parquet files (pyarrow), for DuckDB, pandas, Spark, ClickHouse.

The columns are ``OpenEvent.to_dict()``'s keys, in its order, typed; ``path`` and ``full_path``
are binary (the bytes exactly as the kernel saw them), each followed by a UTF-8 view
(``path_str``, ``full_path_str``); in these and the text columns (``comm``, ``cgroup``, ...) bytes that
are not UTF-8 are replaced by U+FFFD. Each file's key-value
metadata carries what turns ``timestamp_ns`` (CLOCK_MONOTONIC) into wall-clock time.

A file is written under a hidden temporary name (``.NAME.tmp``, locked while written) and renamed
into place once complete, so a ``*.parquet`` file is never torn: a SIGTERM closes the file
first, and a killed writer leaves only its hidden temporary file, which the next agent removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import threading
import time
from collections import deque
from pathlib import Path
from types import ModuleType
from typing import Any

from .._opentrace import OpenEvent, __version__, open_columns
from ._config import ParquetConfig
from ._extras import need
from ._sink import Sink, SinkFailed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .._opentrace import _RawColumn

__all__ = ["Columns", "ParquetFile", "ParquetOutput", "ParquetSink"]

# Arrow types of the fields known today; a field added to OpenEvent later is a string column
# (or int64/bool/binary, after its value in a default event).
_TYPES = {
    "timestamp_ns": "int64", "pid": "int32", "tid": "int32", "uid": "uint32", "comm": "string",
    "syscall": "string", "path": "binary", "dfd": "int32", "flags": "uint64", "mode": "uint64",
    "ret": "int64", "fd": "int32", "errno": "int32", "inode": "uint64", "dev": "uint64", "mnt_id": "uint32",
    "ppid": "int32", "ns_pid": "int32", "cgroup_id": "uint64", "cgroup": "string", "container_id": "string",
    "full_path": "binary",
}
_BY_VALUE = {bool: "bool_", int: "int64", bytes: "binary", str: "string"}
# Binary columns, each followed by its UTF-8 view ("path_str"; to_dict() has the paths as str).
_BYTES = {"path", "full_path"}


def _pyarrow(what: str) -> tuple[ModuleType, ModuleType]:
    return need("pyarrow", what), need("pyarrow.parquet", what, "pyarrow")


class Columns:
    """``OpenEvent``'s fields as Arrow columns: the schema, and a batch of events as a table (its
    buffers built in the compiled half, ``open_columns``: no Python object per value)."""

    def __init__(self, what: str) -> None:
        self._pa, _ = _pyarrow(what)
        pa = self._pa
        fields = []
        self._columns: list[tuple[Any, bool]] = []  # (Arrow type, followed by a UTF-8 view)
        self._names: list[str] = []
        for key, value in OpenEvent().to_dict().items():
            kind = getattr(pa, _TYPES.get(key) or _BY_VALUE.get(type(value), "string"))()
            fields.append(pa.field(key, kind))
            view = key in _BYTES
            if view:
                fields.append(pa.field(f"{key}_str", pa.string()))
            self._columns.append((kind, view))
            self._names.append(key)
        self.schema = pa.schema(fields)
        self._raw = {"int": pa.int64(), "uint": pa.uint64(), "bytes": pa.binary()}

    @property
    def names(self) -> list[str]:
        """The fields, in the columns' order (what ``open_columns`` is asked for)."""
        return self._names

    def table(self, events: list[OpenEvent]) -> Any:
        return self.table_of(len(events), open_columns(events, self._names))

    def table_of(self, rows: int, raws: list[_RawColumn]) -> Any:
        """The table of ``rows`` events whose fields ``names`` are the buffers ``raws``."""
        pa = self._pa
        arrays = []
        for (kind, view), (raw, validity, data, offsets) in zip(self._columns, raws, strict=True):
            if raw == "null":
                array = pa.nulls(rows, kind)
            else:
                buffers = [None if validity is None else pa.py_buffer(validity)]
                if offsets is not None:
                    buffers.append(pa.py_buffer(offsets))
                buffers.append(pa.py_buffer(data))
                array = pa.Array.from_buffers(self._raw[raw], rows, buffers)
                if raw == "bytes" and kind == pa.string():
                    array = self._text(array)
                elif array.type != kind:
                    array = array.cast(kind)  # checked: a value that does not fit is an error
            arrays.append(array)
            if view:
                arrays.append(self._text(array))
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def _text(self, array: Any) -> Any:
        """The UTF-8 view of a binary column (Arrow checks it; bytes that are not UTF-8 are
        decoded with replacement characters)."""
        pa = self._pa
        try:
            return array.cast(pa.string())
        except pa.ArrowInvalid:
            return pa.array([None if v is None else v.decode("utf-8", "replace") for v in array.to_pylist()],
                            pa.string())


class _Waiting:
    """Rows waiting for their row group: tables, taken from the front ``rows`` at a time."""

    def __init__(self, pa: ModuleType) -> None:
        self._pa = pa
        self._tables: list[Any] = []
        self.rows = 0

    def add(self, table: Any) -> None:
        if table.num_rows:
            self._tables.append(table)
            self.rows += table.num_rows

    def first(self, rows: int | None = None) -> Any:
        """The first ``rows`` (all by default) as one table; they stay until ``drop``."""
        if len(self._tables) != 1:  # concatenated once: ``drop`` slices the same table
            self._tables = [self._pa.concat_tables(self._tables)]
        waiting = self._tables[0]
        return waiting if rows is None else waiting.slice(0, rows)

    def drop(self, rows: int) -> None:
        """Forgets the first ``rows``."""
        rest = self.first().slice(rows)
        self._tables, self.rows = ([rest] if rest.num_rows else []), rest.num_rows

    def clear(self) -> None:
        self._tables, self.rows = [], 0


def _metadata() -> dict[str, str]:
    """What a reader needs to place the events in time and on a machine."""
    meta = {
        "opentrace.version": __version__,
        "opentrace.hostname": socket.gethostname(),
        # timestamp_ns + this = nanoseconds since the epoch (as the clocks were when the file began)
        "opentrace.realtime_minus_monotonic_ns": str(time.time_ns() - time.monotonic_ns()),
    }
    with contextlib.suppress(OSError):
        meta["opentrace.boot_id"] = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return meta


class ParquetFile:
    """One Parquet file, written under ``.NAME.tmp`` (flock-ed while written) and renamed to
    ``NAME`` when complete."""

    def __init__(self, path: Path, columns: Columns, compression: str) -> None:
        _, pq = _pyarrow("writing Parquet")
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.rows = 0
        self._done = False
        self._lock = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            schema = columns.schema.with_metadata(_metadata())
            self._writer = pq.ParquetWriter(str(self.tmp), schema, compression=compression)
        except BaseException:
            self._unlock(remove=True)
            raise

    def write(self, table: Any) -> None:
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        self.rows += table.num_rows

    @property
    def size(self) -> int:
        return os.fstat(self._lock).st_size

    def commit(self) -> None:
        """Completes the file and puts it in place (durably: synced before the rename)."""
        try:
            self._writer.close()
            os.fsync(self._lock)
            os.rename(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._unlock(remove=False)

    def abort(self) -> None:
        """Gives the file up: the temporary file goes (once; after ``commit()``, nothing)."""
        if self._done:
            return
        with contextlib.suppress(Exception):
            self._writer.close()
        self._unlock(remove=True)

    def _unlock(self, remove: bool) -> None:
        self._done = True
        if remove:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
        with contextlib.suppress(OSError):
            os.close(self._lock)


_STALE = re.compile(r"^\.opentrace-.*\.parquet\.tmp$")


def remove_stale(directory: Path) -> int:
    """Removes the temporary files of writers that are gone (killed mid-file): those no one holds
    locked. Returns how many."""
    removed = 0
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if not _STALE.match(entry.name):
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass  # a live writer holds it
            finally:
                os.close(fd)
    return removed


class ParquetSink(Sink):
    """``--parquet DIR``: files of row groups of ``row_group_rows`` events, rolled once a file
    reaches ``max_file_bytes`` (checked after each row group) or ``max_file_seconds`` after its
    first event. ``written`` counts the events in complete files; a failure loses the file being
    written and what was waiting for it (counted), and the next events start a new file."""

    name = "parquet"

    def __init__(self, config: ParquetConfig) -> None:
        super().__init__()
        self._config = config
        self._columns = Columns("--parquet")
        config.dir.mkdir(parents=True, exist_ok=True)
        stale = remove_stale(config.dir)
        if stale:
            import logging

            logging.getLogger("opentrace").info("parquet: removed %d incomplete files of a writer that was killed",
                                                stale)
        self._pending = _Waiting(self._columns._pa)
        self._file: ParquetFile | None = None
        self._began: float | None = None  # when the current file's first event came
        self._prefix = f"opentrace-{re.sub(r'[^A-Za-z0-9_.-]', '_', socket.gethostname())}"
        self._seq = 0
        self.files = 0

    def _write(self, events: list[OpenEvent] | Any) -> None:
        """``events``: a list of them, or already a table (``Columns.table_of``: the agent reads
        the ring as columns when this is its only output besides metrics)."""
        if not len(events):
            return
        if self._began is None:
            self._began = time.monotonic()
        try:
            self._pending.add(self._columns.table(events) if isinstance(events, list) else events)
            while self._pending.rows >= self._config.row_group_rows:
                self._flush(self._config.row_group_rows)
        except Exception as e:
            raise SinkFailed(e, 0) from e  # the events are among those _discard() counts

    def _tick(self, now: float) -> None:
        if self._began is not None and now - self._began >= self._config.max_file_seconds:
            self._flush()
            self._commit()

    def _close(self) -> None:
        self._flush()
        self._commit()

    def _discard(self) -> int:
        lost = self._pending.rows + (self._file.rows if self._file else 0)
        self._pending.clear()
        if self._file is not None:
            self._file.abort()
            self._file = None
        self._began = None
        return lost

    def _flush(self, rows: int | None = None) -> None:
        """The first ``rows`` waiting events (all by default) as a row group, kept waiting until
        written (a failure counts them lost); the file is completed once it is big enough."""
        if not self._pending.rows:
            return
        table = self._pending.first(rows)
        if self._file is None:
            self._seq += 1
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            name = f"{self._prefix}-{stamp}-{os.getpid()}-{self._seq:06d}.parquet"
            self._file = ParquetFile(self._config.dir / name, self._columns, self._config.compression)
        self._file.write(table)
        self._pending.drop(table.num_rows)
        if self._file.size >= self._config.max_file_bytes:
            self._commit()

    def _commit(self) -> None:
        if self._file is None:
            self._began = None
            return
        file = self._file
        file.commit()  # a failure leaves it here, its rows for _discard() to count
        self._file = None
        self.written += file.rows
        self.files += 1
        self._began = None


class _Encoder:
    """Row groups encoded into a file by a thread of their own (pyarrow releases the GIL while it
    encodes), at most ``depth`` waiting: the reader goes on reading the ring meanwhile. The first
    error stops it and is raised by the next ``put`` or by ``finish``."""

    def __init__(self, file: ParquetFile, depth: int = 2) -> None:
        self._file = file
        self._depth = depth
        self._groups: deque[Any] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="opentrace-parquet", daemon=True)
        self._thread.start()

    def put(self, group: Any) -> None:
        """Queues ``group``, once there is room (a signal's exception while waiting leaves it
        not queued)."""
        with self._cond:
            while len(self._groups) >= self._depth and self._error is None:
                self._cond.wait()
            self._raise()
            self._groups.append(group)
            self._cond.notify_all()

    def finish(self) -> None:
        """Waits until every queued group is written."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        self._raise()

    def stop(self) -> None:
        """Gives up what is queued (the file is being abandoned)."""
        with self._cond:
            self._groups.clear()
            self._closing = True
            self._cond.notify_all()
        self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._groups and not self._closing:
                    self._cond.wait()
                if not self._groups:
                    return
                group = self._groups[0]
            try:
                self._file.write(group)
            except BaseException as e:  # raised in the reader's thread (put, finish)
                with self._cond:
                    self._error = e
                    self._groups.clear()
                    self._cond.notify_all()
                return
            with self._cond:
                if self._groups:
                    self._groups.popleft()
                self._cond.notify_all()


class ParquetOutput:
    """The CLI's ``-o FILE.parquet``: one file, complete (renamed into place) at ``close()``. Its
    row groups are encoded by a thread of their own (``_Encoder``) while the CLI reads on."""

    def __init__(self, path: str, row_group_rows: int = 65_536) -> None:
        self._columns = Columns("-o FILE.parquet")
        self._file = ParquetFile(Path(path), self._columns, "zstd")
        self._encoder = _Encoder(self._file)
        self._pending = _Waiting(self._columns._pa)
        self._rows = row_group_rows

    @property
    def names(self) -> list[str]:
        """The fields ``write_columns`` takes, in this order."""
        return self._columns.names

    def write(self, events: list[OpenEvent]) -> None:
        self._add(self._columns.table(events))

    def write_columns(self, rows: int, raws: list[_RawColumn]) -> None:
        """``rows`` events as the buffers of the fields ``names`` (``Watcher._read_columns``)."""
        self._add(self._columns.table_of(rows, raws))

    def _add(self, table: Any) -> None:
        self._pending.add(table)
        while self._pending.rows >= self._rows:
            self._flush(self._rows)

    def _flush(self, rows: int | None = None) -> None:
        """The first ``rows`` waiting events (all by default) as a row group, handed to the
        encoder (they stay waiting until it takes them)."""
        if not self._pending.rows:
            return
        group = self._pending.first(rows)
        self._encoder.put(group)
        self._pending.drop(group.num_rows)

    def close(self) -> None:
        """Writes the rest and puts the file in place (with no events: a file with the schema)."""
        try:
            self._flush()
            self._encoder.finish()
        except BaseException:
            self.abort()
            raise
        self._file.commit()

    def abort(self) -> None:
        self._encoder.stop()
        self._file.abort()
