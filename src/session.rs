//! `Session`: one loaded-and-attached set of programs, as the public `opentrace.Watcher` (Python)
//! wraps it. A thin `#[pyclass]`: the arguments become a `config::Config`, the reading is
//! `reader::Reader`'s, the loss accounting `lost::Ledger`'s; what is here is who may read when
//! (one thread at a time, never a forked child, `close()` from anywhere) and the teardown.
use std::{
    sync::{
        Arc, Mutex, TryLockError,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use pyo3::{
    exceptions::PyRuntimeError,
    prelude::*,
    sync::MutexExt,
    types::{PyList, PyTuple},
};

use crate::{
    cgroup,
    config::Options,
    counting::{self, Counting},
    decode::Decoder,
    diag,
    error::{Error, OpentraceError},
    event::{self, OpenEvent},
    loader::{self, Loaded},
    lost::Ledger,
    output::Formatter,
    paths::PathFilter,
    pidns,
    reader::{Reader, Shared, Want},
    ring::Waiter,
    tracefs,
};

#[pyclass(module = "opentrace._opentrace", frozen)]
pub struct Session {
    live: Mutex<Option<Reader>>,
    shared: Shared,
    /// `close_in_background()`: the teardown leaves detaching to a process of its own.
    hand_over: AtomicBool,
    /// `thread_token()` of the thread holding `live`, else 0.
    holder: AtomicU64,
    /// The process that created the session; a forked child may not read it.
    owner: u32,
    attached: Vec<String>,
    /// How many ring buffers the CPUs write to.
    ring_shards: usize,
    /// Counting mode: the kernel's counts (apart from `live`: reading them never waits for a
    /// reader blocked there).
    counting: Mutex<Option<Counting>>,
}

/// A number unique to the calling thread (never 0).
fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TOKEN: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    TOKEN.with(|t| *t)
}

/// This process's id, without a system call each time: every read asks (a watcher belongs to
/// the process that made it), and while syscall tracepoints are enabled every system call of
/// every process is slower (a getpid per event doubled the Python loop's cost). A forked child
/// forgets it (`pthread_atfork`); if the handler cannot be registered, the kernel is asked each
/// time.
fn this_process() -> u32 {
    static PID: AtomicU32 = AtomicU32::new(0);
    static CACHED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    extern "C" fn forget() {
        PID.store(0, Ordering::Relaxed);
    }
    // SAFETY: registers a child handler that only stores to an atomic (async-signal-safe).
    let cached = *CACHED.get_or_init(|| unsafe { libc::pthread_atfork(None, None, Some(forget)) } == 0);
    match PID.load(Ordering::Relaxed) {
        pid if pid != 0 && cached => pid,
        _ => {
            let pid = std::process::id();
            if cached {
                PID.store(pid, Ordering::Relaxed);
            }
            pid
        }
    }
}

/// The instant `timeout` seconds from now (`watch()` checked it: None, or a number >= 0).
fn deadline(timeout: Option<f64>) -> Option<Instant> {
    let seconds = timeout?;
    Duration::try_from_secs_f64(seconds.min(1e9)).ok().map(|d| Instant::now() + d).or(Some(Instant::now()))
}

impl Session {
    /// Moves the events the reader has ready into `list` (none once the watcher is closed).
    fn hand_ready(&self, slot: &mut Option<Reader>, list: &Bound<'_, PyList>) -> PyResult<()> {
        if let Some(live) = slot.as_mut().filter(|_| !self.is_closed()) {
            for event in live.out.ready.drain(..) {
                list.append(event)?;
            }
        }
        Ok(())
    }

    fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Runs `f` with `live` locked (waiting for it with the GIL released). Python code can run
    /// while `f` holds the lock (signal handlers, logging handlers): if such code reads from this
    /// session on the same thread it gets an error, not a deadlock; if it calls `close()`, the
    /// teardown happens here, as `f` returns.
    fn with_live<T>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Option<Reader>) -> PyResult<T>,
    ) -> PyResult<T> {
        if this_process() != self.owner {
            return Err(OpentraceError::new_err(format!(
                "this watcher belongs to process {}, which this process was forked from; a forked \
                 child cannot read it (its events go to the parent): open a new watcher in the child",
                self.owner
            )));
        }
        let me = thread_token();
        if self.holder.load(Ordering::Acquire) == me {
            return Err(PyRuntimeError::new_err(
                "this watcher is already being read by this thread (a signal or logging handler \
                 running inside that read can close() it, but not read from it)",
            ));
        }
        // A panic while holding the lock cannot leave the state half-written in a way that matters.
        let mut guard = self.live.lock_py_attached(py).unwrap_or_else(|poisoned| poisoned.into_inner());
        self.holder.store(me, Ordering::Release);
        let result = f(&mut guard);
        let torn_down = if self.is_closed() { self.teardown(py, &mut guard) } else { Ok(()) };
        self.holder.store(0, Ordering::Release);
        let value = result?;
        torn_down?;
        Ok(value)
    }

    /// The iterator's fast path, most of its calls in a busy stream: an event a drain left,
    /// taken without `with_live`'s bookkeeping when the lock is free at once (no Python code
    /// runs while it is held here, so no handler can need to know who holds it).
    fn next_drained(&self) -> Option<Py<PyAny>> {
        if self.is_closed() || this_process() != self.owner {
            return None;
        }
        let mut guard = self.live.try_lock().ok()?;
        guard.as_mut()?.out.ready.pop_front()
    }

    /// Detaches and frees everything the kernel holds for this session (once).
    fn teardown(&self, py: Python<'_>, slot: &mut Option<Reader>) -> PyResult<()> {
        let Some(mut reader) = slot.take() else { return Ok(()) };
        reader.forget_waiting(&self.shared);
        let closed = self.shared.ledger.close(py);
        self.counting.lock_py_attached(py).unwrap_or_else(|p| p.into_inner()).take();
        reader.release(py, self.hand_over.load(Ordering::Acquire));
        Ok(closed?)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let live = self.live.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        let Some(reader) = live else { return };
        if this_process() != self.owner {
            reader.forget_inherited();
            return;
        }
        // SAFETY: pyo3 drops a class's data in its tp_dealloc, with the GIL held.
        let py = unsafe { Python::assume_attached() };
        reader.release(py, false);
    }
}

#[pymethods]
impl Session {
    #[new]
    #[pyo3(signature = (*, syscalls, ring_size, latency_ns, ring_shards=None, pid=None, descendants=false, tid=None, uid=None, comm=None, failed=false, exclude_tgid=None, full_path=false, cgroup=None, tracepoints=None, fail_every=None, counts=None, file_id=true, paths=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        syscalls: Vec<String>,
        ring_size: u32,
        latency_ns: u64,
        ring_shards: Option<u32>,
        pid: Option<u32>,
        descendants: bool,
        tid: Option<u32>,
        uid: Option<u32>,
        comm: Option<Vec<u8>>,
        failed: bool,
        exclude_tgid: Option<u32>,
        full_path: bool,
        cgroup: Option<&str>,
        tracepoints: Option<Vec<(String, bool)>>,
        fail_every: Option<u32>,
        counts: Option<(u32, u32)>,
        file_id: bool,
        paths: Option<Vec<Vec<u8>>>,
    ) -> PyResult<Session> {
        let paths = match paths {
            Some(entries) => {
                let cwd = std::env::current_dir()
                    .map_err(|e| Error::Other(format!("the current directory, for relative paths: {e}")))?;
                Some(PathFilter::new(&entries, &cwd)?)
            }
            None => None,
        };
        let options = Options {
            syscalls,
            ring_size,
            ring_shards,
            latency_ns,
            pid,
            descendants,
            tid,
            uid,
            comm,
            failed,
            exclude_tgid,
            full_path,
            cgroup: cgroup.map(cgroup::filter).transpose()?,
            pid_namespace: pidns::own(),
            fail_every,
            counts,
            file_id,
            paths: paths.clone(),
        };
        let tracepoints = tracefs::schemas(tracepoints.unwrap_or_default())?;
        let schemas = tracepoints.iter().map(|(s, _)| Arc::clone(s)).collect::<Vec<_>>();
        let config = options.config(tracepoints)?;
        let mut decoder = Decoder::new(failed, schemas).with_paths(paths, config.sends_full_paths());

        let waiter = Waiter::new().map_err(|e| Error::kernel("creating the epoll set", &e))?;
        let loaded = py.detach(|| loader::load(&config));
        diag::emit(py)?;
        let Loaded { rings, counters, logs, tracked, mut attached } = loaded?;
        if config.counts_unnamed {
            // Named once a second, by id: a cgroup there now and gone by then is still named.
            py.detach(|| decoder.learn_existing_cgroups());
        }
        let counting = match counts {
            Some((by, max_keys)) => Some(Counting::new(
                attached
                    .take_map("COUNTS")
                    .ok_or_else(|| Error::Other("the counts map is missing".into()))?,
                by,
                max_keys as usize,
            )?),
            None => None,
        };
        let ring_shards = rings.len();
        let names = attached.names.clone();
        let reader = Reader::new(rings, logs, attached, decoder, tracked)
            .map_err(|e| Error::kernel("reading the ring buffers", &e))?;
        for fd in reader.fds() {
            waiter.watch(fd).map_err(|e| Error::kernel("watching the ring buffer", &e))?;
        }
        Ok(Session {
            attached: names,
            ring_shards,
            counting: Mutex::new(counting),
            live: Mutex::new(Some(reader)),
            shared: Shared {
                waiter,
                closed: AtomicBool::new(false),
                ended: AtomicBool::new(false),
                latency: options.latency(),
                ledger: Ledger::new(counters),
            },
            hand_over: AtomicBool::new(false),
            holder: AtomicU64::new(0),
            owner: this_process(),
        })
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Blocks (GIL released) until the next event; `None` (StopIteration) once closed.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        if let Some(event) = self.next_drained() {
            return Ok(Some(event));
        }
        self.with_live(py, |slot| {
            if let Some(reader) = slot.as_mut() {
                reader.fill(py, &self.shared, None, &Want::Events)?;
            }
            Ok(if self.is_closed() { None } else { slot.as_mut().and_then(|l| l.out.ready.pop_front()) })
        })
    }

    /// The next event if one is ready now, without blocking (for event loops). Within the
    /// pause after a drain it does not touch the ring: see `pause_left`.
    fn next_ready(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.with_live(py, |slot| match slot.as_mut().filter(|_| !self.is_closed()) {
            Some(reader) => reader.next_ready(py, &self.shared),
            None => Ok(None),
        })
    }

    /// Seconds an event loop should wait before asking `next_ready` again, rather than waiting
    /// for the ring's fd: after a drain the reader pauses (`latency`) so that a busy stream is read
    /// in batches and the kernel does not wake it per event; and while the merge of sharded
    /// rings holds events back, which wait for another pass, not for the next record.
    fn pause_left(&self, py: Python<'_>) -> PyResult<f64> {
        self.with_live(py, |slot| {
            Ok(slot.as_ref().map_or(0.0, |r| r.wait_before_next(&self.shared).as_secs_f64()))
        })
    }

    /// All events ready within `timeout` seconds (None: wait for at least one), appended to
    /// `into` when given (see `read_text`), which is returned.
    #[pyo3(signature = (timeout=None, into=None))]
    fn poll<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
        into: Option<Bound<'py, PyList>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let deadline = deadline(timeout);
        let list = into.unwrap_or_else(|| PyList::empty(py));
        self.with_live(py, |slot| {
            if let Some(reader) = slot.as_mut() {
                reader.fill(py, &self.shared, deadline, &Want::Events)?;
            }
            self.hand_ready(slot, &list)
        })?;
        Ok(list)
    }

    /// Counting mode: every event the ring holds now (at most `limit`), appended to `into`,
    /// without the pause a read takes after a drain (see `Reader::drain_now`).
    fn poll_now(&self, py: Python<'_>, limit: usize, into: Bound<'_, PyList>) -> PyResult<()> {
        self.with_live(py, |slot| {
            if let Some(reader) = slot.as_mut() {
                reader.drain_now(py, &self.shared, limit)?;
            }
            self.hand_ready(slot, &into)
        })
    }

    /// Up to `limit` events ready within `timeout` seconds, formatted by `formatter`; returns the
    /// text and how many events it holds (the CLI's fast path: no Python object per event).
    ///
    /// With `into`, the pair is also appended to that list before this returns. A signal whose
    /// handler raises (Ctrl-C's KeyboardInterrupt) as this call returns makes the interpreter drop
    /// the return value, and with it events already taken from the ring; the caller's list keeps
    /// them.
    #[pyo3(signature = (formatter, timeout=None, limit=usize::MAX, into=None))]
    fn read_text<'py>(
        &self,
        py: Python<'py>,
        formatter: &Formatter,
        timeout: Option<f64>,
        limit: usize,
        into: Option<Bound<'py, PyList>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let deadline = deadline(timeout);
        let want = Want::Text { formatter, limit: limit.max(1) };
        let read = self
            .with_live(py, |slot| {
                if let Some(reader) = slot.as_mut() {
                    reader.fill(py, &self.shared, deadline, &want)?;
                }
                Ok(slot.as_mut().map_or((String::new(), 0), |live| {
                    (std::mem::take(&mut live.out.text), std::mem::take(&mut live.out.text_count))
                }))
            })?
            .into_pyobject(py)?;
        if let Some(list) = into {
            list.append(&read)?;
        }
        Ok(read)
    }

    /// Up to `limit` open events ready within `timeout` seconds, as the Arrow columns' buffers
    /// of the fields `names` (see `open_columns`): (how many events, the columns). No Python
    /// object per event: the Parquet writers' fast path. `into` as for `read_text`.
    #[pyo3(signature = (names, timeout=None, limit=usize::MAX, into=None))]
    fn read_columns<'py>(
        &self,
        py: Python<'py>,
        names: Vec<String>,
        timeout: Option<f64>,
        limit: usize,
        into: Option<Bound<'py, PyList>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let fields = event::fields_named(&names)?;
        let deadline = deadline(timeout);
        let want = Want::Owned { limit: limit.max(1) };
        let owned = self.with_live(py, |slot| {
            if let Some(reader) = slot.as_mut() {
                reader.fill(py, &self.shared, deadline, &want)?;
            }
            Ok(slot.as_mut().map_or_else(Vec::new, |live| std::mem::take(&mut live.out.owned)))
        })?;
        let views: Vec<_> = owned.iter().map(opentrace_common::open::OwnedOpen::view).collect();
        let read = (owned.len(), event::raw_columns(py, &views, &fields)?).into_pyobject(py)?;
        if let Some(list) = into {
            list.append(&read)?;
        }
        Ok(read)
    }

    /// Detaches and frees everything; wakes any thread blocked in this session. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.waiter.wake();
        if self.holder.load(Ordering::Acquire) == thread_token() {
            // Called from a handler inside this thread's own read: that read tears down as it returns.
            return Ok(());
        }
        if this_process() != self.owner {
            return Ok(());
        }
        self.with_live(py, |_| Ok(()))
    }

    /// The reading is about to end (Ctrl-C, a duration): nothing drained is held back for records
    /// still to come any more (sharded rings' merge), so that reads until one finds nothing hand
    /// out everything the rings hold now.
    fn end_reading(&self, py: Python<'_>) -> PyResult<()> {
        self.with_live(py, |slot| {
            if let Some(reader) = slot.as_mut() {
                reader.end_reading();
            }
            Ok(())
        })
    }

    /// As `close()`, for a process about to exit (the CLI, the interpreter's exit): the kernel
    /// waits for an RCU grace period whenever a watcher was the last to use a tracepoint (~40 ms
    /// each, one tracepoint after the other: a third of a second for a pid watcher). A process of
    /// its own holding copies of the links pays that wait, so that this one can end at once (it
    /// holds nothing else of ours). As `close()` if no such process can be made.
    fn close_in_background(&self, py: Python<'_>) -> PyResult<()> {
        self.hand_over.store(true, Ordering::Release);
        self.close(py)
    }

    /// Called in a forked child (os.register_at_fork): lets go of the parent's kernel objects,
    /// leaving the parent's stream as it was. Reads in the child then raise.
    fn forget_after_fork(&self) {
        // The lock may be held by a thread that does not exist in the child: then the objects
        // stay (closed at exit or exec) rather than risk a deadlock.
        let live = match self.live.try_lock() {
            Ok(mut guard) => guard.take(),
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner().take(),
            Err(TryLockError::WouldBlock) => None,
        };
        if let Some(reader) = live {
            reader.forget_inherited();
        }
        self.shared.ledger.forget();
    }

    #[getter]
    fn closed(&self) -> bool {
        self.is_closed()
    }

    /// Whether iteration is over: closed, or a pid watcher whose processes have all exited and
    /// whose events have all been handed out.
    fn finished(&self, py: Python<'_>) -> PyResult<bool> {
        if self.is_closed() {
            return Ok(true);
        }
        if !self.shared.ended.load(Ordering::Acquire) {
            return Ok(false);
        }
        self.with_live(py, |slot| {
            Ok(slot.as_ref().is_none_or(|l| l.out.ready.is_empty() && l.out.text.is_empty() && !l.holding()))
        })
    }

    #[getter]
    fn lost(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.shared.ledger.total(py)?)
    }

    /// Events lost because a shard's ring was full, by shard (part of `lost`).
    #[getter]
    fn lost_by_shard(&self, py: Python<'_>) -> PyResult<Vec<u64>> {
        Ok(self.shared.ledger.by_shard(py)?)
    }

    #[getter]
    fn ring_shards(&self) -> usize {
        self.ring_shards
    }

    /// What is watched: the syscalls whose tracepoints were attached (missing ones are
    /// skipped), or the tracepoints.
    #[getter]
    fn attached(&self) -> Vec<String> {
        self.attached.clone()
    }

    /// An fd that is readable whenever `next_ready()` may have something (for event loops).
    fn fileno(&self) -> i32 {
        self.shared.waiter.fd()
    }

    /// Counting mode: the key `event` is counted under (its bytes), and whether the kernel
    /// counted it (else the caller counts it: an io_uring open).
    fn count_key(&self, py: Python<'_>, event: PyRef<'_, OpenEvent>) -> PyResult<(Vec<u8>, bool)> {
        let counting = self.counting.lock_py_attached(py).unwrap_or_else(|p| p.into_inner());
        let counting = counting.as_ref().ok_or_else(|| PyRuntimeError::new_err("not a counting watcher"))?;
        let (key, counted) = counting.key_of(event.0.view());
        Ok((counting::key_bytes(&key), counted))
    }

    /// The path of cgroup `id` under the cgroup2 mount, as an event from it would name it (None
    /// if it is gone and no event or the kernel named it before): for counts by cgroup, which no
    /// event names when the kernel counts at the exit alone.
    fn cgroup_path(&self, py: Python<'_>, id: u64) -> PyResult<Option<Vec<u8>>> {
        self.with_live(py, |slot| {
            Ok(slot.as_mut().and_then(|reader| reader.cgroup_path(id)).map(|p| p.to_vec()))
        })
    }

    /// Counting mode: the opens the kernel counted under each key and not yet handed out (see
    /// `counts_told`), as (key bytes, opens); keys with none left out.
    fn counts(&self, py: Python<'_>) -> PyResult<Vec<(Vec<u8>, u64)>> {
        let mut counting = self.counting.lock_py_attached(py).unwrap_or_else(|p| p.into_inner());
        let counting = counting.as_mut().ok_or_else(|| PyRuntimeError::new_err("not a counting watcher"))?;
        let rows = py.detach(|| counting.interval());
        diag::emit(py)?;
        let rows = rows?;
        Ok(rows.into_iter().map(|(key, opens)| (counting::key_bytes(&key), opens)).collect())
    }

    /// The counts the last `counts()` gave are handed out: until this is said, each `counts()`
    /// gives them again, with what was counted since (a read interrupted after it took the
    /// kernel's counters loses none).
    fn counts_told(&self, py: Python<'_>) -> PyResult<()> {
        let mut counting = self.counting.lock_py_attached(py).unwrap_or_else(|p| p.into_inner());
        counting.as_mut().ok_or_else(|| PyRuntimeError::new_err("not a counting watcher"))?.told();
        Ok(())
    }
}
