"""What the bench scripts share: paths, child processes, /proc readings, setup checks, results.

Imported by bench/run.py (with bench/overhead.py), bench/soak.py, bench/latency.py and
bench/peers_check.py; each of those is an entry point and none imports another. (bench/consumer.py,
the library-mode tracer that run.py measures, imports nothing from here: every module it loads
counts in its peak RSS.)

- paths: the output directory bench/out/ (``OUT``), the C workload and its binary;
- processes: ``spawn`` / ``stop`` / ``stop_all`` (every child is tracked and killed on the way
  out), ``Watchdog`` (a measurement's time bound: it kills the process groups), ``LineReader``
  (lines from a pipe with a timeout), ``LineCollector`` (a talkative tool's stdout/stderr lines
  gathered by threads), ``raise_memlock`` (for the peers);
- /proc: ``proc_status_kb`` (VmRSS, VmHWM), ``CpuClock`` (a process's utime+stime),
  ``foreign_tracers`` (other eBPF tracers that would skew a measurement);
- setup: ``check_root``, ``ensure_tracefs``, ``require`` (a missing tool is an error that names
  ``scripts/bootstrap bench``, which installs them: nothing here runs apt-get), ``build_c`` /
  ``build_workload``;
- reporting: ``tool_versions``, ``machine_info``, ``write_json`` (bench/out/<prefix>-<stamp>.json),
  ``rel``, ``rss_trend`` (memory over a soak);
- ``entry``: runs a script's body with SIGINT/SIGTERM, ``BenchError`` and cleanup handled alike.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import hashlib
import json
import os
import platform
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"  # results (JSON) and the built workload; ignored by git
PY = sys.executable
WORKLOAD_SRC = BENCH / "workload.c"
WORKLOAD_COMM = "otbench"  # the binary's name, so the comm the tracers see
WORKLOAD_BIN = OUT / WORKLOAD_COMM
CONSUMER = BENCH / "consumer.py"
TRACEFS = Path("/sys/kernel/tracing")
OPENSNOOP = "/usr/sbin/opensnoop"  # libbpf-tools' (Debian puts the BCC one elsewhere, as opensnoop-bpfcc)
STOP_TIMEOUT = 15.0  # SIGINT to exit; then SIGKILL
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Every external command a bench may run -> the Debian package it comes from. `scripts/bootstrap
# bench` installs them (gcc comes with the default `scripts/bootstrap`); the benches only check.
PACKAGES: dict[str, str] = {
    "bpftrace": "bpftrace",
    OPENSNOOP: "libbpf-tools",
    "strace": "strace",
    "stdbuf": "coreutils",
    "gcc": "gcc",
    "make": "make",
}

# command -> (key in machine_info(), command line whose first output line is its version)
VERSIONS: dict[str, tuple[str, list[str]]] = {
    "bpftrace": ("bpftrace", ["bpftrace", "--version"]),
    OPENSNOOP: ("libbpf-tools", ["dpkg-query", "-W", "-f", "${Version}", "libbpf-tools"]),
    "strace": ("strace", ["strace", "-V"]),
}


class BenchError(Exception):
    """A failure that ends the run with a clear message."""


# ---------------------------------------------------------------------------------------------
# processes: every child is tracked and killed on the way out, whatever happens


_children: list[subprocess.Popen[bytes]] = []


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` (bytes pipes) in a new session and track it for ``stop_all``.

    A new session: a Ctrl-C on the terminal reaches only the script, which stops its children itself.
    """
    try:
        proc: subprocess.Popen[bytes] = subprocess.Popen(argv, start_new_session=True, **kwargs)
    except OSError as e:
        raise BenchError(f"cannot start {argv[0]}: {e}") from e
    _children.append(proc)
    return proc


def end(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, timeout: float = STOP_TIMEOUT) -> bool:
    """Signal ``proc`` and reap it; SIGKILL after ``timeout``. True if it exited by itself.

    Leaves its pipes open (``stop`` closes them): whatever is still in them can be read.
    """
    clean = True
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            clean = False
            proc.kill()
            proc.wait()
    return clean


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, timeout: float = STOP_TIMEOUT) -> bool:
    """``end`` it, close its pipes and forget it. True if it exited by itself."""
    clean = end(proc, sig, timeout)
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
    if proc in _children:
        _children.remove(proc)
    return clean


def stop_all() -> None:
    for proc in list(_children):
        stop(proc, timeout=5.0)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc`` and everything in its process group (``spawn`` gives each child a session,
    so a group, of its own: the processes it forked die with it, and none holds a pipe open)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class Watchdog:
    """A bound on one measurement: once ``seconds`` have passed, the process groups of every
    process given to ``guard`` are killed, so that whatever waits on them (a pipe, a wait) ends at
    once, and ``expired`` is set, so that the caller reports the row as timed out."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = threading.Event()
        self._lock = threading.Lock()
        self._guarded: list[subprocess.Popen[bytes]] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def guard(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        with self._lock:
            self._guarded.append(proc)
            late = self.expired.is_set()
        if late:
            kill_group(proc)
        return proc

    def _expire(self) -> None:
        with self._lock:
            self.expired.set()
            guarded = list(self._guarded)
        for proc in guarded:
            kill_group(proc)

    def cancel(self) -> None:
        self._timer.cancel()


class LineReader:
    """Lines from a child's stdout pipe, with a timeout."""

    def __init__(self, proc: subprocess.Popen[bytes], what: str) -> None:
        assert proc.stdout is not None
        self.proc, self.what, self.fd, self.buf = proc, what, proc.stdout.fileno(), b""

    def readline(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.fd, selectors.EVENT_READ)
            while b"\n" not in self.buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"{self.what}: no output within {timeout:.0f} s")
                if sel.select(left):
                    chunk = os.read(self.fd, 65536)
                    if not chunk:
                        raise BenchError(f"{self.what} exited (status {self.proc.wait()}) before answering")
                    self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()


class LineCollector:
    """A tool started with its stdout and stderr lines gathered by two threads, until ``stop``.

    ``ready``: a predicate on an output line (either stream) that says the tool is attached.
    """

    def __init__(self, argv: list[str], ready: Callable[[bytes], bool], env: Mapping[str, str] | None = None) -> None:
        self.what = argv[0]
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.ready = threading.Event()
        self._ready_line = ready
        self.proc = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump(self, stream: IO[bytes], sink: list[bytes]) -> None:
        for line in stream:
            sink.append(line)
            if not self.ready.is_set() and self._ready_line(line):
                self.ready.set()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.is_set():
            if self.proc.poll() is not None:
                raise BenchError(f"{self.what} exited: {b''.join(self.err).decode(errors='replace')}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.what} did not attach within {timeout} s")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> bool:
        """Signal it, wait for it (SIGKILL after ``timeout``), read the rest of its output."""
        clean = end(self.proc, sig, timeout)
        for thread in self._threads:
            thread.join(10)
        stop(self.proc)
        return clean


@contextlib.contextmanager
def workspace(prefix: str = "otbench-") -> Iterator[Path]:
    """A temporary directory, removed after every child was stopped (none may still write into it)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        stop_all()
        shutil.rmtree(path, ignore_errors=True)


IDLE_CGROUP = "/opentrace-bench-idle"  # an empty cgroup v2, for filters that exclude everything
# The workload's cgroup for a system-wide tracer whose counts are told apart by cgroup (the agent's
# `container` label): `Tracer.workload_cgroup`.
WORKLOAD_CGROUP = "/opentrace-bench-workload"


def cgroup2_mount() -> Path:
    """Where the cgroup v2 hierarchy is mounted."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, rest = line.partition(" - ")
        if rest.split()[:1] == ["cgroup2"] and fields.split()[3] == "/":
            return Path(fields.split()[4])
    raise BenchError("no cgroup2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup)")


@contextlib.contextmanager
def bench_cgroups() -> Iterator[None]:
    """IDLE_CGROUP and WORKLOAD_CGROUP under the cgroup2 mount (made, then removed)."""
    directories = [cgroup2_mount() / name.lstrip("/") for name in (IDLE_CGROUP, WORKLOAD_CGROUP)]
    for directory in directories:
        directory.mkdir(exist_ok=True)
    try:
        yield
    finally:
        for directory in directories:
            with contextlib.suppress(OSError):
                directory.rmdir()


def move_to_cgroup(pid: int, cgroup: str) -> None:
    """Moves process ``pid`` (all its threads) into ``cgroup`` (a path under the cgroup2 mount)."""
    (cgroup2_mount() / cgroup.lstrip("/") / "cgroup.procs").write_text(f"{pid}\n")


# ---------------------------------------------------------------------------------------------
# /proc readings


def proc_status_kb(pid: int, key: str) -> int | None:
    """A kB line of /proc/<pid>/status ("VmRSS", "VmHWM": peak RSS); None if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class CpuClock:
    """utime+stime of one process (all its threads), read from a kept-open /proc/<pid>/stat."""

    def __init__(self, pid: int) -> None:
        self.fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)

    def seconds(self) -> float | None:
        try:
            raw = os.pread(self.fd, 4096, 0).decode()
        except OSError:
            return None
        fields = raw.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)

    def close(self) -> None:
        os.close(self.fd)


def foreign_tracers() -> list[str]:
    """Other processes with eBPF programs attached through perf events (bpftrace, opensnoop, opentrace...).

    They would run on the workload's syscalls too and skew every mode, "untraced" included.
    """
    ours = {os.getpid()} | {p.pid for p in _children}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in ours:
            continue
        kinds = set()
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    kinds.add(os.readlink(f"/proc/{entry}/fd/{fd}"))
        if "anon_inode:bpf-prog" in kinds and "anon_inode:[perf_event]" in kinds:
            comm = ""
            with contextlib.suppress(OSError):
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
            found.append(f"{entry} {comm}")
    return found


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
SYS_BPF = 321 if platform.machine() == "x86_64" else 280
BPF_PROG_GET_NEXT_ID = 11


def bpf_program_ids() -> set[int]:
    """Ids of every BPF program loaded in the kernel (BPF_PROG_GET_NEXT_ID)."""
    ids: set[int] = set()
    attr = (ctypes.c_uint32 * 4)()
    while _libc.syscall(SYS_BPF, BPF_PROG_GET_NEXT_ID, ctypes.byref(attr), ctypes.sizeof(attr)) == 0:
        ids.add(attr[1])
        attr[0] = attr[1]
    return ids


def wait_programs_gone(before: set[int], timeout: float = 60.0) -> set[int]:
    """Until the programs loaded since ``before`` are gone: a tracer that has exited may have
    left detaching to a process of its own (opentrace does), and the kernel's grace periods
    meanwhile would land in the next measurement. The ones still there after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := bpf_program_ids() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def warn_foreign_tracers(consequence: str) -> None:
    others = foreign_tracers()
    if others:
        print(f"warning: other eBPF tracers are running ({', '.join(others)}){consequence}",
              file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# setup


def check_root(script: str) -> None:
    if os.geteuid() != 0:
        raise BenchError(f"must run as root (loads eBPF programs): sudo .venv/bin/python bench/{script}")


def ensure_tracefs() -> None:
    if (TRACEFS / "events").is_dir():
        return
    r = subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True, text=True)
    if not (TRACEFS / "events").is_dir():
        raise BenchError(f"tracefs is not mounted at {TRACEFS} and mounting it failed: {r.stderr.strip()}")


def have(command: str) -> bool:
    """``command`` is an executable path, or found on PATH."""
    if "/" in command:
        return os.access(command, os.X_OK)
    return shutil.which(command) is not None


def require(commands: Iterable[str]) -> None:
    """Every command exists, else a ``BenchError`` saying how to install them. Never installs."""
    missing = sorted({c for c in commands if not have(c)})
    if missing:
        packages = sorted({PACKAGES.get(c, "?") for c in missing})
        raise BenchError(f"missing {', '.join(missing)} (Debian: {' '.join(packages)}); install the benchmarks' "
                         "tools with `sudo scripts/bootstrap bench` (`make bench` and `make soak` run it)")


def build_c(source: Path, name: str, flags: Iterable[str] = ()) -> Path:
    """gcc -O2 -pthread -Wall ``source`` into bench/out/``name``, only when the source, the headers
    beside it or the flags changed."""
    OUT.mkdir(exist_ok=True)
    binary = OUT / name
    cflags = ["-O2", "-pthread", "-Wall", *flags]
    headers = b"".join(h.read_bytes() for h in sorted(source.parent.glob("*.h")))  # what it may include
    digest = hashlib.sha256(source.read_bytes() + headers + "\0".join(["", *cflags]).encode()).hexdigest()
    stamp = OUT / f"{name}.sha256"
    if binary.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return binary
    require(["gcc"])
    tmp = OUT / f"{name}.tmp"
    # Libraries after the source, or the linker drops them before it knows they are needed.
    libs = [f for f in cflags if f.startswith("-l")]
    cflags = [f for f in cflags if f not in libs]
    r = subprocess.run(["gcc", *cflags, "-o", str(tmp), str(source), *libs], capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"compiling {rel(source)} failed:\n{r.stderr}")
    tmp.replace(binary)
    stamp.write_text(digest + "\n")
    return binary


def build_workload() -> Path:
    """bench/workload.c into bench/out/otbench (the open storm of run.py, soak.py and latency.py)."""
    return build_c(WORKLOAD_SRC, WORKLOAD_COMM)


# ---------------------------------------------------------------------------------------------
# reporting


def first_line(argv: list[str]) -> str:
    """The first line ``argv`` prints (stdout, else stderr), or "unknown (...)"."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    text = (r.stdout or r.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def tool_versions(commands: Iterable[str]) -> dict[str, str]:
    """{"bpftrace": "bpftrace v0.17.0", "libbpf-tools": "0.26.0+ds-1", ...} for those of ``commands`` with one."""
    versions: dict[str, str] = {}
    for command in commands:
        if command in VERSIONS:
            key, argv = VERSIONS[command]
            if key not in versions:
                versions[key] = first_line(argv)
    return dict(sorted(versions.items()))


def machine_info(commands: Iterable[str] = ()) -> dict[str, Any]:
    """Kernel, CPUs, Python, opentrace and gcc versions, and those of ``commands`` (the peers)."""
    from importlib import metadata

    cpu_model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    try:
        ot_version = metadata.version("opentrace")
    except metadata.PackageNotFoundError:
        ot_version = "unknown"
    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "opentrace": ot_version,
        "gcc": first_line(["gcc", "--version"]),
        "memlock": raise_memlock(),
        **tool_versions(commands),
    }


def rel(path: Path) -> str:
    """``path`` relative to the repository, if it is in it."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def rss_trend(samples: list[dict[str, Any]], warmup: float) -> dict[str, Any]:
    """RSS (``rss_mib`` of samples taken ``t`` seconds in) once warm, at the end, and its slope."""
    after = [s for s in samples if s["t"] >= warmup and s["rss_mib"] is not None]
    out: dict[str, Any] = {"warmup_s": warmup, "samples_after_warmup": len(after),
                           "rss_warmup_mib": None, "rss_end_mib": None, "growth_mib": None, "slope_mib_per_min": None}
    if after:
        out["rss_warmup_mib"], out["rss_end_mib"] = after[0]["rss_mib"], after[-1]["rss_mib"]
        out["growth_mib"] = round(after[-1]["rss_mib"] - after[0]["rss_mib"], 3)
    if len(after) >= 2:
        fit = statistics.linear_regression([s["t"] for s in after], [s["rss_mib"] for s in after])
        out["slope_mib_per_min"] = round(fit.slope * 60, 4)
    return out


def write_json(prefix: str, data: Mapping[str, Any]) -> Path:
    """``data`` as bench/out/<prefix>-<YYYYmmdd-HHMMSS>.json (indented); returns the path."""
    OUT.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = OUT / f"{prefix}-{stamp}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# entry point


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def raise_memlock() -> str:
    """RLIMIT_MEMLOCK lifted for this process and every tool it starts, which inherit it: unlimited
    where allowed (CAP_SYS_RESOURCE), else the soft limit up to the hard one. bpftrace and
    libbpf-tools ask for it themselves; on kernels before 5.11 BPF maps count against it, and a
    tool that cannot get it fails to load (a failure on its row, see bench/overhead.py); from 5.11
    they are charged to the memory cgroup instead, and bpftrace's "couldn't set RLIMIT_MEMLOCK" is
    only a warning. Returns the limit now, in words."""
    import resource

    limit = resource.RLIMIT_MEMLOCK
    _, hard = resource.getrlimit(limit)
    for wanted in ((resource.RLIM_INFINITY, resource.RLIM_INFINITY), (hard, hard)):
        try:
            resource.setrlimit(limit, wanted)
            break
        except (ValueError, OSError):
            continue
    soft, hard = resource.getrlimit(limit)
    if soft == resource.RLIM_INFINITY:
        return "unlimited"
    return f"{soft >> 10} KiB (raising it was refused: no CAP_SYS_RESOURCE)"


def entry(prog: str, body: Callable[[], int]) -> int:
    """Run a script's ``body``: a ``BenchError`` is one line on stderr (status 1), Ctrl-C or SIGTERM
    status 130, and every child still running is stopped on the way out. The tools it starts get
    the highest RLIMIT_MEMLOCK allowed (see ``raise_memlock``)."""
    # SIGINT handled here (even if the shell started us with it ignored, which children would inherit);
    # SIGTERM too, so that every path out goes through the cleanup below.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    raise_memlock()
    try:
        return body()
    except BenchError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    finally:
        stop_all()
