//! Loss accounting, in one place: every count of events that passed the filters and were not
//! delivered (the programs' per-CPU counters, the kernel's count of skipped runs, and the reader's
//! own), the one sum of them (`Lost::total`, which `Watcher.lost` is), and the words that report
//! them (`Lost::since`). Delivered + lost is exactly what happened.
use std::{
    os::fd::{AsFd, OwnedFd},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aya::maps::{MapData, PerCpuArray, PerCpuValues};
use opentrace_common::abi::{Counter, process::TRACKED_MAX};
use pyo3::{prelude::*, sync::MutexExt};

use crate::{
    diag,
    error::{Error, Result},
    sys,
};

/// How often newly lost events are looked for (two syscalls) and reported.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The per-CPU counters the programs keep, and the programs whose skipped runs are lost events.
pub struct Counters {
    counts: PerCpuArray<MapData, u64>,
    programs: Vec<OwnedFd>,
    /// Ring buffer shards: CPU `c` writes to shard `c % shards`.
    shards: u32,
}

impl Counters {
    /// `programs`: the loaded programs that make events (a run the kernel skipped is an event
    /// lost); `shards`: how many ring buffers the CPUs share.
    pub fn new(counts: PerCpuArray<MapData, u64>, programs: Vec<OwnedFd>, shards: u32) -> Counters {
        Counters { counts, programs, shards: shards.max(1) }
    }

    /// Events each shard's ring had no room for: the per-CPU count, summed over the shard's CPUs
    /// (a program counts on the CPU it ran on, the one whose shard it wrote to).
    fn ring_by_shard(&self) -> Result<Vec<u64>> {
        let mut shards = vec![0u64; self.shards as usize];
        for (cpu, n) in self.per_cpu(Counter::LostRing)?.iter().enumerate() {
            let shard = &mut shards[cpu % self.shards as usize];
            *shard = shard.saturating_add(*n);
        }
        Ok(shards)
    }

    /// The kernel's counts, and the ring-full ones by shard (which `ring` is the sum of).
    fn kernel(&self) -> Result<(KernelLost, Vec<u64>)> {
        let by_shard = self.ring_by_shard()?;
        let mut skipped = 0;
        for program in &self.programs {
            skipped += sys::recursion_misses(program.as_fd())
                .map_err(|e| Error::kernel("reading the programs' statistics", &e))?;
        }
        let lost = KernelLost {
            ring: by_shard.iter().fold(0u64, |sum, n| sum.saturating_add(*n)),
            unpaired: self.sum(Counter::LostPending)?,
            failed: self.sum(Counter::LostError)?,
            uncounted: self.sum(Counter::CountsFull)?,
            skipped,
        };
        Ok((lost, by_shard))
    }

    /// Processes a pid watcher could not follow (its set was full).
    fn unfollowed(&self) -> Result<u64> {
        self.sum(Counter::Unfollowed)
    }

    fn per_cpu(&self, counter: Counter) -> Result<PerCpuValues<u64>> {
        self.counts.get(&(counter as u32), 0).map_err(|e| Error::kernel("reading the programs' counters", &e))
    }

    fn sum(&self, counter: Counter) -> Result<u64> {
        Ok(self.per_cpu(counter)?.iter().fold(0u64, |sum, v| sum.saturating_add(*v)))
    }
}

/// Events lost in the kernel, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLost {
    /// The ring buffer was full (or an io_uring request could not be remembered).
    pub ring: u64,
    /// The task's storage for pairing a syscall's entry and exit could not be allocated (counted
    /// at entry, before the failed-only filter).
    pub unpaired: u64,
    /// A program failed (a kernel read, a map) after its event passed the filters.
    pub failed: u64,
    /// Counting mode: opens not counted, the map of keys being full.
    pub uncounted: u64,
    /// The kernel skipped a program's run because another BPF program was running on that CPU
    /// (a tracepoint hit in an interrupt during one).
    pub skipped: u64,
}

/// Events lost, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lost {
    pub kernel: KernelLost,
    /// io_uring open requests whose completion never came to the reader.
    pub uring: u64,
    /// Records the decoder refused.
    pub undecodable: u64,
}

impl Lost {
    fn causes(self) -> [(u64, &'static str, &'static str); 7] {
        [
            (
                self.kernel.ring,
                "ring buffer full",
                "the reader fell behind; a larger ring buffer (ring_size, --ring-size) absorbs longer bursts",
            ),
            (
                self.kernel.unpaired,
                "no room to pair a syscall's entry and exit",
                "the kernel could not allocate the task's storage",
            ),
            (
                self.kernel.failed,
                "the program failed",
                "a kernel read or map update failed in the eBPF program after the event passed the filters",
            ),
            (
                self.kernel.uncounted,
                "not counted, the table of keys full",
                "more files (or processes) were opened than the counting map holds; a larger max_keys (--max-keys) holds more",
            ),
            (
                self.kernel.skipped,
                "program runs skipped",
                "the kernel skips a program's run while another BPF program runs on that CPU",
            ),
            (
                self.uring,
                "io_uring result never came",
                "no completion was traced: IOSQE_CQE_SKIP_SUCCESS, a completion queue overflow, more requests in flight than the kernel's map holds, or still in flight when the watcher ended",
            ),
            (self.undecodable, "records not decoded", "see the warnings above"),
        ]
    }

    /// Everything lost: the one sum behind `Watcher.lost` (saturating: a count never wraps).
    pub fn total(self) -> u64 {
        self.causes().iter().fold(0u64, |sum, (n, ..)| sum.saturating_add(*n))
    }

    /// The warning for what was lost since `before`: how many, why, and what helps.
    pub fn since(self, before: Lost) -> String {
        let causes: Vec<_> = self
            .causes()
            .into_iter()
            .zip(before.causes())
            .map(|((now, label, why), (then, ..))| (now.saturating_sub(then), label, why))
            .filter(|(n, ..)| *n > 0)
            .collect();
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

/// The counts of one watcher, shared by the thread reading it and any thread asking `lost`
/// (which never waits for a blocked reader). The kernel's counters go at close; the count as of
/// then is kept.
pub struct Ledger {
    counters: Mutex<Option<Counters>>,
    /// io_uring open requests whose completion never came to the reader.
    uring: AtomicU64,
    /// Records the decoder refused (each logged).
    undecodable: AtomicU64,
    /// `lost` as of close.
    closed_at: AtomicU64,
    /// `lost_by_shard` as of close.
    closed_by_shard: Mutex<Vec<u64>>,
}

impl Ledger {
    pub fn new(counters: Counters) -> Ledger {
        Ledger {
            counters: Mutex::new(Some(counters)),
            uring: AtomicU64::new(0),
            undecodable: AtomicU64::new(0),
            closed_at: AtomicU64::new(0),
            closed_by_shard: Mutex::new(Vec::new()),
        }
    }

    pub fn add_uring(&self, n: u64) {
        if n > 0 {
            self.uring.fetch_add(n, Ordering::AcqRel);
        }
    }

    pub fn add_undecodable(&self) {
        self.undecodable.fetch_add(1, Ordering::AcqRel);
    }

    /// What is lost as of now, and the ring-full part of it by shard; None once closed.
    fn now(&self, py: Python<'_>) -> Result<Option<(Lost, Vec<u64>)>> {
        let counters = self.counters.lock_py_attached(py).unwrap_or_else(|p| p.into_inner());
        let Some(counters) = counters.as_ref() else { return Ok(None) };
        let (kernel, by_shard) = counters.kernel()?;
        let lost = Lost {
            kernel,
            uring: self.uring.load(Ordering::Acquire),
            undecodable: self.undecodable.load(Ordering::Acquire),
        };
        Ok(Some((lost, by_shard)))
    }

    /// `Watcher.lost`.
    pub fn total(&self, py: Python<'_>) -> Result<u64> {
        Ok(match self.now(py)? {
            Some((lost, _)) => lost.total(),
            None => self.closed_at.load(Ordering::Acquire),
        })
    }

    /// `Watcher.lost_by_shard`: events lost because a shard's ring was full, by shard (part of
    /// `total`).
    pub fn by_shard(&self, py: Python<'_>) -> Result<Vec<u64>> {
        Ok(match self.now(py)? {
            Some((_, by_shard)) => by_shard,
            None => self.closed_by_shard.lock_py_attached(py).unwrap_or_else(|p| p.into_inner()).clone(),
        })
    }

    /// Nothing is read from here on: the counts as of now are final, and the counters go.
    pub fn close(&self, py: Python<'_>) -> Result<()> {
        let result = self.now(py).map(|now| {
            if let Some((lost, by_shard)) = now {
                self.closed_at.store(lost.total(), Ordering::Release);
                *self.closed_by_shard.lock_py_attached(py).unwrap_or_else(|p| p.into_inner()) = by_shard;
            }
        });
        self.forget();
        result
    }

    /// Lets the counters go without reading them (a forked child's copy).
    pub fn forget(&self) {
        if let Ok(mut counters) = self.counters.try_lock() {
            counters.take();
        }
    }
}

/// What the reader has said of losses so far, so that each warning says what is new.
pub struct Reporter {
    checked: Instant,
    reported: Lost,
    unfollowed: u64,
    /// Counting mode: keys whose naming record was lost, as last said.
    unnamed: u64,
    /// Check at the next `report`, whenever the last check was.
    soon: bool,
}

impl Reporter {
    pub fn new() -> Reporter {
        Reporter {
            checked: Instant::now(),
            reported: Lost::default(),
            unfollowed: 0,
            unnamed: 0,
            soon: false,
        }
    }

    /// The next `report` checks, whenever the last check was (the last word of a watcher).
    pub fn check_soon(&mut self) {
        self.soon = true;
    }

    /// Whether a check is due (at most once a second, unless asked for).
    pub fn due(&self) -> bool {
        self.soon || self.checked.elapsed() >= CHECK_EVERY
    }

    /// Warns, through the `opentrace` logger's notes, of events lost and processes not followed
    /// since the last report.
    pub fn report(&mut self, py: Python<'_>, ledger: &Ledger) -> Result<()> {
        self.soon = false;
        self.checked = Instant::now();
        let counters = ledger.counters.lock_py_attached(py).unwrap_or_else(|p| p.into_inner());
        let unfollowed = counters.as_ref().map(Counters::unfollowed).transpose()?;
        let unnamed = counters.as_ref().map(|c| c.sum(Counter::NamesLost)).transpose()?;
        drop(counters);
        if let Some(unnamed) = unnamed
            && unnamed > self.unnamed
        {
            diag::note(
                diag::Level::Warning,
                format!(
                    "{} counted files have no path: the record naming each found the ring buffer full \
                     (their counts are whole); a larger ring buffer (ring_size) absorbs longer bursts",
                    unnamed - self.unnamed
                ),
            );
            self.unnamed = unnamed;
        }
        if let Some(unfollowed) = unfollowed
            && unfollowed > self.unfollowed
        {
            diag::note(
                diag::Level::Warning,
                format!(
                    "{} processes started by followed ones could not be followed (more than \
                     {TRACKED_MAX} at once); their opens are not reported",
                    unfollowed - self.unfollowed
                ),
            );
            self.unfollowed = unfollowed;
        }
        if let Some((lost, _)) = ledger.now(py)?
            && lost.total() > self.reported.total()
        {
            diag::note(diag::Level::Warning, lost.since(self.reported));
            self.reported = lost;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost(ring: u64, failed: u64, uring: u64) -> Lost {
        Lost { kernel: KernelLost { ring, failed, ..KernelLost::default() }, uring, undecodable: 0 }
    }

    #[test]
    fn the_total_is_every_cause_and_never_wraps() {
        let all = Lost {
            kernel: KernelLost { ring: 1, unpaired: 2, failed: 3, uncounted: 7, skipped: 4 },
            uring: 5,
            undecodable: 6,
        };
        assert_eq!(all.total(), 28);
        assert_eq!(lost(u64::MAX, 1, 0).total(), u64::MAX);
    }

    #[test]
    fn one_cause_is_named_alone() {
        let message = lost(7, 0, 0).since(Lost::default());
        assert!(
            message.starts_with("7 events lost (ring buffer full; 7 in all): the reader fell behind"),
            "{message}"
        );
    }

    #[test]
    fn several_causes_are_counted_each_and_only_what_is_new() {
        let message = lost(10, 4, 1).since(lost(8, 0, 1));
        assert!(
            message.starts_with("6 events lost (ring buffer full: 2, the program failed: 4; 15 in all)"),
            "{message}"
        );
        assert!(!message.contains("io_uring"), "{message}");
    }
}
