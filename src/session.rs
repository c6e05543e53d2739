//! `Session`: one loaded-and-attached set of programs and the reader of their ring buffer.
//! The public `opentrace.Watcher` (Python) wraps it; it receives values `watch()` has checked.
use std::{
    collections::VecDeque,
    os::fd::AsRawFd,
    sync::{
        Arc, Mutex, TryLockError,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use aya_log::EbpfLogger;
use opentrace_common::{
    abi::{
        open::Syscall,
        settings::{
            FILTER_CGROUP, FILTER_COMM, FILTER_EXCLUDE_SELF, FILTER_FAILED, FILTER_TID, FILTER_UID,
            IN_PID_NAMESPACE, Settings, WITH_FULL_PATH,
        },
    },
    comm::Needle,
    open,
    tracepoint::{self, Schema},
};
use pyo3::{exceptions::PyRuntimeError, prelude::*, sync::MutexExt, types::PyList};

use crate::{
    cgroup,
    decode::{Decoded, Decoder, Record},
    detach,
    diag::{self, FromKernel},
    error::{Error, OpentraceError},
    event::OpenEvent,
    follow::{self, Tracked},
    loader::{self, Attached, Config, Counters, Follow, KernelLost, Loaded},
    output::Formatter,
    pidns,
    ring::{Wait, Waiter},
    tpevent::TracepointEvent,
    tracefs,
};

/// Records turned into events per drain, bounding the memory a burst can take in Python.
const BATCH: usize = 4096;
/// How often newly lost events are looked for (two syscalls) and reported.
const LOST_CHECK: Duration = Duration::from_secs(1);
/// Watchers with more links than this leave detaching to a process of their own (see `release`).
const DETACH_INLINE: usize = 16;
/// Longest uninterrupted block: a safety net for a signal that lands just before the wait.
const MAX_BLOCK: Duration = Duration::from_secs(1);

/// What a read wants drained records turned into.
enum Want<'f> {
    /// `OpenEvent`s in `Live::ready`.
    Events,
    /// CLI lines in `Live::text`, at most `limit` of them.
    Text { formatter: &'f Formatter, limit: usize },
}

struct Live {
    ring: RingBuf<MapData>,
    logs: EbpfLogger<FromKernel>,
    /// When `lost` was last compared with what was already reported.
    lost_checked: Instant,
    lost_reported: Lost,
    /// Check and report losses at the next housekeeping, whenever the last check was.
    report_now: bool,
    /// The programs and their links; dropping it detaches them.
    _attached: Attached,
    out: Out,
    /// When the last drain that emptied the ring finished; the next drain waits for `latency`
    /// after it so that a busy stream costs one wake-up per batch, not per event.
    drained_at: Option<Instant>,
    /// Records to events.
    decoder: Decoder,
    /// A pid watcher's followed processes; when none is left, the watcher ends.
    tracked: Option<Tracked>,
    /// A followed process exited since the set was last looked at.
    exited: bool,
    unfollowed_reported: u64,
}

/// Drained and not yet handed out: a read that ends in an error (a signal's or a logging
/// handler's exception) leaves what it drained here for the next read.
#[derive(Default)]
struct Out {
    /// `OpenEvent`s or `TracepointEvent`s.
    ready: VecDeque<Py<PyAny>>,
    text: String,
    text_count: usize,
}

impl Out {
    /// Takes one decoded event; returns false once the read wants no more.
    fn take(&mut self, py: Python<'_>, want: &Want<'_>, mut decoded: Decoded<'_>) -> PyResult<bool> {
        match want {
            Want::Events => {
                let cgroup = decoded.cgroup.take();
                let event = Py::new(py, OpenEvent::new(decoded.open(), cgroup))?;
                Ok(self.ready(event.into_any()))
            }
            Want::Text { formatter, limit } => {
                formatter.write(decoded.open(), &mut self.text);
                self.text_count += 1;
                Ok(self.text_count < *limit)
            }
        }
    }

    /// As `take`, for a tracepoint's record.
    fn take_tracepoint(
        &mut self,
        py: Python<'_>,
        want: &Want<'_>,
        event: tracepoint::Event<'_>,
        schema: &Arc<Schema>,
    ) -> PyResult<bool> {
        match want {
            Want::Events => {
                let event = Py::new(py, TracepointEvent::new(event, schema))?;
                Ok(self.ready(event.into_any()))
            }
            Want::Text { formatter, limit } => {
                formatter.write_tracepoint(event, &mut self.text);
                self.text_count += 1;
                Ok(self.text_count < *limit)
            }
        }
    }

    /// Queues an event for the read; true: the read takes more.
    fn ready(&mut self, event: Py<PyAny>) -> bool {
        // An event cannot be part of a reference cycle (it holds no Python object), but pyo3
        // makes every class a GC type: left tracked, each batch of thousands made the collector
        // walk them all, a tenth of a consumer's time in a storm.
        // SAFETY: `event` is a live object we own; untracking an object is always allowed.
        unsafe { pyo3::ffi::PyObject_GC_UnTrack(event.as_ptr().cast()) };
        self.ready.push_back(event);
        true
    }

    /// Whether the read has something to hand back (text reads first take the events an
    /// iteration left behind).
    fn satisfied(&mut self, py: Python<'_>, want: &Want<'_>) -> bool {
        match want {
            Want::Events => !self.ready.is_empty(),
            Want::Text { formatter, limit } => {
                while self.text_count < *limit {
                    let Some(event) = self.ready.pop_front() else { break };
                    let event = event.bind(py);
                    if let Ok(open) = event.cast::<OpenEvent>() {
                        formatter.write(open.get().0.view(), &mut self.text);
                    } else if let Ok(record) = event.cast::<TracepointEvent>() {
                        formatter.write_tracepoint(record.get().view(), &mut self.text);
                    }
                    self.text_count += 1;
                }
                self.text_count > 0
            }
        }
    }
}

#[pyclass(module = "opentrace._opentrace", frozen)]
pub struct Session {
    live: Mutex<Option<Live>>,
    /// Apart from `live`, so that `lost` never waits for a reader blocked in `live`.
    counters: Mutex<Option<Counters>>,
    waiter: Waiter,
    closed: AtomicBool,
    /// A pid watcher whose processes have all exited: what was drained is handed out, nothing
    /// more is read.
    ended: AtomicBool,
    latency: Duration,
    /// Records the decoder refused (logged): counted in `lost`.
    undecodable: AtomicU64,
    /// io_uring open requests whose completion never came to the reader: counted in `lost`.
    uring_unpaired: AtomicU64,
    /// `lost` as of `close()`, when the counters are gone.
    final_lost: AtomicU64,
    /// `close_in_background()`: the teardown leaves detaching to a process of its own.
    hand_over: AtomicBool,
    /// `thread_token()` of the thread holding `live`, else 0.
    holder: AtomicU64,
    /// The process that created the session; a forked child may not read it.
    owner: u32,
    attached: Vec<String>,
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
    /// Runs `f` with `live` locked (waiting for it with the GIL released). Python code can run
    /// while `f` holds the lock (signal handlers, logging handlers): if such code reads from this
    /// session on the same thread it gets an error, not a deadlock; if it calls `close()`, the
    /// teardown happens here, as `f` returns.
    fn with_live<T>(&self, py: Python<'_>, f: impl FnOnce(&mut Option<Live>) -> PyResult<T>) -> PyResult<T> {
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
        // Requests still waiting for their completion will not be reported now: lost.
        self.uring_unpaired.fetch_add(live.decoder.forget_waiting(), Ordering::AcqRel);
        // The count as of now is final: nothing is read from here on.
        let mut counters = self.counters.lock_py_attached(py).unwrap_or_else(|p| p.into_inner());
        if let Some(final_count) = counters.as_ref().map(|c| self.lost_now(c)).transpose()? {
            self.final_lost.store(final_count.total(), Ordering::Release);
        }
        *counters = None;
        drop(counters);
        release(py, live, self.hand_over.load(Ordering::Acquire));
        Ok(())
    }

    fn kernel_error(what: &str, err: std::io::Error) -> PyErr {
        Error::kernel(what, &err).into()
    }

    /// Passes up to `BATCH` records from the ring to the read, until it wants no more. Returns
    /// how many records were read.
    fn drain(&self, py: Python<'_>, live: &mut Live, want: &Want<'_>) -> PyResult<usize> {
        let (mut read, mut more) = (0, true);
        let name_cgroups = match want {
            Want::Text { formatter, .. } => formatter.shows_cgroup(),
            Want::Events => true,
        };
        while more && read < BATCH {
            let Some(record) = live.ring.next() else { break };
            read += 1;
            match live.decoder.decode(&record, name_cgroups) {
                Ok(Record::Open(decoded)) => more = live.out.take(py, want, decoded)?,
                Ok(Record::Tracepoint(event, schema)) => {
                    more = live.out.take_tracepoint(py, want, event, schema)?
                }
                Ok(Record::ProcessExit) => live.exited = true,
                Ok(Record::Kept) => {}
                Err(err) => {
                    self.undecodable.fetch_add(1, Ordering::AcqRel);
                    diag::note(
                        diag::Level::Warning,
                        format!("a ring buffer record could not be decoded ({err}); counted as lost"),
                    );
                }
            }
        }
        self.uring_unpaired.fetch_add(std::mem::take(&mut live.decoder.orphaned), Ordering::AcqRel);
        // Only a drain that emptied the ring starts a pause (see `Live::drained_at`).
        live.drained_at = (more && read < BATCH).then(Instant::now);
        Ok(read)
    }

    /// For a pid watcher whose followed processes have all exited (all their events are in the
    /// ring by then): drains the rest and ends the watcher, as `close()` does. Returns whether it
    /// ended.
    fn followed_all_gone(&self, py: Python<'_>, live: &mut Live, want: &Want<'_>) -> PyResult<bool> {
        if !std::mem::take(&mut live.exited) || !live.tracked.as_ref().is_some_and(follow::none_left) {
            return Ok(false);
        }
        // No pause: everything up to now (a text read with a limit stops at it).
        while self.drain(py, live, want)? > 0 {}
        // The processes are gone: a request still waiting will never complete for us.
        self.uring_unpaired.fetch_add(live.decoder.forget_waiting(), Ordering::AcqRel);
        self.ended.store(true, Ordering::Release);
        self.waiter.wake();
        // The last word on losses and unresolved paths, without waiting for the next check.
        live.report_now = true;
        self.housekeeping(py, live)?;
        Ok(true)
    }

    /// How long the reader still pauses after the last drain that emptied the ring.
    fn pause(&self, live: &Live) -> Duration {
        live.drained_at
            .map_or(Duration::ZERO, |at| (at + self.latency).saturating_duration_since(Instant::now()))
    }

    /// Events that passed the filters but were not delivered: lost in the kernel, io_uring opens
    /// whose result never came, records the decoder refused.
    fn lost_now(&self, counters: &Counters) -> Result<Lost, Error> {
        Ok(Lost {
            kernel: counters.lost()?,
            uring: self.uring_unpaired.load(Ordering::Acquire),
            undecodable: self.undecodable.load(Ordering::Acquire),
        })
    }

    /// Between batches: forwards the programs' log records and, at most once a second, warns of
    /// newly lost events, through the `opentrace` logger. A logging handler may raise: what was
    /// drained stays in `live` for the next read.
    fn housekeeping(&self, py: Python<'_>, live: &mut Live) -> PyResult<()> {
        let unread = std::mem::take(&mut live.decoder.unread_strings);
        if unread > 0 {
            diag::note(
                diag::Level::Info,
                format!(
                    "{unread} string arguments are None: the process's memory holding them could not \
                     be read when the tracepoint fired (not paged in yet, or not a valid pointer)"
                ),
            );
        }
        let cut = std::mem::take(&mut live.decoder.cut_short);
        if cut > 0 {
            diag::note(
                diag::Level::Info,
                format!(
                    "{cut} tracepoint records were longer than the {} bytes copied: their fields past \
                     that are None",
                    opentrace_common::abi::tracepoint::TP_RAW_MAX
                ),
            );
        }
        let unread = std::mem::take(&mut live.decoder.unread_uring_paths);
        if unread > 0 {
            diag::note(
                diag::Level::Warning,
                format!(
                    "{unread} io_uring open events have an empty path: the kernel's copy of it could not \
                     be read"
                ),
            );
        }
        for (code, count) in live.decoder.unresolved.iter_mut().enumerate().filter(|(_, n)| **n > 0) {
            let why = open::unresolved(code as u8).unwrap_or("an unknown reason");
            diag::note(diag::Level::Info, format!("full_path is None for {count} events: {why}"));
            *count = 0;
        }
        // aya-log unwraps its record parsing; a malformed record must not take the reader down.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| live.logs.flush())).is_err() {
            diag::note(diag::Level::Warning, "could not decode a log record from the eBPF programs".into());
        }
        if std::mem::take(&mut live.report_now) || live.lost_checked.elapsed() >= LOST_CHECK {
            live.lost_checked = Instant::now();
            // An exit record lost to a full ring only delays this.
            live.exited |= live.tracked.is_some();
            let counters = self.counters.lock_py_attached(py).unwrap_or_else(|p| p.into_inner());
            if let Some(unfollowed) = counters.as_ref().map(Counters::unfollowed).transpose()?
                && unfollowed > live.unfollowed_reported
            {
                diag::note(
                    diag::Level::Warning,
                    format!(
                        "{} processes started by followed ones could not be followed (more than {} at \
                         once); their opens are not reported",
                        unfollowed - live.unfollowed_reported,
                        opentrace_common::abi::process::TRACKED_MAX
                    ),
                );
                live.unfollowed_reported = unfollowed;
            }
            if let Some(lost) = counters.as_ref().map(|c| self.lost_now(c)).transpose()?
                && lost.total() > live.lost_reported.total()
            {
                diag::note(diag::Level::Warning, lost.since(live.lost_reported));
                live.lost_reported = lost;
            }
        }
        diag::emit(py)
    }

    /// Drains until the read is satisfied, `deadline` passes or the session closes. Waits with
    /// the GIL released; a signal's Python handler runs (and may raise) while waiting.
    fn fill(
        &self,
        py: Python<'_>,
        slot: &mut Option<Live>,
        deadline: Option<Instant>,
        want: &Want<'_>,
    ) -> PyResult<()> {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Ok(());
            }
            let Some(live) = slot.as_mut() else { return Ok(()) };
            if live.out.satisfied(py, want) {
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
            if self.drain(py, live, want)? > 0 {
                self.housekeeping(py, live)?;
                continue;
            }
            if self.followed_all_gone(py, live, want)? {
                return Ok(());
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

/// The schemas of the tracepoints to watch, each with whether it was named (else a glob matched
/// it): one the program cannot use is an error if named, and skipped with a note if matched.
fn schemas(names: Vec<(String, bool)>) -> Result<Vec<(Arc<Schema>, bool)>, Error> {
    let mut schemas = Vec::new();
    let mut skipped = Vec::new();
    for (name, named) in names {
        let (category, event) = tracefs::split_name(&name)?;
        let schema = tracefs::format(category, event)
            .and_then(|format| tracepoint::schema(category, &format).map_err(Error::Other));
        match schema {
            Ok(schema) => schemas.push((Arc::new(schema), named)),
            Err(err) if named => return Err(Error::Invalid(format!("{name} cannot be watched: {err}"))),
            Err(err) => skipped.push(format!("{name} ({err})")),
        }
    }
    if !skipped.is_empty() {
        diag::note(
            diag::Level::Info,
            format!("{} matching tracepoints cannot be watched: {}", skipped.len(), skipped.join("; ")),
        );
    }
    Ok(schemas)
}

/// Events lost, by cause.
#[derive(Clone, Copy, Default)]
struct Lost {
    kernel: KernelLost,
    /// io_uring open requests whose completion never came to the reader.
    uring: u64,
    /// Records the decoder refused.
    undecodable: u64,
}

impl Lost {
    fn total(self) -> u64 {
        self.kernel.total() + self.uring + self.undecodable
    }

    /// The warning for what was lost since `before`: how many, why, and what helps.
    fn since(self, before: Lost) -> String {
        let causes = [
            (
                self.kernel.ring.saturating_sub(before.kernel.ring),
                "ring buffer full",
                "the reader fell behind; a larger ring buffer (ring_size, --ring-size) absorbs longer bursts",
            ),
            (
                self.kernel.unpaired.saturating_sub(before.kernel.unpaired),
                "no room to pair a syscall's entry and exit",
                "the kernel could not allocate the task's storage",
            ),
            (
                self.kernel.skipped.saturating_sub(before.kernel.skipped),
                "program runs skipped",
                "the kernel skips a program's run while another BPF program runs on that CPU",
            ),
            (
                self.uring.saturating_sub(before.uring),
                "io_uring result never came",
                "no completion was traced: IOSQE_CQE_SKIP_SUCCESS, a completion queue overflow, more requests in flight than the kernel's map holds, or still in flight when the watcher ended",
            ),
            (
                self.undecodable.saturating_sub(before.undecodable),
                "records not decoded",
                "see the warnings above",
            ),
        ];
        let causes: Vec<_> = causes.into_iter().filter(|(n, ..)| *n > 0).collect();
        let labels: Vec<String> = match causes.as_slice() {
            [(_, label, _)] => vec![(*label).to_owned()],
            _ => causes.iter().map(|(n, label, _)| format!("{label}: {n}")).collect(),
        };
        let why: Vec<&str> = causes.iter().map(|(.., why)| *why).collect();
        format!(
            "{} events lost ({}; {} in all): {}",
            self.total().saturating_sub(before.total()),
            labels.join(", "),
            self.total(),
            why.join("; ")
        )
    }
}

/// Detaches and frees what the kernel holds for a watcher, with the GIL released. The kernel
/// detaches perf-event tracepoints one at a time, each after an RCU grace period (~40 ms here:
/// 13 s for every syscall tracepoint); for a watcher with many, or with `hand_over` (a process
/// about to exit), a process of its own pays that wait (see `detach`), and this returns at once.
fn release(py: Python<'_>, mut live: Live, hand_over: bool) {
    live.out.ready.clear();
    if (hand_over || live._attached.len() > DETACH_INLINE)
        && let Some(pipe) = detach::hand_over(&detach::process_links())
    {
        py.detach(move || {
            // Our copies go at once: the holding process has its own.
            drop(live);
            // SAFETY: our end of the pipe; closing it lets the holding process go on.
            unsafe { libc::close(pipe) };
        });
        return;
    }
    py.detach(move || drop(live));
}

impl Drop for Session {
    fn drop(&mut self) {
        let live = self.live.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        let Some(live) = live else { return };
        if this_process() != self.owner {
            forget_inherited(live);
            return;
        }
        // SAFETY: pyo3 drops a class's data in its tp_dealloc, with the GIL held.
        let py = unsafe { Python::assume_attached() };
        release(py, live, false);
    }
}

/// In a forked child: lets go of the parent's kernel objects without touching the parent's use
/// of them. With BPF links, closing our copies of the fds does just that; older kernels attach
/// through perf events that aya disables on drop (the parent shares them), so those fds are left
/// for exit or exec (they are close-on-exec) to close.
fn forget_inherited(live: Live) {
    if aya::features().bpf_perf_link() {
        drop(live);
    } else {
        std::mem::forget(live);
    }
}

#[pymethods]
impl Session {
    #[new]
    #[pyo3(signature = (*, syscalls, ring_size, latency_ns, pid=None, descendants=false, tid=None, uid=None, comm=None, failed=false, exclude_tgid=None, full_path=false, cgroup=None, tracepoints=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        syscalls: Vec<String>,
        ring_size: u32,
        latency_ns: u64,
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
    ) -> PyResult<Session> {
        let mut filter = Settings::NONE;
        if full_path {
            filter.enabled |= WITH_FULL_PATH;
        }
        if let Some(path) = cgroup {
            filter.enabled |= FILTER_CGROUP;
            (filter.cgroup_id, filter.cgroup_level) = cgroup::filter(path)?;
        }
        if let Some((dev, ino)) = pidns::own() {
            filter.enabled |= IN_PID_NAMESPACE;
            (filter.pidns_dev, filter.pidns_ino) = (dev, ino);
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
        if let Some(substring) = comm {
            filter.enabled |= FILTER_COMM;
            filter.comm =
                Needle::new(&substring).ok_or_else(|| Error::Invalid("comm cannot be in a comm".into()))?;
        }
        let syscalls = syscalls
            .iter()
            .map(|name| {
                Syscall::from_name(name).ok_or_else(|| Error::Invalid(format!("unknown syscall {name:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let follow = pid.map(|root| Follow { root, descendants });
        let tracepoints = schemas(tracepoints.unwrap_or_default())?;
        let decoder = Decoder::new(failed, tracepoints.iter().map(|(s, _)| Arc::clone(s)));
        let config = Config { settings: filter, syscalls, tracepoints, ring_size, follow };

        let waiter = Waiter::new().map_err(|e| Self::kernel_error("creating the epoll set", e))?;
        let loaded = py.detach(|| loader::load(&config));
        diag::emit(py)?;
        let Loaded { ring, counters, logs, tracked, attached } = loaded?;
        waiter.watch(ring.as_raw_fd()).map_err(|e| Self::kernel_error("watching the ring buffer", e))?;
        Ok(Session {
            attached: attached.names.clone(),
            live: Mutex::new(Some(Live {
                ring,
                logs,
                lost_checked: Instant::now(),
                lost_reported: Lost::default(),
                report_now: false,
                _attached: attached,
                out: Out::default(),
                decoder,
                tracked,
                exited: false,
                unfollowed_reported: 0,
                drained_at: None,
            })),
            counters: Mutex::new(Some(counters)),
            waiter,
            closed: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            latency: Duration::from_nanos(latency_ns),
            undecodable: AtomicU64::new(0),
            uring_unpaired: AtomicU64::new(0),
            final_lost: AtomicU64::new(0),
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
        self.with_live(py, |slot| {
            self.fill(py, slot, None, &Want::Events)?;
            Ok(if self.closed.load(Ordering::Acquire) {
                None
            } else {
                slot.as_mut().and_then(|l| l.out.ready.pop_front())
            })
        })
    }

    /// The next event if one is ready now, without blocking (for event loops). Within the
    /// pause after a drain it does not touch the ring: see `pause_left`.
    fn next_ready(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.with_live(py, |slot| {
            let Some(live) = slot.as_mut().filter(|_| !self.closed.load(Ordering::Acquire)) else {
                return Ok(None);
            };
            if live.out.ready.is_empty()
                && self.pause(live).is_zero()
                && self.drain(py, live, &Want::Events)? > 0
            {
                self.housekeeping(py, live)?;
            }
            Ok(live.out.ready.pop_front())
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
        let deadline = deadline(timeout);
        let list = PyList::empty(py);
        self.with_live(py, |slot| {
            self.fill(py, slot, deadline, &Want::Events)?;
            if let Some(live) = slot.as_mut().filter(|_| !self.closed.load(Ordering::Acquire)) {
                for event in live.out.ready.drain(..) {
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
        let deadline = deadline(timeout);
        let want = Want::Text { formatter, limit: limit.max(1) };
        self.with_live(py, |slot| {
            self.fill(py, slot, deadline, &want)?;
            Ok(slot.as_mut().map_or((String::new(), 0), |live| {
                (std::mem::take(&mut live.out.text), std::mem::take(&mut live.out.text_count))
            }))
        })
    }

    /// Detaches and frees everything; wakes any thread blocked in this session. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.closed.store(true, Ordering::Release);
        self.waiter.wake();
        if self.holder.load(Ordering::Acquire) == thread_token() {
            // Called from a handler inside this thread's own read: that read tears down as it returns.
            return Ok(());
        }
        if this_process() != self.owner {
            return Ok(());
        }
        self.with_live(py, |_| Ok(()))
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
        if let Some(live) = live {
            forget_inherited(live);
        }
        if let Ok(mut counters) = self.counters.try_lock() {
            counters.take();
        }
    }

    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether iteration is over: closed, or a pid watcher whose processes have all exited and
    /// whose events have all been handed out.
    fn finished(&self, py: Python<'_>) -> PyResult<bool> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(true);
        }
        if !self.ended.load(Ordering::Acquire) {
            return Ok(false);
        }
        self.with_live(py, |slot| {
            Ok(slot.as_ref().is_none_or(|l| l.out.ready.is_empty() && l.out.text.is_empty()))
        })
    }

    #[getter]
    fn lost(&self, py: Python<'_>) -> PyResult<u64> {
        let counters = self.counters.lock_py_attached(py).unwrap_or_else(|p| p.into_inner());
        match counters.as_ref() {
            Some(counters) => Ok(self.lost_now(counters)?.total()),
            None => Ok(self.final_lost.load(Ordering::Acquire)),
        }
    }

    /// What is watched: the syscalls whose tracepoints were attached (missing ones are
    /// skipped), or the tracepoints.
    #[getter]
    fn attached(&self) -> Vec<String> {
        self.attached.clone()
    }

    /// An fd that is readable whenever `next_ready()` may have something (for event loops).
    fn fileno(&self) -> i32 {
        self.waiter.fd()
    }
}
