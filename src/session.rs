//! `Session`: one loaded-and-attached set of programs and the reader of their ring buffer.
//! The public `opentrace.Watcher` (Python) wraps it.
use std::{
    collections::VecDeque,
    os::fd::AsRawFd,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use aya_log::EbpfLogger;
use opentrace_common::{
    COMM_LEN, FILTER_COMM, FILTER_EXCLUDE_SELF, FILTER_FAILED, FILTER_PID, FILTER_TID, FILTER_UID, Filter,
    Syscall,
};
use pyo3::{exceptions::PyRuntimeError, prelude::*, sync::MutexExt, types::PyList};

use crate::{
    diag::{self, FromKernel},
    error::Error,
    event::OpenEvent,
    format::{Formatter, View},
    loader::{self, Attached, Config, Counters, Loaded},
    ring::{Wait, Waiter},
};

/// Records turned into events per drain, bounding the memory a burst can take in Python.
const BATCH: usize = 4096;
/// How often newly lost events are looked for (two syscalls) and reported.
const LOST_CHECK: Duration = Duration::from_secs(1);
/// Longest uninterrupted block: a safety net for a signal that lands just before the wait.
const MAX_BLOCK: Duration = Duration::from_secs(1);

/// Where drained events go: Python objects for iteration, or CLI text.
trait Sink {
    /// Takes one event; returns false once it wants no more.
    fn take(
        &mut self,
        py: Python<'_>,
        ready: &mut VecDeque<Py<OpenEvent>>,
        view: &View<'_>,
    ) -> PyResult<bool>;
    /// Whether there is something to hand back (may first take events already in `ready`).
    fn satisfied(&mut self, py: Python<'_>, ready: &mut VecDeque<Py<OpenEvent>>) -> PyResult<bool>;
}

/// Fills `ready` with `OpenEvent`s.
struct ToEvents;

impl Sink for ToEvents {
    fn take(
        &mut self,
        py: Python<'_>,
        ready: &mut VecDeque<Py<OpenEvent>>,
        view: &View<'_>,
    ) -> PyResult<bool> {
        let event = Py::new(py, OpenEvent::from_view(view))?;
        // An event cannot be part of a reference cycle (it holds at most a str), but pyo3 makes
        // every class a GC type: left tracked, each batch of thousands made the collector walk
        // them all, a tenth of a consumer's time in a storm.
        // SAFETY: `event` is a live object we own; untracking an object is always allowed.
        unsafe { pyo3::ffi::PyObject_GC_UnTrack(event.as_ptr().cast()) };
        ready.push_back(event);
        Ok(true)
    }

    fn satisfied(&mut self, _py: Python<'_>, ready: &mut VecDeque<Py<OpenEvent>>) -> PyResult<bool> {
        Ok(!ready.is_empty())
    }
}

/// Formats up to `limit` events as CLI lines, without making Python objects.
struct ToText<'f> {
    formatter: &'f Formatter,
    text: String,
    count: usize,
    limit: usize,
}

impl Sink for ToText<'_> {
    fn take(
        &mut self,
        _py: Python<'_>,
        _ready: &mut VecDeque<Py<OpenEvent>>,
        view: &View<'_>,
    ) -> PyResult<bool> {
        self.formatter.write(view, &mut self.text);
        self.count += 1;
        Ok(self.count < self.limit)
    }

    fn satisfied(&mut self, py: Python<'_>, ready: &mut VecDeque<Py<OpenEvent>>) -> PyResult<bool> {
        // Events an iteration left behind come first.
        while self.count < self.limit {
            let Some(event) = ready.pop_front() else { break };
            self.formatter.write(&event.bind(py).get().view(), &mut self.text);
            self.count += 1;
        }
        Ok(self.count > 0)
    }
}

struct Live {
    ring: RingBuf<MapData>,
    logs: EbpfLogger<FromKernel>,
    /// When `lost` was last compared with what was already reported.
    lost_checked: Instant,
    lost_reported: u64,
    /// The programs and their links; dropping it detaches them.
    _attached: Attached,
    ready: VecDeque<Py<OpenEvent>>,
    /// When the last drain that emptied the ring finished; the next drain waits for `latency`
    /// after it so that a busy stream costs one wake-up per batch, not per event.
    drained_at: Option<Instant>,
}

#[pyclass(module = "opentrace._opentrace", frozen)]
pub struct Session {
    live: Mutex<Option<Live>>,
    /// Apart from `live`, so that `lost` never waits for a reader blocked in `live`.
    counters: Mutex<Option<Counters>>,
    waiter: Waiter,
    closed: AtomicBool,
    latency: Duration,
    /// `lost` as of `close()`, when the counters are gone.
    final_lost: AtomicU64,
    /// `thread_token()` of the thread holding `live`, else 0.
    holder: AtomicU64,
    attached: Vec<&'static str>,
}

/// A number unique to the calling thread (never 0).
fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TOKEN: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    TOKEN.with(|t| *t)
}

fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t >= 0.0 => {
            Ok(Some(Instant::now() + Duration::from_secs_f64(t.min(1e9))))
        }
        Some(_) => Err(Error::Invalid("timeout must be None or a number of seconds >= 0".into()).into()),
    }
}

impl Session {
    /// Runs `f` with `live` locked (waiting for it with the GIL released). Python code can run
    /// while `f` holds the lock (signal handlers, logging handlers): if such code reads from this
    /// session on the same thread it gets an error, not a deadlock; if it calls `close()`, the
    /// teardown happens here, as `f` returns.
    fn with_live<T>(&self, py: Python<'_>, f: impl FnOnce(&mut Option<Live>) -> PyResult<T>) -> PyResult<T> {
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
        let torn_down =
            if self.closed.load(Ordering::Acquire) { self.teardown(py, &mut guard) } else { Ok(()) };
        self.holder.store(0, Ordering::Release);
        let value = result?;
        torn_down?;
        Ok(value)
    }

    /// Detaches and frees everything the kernel holds for this session (once).
    fn teardown(&self, py: Python<'_>, slot: &mut Option<Live>) -> PyResult<()> {
        let Some(mut live) = slot.take() else { return Ok(()) };
        live.ready.clear();
        // Detaching waits for the kernel (tens of ms): let other Python threads run meanwhile.
        py.detach(move || drop(live));
        // The programs are gone, so the count is final; `lost` went on reading the counters
        // until now.
        let mut counters = self.counters.lock_py_attached(py).unwrap_or_else(|p| p.into_inner());
        if let Some(final_count) = counters.as_ref().map(Counters::lost).transpose()? {
            self.final_lost.store(final_count, Ordering::Release);
        }
        *counters = None;
        Ok(())
    }

    fn kernel_error(what: &str, err: std::io::Error) -> PyErr {
        Error::kernel(what, &err).into()
    }

    /// Passes up to `BATCH` records from the ring to `sink`, until it wants no more. Returns how
    /// many records were read.
    fn drain(&self, py: Python<'_>, live: &mut Live, sink: &mut dyn Sink) -> PyResult<usize> {
        let (mut read, mut more) = (0, true);
        while more && read < BATCH {
            let Some(record) = live.ring.next() else { break };
            read += 1;
            if let Some(view) = View::parse(&record) {
                more = sink.take(py, &mut live.ready, &view)?;
            }
        }
        // Only a drain that emptied the ring starts a pause (see `Live::drained_at`).
        live.drained_at = (more && read < BATCH).then(Instant::now);
        Ok(read)
    }

    /// How long the reader still pauses after the last drain that emptied the ring.
    fn pause(&self, live: &Live) -> Duration {
        live.drained_at
            .map_or(Duration::ZERO, |at| (at + self.latency).saturating_duration_since(Instant::now()))
    }

    /// Between batches: forwards the programs' log records and, at most once a second, warns of
    /// newly lost events, through the `opentrace` logger.
    fn housekeeping(&self, py: Python<'_>, live: &mut Live) -> PyResult<()> {
        // aya-log unwraps its record parsing; a malformed record must not take the reader down.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| live.logs.flush())).is_err() {
            diag::note(diag::Level::Warning, "could not decode a log record from the eBPF programs".into());
        }
        if live.lost_checked.elapsed() >= LOST_CHECK {
            live.lost_checked = Instant::now();
            let counters = self.counters.lock_py_attached(py).unwrap_or_else(|p| p.into_inner());
            if let Some(lost) = counters.as_ref().map(Counters::lost).transpose()?
                && lost > live.lost_reported
            {
                diag::note(
                    diag::Level::Warning,
                    format!(
                        "{} events lost (ring buffer full; {lost} in all): the reader fell behind; a \
                         larger ring buffer (ring_size, --ring-size) absorbs longer bursts",
                        lost - live.lost_reported
                    ),
                );
                live.lost_reported = lost;
            }
        }
        diag::emit(py)
    }

    /// Feeds `sink` until it has something, `deadline` passes or the session closes. Waits with
    /// the GIL released; a signal's Python handler runs (and may raise) while waiting.
    fn fill(
        &self,
        py: Python<'_>,
        slot: &mut Option<Live>,
        deadline: Option<Instant>,
        sink: &mut dyn Sink,
    ) -> PyResult<()> {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Ok(());
            }
            let Some(live) = slot.as_mut() else { return Ok(()) };
            if sink.satisfied(py, &mut live.ready)? {
                return Ok(());
            }
            let pause = self.pause(live);
            let pause = deadline.map_or(pause, |d| pause.min(d.saturating_duration_since(Instant::now())));
            if !pause.is_zero() {
                let slept = py.detach(|| self.waiter.sleep(pause));
                if let Wait::Interrupted = slept.map_err(|e| Self::kernel_error("waiting", e))? {
                    py.check_signals()?;
                }
                continue;
            }
            if self.drain(py, live, sink)? > 0 {
                self.housekeeping(py, live)?;
                continue;
            }
            let timeout = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(MAX_BLOCK),
                    _ => return Ok(()),
                },
                None => MAX_BLOCK,
            };
            py.check_signals()?;
            let waited = py.detach(|| self.waiter.wait(Some(timeout)));
            match waited.map_err(|e| Self::kernel_error("waiting for events", e))? {
                Wait::Interrupted => py.check_signals()?,
                // A quiet spell: still report losses and the programs' logs.
                Wait::TimedOut => self.housekeeping(py, live)?,
                Wait::Ready => {}
            }
        }
    }
}

#[pymethods]
impl Session {
    #[new]
    #[pyo3(signature = (*, syscalls, ring_size, latency, pid=None, tid=None, uid=None, comm=None, failed=false, exclude_tgid=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        syscalls: Vec<String>,
        ring_size: u32,
        latency: f64,
        pid: Option<u32>,
        tid: Option<u32>,
        uid: Option<u32>,
        comm: Option<Vec<u8>>,
        failed: bool,
        exclude_tgid: Option<u32>,
    ) -> PyResult<Session> {
        let mut filter = Filter::NONE;
        if let Some(pid) = pid {
            filter.enabled |= FILTER_PID;
            filter.pid = pid;
        }
        if let Some(tid) = tid {
            filter.enabled |= FILTER_TID;
            filter.tid = tid;
        }
        if let Some(uid) = uid {
            filter.enabled |= FILTER_UID;
            filter.uid = uid;
        }
        if let Some(tgid) = exclude_tgid {
            filter.enabled |= FILTER_EXCLUDE_SELF;
            filter.self_tgid = tgid;
        }
        if failed {
            filter.enabled |= FILTER_FAILED;
        }
        if let Some(needle) = comm {
            if needle.is_empty() || needle.len() >= COMM_LEN || needle.contains(&0) {
                return Err(Error::Invalid("comm must be 1 to 15 bytes with no NUL".into()).into());
            }
            filter.enabled |= FILTER_COMM;
            filter.comm[..needle.len()].copy_from_slice(&needle);
            filter.comm_mask[..needle.len()].fill(0xff);
        }
        let syscalls = syscalls
            .iter()
            .map(|name| {
                Syscall::from_name(name).ok_or_else(|| Error::Invalid(format!("unknown syscall {name:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !(latency.is_finite() && latency >= 0.0) {
            return Err(Error::Invalid("latency must be a finite number of seconds >= 0".into()).into());
        }
        let config = Config { filter, syscalls, ring_size };

        let waiter = Waiter::new().map_err(|e| Self::kernel_error("creating the epoll set", e))?;
        let loaded = py.detach(|| loader::load(&config));
        diag::emit(py)?;
        let Loaded { ring, counters, logs, attached } = loaded?;
        waiter.watch(ring.as_raw_fd()).map_err(|e| Self::kernel_error("watching the ring buffer", e))?;
        Ok(Session {
            attached: attached.syscalls.iter().map(|s| s.name()).collect(),
            live: Mutex::new(Some(Live {
                ring,
                logs,
                lost_checked: Instant::now(),
                lost_reported: 0,
                _attached: attached,
                ready: VecDeque::new(),
                drained_at: None,
            })),
            counters: Mutex::new(Some(counters)),
            waiter,
            closed: AtomicBool::new(false),
            latency: Duration::from_secs_f64(latency),
            final_lost: AtomicU64::new(0),
            holder: AtomicU64::new(0),
        })
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Blocks (GIL released) until the next event; `None` (StopIteration) once closed.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<OpenEvent>>> {
        self.with_live(py, |slot| {
            self.fill(py, slot, None, &mut ToEvents)?;
            Ok(if self.closed.load(Ordering::Acquire) {
                None
            } else {
                slot.as_mut().and_then(|l| l.ready.pop_front())
            })
        })
    }

    /// The next event if one is ready now, without blocking (for event loops). Within the
    /// pause after a drain it does not touch the ring: see `pause_left`.
    fn next_ready(&self, py: Python<'_>) -> PyResult<Option<Py<OpenEvent>>> {
        self.with_live(py, |slot| {
            let Some(live) = slot.as_mut().filter(|_| !self.closed.load(Ordering::Acquire)) else {
                return Ok(None);
            };
            if live.ready.is_empty() && self.pause(live).is_zero() && self.drain(py, live, &mut ToEvents)? > 0
            {
                self.housekeeping(py, live)?;
            }
            Ok(live.ready.pop_front())
        })
    }

    /// Seconds an event loop should wait before asking `next_ready` again, rather than waiting
    /// for the ring's fd: after a drain the reader pauses (`latency`) so that a busy stream is read
    /// in batches and the kernel does not wake it per event.
    fn pause_left(&self, py: Python<'_>) -> PyResult<f64> {
        self.with_live(py, |slot| Ok(slot.as_ref().map_or(0.0, |live| self.pause(live).as_secs_f64())))
    }

    /// All events ready within `timeout` seconds (None: wait for at least one).
    #[pyo3(signature = (timeout=None))]
    fn poll<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyList>> {
        let deadline = deadline(timeout)?;
        let list = PyList::empty(py);
        self.with_live(py, |slot| {
            self.fill(py, slot, deadline, &mut ToEvents)?;
            if let Some(live) = slot.as_mut().filter(|_| !self.closed.load(Ordering::Acquire)) {
                for event in live.ready.drain(..) {
                    list.append(event)?;
                }
            }
            Ok(())
        })?;
        Ok(list)
    }

    /// Up to `limit` events ready within `timeout` seconds, formatted by `formatter`; returns the
    /// text and how many events it holds (the CLI's fast path: no Python object per event).
    #[pyo3(signature = (formatter, timeout=None, limit=usize::MAX))]
    fn read_text(
        &self,
        py: Python<'_>,
        formatter: &Formatter,
        timeout: Option<f64>,
        limit: usize,
    ) -> PyResult<(String, usize)> {
        let deadline = deadline(timeout)?;
        let mut sink = ToText { formatter, text: String::new(), count: 0, limit: limit.max(1) };
        self.with_live(py, |slot| self.fill(py, slot, deadline, &mut sink))?;
        Ok((sink.text, sink.count))
    }

    /// Detaches and frees everything; wakes any thread blocked in this session. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.closed.store(true, Ordering::Release);
        self.waiter.wake();
        if self.holder.load(Ordering::Acquire) == thread_token() {
            // Called from a handler inside this thread's own read: that read tears down as it returns.
            return Ok(());
        }
        self.with_live(py, |_| Ok(()))
    }

    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    #[getter]
    fn lost(&self, py: Python<'_>) -> PyResult<u64> {
        let counters = self.counters.lock_py_attached(py).unwrap_or_else(|p| p.into_inner());
        match counters.as_ref() {
            Some(counters) => Ok(counters.lost()?),
            None => Ok(self.final_lost.load(Ordering::Acquire)),
        }
    }

    /// The syscalls whose tracepoints were attached (missing ones are skipped).
    #[getter]
    fn attached(&self) -> Vec<&'static str> {
        self.attached.clone()
    }

    /// An fd that is readable whenever `next_ready()` may have something (for event loops).
    fn fileno(&self) -> i32 {
        self.waiter.fd()
    }
}
