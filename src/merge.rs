//! Reading sharded ring buffers as one stream: each pass reads every shard up to where its
//! producers were when the pass began, holds the events back (their records copied as they are,
//! decoded when handed out), and hands out, in `timestamp_ns` order, those no record still unread
//! can come before.
//!
//! Events are made when they go out, not when they are read: a pass after a burst reads
//! everything the shards hold, and the Python objects of all of it at once took twice the memory
//! of the records and fell out of the CPU's cache before they were handed out (a loop took 2.9 M
//! events per CPU-second from two shards against 4.6 M now; bench/consumer_cost.py).
//!
//! Why that is safe for one thread's events: a thread's next event starts (its `timestamp_ns` is
//! taken) after its previous record was written. A pass that starts at `t0` (CLOCK_MONOTONIC, the
//! clock of `bpf_ktime_get_ns`) and then reads a shard up to the producer position it saw after
//! `t0` has read every record that shard had before `t0`; once every shard has been read that far
//! by some pass (`cut`, the oldest such `t0`), an event stamped before `cut` has every earlier
//! event of its thread read too, whichever CPU wrote it, and sorting by time puts those first.
//! A shard whose reading stopped early (a record still being written by a producer, for the
//! microsecond it takes) keeps its older `t0`, and the events after it wait one more pass.
//! Events written long after their stamp (an io_uring open completes when it completes, a
//! blocking open returns when it returns) come when they are read, as with one ring.
//!
//! An io_uring completion can be read before its submission (another shard, read later in the
//! pass, or in the next): it waits until every shard has been read past it, when its submission
//! has been read for certain, and is decoded then. Submissions wait with it, and those decoded
//! together go in the order their requests were made (a submission before its completion): the
//! kernel reuses a request's address as soon as it completed, and a submission decoded ahead of
//! the previous request's completion at that address took its place, which lost both events.
//! Held events stamped after the submission of a completion that waits (or after the cut when
//! the pass that read it began, if that is later) wait with it, one pass: the io_uring open goes
//! out before the events still held that were stamped after it.
use std::{collections::VecDeque, io, mem::offset_of, os::fd::AsRawFd, sync::atomic::AtomicU64};

use aya::maps::{MapData, RingBuf};
use opentrace_common::{
    abi::{RecordKind, open::OpenHeader, tracepoint::TracepointHeader, uring::UringComplete},
    open::OwnedOpen,
};
use pyo3::PyResult;

use crate::decode::{Completed, completes};

/// An event the merge held back, handed out (handed out one at a time: the size of the owned
/// open does not matter).
#[allow(clippy::large_enum_variant)]
pub enum Held<'a> {
    /// Its record, as read (an open, or a tracepoint's record).
    Record(&'a [u8]),
    /// An io_uring open, decoded when its completion was.
    Open(OwnedOpen),
}

enum Slot {
    /// A record in `Merge::records`.
    Record {
        start: usize,
        len: usize,
    },
    Open(Box<OwnedOpen>),
}

/// An io_uring record that waits to be decoded (see the module's comment).
struct Deferred {
    /// The start of the pass that read it.
    read_at: u64,
    /// Its request's submission time, then the submission before the completion.
    order: (u64, bool),
    /// Its request's address (0 if the record is too short to say).
    request: u64,
    /// A completion's: held events stamped from here on wait until it is decoded (see
    /// `Merge::release_cut`): its submission, or if older, the cut when the pass that read it
    /// began (events before that could go out before it was read, as from one ring).
    holds_from: u64,
    record: Box<[u8]>,
}

/// io_uring records to decode now, in order (`Merge::take_ready`).
pub struct Ready(Vec<Deferred>);

impl Deferred {
    /// `pass`: the start of the pass that read it, and the cut then.
    fn new(
        (read_at, cut): (u64, u64),
        submitted: Option<u64>,
        completion: bool,
        request: Option<u64>,
        record: &[u8],
    ) -> Deferred {
        let order = (submitted.unwrap_or(0), completion);
        let holds_from = order.0.max(cut);
        Deferred { read_at, order, request: request.unwrap_or(0), holds_from, record: record.into() }
    }

    /// Its request, as `Completed` keys it: (address, submission time).
    fn key(&self) -> (u64, u64) {
        (self.request, self.order.0)
    }
}

/// The kernel's positions in one ring: its consumer page and its producer page, mapped read-only
/// (the ring's own reader, aya's `RingBuf`, moves the consumer position).
struct Positions {
    base: *mut libc::c_void,
    page: usize,
}

// SAFETY: the mapping is only read, through atomics, and unmapped once (on drop).
unsafe impl Send for Positions {}

impl Positions {
    fn new(fd: i32) -> io::Result<Positions> {
        // SAFETY: sysconf reads a constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // SAFETY: a new read-only shared mapping of the ring's first two pages (consumer, producer
        // position), which the kernel allows at offset 0; checked below.
        let base =
            unsafe { libc::mmap(std::ptr::null_mut(), 2 * page, libc::PROT_READ, libc::MAP_SHARED, fd, 0) };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Positions { base, page })
    }

    fn at(&self, offset: usize) -> u64 {
        // SAFETY: the first word of a mapped page, aligned; the kernel and aya write it atomically.
        let word = unsafe { &*self.base.cast::<u8>().add(offset).cast::<AtomicU64>() };
        word.load(std::sync::atomic::Ordering::Acquire)
    }

    fn consumer(&self) -> u64 {
        self.at(0)
    }

    fn producer(&self) -> u64 {
        self.at(self.page)
    }
}

impl Drop for Positions {
    fn drop(&mut self) {
        // SAFETY: our own mapping, of this length, unmapped once.
        unsafe { libc::munmap(self.base, 2 * self.page) };
    }
}

struct Shard {
    ring: RingBuf<MapData>,
    positions: Positions,
    /// The start of the last pass that read this ring up to its producers' position then.
    clean_at: u64,
}

/// Sharded rings read as one stream (see the module's comment).
pub struct Merge {
    shards: Vec<Shard>,
    /// The held events' records, one after the other (and of some handed out: `handed_out`).
    records: Vec<u8>,
    /// Bytes of `records` handed out since it was last compacted.
    handed_out: usize,
    /// The held events, with their `timestamp_ns`; sorted by it when `sorted`.
    held: VecDeque<(u64, Slot)>,
    sorted: bool,
    /// io_uring submissions and completions not decoded yet (see the module's comment).
    deferred: Vec<Deferred>,
    /// The watcher ended: everything held goes out.
    ended: bool,
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`, so of `timestamp_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is writable; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The 8 bytes at `at` of a record, if it has them (a `timestamp_ns`, a request's address).
fn u64_at(record: &[u8], at: usize) -> Option<u64> {
    record.get(at..at + 8).map(|b| u64::from_ne_bytes(b.try_into().unwrap_or_default()))
}

impl Merge {
    pub fn new(rings: Vec<RingBuf<MapData>>) -> io::Result<Merge> {
        let shards = rings
            .into_iter()
            .map(|ring| Ok(Shard { positions: Positions::new(ring.as_raw_fd())?, ring, clean_at: 0 }))
            .collect::<io::Result<_>>()?;
        Ok(Merge {
            shards,
            records: Vec::new(),
            handed_out: 0,
            held: VecDeque::new(),
            sorted: true,
            deferred: Vec::new(),
            ended: false,
        })
    }

    pub fn fds(&self) -> impl Iterator<Item = i32> + '_ {
        self.shards.iter().map(|s| s.ring.as_raw_fd())
    }

    /// Before this, every record of every shard has been read.
    fn cut(&self) -> u64 {
        if self.ended { u64::MAX } else { self.shards.iter().map(|s| s.clean_at).min().unwrap_or(0) }
    }

    /// One pass: reads each shard up to its producers' position at the start. Events are held,
    /// as copies of their records; io_uring submissions and completions wait for
    /// `decode_deferred`; the records that inform the reader (a cgroup's name, a followed
    /// process's exit), and any too short to be an event (the decoder says so), go to `visit` at
    /// once. How many records were read.
    pub fn read(&mut self, mut visit: impl FnMut(&[u8]) -> PyResult<()>) -> PyResult<usize> {
        const OPEN: u8 = RecordKind::Open as u8;
        const TRACEPOINT: u8 = RecordKind::Tracepoint as u8;
        const SUBMIT: u8 = RecordKind::UringSubmit as u8;
        const COMPLETE: u8 = RecordKind::UringComplete as u8;
        let t0 = monotonic_ns();
        let pass = (t0, self.cut());
        let mut read = 0;
        for shard in &mut self.shards {
            let until = shard.positions.producer();
            while shard.positions.consumer() < until {
                let Some(record) = shard.ring.next() else { break };
                read += 1;
                let stamp = match record.first() {
                    Some(&OPEN) => u64_at(&record, offset_of!(OpenHeader, timestamp_ns)),
                    Some(&TRACEPOINT) => u64_at(&record, offset_of!(TracepointHeader, timestamp_ns)),
                    // A request's submission and completion are put in order by the time it was
                    // submitted, which each carries (a short record: the decoder says so).
                    Some(&SUBMIT) => {
                        let submitted = u64_at(&record, offset_of!(OpenHeader, timestamp_ns));
                        // The submit program puts the request's address where the result goes.
                        let request = u64_at(&record, offset_of!(OpenHeader, ret));
                        self.deferred.push(Deferred::new(pass, submitted, false, request, &record));
                        continue;
                    }
                    Some(&COMPLETE) => {
                        let submitted = u64_at(&record, offset_of!(UringComplete, submitted_ns));
                        let request = u64_at(&record, offset_of!(UringComplete, req));
                        self.deferred.push(Deferred::new(pass, submitted, true, request, &record));
                        continue;
                    }
                    _ => None,
                };
                let Some(stamp) = stamp else {
                    visit(&record)?;
                    continue;
                };
                let start = self.records.len();
                self.records.extend_from_slice(&record);
                self.held.push_back((stamp, Slot::Record { start, len: record.len() }));
                self.sorted = false;
            }
            if shard.positions.consumer() >= until {
                shard.clean_at = t0;
            }
        }
        Ok(read)
    }

    /// The io_uring records that can be decoded now (see `ready_deferred`), in the order their
    /// requests were made; `waiting(address, submitted_ns)`: whether the decoder holds that
    /// request's submission. Decoded by `hold_decoded`.
    pub fn take_ready(&mut self, waiting: impl Fn(u64, u64) -> bool) -> Ready {
        if self.deferred.is_empty() {
            return Ready(Vec::new());
        }
        let (mut ready, left) = ready_deferred(std::mem::take(&mut self.deferred), self.cut(), waiting);
        self.deferred = left;
        ready.sort_by_key(|d| d.order);
        Ready(ready)
    }

    /// Decodes `ready` in order; the opens made are held as any event.
    pub fn hold_decoded(
        &mut self,
        ready: Ready,
        mut decode: impl FnMut(&[u8]) -> PyResult<Option<OwnedOpen>>,
    ) -> PyResult<()> {
        for Deferred { record, .. } in ready.0 {
            if let Some(open) = decode(&record)? {
                self.held.push_back((open.head.timestamp_ns, Slot::Open(Box::new(open))));
                self.sorted = false;
            }
        }
        Ok(())
    }

    /// Before this, every event has been read and decoded: `cut`, and no later than the
    /// submission of an io_uring open whose completion has been read but not decoded yet (it
    /// will be at the next pass), so that its event goes before the held events stamped after
    /// it; but no earlier than the cut when that completion's pass began, so that a stream of
    /// slow requests holds events back for a pass, not for as long as its requests take.
    fn release_cut(&self) -> u64 {
        let completed = self.deferred.iter().filter(|d| d.order.1).map(|d| d.holds_from).min();
        completed.map_or(self.cut(), |from| from.min(self.cut()))
    }

    /// Hands out, oldest first, the held events no unread record can come before, while `give`
    /// takes more (it returns false when it wants no more). How many it took.
    pub fn release(&mut self, mut give: impl FnMut(Held<'_>) -> PyResult<bool>) -> PyResult<usize> {
        if !self.sorted {
            // Stable, so that events of equal time keep the order they were read in; each
            // shard's records come mostly in time order, runs the sort finds and merges.
            self.held.make_contiguous().sort_by_key(|(ts, _)| *ts);
            self.sorted = true;
        }
        let cut = self.release_cut();
        let mut given = 0;
        while self.held.front().is_some_and(|(ts, _)| *ts < cut) {
            let Some((_, slot)) = self.held.pop_front() else { break };
            given += 1;
            let held = match slot {
                Slot::Record { start, len } => {
                    self.handed_out += len;
                    Held::Record(&self.records[start..start + len])
                }
                Slot::Open(open) => Held::Open(*open),
            };
            if !give(held)? {
                break;
            }
        }
        self.compact();
        Ok(given)
    }

    /// Frees the records handed out: all of them when nothing is held; else, once they are most
    /// of `records`, by moving those still held to the front, in place (the room stays for the
    /// next passes: no new pages each time).
    fn compact(&mut self) {
        if self.held.is_empty() {
            self.records.clear();
            self.handed_out = 0;
            return;
        }
        if self.handed_out < (self.records.len() / 2).max(1 << 20) {
            return;
        }
        let mut kept: Vec<(&mut usize, usize)> = self
            .held
            .iter_mut()
            .filter_map(|(_, slot)| match slot {
                Slot::Record { start, len } => Some((start, *len)),
                _ => None,
            })
            .collect();
        kept.sort_unstable_by_key(|(start, _)| **start);
        let mut to = 0;
        for (start, len) in kept {
            // In the order they lie in: each moves down, over records handed out.
            self.records.copy_within(*start..*start + len, to);
            *start = to;
            to += len;
        }
        self.records.truncate(to);
        self.handed_out = 0;
    }

    /// Whether held events could be handed out now (`release` stopped early).
    pub fn ready(&self) -> bool {
        let cut = self.release_cut();
        self.held.front().is_some_and(|(ts, _)| *ts < cut)
    }

    /// The io_uring records not decoded yet, forgotten (the watcher ends), and what the shards
    /// still hold, read for its completions (the watcher ends before handing those out): how
    /// many submissions have no completion among all those (their events are lost), and the
    /// requests whose completions are among them (a submission the decoder holds for one of
    /// those is not lost either).
    pub fn forget_waiting(&mut self) -> (u64, Completed) {
        let mut unread = Completed::new();
        for shard in &mut self.shards {
            read_rest(&mut shard.ring, &shard.positions, |record| unread.extend(completes(record)));
        }
        undecoded(&std::mem::take(&mut self.deferred), unread)
    }

    /// Whether anything is held back or waiting.
    pub fn holding(&self) -> bool {
        !self.held.is_empty() || !self.deferred.is_empty()
    }

    /// The watcher ends: no record will come that anything held waits for; io_uring completions
    /// still waiting are decoded (their submissions have all been read), and from now on
    /// everything held goes out.
    pub fn end(&mut self) {
        self.ended = true;
    }
}

/// What a watcher that ends reads of a ring: what it holds up to its producers' position now
/// (`positions`: its own), each record passed to `visit` (what producers write meanwhile is
/// left).
fn read_rest(ring: &mut RingBuf<MapData>, positions: &Positions, mut visit: impl FnMut(&[u8])) {
    let until = positions.producer();
    while positions.consumer() < until {
        let Some(record) = ring.next() else { break };
        visit(&record);
    }
}

/// `read_rest` of a ring read as it comes (one ring, no shards).
pub fn read_rest_of(ring: &mut RingBuf<MapData>, visit: impl FnMut(&[u8])) -> io::Result<()> {
    read_rest(ring, &Positions::new(ring.as_raw_fd())?, visit);
    Ok(())
}

/// `Merge::forget_waiting` of these records, with the completions read after them (`completed`).
fn undecoded(deferred: &[Deferred], mut completed: Completed) -> (u64, Completed) {
    completed.extend(deferred.iter().filter(|d| d.order.1).map(Deferred::key));
    let lost = deferred.iter().filter(|d| !d.order.1 && !completed.contains(&d.key())).count();
    (lost as u64, completed)
}

/// The io_uring records that can be decoded now (see `read`), and those that wait: every record
/// read by a pass that began before `cut` (the passes that made the cut began after that earlier
/// pass ended, and read every shard up to where its producers were then, so a completion's
/// submission, written before the completion was, has been read, whichever shard it went to),
/// and with them every record whose request was made no later than one of those: a submission
/// read by the pass at `cut` itself, or the previous request's completion at an address reused
/// since (decoded apart, the completion found no request, or the next request took its place,
/// and both events were lost); such a completion only with its submission.
fn ready_deferred(
    deferred: Vec<Deferred>,
    cut: u64,
    waiting: impl Fn(u64, u64) -> bool,
) -> (Vec<Deferred>, Vec<Deferred>) {
    let Some(last) = deferred.iter().filter(|d| d.read_at < cut).map(|d| d.order).max() else {
        return (Vec::new(), deferred);
    };
    // A completion goes along by its order only with its submission, here or waiting in the
    // decoder: a submission stamped before `last` may have been written after the pass at `cut`
    // read its shard (its program ran late), and its completion with it.
    let submitted: std::collections::HashSet<(u64, u64)> =
        deferred.iter().filter(|d| !d.order.1).map(Deferred::key).collect();
    deferred.into_iter().partition(|d| {
        d.read_at < cut
            || (d.order <= last
                && (!d.order.1 || submitted.contains(&d.key()) || waiting(d.request, d.order.0)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: u64 = 0x1000;

    fn record(read_at: u64, submitted: u64, completion: bool, request: u64) -> Deferred {
        Deferred::new((read_at, 0), Some(submitted), completion, Some(request), &[])
    }

    fn submit(read_at: u64, submitted: u64) -> Deferred {
        record(read_at, submitted, false, REQ)
    }

    fn complete(read_at: u64, submitted: u64) -> Deferred {
        record(read_at, submitted, true, REQ)
    }

    fn orders(records: &[Deferred]) -> Vec<(u64, bool)> {
        let mut orders: Vec<_> = records.iter().map(|d| d.order).collect();
        orders.sort();
        orders
    }

    type Orders = Vec<(u64, bool)>;

    fn ready(records: Vec<Deferred>, cut: u64) -> (Orders, Orders) {
        let (ready, waiting) = ready_deferred(records, cut, |_, _| false);
        (orders(&ready), orders(&waiting))
    }

    #[test]
    fn nothing_is_decoded_before_a_later_pass_read_every_shard() {
        let (ready, waiting) = ready(vec![submit(100, 90), complete(100, 90)], 100);
        assert!(ready.is_empty());
        assert_eq!(waiting.len(), 2);
    }

    #[test]
    fn a_submission_read_after_its_completion_is_decoded_with_it() {
        // The completion came from one shard in the pass at 100, its submission from another
        // shard, written after the pass had read that shard, in the pass at 200.
        let (ready, waiting) = ready(vec![complete(100, 90), submit(200, 90)], 200);
        assert_eq!(ready, vec![(90, false), (90, true)]);
        assert!(waiting.is_empty());
    }

    #[test]
    fn a_reused_address_waits_for_the_previous_requests_completion() {
        // Request 1 (submitted at 90) completed; request 2 (at 95) reused its address. Request
        // 2's submission was read a pass before request 1's completion.
        let records = vec![submit(100, 90), submit(100, 95), complete(200, 90), complete(200, 95)];
        let (ready, waiting) = ready(records, 200);
        assert_eq!(ready, vec![(90, false), (90, true), (95, false)]);
        assert_eq!(waiting, vec![(95, true)]);
    }

    #[test]
    fn a_completion_goes_early_only_with_its_submission() {
        // Request Q was stamped at 90 but its submission's record was written late, after the
        // pass at 200 read its shard; its completion was read by that pass. Request P (95) was
        // read a pass earlier: Q's completion is ordered before it, but must wait for Q's
        // submission, unless the decoder already holds it.
        let records = || vec![record(100, 95, false, 0x2000), record(200, 90, true, REQ)];
        let (ready, waiting) = ready_deferred(records(), 200, |_, _| false);
        assert_eq!((orders(&ready), orders(&waiting)), (vec![(95, false)], vec![(90, true)]));
        let (ready, waiting) =
            ready_deferred(records(), 200, |request, submitted| (request, submitted) == (REQ, 90));
        assert_eq!((orders(&ready), orders(&waiting)), (vec![(90, true), (95, false)], vec![]));
    }

    #[test]
    fn later_requests_wait() {
        let records = vec![submit(100, 90), complete(100, 90), submit(200, 150), complete(200, 150)];
        let (ready, waiting) = ready(records, 200);
        assert_eq!(ready, vec![(90, false), (90, true)]);
        assert_eq!(waiting, vec![(150, false), (150, true)]);
    }

    #[test]
    fn a_completion_holds_events_back_from_its_submission_or_the_cut_its_pass_began_at() {
        let quick = Deferred::new((200, 150), Some(180), true, Some(REQ), &[]);
        let slow = Deferred::new((200, 150), Some(20), true, Some(REQ), &[]);
        assert_eq!((quick.holds_from, slow.holds_from), (180, 150));
    }

    #[test]
    fn at_the_end_only_submissions_without_their_completion_are_lost() {
        let records = [submit(100, 90), complete(100, 90), submit(100, 95), complete(100, 80)];
        let (lost, completed) = undecoded(&records, Completed::new());
        assert_eq!(lost, 1);
        assert_eq!(completed, Completed::from([(REQ, 90), (REQ, 80)]));
    }

    #[test]
    fn at_the_end_a_submission_whose_completion_is_still_unread_is_not_lost() {
        let records = [submit(100, 90), submit(200, 95)];
        let (lost, completed) = undecoded(&records, Completed::from([(REQ, 95)]));
        assert_eq!(lost, 1);
        assert_eq!(completed, Completed::from([(REQ, 95)]));
    }
}
