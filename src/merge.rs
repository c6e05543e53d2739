//! Reading sharded ring buffers as one stream: each pass reads every shard up to where its
//! producers were when the pass began, or `PASS` records in all, holds the events back (their
//! records left in the rings, `ringbuf`, decoded when handed out), and hands out, in
//! `timestamp_ns` order, those no record still unread can come before.
//!
//! Events are made when they go out, not when they are read, and a pass reads about what goes
//! out in a drain: it is still in the CPU's cache when it goes out. Passes that read everything
//! the shards held after a burst, and copied it out of the rings, read every record twice, the
//! second time from memory (a loop took 5.57 M events per CPU-second from two warm shards, and
//! 4.15 M in a watcher's first burst, against 6.20-6.34 M for both now; bench/consumer_cost.py).
//!
//! Why that is safe for one thread's events: a thread's next event starts (its `timestamp_ns` is
//! taken) after its previous record was written. A shard has been read past every record that
//! took its place in it before some time, its bound: the start of a pass (CLOCK_MONOTONIC, the
//! clock of `bpf_ktime_get_ns`) that read it up to the producer position it saw after that
//! start, or the latest stamp read from it (see `Shard::seen`). Once every shard has been read
//! that far (`horizon`, the oldest bound), an event stamped before it has every earlier event of
//! its thread read too, whichever CPU wrote it, and sorting by time puts those first. A shard
//! whose reading stopped at a record still being written by a producer (for the microsecond it
//! takes) keeps its older bound, and the events after it wait one more pass. Events written long
//! after their stamp (an io_uring open completes when it completes, a blocking open returns when
//! it returns) come when they are read, as with one ring.
//!
//! An io_uring completion can be read before its submission (another shard, read later in the
//! pass, or in the next): it waits until every shard has been read past the end of the pass that
//! read it, when its submission has been read for certain, and is decoded then. Submissions wait
//! with it, and those decoded together go in the order their requests were made (a submission
//! before its completion): the kernel reuses a request's address as soon as it completed, and a
//! submission decoded ahead of the previous request's completion at that address took its place,
//! which lost both events. Held events stamped after the submission of a completion that waits
//! (or after the horizon when the pass that read it began, if that is later) wait with it: the
//! io_uring open goes out before the events still held that were stamped after it.
//!
//! Held records take room in their rings until they go out: a shard whose events wait for
//! another shard's (read a pass at a time, after a burst) can fill and lose records, counted in
//! its `lost_by_shard`, where copies out of the rings would have left room.
use std::{collections::VecDeque, mem::offset_of};

use opentrace_common::{
    abi::{RecordKind, open::OpenHeader, tracepoint::TracepointHeader, uring::UringComplete},
    open::OwnedOpen,
};
use pyo3::PyResult;

use crate::{
    decode::{Completed, completes},
    ringbuf::{Next, Ring},
};

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
    /// A record left in its shard's ring (see `Shard::unfreed`).
    Record {
        shard: u32,
        n: u64,
    },
    Open(Box<OwnedOpen>),
}

/// An io_uring record that waits to be decoded (see the module's comment).
struct Deferred {
    /// The end of the pass that read it (see `ready_deferred`).
    read_at: u64,
    /// Its request's submission time, then the submission before the completion.
    order: (u64, bool),
    /// Its request's address (0 if the record is too short to say).
    request: u64,
    /// A completion's: held events stamped from here on wait until it is decoded (see
    /// `Merge::release_cut`): its submission, or if older, the horizon when the pass that read it
    /// began (events before that could go out before it was read, as from one ring).
    holds_from: u64,
    record: Box<[u8]>,
}

/// io_uring records to decode now, in order (`Merge::take_ready`).
pub struct Ready(Vec<Deferred>);

impl Deferred {
    /// `pass`: the end of the pass that read it (set when it ends), and the horizon when it began.
    fn new(
        (read_at, horizon): (u64, u64),
        submitted: Option<u64>,
        completion: bool,
        request: Option<u64>,
        record: &[u8],
    ) -> Deferred {
        let order = (submitted.unwrap_or(0), completion);
        let holds_from = order.0.max(horizon);
        Deferred { read_at, order, request: request.unwrap_or(0), holds_from, record: record.into() }
    }

    /// Its request, as `Completed` keys it: (address, submission time).
    fn key(&self) -> (u64, u64) {
        (self.request, self.order.0)
    }
}

struct Shard {
    ring: Ring,
    /// Its producers' position when the current pass began.
    until: u64,
    /// The start of the last pass that read this ring up to its producers' position then.
    clean_at: u64,
    /// The latest `timestamp_ns` of the records read from it: every record that took its place
    /// in the ring before then has been read. A record takes its place (reserves its room, under
    /// the ring's lock, in that order) after its stamp was taken: the programs stamp first and
    /// write the record last (an io_uring record counts by its submission's stamp, taken before
    /// either record was written). The ring is read in the order of its places: the record
    /// stamped `seen` was read after every record that took its place before it.
    seen: u64,
    /// The held records, in the order they lie in the ring: where each is, and whether it was
    /// handed out. The ring's room is freed up to the first not handed out.
    unfreed: VecDeque<(u64, bool)>,
    /// How many have left `unfreed` (from its front): the record counted `n` is at
    /// `unfreed[n - popped]`.
    popped: u64,
}

impl Shard {
    /// Frees the ring's room up to the first record still held (all that was read, if none).
    fn free(&mut self) {
        while self.unfreed.front().is_some_and(|&(_, handed_out)| handed_out) {
            self.unfreed.pop_front();
            self.popped += 1;
        }
        let to = self.unfreed.front().map_or(self.ring.read(), |&(at, _)| at);
        self.ring.free_to(to);
    }
}

/// Sharded rings read as one stream (see the module's comment).
pub struct Merge {
    shards: Vec<Shard>,
    /// The held events, with their `timestamp_ns`; sorted by it when `sorted`.
    held: VecDeque<(u64, Slot)>,
    sorted: bool,
    /// io_uring submissions and completions not decoded yet (see the module's comment).
    deferred: Vec<Deferred>,
    /// The watcher ended: everything held goes out.
    ended: bool,
    /// The last pass stopped short of a shard's producers (see `behind`).
    behind: bool,
}

/// Records a pass reads, at most, from all shards together: few enough that what they take in
/// the CPU's cache is still there when they are handed out (a pass that read whole rings after a
/// burst read every record twice, once out of the cache). Each shard with records gets a share,
/// at least `PASS_LEAST` (at most 64 shards: still `PASS` in all).
const PASS: usize = 512;
const PASS_LEAST: usize = 8;

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
    pub fn new(rings: Vec<Ring>) -> Merge {
        let shards = rings
            .into_iter()
            .map(|ring| Shard { ring, until: 0, clean_at: 0, seen: 0, unfreed: VecDeque::new(), popped: 0 })
            .collect();
        Merge {
            shards,
            held: VecDeque::new(),
            sorted: true,
            deferred: Vec::new(),
            ended: false,
            behind: false,
        }
    }

    pub fn fds(&self) -> impl Iterator<Item = i32> + '_ {
        self.shards.iter().map(|s| s.ring.fd())
    }

    /// Before this, every record of every shard has been read that took its place in it then:
    /// the oldest of the shards' bounds, each the later of `clean_at` and `seen`.
    fn horizon(&self) -> u64 {
        if self.ended {
            u64::MAX
        } else {
            self.shards.iter().map(|s| s.clean_at.max(s.seen)).min().unwrap_or(0)
        }
    }

    /// Whether the last pass left records unread in some shard for want of room (`PASS`).
    pub fn behind(&self) -> bool {
        self.behind
    }

    /// One pass: reads each shard up to its producers' position at the start, or `PASS`'s share
    /// of records from each (`behind` says whether that left any). Events are held, their
    /// records left in the rings; io_uring submissions and completions (copied) wait for
    /// `take_ready`; the records that inform the reader (a cgroup's name, a followed
    /// process's exit), and any too short to be an event (the decoder says so), go to `visit` at
    /// once. How many records were read.
    pub fn read(&mut self, mut visit: impl FnMut(&[u8]) -> PyResult<()>) -> PyResult<usize> {
        const OPEN: u8 = RecordKind::Open as u8;
        const TRACEPOINT: u8 = RecordKind::Tracepoint as u8;
        const SUBMIT: u8 = RecordKind::UringSubmit as u8;
        const COMPLETE: u8 = RecordKind::UringComplete as u8;
        let t0 = monotonic_ns();
        let pass = (t0, self.horizon());
        let deferred_before = self.deferred.len();
        let mut read = 0;
        // The room of a pass is shared among the shards that have records, what one leaves going
        // to those after it.
        let mut with_records = 0;
        for shard in &mut self.shards {
            shard.until = shard.ring.producer();
            with_records += usize::from(shard.ring.read() < shard.until);
        }
        let mut room = PASS;
        self.behind = false;
        let mut failed = Ok(());
        'shards: for (index, shard) in self.shards.iter_mut().enumerate() {
            let Shard { ring, until, clean_at, seen, unfreed, popped } = shard;
            let until = *until;
            let most = if ring.read() < until {
                let most = room.div_ceil(with_records).max(PASS_LEAST);
                with_records -= 1;
                most
            } else {
                0
            };
            let mut taken = 0;
            while ring.read() < until {
                if taken == most {
                    self.behind = true;
                    break;
                }
                let Next::Record { at, data: record } = ring.next() else { break };
                read += 1;
                taken += 1;
                let stamp = match record.first() {
                    Some(&OPEN) => u64_at(record, offset_of!(OpenHeader, timestamp_ns)),
                    Some(&TRACEPOINT) => u64_at(record, offset_of!(TracepointHeader, timestamp_ns)),
                    // A request's submission and completion are put in order by the time it was
                    // submitted, which each carries (a short record: the decoder says so); that
                    // was before either was written, so it bounds `seen` too.
                    Some(&SUBMIT) => {
                        let submitted = u64_at(record, offset_of!(OpenHeader, timestamp_ns));
                        // The submit program puts the request's address where the result goes.
                        let request = u64_at(record, offset_of!(OpenHeader, ret));
                        *seen = (*seen).max(submitted.unwrap_or(0));
                        self.deferred.push(Deferred::new(pass, submitted, false, request, record));
                        continue;
                    }
                    Some(&COMPLETE) => {
                        let submitted = u64_at(record, offset_of!(UringComplete, submitted_ns));
                        let request = u64_at(record, offset_of!(UringComplete, req));
                        *seen = (*seen).max(submitted.unwrap_or(0));
                        self.deferred.push(Deferred::new(pass, submitted, true, request, record));
                        continue;
                    }
                    _ => None,
                };
                let Some(stamp) = stamp else {
                    if let Err(err) = visit(record) {
                        failed = Err(err);
                        break 'shards;
                    }
                    continue;
                };
                *seen = (*seen).max(stamp);
                self.held.push_back((
                    stamp,
                    Slot::Record { shard: index as u32, n: *popped + unfreed.len() as u64 },
                ));
                unfreed.push_back((at, false));
                self.sorted = false;
            }
            room = room.saturating_sub(taken);
            if ring.read() >= until {
                *clean_at = t0;
            }
        }
        // The io_uring records read know when this pass ended, whatever stopped it.
        let ended = monotonic_ns();
        for record in &mut self.deferred[deferred_before..] {
            record.read_at = ended;
        }
        for shard in &mut self.shards {
            shard.free();
        }
        failed.map(|()| read)
    }

    /// The io_uring records that can be decoded now (see `ready_deferred`), in the order their
    /// requests were made; `waiting(address, submitted_ns)`: whether the decoder holds that
    /// request's submission. Decoded by `hold_decoded`.
    pub fn take_ready(&mut self, waiting: impl Fn(u64, u64) -> bool) -> Ready {
        if self.deferred.is_empty() {
            return Ready(Vec::new());
        }
        let (mut ready, left) = ready_deferred(std::mem::take(&mut self.deferred), self.horizon(), waiting);
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

    /// Before this, every event has been read and decoded: `horizon`, and no later than the
    /// submission of an io_uring open whose completion has been read but not decoded yet (it
    /// will be at the next pass), so that its event goes before the held events stamped after
    /// it; but no earlier than the horizon when that completion's pass began, so that a stream of
    /// slow requests holds events back for a pass, not for as long as its requests take.
    fn release_cut(&self) -> u64 {
        let completed = self.deferred.iter().filter(|d| d.order.1).map(|d| d.holds_from).min();
        completed.map_or(self.horizon(), |from| from.min(self.horizon()))
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
        let mut result = Ok(());
        while self.held.front().is_some_and(|(ts, _)| *ts < cut) {
            let Some((_, slot)) = self.held.pop_front() else { break };
            given += 1;
            let more = match slot {
                Slot::Record { shard, n } => {
                    let shard = &mut self.shards[shard as usize];
                    let index = (n - shard.popped) as usize;
                    // Handed out before `give` runs: whatever it does (fails, panics), the room
                    // is freed (the record is not touched after it returns).
                    shard.unfreed[index].1 = true;
                    give(Held::Record(shard.ring.record(shard.unfreed[index].0)))
                }
                Slot::Open(open) => give(Held::Open(*open)),
            };
            match more {
                Ok(true) => {}
                Ok(false) => break,
                Err(err) => {
                    result = Err(err);
                    break;
                }
            }
        }
        for shard in &mut self.shards {
            shard.free();
        }
        result.map(|()| given)
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
            shard.ring.read_rest(|record| unread.extend(completes(record)));
            shard.free();
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

/// `Merge::forget_waiting` of these records, with the completions read after them (`completed`).
fn undecoded(deferred: &[Deferred], mut completed: Completed) -> (u64, Completed) {
    completed.extend(deferred.iter().filter(|d| d.order.1).map(Deferred::key));
    let lost = deferred.iter().filter(|d| !d.order.1 && !completed.contains(&d.key())).count();
    (lost as u64, completed)
}

/// The io_uring records that can be decoded now (see `read`), and those that wait: every record
/// read by a pass that ended before `cut` (`Merge::horizon`: every shard has been read past every
/// record written before it, so a completion's submission, written before the completion was,
/// which was before that pass ended, has been read, whichever shard it went to), and with them
/// every record whose request was made no later than one of those: a submission read by a later
/// pass, or the previous request's completion at an address reused since (decoded apart, the
/// completion found no request, or the next request took its place, and both events were lost);
/// such a completion only with its submission.
fn ready_deferred(
    deferred: Vec<Deferred>,
    cut: u64,
    waiting: impl Fn(u64, u64) -> bool,
) -> (Vec<Deferred>, Vec<Deferred>) {
    let Some(last) = deferred.iter().filter(|d| d.read_at < cut).map(|d| d.order).max() else {
        return (Vec::new(), deferred);
    };
    // A completion goes along by its order only with its submission, here or waiting in the
    // decoder: a submission stamped before `last` may have been written after the pass that read
    // `last` read its shard (its program ran late), and its completion with it.
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
        // The completion came from one shard in the pass that ended at 100, its submission from
        // another shard, in the pass that ended at 200 (the horizon is 150 now).
        let (ready, waiting) = ready(vec![complete(100, 90), submit(200, 90)], 150);
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
        // Request Q was stamped at 90; its completion was read by the pass that ended at 200,
        // and its submission's record not yet (the horizon is 150: it may be in a shard read
        // only that far). Request P (95) was read a pass earlier: Q's completion is ordered
        // before it, but must wait for Q's submission, unless the decoder already holds it.
        let records = || vec![record(100, 95, false, 0x2000), record(200, 90, true, REQ)];
        let (ready, waiting) = ready_deferred(records(), 150, |_, _| false);
        assert_eq!((orders(&ready), orders(&waiting)), (vec![(95, false)], vec![(90, true)]));
        let (ready, waiting) =
            ready_deferred(records(), 150, |request, submitted| (request, submitted) == (REQ, 90));
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
