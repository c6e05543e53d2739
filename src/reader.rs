//! Reading a watcher's ring buffers: waiting for records (GIL released), draining them in
//! batches (several shards merged in time order by `merge`), turning them into events or CLI
//! text, and the housekeeping between batches (the programs' logs, losses, the end of a pid
//! watcher).
use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aya_log::EbpfLogger;
use opentrace_common::open::OwnedOpen;
use pyo3::prelude::*;

use crate::{
    attach::Attached,
    decode::{Completed, Decoder, Record, completes},
    detach,
    diag::{self, FromKernel},
    error::Error,
    event::OpenEvent,
    follow::{self, Tracked},
    lost::{Ledger, Reporter},
    merge::{Held, Merge},
    output::Formatter,
    ring::{Wait, Waiter},
    ringbuf::{Next, Ring},
    tpevent::TracepointEvent,
};

/// A ring read as it comes frees the room of the records it read every this many.
const FREE_EVERY: usize = 64;
/// Records passed per drain, bounding the memory a burst can take in Python.
const BATCH: usize = 4096;
/// Records turned into events per drain. The events of a drain are made first and handed out
/// after: few enough that they are still in the CPU's cache then (with 4096, 1.4 MB of them, the
/// Python loop took 15-30% longer: bench/consumer_cost.py).
const EVENT_BATCH: usize = 512;

/// Records passed per drain to a read that wants `want`.
fn batch(want: &Want<'_>) -> usize {
    match want {
        Want::Events => EVENT_BATCH,
        Want::Text { .. } | Want::Owned { .. } => BATCH,
    }
}

/// Watchers with more links than this leave detaching to a process of their own (see `release`).
const DETACH_INLINE: usize = 16;
/// Longest uninterrupted block: a safety net for a signal that lands just before the wait.
const MAX_BLOCK: Duration = Duration::from_secs(1);
/// Shortest wait before another pass while the merge holds events back.
const HELD_RECHECK: Duration = Duration::from_millis(1);

/// What a read wants drained records turned into.
pub enum Want<'f> {
    /// `OpenEvent`s (or `TracepointEvent`s) in `Out::ready`.
    Events,
    /// CLI lines in `Out::text`, at most `limit` of them.
    Text { formatter: &'f Formatter, limit: usize },
    /// Open events as they are, in `Out::owned`, at most `limit` of them (no Python object each:
    /// Parquet's columns are made from them).
    Owned { limit: usize },
}

/// What a watcher's readers and its `close()` share, whichever thread they run on.
pub struct Shared {
    pub waiter: Waiter,
    pub closed: AtomicBool,
    /// A pid watcher whose processes have all exited: what was drained is handed out, nothing
    /// more is read.
    pub ended: AtomicBool,
    pub latency: Duration,
    pub ledger: Ledger,
}

impl Shared {
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Drained and not yet handed out: a read that ends in an error (a signal's or a logging
/// handler's exception) leaves what it drained here for the next read.
#[derive(Default)]
pub struct Out {
    /// `OpenEvent`s or `TracepointEvent`s.
    pub ready: VecDeque<Py<PyAny>>,
    pub text: String,
    pub text_count: usize,
    pub owned: Vec<OwnedOpen>,
}

impl Out {
    /// Takes one decoded event (an open or a tracepoint's record); returns false once the read
    /// wants no more.
    fn take_record(&mut self, py: Python<'_>, want: &Want<'_>, record: Record<'_>) -> PyResult<bool> {
        match want {
            Want::Events => {
                if let Some(event) = made(py, record)? {
                    self.ready.push_back(event);
                }
                Ok(true)
            }
            Want::Text { formatter, limit } => {
                match record {
                    Record::Open(decoded) => formatter.write(decoded.open(), &mut self.text),
                    Record::Tracepoint(event, _) => formatter.write_tracepoint(event, &mut self.text),
                    Record::ProcessExit | Record::Kept => return Ok(true),
                }
                self.text_count += 1;
                Ok(self.text_count < *limit)
            }
            Want::Owned { limit } => {
                if let Record::Open(mut decoded) = record {
                    let cgroup = decoded.cgroup.take();
                    self.owned.push(OwnedOpen::new(decoded.open(), cgroup));
                }
                Ok(self.owned.len() < *limit)
            }
        }
    }

    /// As `take_record`, for an io_uring open the merge held back, decoded.
    fn take_owned(&mut self, py: Python<'_>, want: &Want<'_>, open: OwnedOpen) -> PyResult<bool> {
        match want {
            Want::Events => {
                self.ready.push_back(untracked(Py::new(py, OpenEvent(open))?.into_any()));
                Ok(true)
            }
            Want::Text { formatter, limit } => {
                formatter.write(open.view(), &mut self.text);
                self.text_count += 1;
                Ok(self.text_count < *limit)
            }
            Want::Owned { limit } => {
                self.owned.push(open);
                Ok(self.owned.len() < *limit)
            }
        }
    }

    /// Whether a read with a limit has all it wants (a drain past it would take one more).
    fn full(&self, want: &Want<'_>) -> bool {
        match want {
            Want::Events => false,
            Want::Text { limit, .. } => self.text_count >= *limit,
            Want::Owned { limit } => self.owned.len() >= *limit,
        }
    }

    /// Whether the read has something to hand back (text reads first take the events an
    /// iteration left behind).
    fn satisfied(&mut self, py: Python<'_>, want: &Want<'_>) -> bool {
        match want {
            Want::Events => !self.ready.is_empty(),
            Want::Text { formatter, limit } => {
                while self.text_count < *limit {
                    let Some(event) = self.ready.pop_front() else { break };
                    write_made(py, formatter, &event, &mut self.text);
                    self.text_count += 1;
                }
                self.text_count > 0
            }
            Want::Owned { limit } => {
                while self.owned.len() < *limit {
                    let Some(event) = self.ready.pop_front() else { break };
                    own_made(py, &event, &mut self.owned);
                }
                !self.owned.is_empty()
            }
        }
    }
}

/// The `OpenEvent` or `TracepointEvent` of a decoded record (None for a record that is neither).
fn made(py: Python<'_>, record: Record<'_>) -> PyResult<Option<Py<PyAny>>> {
    Ok(Some(untracked(match record {
        Record::Open(mut decoded) => {
            let cgroup = decoded.cgroup.take();
            Py::new(py, OpenEvent::new(decoded.open(), cgroup))?.into_any()
        }
        Record::Tracepoint(event, schema) => Py::new(py, TracepointEvent::new(event, schema))?.into_any(),
        Record::ProcessExit | Record::Kept => return Ok(None),
    })))
}

/// An event, left out of Python's cyclic collector. It cannot be part of a reference cycle (it
/// holds no Python object), but pyo3 makes every class a GC type: left tracked, each batch of
/// thousands made the collector walk them all, a tenth of a consumer's time in a storm.
fn untracked(event: Py<PyAny>) -> Py<PyAny> {
    // SAFETY: `event` is a live object we own; untracking an object is always allowed.
    unsafe { pyo3::ffi::PyObject_GC_UnTrack(event.as_ptr().cast()) };
    event
}

/// A made event as the CLI's text.
fn write_made(py: Python<'_>, formatter: &Formatter, event: &Py<PyAny>, text: &mut String) {
    let event = event.bind(py);
    if let Ok(open) = event.cast::<OpenEvent>() {
        formatter.write(open.get().0.view(), text);
    } else if let Ok(record) = event.cast::<TracepointEvent>() {
        formatter.write_tracepoint(record.get().view(), text);
    }
}

/// A made open event, as it is (a tracepoint's record is not an open: left out).
fn own_made(py: Python<'_>, event: &Py<PyAny>, owned: &mut Vec<OwnedOpen>) {
    if let Ok(open) = event.bind(py).cast::<OpenEvent>() {
        owned.push(open.get().0.clone());
    }
}

/// Python's cyclic collector, off while a drain makes its events (with the GIL held, no Python
/// code runs meanwhile). Each new event counts towards the next collection, though none can be
/// part of a cycle (see `Out::ready`): every 700 of them a young-generation collection ran, and
/// every tenth of those an older one, a twentieth of a consumer's time in a storm. Paused, a
/// batch costs one collection, as the collector runs at the next allocation after it.
struct GcPause(bool);

impl GcPause {
    fn new(_py: Python<'_>) -> GcPause {
        // SAFETY: with the GIL held (`_py`); returns whether it was enabled.
        GcPause(unsafe { pyo3::ffi::PyGC_Disable() } == 1)
    }
}

impl Drop for GcPause {
    fn drop(&mut self) {
        if self.0 {
            // SAFETY: the GIL is still held (the guard lives inside one drain); only what this
            // guard turned off is turned back on.
            unsafe { pyo3::ffi::PyGC_Enable() };
        }
    }
}

/// The ring buffers: one is read as it comes; shards are merged.
enum Rings {
    One(Ring),
    Sharded(Merge),
}

/// Decodes one record, taking what only informs the reader (a followed process exited, a record
/// that cannot be decoded: counted lost) and passing an event to `event`.
fn decode<T>(
    decoder: &mut Decoder,
    record: &[u8],
    name_cgroups: bool,
    shared: &Shared,
    exited: &mut bool,
    event: impl FnOnce(Record<'_>) -> PyResult<T>,
    none: T,
) -> PyResult<T> {
    match decoder.decode(record, name_cgroups) {
        Ok(Record::ProcessExit) => {
            *exited = true;
            Ok(none)
        }
        Ok(Record::Kept) => Ok(none),
        Ok(record) => event(record),
        Err(err) => {
            shared.ledger.add_undecodable();
            diag::note(
                diag::Level::Warning,
                format!("a ring buffer record could not be decoded ({err}); counted as lost"),
            );
            Ok(none)
        }
    }
}

/// A live watcher's reading end: the rings, what was drained from them, and the programs (held
/// for their links: dropping them detaches).
pub struct Reader {
    rings: Rings,
    logs: EbpfLogger<FromKernel>,
    reporter: Reporter,
    attached: Attached,
    pub out: Out,
    /// When the last drain that emptied the ring finished; the next drain waits for `latency`
    /// after it so that a busy stream costs one wake-up per batch, not per event.
    drained_at: Option<Instant>,
    /// Records to events.
    decoder: Decoder,
    /// A pid watcher's followed processes; when none is left, the watcher ends.
    tracked: Option<Tracked>,
    /// A followed process exited since the set was last looked at.
    exited: bool,
}

fn kernel_error(what: &str, err: std::io::Error) -> PyErr {
    Error::kernel(what, &err).into()
}

impl Reader {
    /// `rings`: one, or the shards (CPU `c` writes to `rings[c % rings.len()]`).
    pub fn new(
        mut rings: Vec<Ring>,
        logs: EbpfLogger<FromKernel>,
        attached: Attached,
        decoder: Decoder,
        tracked: Option<Tracked>,
    ) -> std::io::Result<Reader> {
        let rings = match rings.pop() {
            Some(ring) if rings.is_empty() => Rings::One(ring),
            Some(ring) => {
                rings.push(ring);
                Rings::Sharded(Merge::new(rings))
            }
            None => return Err(std::io::Error::other("no ring buffer")),
        };
        Ok(Reader {
            rings,
            logs,
            reporter: Reporter::new(),
            attached,
            out: Out::default(),
            drained_at: None,
            decoder,
            tracked,
            exited: false,
        })
    }

    /// `Decoder::cgroup_path`.
    pub fn cgroup_path(&mut self, id: u64) -> Option<Arc<[u8]>> {
        self.decoder.cgroup_path(id)
    }

    /// The rings' fds, to wait on.
    pub fn fds(&self) -> Vec<i32> {
        match &self.rings {
            Rings::One(ring) => vec![ring.fd()],
            Rings::Sharded(merge) => merge.fds().collect(),
        }
    }

    /// See `Session::end_reading`.
    pub fn end_reading(&mut self) {
        if let Rings::Sharded(merge) = &mut self.rings {
            merge.end();
        }
    }

    /// Whether events drained from the rings are still held back (sharded rings), to be handed
    /// out at a later read.
    pub fn holding(&self) -> bool {
        matches!(&self.rings, Rings::Sharded(merge) if merge.holding())
    }

    /// Requests still waiting for their completion will not be reported now: lost (with sharded
    /// rings, also those whose submission is still waiting to be decoded), unless their
    /// completion is among what the rings still hold, which is read for that (the watcher ends
    /// before handing it out, as a text read with a limit does, or `close()`).
    pub fn forget_waiting(&mut self, shared: &Shared) {
        let (undecoded, completed) = match &mut self.rings {
            Rings::Sharded(merge) => merge.forget_waiting(),
            Rings::One(ring) => {
                let mut unread = Completed::new();
                ring.read_rest(|record| unread.extend(completes(record)));
                ring.free_to(ring.read());
                (0, unread)
            }
        };
        shared.ledger.add_uring(self.decoder.forget_waiting(&completed) + undecoded);
    }

    /// Passes up to `batch(want)` records from the ring to the read, until it wants no more. Returns
    /// how many records were read (sharded: and events handed out).
    fn drain(&mut self, py: Python<'_>, shared: &Shared, want: &Want<'_>) -> PyResult<usize> {
        let _gc = GcPause::new(py);
        let name_cgroups = match want {
            Want::Text { formatter, .. } => formatter.shows_cgroup(),
            Want::Events | Want::Owned { .. } => true,
        };
        let Rings::One(ring) = &mut self.rings else {
            return self.drain_shards(py, shared, want, name_cgroups);
        };
        let (mut read, mut more, batch) = (0, true, batch(want));
        while more && read < batch {
            let Next::Record { data: record, .. } = ring.next() else { break };
            read += 1;
            let took = decode(
                &mut self.decoder,
                record,
                name_cgroups,
                shared,
                &mut self.exited,
                |record| self.out.take_record(py, want, record),
                true,
            );
            // The room of what was read goes back to the producers a few records at a time
            // (each consumer position they see is a cache line taken from the reader).
            if read.is_multiple_of(FREE_EVERY) || !matches!(took, Ok(true)) {
                ring.free_to(ring.read());
            }
            more = took?;
        }
        ring.free_to(ring.read());
        shared.ledger.add_uring(std::mem::take(&mut self.decoder.orphaned));
        // Only a drain that read records and emptied the ring starts a pause (see `drained_at`):
        // after one that read nothing the reader waits on the ring's fd, and the kernel wakes it
        // at the next record.
        self.drained_at = (read > 0 && more && read < batch).then(Instant::now);
        Ok(read)
    }

    /// `drain` for sharded rings: one pass of `Merge::read` (every shard, up to where its
    /// producers were, or `merge::PASS` records) if nothing held can go out yet, then up to
    /// `batch(want)` events (or the read's limit) handed out in time order, decoded as one ring's
    /// records are.
    fn drain_shards(
        &mut self,
        py: Python<'_>,
        shared: &Shared,
        want: &Want<'_>,
        name_cgroups: bool,
    ) -> PyResult<usize> {
        let Rings::Sharded(merge) = &mut self.rings else { return Ok(0) };
        let (decoder, exited, out) = (&mut self.decoder, &mut self.exited, &mut self.out);
        // A pass only once nothing read can go out: what is held is handed out first, a cache's
        // worth per drain, and each pass sorts what is held (a pass per drain sorted it every
        // 512 events). Meanwhile a backlog waits in the rings, as it does with one ring.
        // Only the records that inform the reader are decoded in a pass (a cgroup's name before
        // the events that need it); events are decoded as they go out.
        let read = if merge.ready() {
            0
        } else {
            merge.read(|record| decode(decoder, record, name_cgroups, shared, exited, |_| Ok(()), ()))?
        };
        let ready = merge.take_ready(|request, submitted| decoder.is_waiting(request, submitted));
        merge.hold_decoded(ready, |record| {
            let open = |record: Record<'_>| {
                Ok(match record {
                    Record::Open(mut decoded) => {
                        let cgroup = decoded.cgroup.take();
                        Some(OwnedOpen::new(decoded.open(), cgroup))
                    }
                    _ => None,
                })
            };
            decode(decoder, record, name_cgroups, shared, exited, open, None)
        })?;
        let mut budget = batch(want);
        let given = merge.release(|held| {
            budget -= 1;
            let more = match held {
                Held::Record(record) => decode(
                    decoder,
                    record,
                    name_cgroups,
                    shared,
                    exited,
                    |record| out.take_record(py, want, record),
                    true,
                )?,
                Held::Open(open) => out.take_owned(py, want, open)?,
            };
            Ok(more && budget > 0)
        })?;
        shared.ledger.add_uring(std::mem::take(&mut self.decoder.orphaned));
        // As for one ring: a pass that read records starts a pause, unless events are left that
        // could go now (the read's budget ran out) or records the pass had no room for.
        self.drained_at = (read > 0 && !merge.ready() && !merge.behind()).then(Instant::now);
        Ok(read + given)
    }

    /// For a pid watcher whose followed processes have all exited (all their events are in the
    /// ring by then): drains the rest and ends the watcher, as `close()` does. Returns whether it
    /// ended.
    fn followed_all_gone(&mut self, py: Python<'_>, shared: &Shared, want: &Want<'_>) -> PyResult<bool> {
        if !std::mem::take(&mut self.exited) || !self.tracked.as_ref().is_some_and(follow::none_left) {
            return Ok(false);
        }
        // No pause: everything up to now (a text read with a limit stops at it); nothing held
        // back waits for more.
        while !self.out.full(want) && self.drain(py, shared, want)? > 0 {}
        if let Rings::Sharded(merge) = &mut self.rings {
            merge.end();
            while !self.out.full(want) && self.drain(py, shared, want)? > 0 {}
        }
        // The processes are gone: a request still waiting will never complete for us.
        self.forget_waiting(shared);
        shared.ended.store(true, Ordering::Release);
        shared.waiter.wake();
        // The last word on losses and unresolved paths, without waiting for the next check.
        self.reporter.check_soon();
        self.housekeeping(py, shared)?;
        Ok(true)
    }

    /// How long the reader still pauses after the last drain that emptied the ring.
    pub fn pause(&self, shared: &Shared) -> Duration {
        self.drained_at
            .map_or(Duration::ZERO, |at| (at + shared.latency).saturating_duration_since(Instant::now()))
    }

    /// How long an event loop waits before asking again rather than waiting for the rings' fds:
    /// the pause, or while the merge holds events back (with `latency=0` too), until a pass can
    /// release them, as `fill` does.
    pub fn wait_before_next(&self, shared: &Shared) -> Duration {
        let pause = self.pause(shared);
        if pause.is_zero() && self.out.ready.is_empty() && self.holding() {
            // A pass that had no room for all the rings held: the next one at once.
            let behind = matches!(&self.rings, Rings::Sharded(merge) if merge.behind());
            return if behind { Duration::ZERO } else { shared.latency.max(HELD_RECHECK) };
        }
        pause
    }

    /// Between batches: forwards the programs' log records and what the decoder has to say and,
    /// at most once a second, warns of newly lost events, through the `opentrace` logger. A
    /// logging handler may raise: what was drained stays for the next read.
    fn housekeeping(&mut self, py: Python<'_>, shared: &Shared) -> PyResult<()> {
        self.decoder.report();
        // aya-log unwraps its record parsing; a malformed record must not take the reader down.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.logs.flush())).is_err() {
            diag::note(diag::Level::Warning, "could not decode a log record from the eBPF programs".into());
        }
        if self.reporter.due() {
            // An exit record lost to a full ring only delays this.
            self.exited |= self.tracked.is_some();
            self.reporter.report(py, &shared.ledger)?;
        }
        diag::emit(py)
    }

    /// Reads the ring until a drain empties it (at most `limit` events), without the pause a read
    /// takes after a drain: counting mode, whose events name keys, reads them all before it
    /// hands the counts out, however recent. (Counting mode has one ring: with shards, events
    /// the merge holds back for order would stay held.)
    pub fn drain_now(&mut self, py: Python<'_>, shared: &Shared, limit: usize) -> PyResult<()> {
        let mut read = 0;
        while read < limit {
            let drained = self.drain(py, shared, &Want::Events)?;
            read += drained;
            if drained < EVENT_BATCH {
                break;
            }
        }
        self.housekeeping(py, shared)
    }

    /// `next_ready()`: one event if one is ready now, without blocking; within the pause after a
    /// drain the ring is not touched.
    /// A drain that finds nothing may find a pid watcher's processes all gone: it ends then.
    pub fn next_ready(&mut self, py: Python<'_>, shared: &Shared) -> PyResult<Option<Py<PyAny>>> {
        if self.out.ready.is_empty() && self.pause(shared).is_zero() {
            if self.drain(py, shared, &Want::Events)? > 0 {
                self.housekeeping(py, shared)?;
            } else {
                self.followed_all_gone(py, shared, &Want::Events)?;
            }
        }
        Ok(self.out.ready.pop_front())
    }

    /// Drains until the read is satisfied, `deadline` passes or the watcher closes. Waits with
    /// the GIL released; a signal's Python handler runs (and may raise) while waiting.
    pub fn fill(
        &mut self,
        py: Python<'_>,
        shared: &Shared,
        deadline: Option<Instant>,
        want: &Want<'_>,
    ) -> PyResult<()> {
        loop {
            if shared.closed() || self.out.satisfied(py, want) {
                return Ok(());
            }
            let pause = self.pause(shared);
            let pause = deadline.map_or(pause, |d| pause.min(d.saturating_duration_since(Instant::now())));
            if !pause.is_zero() {
                let slept = py.detach(|| shared.waiter.sleep(pause));
                if let Wait::Interrupted = slept.map_err(|e| kernel_error("waiting", e))? {
                    py.check_signals()?;
                }
                continue;
            }
            if self.drain(py, shared, want)? > 0 {
                self.housekeeping(py, shared)?;
                continue;
            }
            if self.followed_all_gone(py, shared, want)? {
                return Ok(());
            }
            let timeout = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(MAX_BLOCK),
                    _ => return Ok(()),
                },
                None => MAX_BLOCK,
            };
            // Events held back by the merge wait for a pass, not for the next record.
            let timeout =
                if self.holding() { timeout.min(shared.latency.max(HELD_RECHECK)) } else { timeout };
            py.check_signals()?;
            let waited = py.detach(|| shared.waiter.wait(Some(timeout)));
            match waited.map_err(|e| kernel_error("waiting for events", e))? {
                Wait::Interrupted => py.check_signals()?,
                // A quiet spell: still report losses and the programs' logs.
                Wait::TimedOut => self.housekeeping(py, shared)?,
                Wait::Ready => {}
            }
        }
    }

    /// Detaches and frees what the kernel holds for a watcher, with the GIL released. The kernel
    /// detaches perf-event tracepoints one at a time, each after an RCU grace period (~40 ms
    /// here: 13 s for every syscall tracepoint); for a watcher with many, or with `hand_over` (a
    /// process about to exit), a process of its own pays that wait (see `detach`), and this
    /// returns at once.
    pub fn release(mut self, py: Python<'_>, hand_over: bool) {
        self.out.ready.clear();
        if (hand_over || self.attached.len() > DETACH_INLINE)
            && let Some(pipe) = detach::hand_over(&detach::process_links())
        {
            py.detach(move || {
                // Our copies go at once: the holding process has its own.
                drop(self);
                // SAFETY: our end of the pipe; closing it lets the holding process go on.
                unsafe { libc::close(pipe) };
            });
            return;
        }
        py.detach(move || drop(self));
    }

    /// In a forked child: lets go of the parent's kernel objects without touching the parent's
    /// use of them. With BPF links, closing our copies of the fds does just that; older kernels
    /// attach through perf events that aya disables on drop (the parent shares them), so those
    /// fds are left for exit or exec (they are close-on-exec) to close.
    pub fn forget_inherited(self) {
        if aya::features().bpf_perf_link() {
            drop(self);
        } else {
            std::mem::forget(self);
        }
    }
}
