//! A watcher's configuration: `watch()`'s keyword arguments (type-checked in Python against the
//! bounds defined here, which the module exports) turned into what the loader needs, the
//! programs' `Settings` above all.
use std::{sync::Arc, time::Duration};

use opentrace_common::{
    abi::{
        count::{BY_FILE, at_exit_only},
        open::Syscall,
        settings::{
            FILTER_CGROUP, FILTER_COMM, FILTER_EXCLUDE_SELF, FILTER_FAILED, FILTER_PATHS, FILTER_TID,
            FILTER_UID, IN_PID_NAMESPACE, Settings, TEST_FAILURES, WITH_COUNTS, WITH_FILE_ID, WITH_FULL_PATH,
        },
    },
    comm::Needle,
    tracepoint::Schema,
};

use crate::{
    error::{Error, Result},
    paths::PathFilter,
};

/// The largest ring buffer a watcher may ask for (`ring_size`), in bytes.
pub const MAX_RING_SIZE: u32 = 1 << 30;
/// The most ring buffer shards a watcher may have (`ring_shards`), and so the most by default.
pub const MAX_RING_SHARDS: u32 = 64;
/// How long a busy stream may hold an event back to batch it (`latency`), by default and at most.
pub const DEFAULT_LATENCY_S: f64 = 0.002;
pub const MAX_LATENCY_S: f64 = 1.0;

/// What `watch()` (or `watch_tracepoints()`, `run()`) asks for, as checked in Python.
#[derive(Debug, Default)]
pub struct Options {
    pub syscalls: Vec<String>,
    pub ring_size: u32,
    /// None: the default for this machine (`default_ring_shards`).
    pub ring_shards: Option<u32>,
    pub latency_ns: u64,
    pub pid: Option<u32>,
    pub descendants: bool,
    pub tid: Option<u32>,
    pub uid: Option<u32>,
    pub comm: Option<Vec<u8>>,
    pub failed: bool,
    /// The tracer's own process, left out.
    pub exclude_tgid: Option<u32>,
    pub full_path: bool,
    /// The cgroup filter, resolved: its id and depth.
    pub cgroup: Option<(u64, u32)>,
    /// The tracer's PID namespace when it is not the initial one: its nsfs device and inode.
    pub pid_namespace: Option<(u64, u64)>,
    /// For the tests of loss accounting: one open in about this many fails in the kernel.
    pub fail_every: Option<u32>,
    /// Counting mode (`watch_counts`): what opens are counted by (`abi::count::BY_*`) and how
    /// many keys the kernel's map holds.
    pub counts: Option<(u32, u32)>,
    /// Read each successful open's file identity (inode, dev, mnt_id).
    pub file_id: bool,
    /// Only opens whose full path matches.
    pub paths: Option<PathFilter>,
}

/// What the loader needs.
pub struct Config {
    pub settings: Settings,
    pub syscalls: Vec<Syscall>,
    /// Any tracepoints (`watch_tracepoints`), each with whether it was named (rather than matched
    /// by a glob): when there are some, they are watched instead of the opens, and `syscalls` is
    /// not looked at.
    pub tracepoints: Vec<(Arc<Schema>, bool)>,
    pub rings: Rings,
    /// A pid watcher: this process, and with `descendants` every process descended from it.
    pub follow: Option<Follow>,
    /// The path filter, whose entries the loader gives the programs.
    pub paths: Option<PathFilter>,
    /// `Options::counts_unnamed`.
    pub counts_unnamed: bool,
}

impl Config {
    /// Whether events carry their full path: asked for (or a new key's name when counting by
    /// file). A path filter's are resolved to be matched, not sent.
    pub fn sends_full_paths(&self) -> bool {
        self.settings.enabled & WITH_FULL_PATH != 0
    }
}

/// The ring buffers: `shards` of `shard_size` bytes each, CPU `c`'s records going to shard
/// `c % shards`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rings {
    pub shards: u32,
    pub shard_size: u32,
}

/// One shard per two online CPUs (as Falco), at most `MAX_RING_SHARDS`; one on two CPUs or fewer.
/// Each shard's producers share its lock: on one ring, 16 busy CPUs made capture cost twice what it
/// did at 4.
pub fn default_ring_shards(online_cpus: u32) -> u32 {
    if online_cpus <= 2 { 1 } else { online_cpus.div_ceil(2).min(MAX_RING_SHARDS) }
}

fn page_size() -> u32 {
    // SAFETY: sysconf reads a constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(size).ok().filter(|s| s.is_power_of_two()).unwrap_or(4096)
}

fn online_cpus() -> u32 {
    // SAFETY: sysconf reads a count.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(n).unwrap_or(1).max(1)
}

impl Rings {
    /// `ring_size` bytes in all (a power of two, checked in Python), in `requested` shards or the
    /// default for `online_cpus`. Each shard is an equal power-of-two share of at least a page (the
    /// kernel's smallest ring), so the total is `ring_size` when the count is a power of two and
    /// less otherwise; the default count is lowered until each shard has a page, a requested one
    /// that cannot have it is an error.
    pub fn new(ring_size: u32, requested: Option<u32>, online_cpus: u32, page: u32) -> Result<Rings> {
        let most = (ring_size / page).max(1);
        let shards = match requested {
            Some(n) if n == 0 || n > MAX_RING_SHARDS => {
                return Err(Error::Invalid(format!(
                    "ring_shards must be between 1 and {MAX_RING_SHARDS}, not {n}"
                )));
            }
            Some(n) if n > most => {
                return Err(Error::Invalid(format!(
                    "ring_size {ring_size} cannot be split into {n} shards of at least a page ({page} \
                     bytes) each: ask for at most {most} shards, or a larger ring_size"
                )));
            }
            Some(n) => n,
            None => default_ring_shards(online_cpus).min(most),
        };
        let share = ring_size / shards;
        // The largest power of two not above the share (a page at least, as checked above).
        let shard_size = 1u32 << (31 - share.leading_zeros());
        Ok(Rings { shards, shard_size })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Follow {
    pub root: u32,
    pub descendants: bool,
}

impl Options {
    /// The programs' settings: one bit per filter or feature that is on, and its value.
    pub fn settings(&self) -> Result<Settings> {
        let mut settings = Settings::NONE;
        let mut on = |bit: u32, wanted: bool| {
            if wanted {
                settings.enabled |= bit;
            }
            wanted
        };
        on(WITH_FULL_PATH, self.full_path);
        on(WITH_FILE_ID, self.file_id);
        on(FILTER_FAILED, self.failed);
        // Paths are matched in full, resolved where the filter needs them (not sent unless asked).
        on(FILTER_PATHS, self.paths.is_some());
        if let Some(tid) = self.tid.filter(|_| on(FILTER_TID, true)) {
            settings.tid = tid;
        }
        if let Some(uid) = self.uid.filter(|_| on(FILTER_UID, true)) {
            settings.uid = uid;
        }
        if let Some(tgid) = self.exclude_tgid.filter(|_| on(FILTER_EXCLUDE_SELF, true)) {
            settings.self_tgid = tgid;
        }
        if let Some((id, level)) = self.cgroup.filter(|_| on(FILTER_CGROUP, true)) {
            (settings.cgroup_id, settings.cgroup_level) = (id, level);
        }
        if let Some((dev, ino)) = self.pid_namespace.filter(|_| on(IN_PID_NAMESPACE, true)) {
            (settings.pidns_dev, settings.pidns_ino) = (dev, ino);
        }
        if let Some(every) = self.fail_every {
            if every == 0 {
                return Err(Error::Invalid("fail_every must be at least 1".into()));
            }
            on(TEST_FAILURES, true);
            settings.fail_every = every;
        }
        if let Some((by, keys)) = self.counts {
            if keys == 0 {
                return Err(Error::Invalid("max_keys must be at least 1".into()));
            }
            // The first open of a key grouped by file names it by its full path.
            on(WITH_COUNTS, true);
            on(WITH_FULL_PATH, by & BY_FILE != 0);
            (settings.count_by, settings.count_keys) = (by, keys);
        }
        if let Some(substring) = &self.comm {
            settings.enabled |= FILTER_COMM;
            settings.comm =
                Needle::new(substring).ok_or_else(|| Error::Invalid("comm cannot be in a comm".into()))?;
        }
        Ok(settings)
    }

    /// The syscalls by their names.
    pub fn syscalls(&self) -> Result<Vec<Syscall>> {
        self.syscalls
            .iter()
            .map(|name| {
                Syscall::from_name(name).ok_or_else(|| Error::Invalid(format!("unknown syscall {name:?}")))
            })
            .collect()
    }

    /// Counting mode with keys the exit programs make alone (`abi::count::at_exit_only`) and no
    /// path filter (which needs the full path): no event names a key (the reader names cgroups
    /// by id).
    pub fn counts_unnamed(&self) -> bool {
        self.counts.is_some_and(|(by, _)| at_exit_only(by)) && self.paths.is_none()
    }

    pub fn follow(&self) -> Option<Follow> {
        self.pid.map(|root| Follow { root, descendants: self.descendants })
    }

    /// What the loader needs, with the schemas of the tracepoints to watch (if any).
    pub fn config(&self, tracepoints: Vec<(Arc<Schema>, bool)>) -> Result<Config> {
        Ok(Config {
            settings: self.settings()?,
            syscalls: self.syscalls()?,
            tracepoints,
            rings: Rings::new(self.ring_size, self.ring_shards, online_cpus(), page_size())?,
            follow: self.follow(),
            paths: self.paths.clone(),
            counts_unnamed: self.counts_unnamed(),
        })
    }

    pub fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_filter_sets_no_bit() {
        assert_eq!(Options::default().settings().unwrap(), Settings::NONE);
    }

    #[test]
    fn each_filter_sets_its_bit_and_value() {
        let options = Options {
            tid: Some(7),
            uid: Some(0),
            failed: true,
            exclude_tgid: Some(9),
            cgroup: Some((1234, 3)),
            comm: Some(b"make".to_vec()),
            ..Options::default()
        };
        let settings = options.settings().unwrap();
        let bits =
            FILTER_TID | FILTER_UID | FILTER_FAILED | FILTER_EXCLUDE_SELF | FILTER_CGROUP | FILTER_COMM;
        assert_eq!(settings.enabled, bits);
        assert_eq!((settings.tid, settings.uid, settings.self_tgid), (7, 0, 9));
        assert_eq!((settings.cgroup_id, settings.cgroup_level), (1234, 3));
        assert!(settings.comm.found_in(*b"gmake\0\0\0\0\0\0\0\0\0\0\0"));
        assert!(!settings.comm.found_in(*b"bash\0\0\0\0\0\0\0\0\0\0\0\0"));
    }

    #[test]
    fn a_forced_failure_needs_a_period() {
        assert!(Options { fail_every: Some(0), ..Options::default() }.settings().is_err());
        let settings = Options { fail_every: Some(3), ..Options::default() }.settings().unwrap();
        assert_eq!((settings.enabled, settings.fail_every), (TEST_FAILURES, 3));
    }

    #[test]
    fn one_shard_per_two_cpus_up_to_64() {
        let shards: Vec<u32> = [1, 2, 3, 4, 16, 192].map(default_ring_shards).to_vec();
        assert_eq!(shards, vec![1, 1, 2, 2, 8, 64]);
    }

    #[test]
    fn ring_size_is_the_total_split_in_powers_of_two() {
        let mib = 1 << 20;
        assert_eq!(Rings::new(4 * mib, None, 16, 4096).unwrap(), Rings { shards: 8, shard_size: mib / 2 });
        assert_eq!(Rings::new(4 * mib, None, 2, 4096).unwrap(), Rings { shards: 1, shard_size: 4 * mib });
        // Three shards of a third each, rounded down to a power of two.
        assert_eq!(Rings::new(4 * mib, Some(3), 2, 4096).unwrap(), Rings { shards: 3, shard_size: mib });
        // The default never makes a shard smaller than a page; a request that would is refused.
        assert_eq!(Rings::new(8192, None, 16, 4096).unwrap(), Rings { shards: 2, shard_size: 4096 });
        assert!(Rings::new(8192, Some(4), 16, 4096).is_err());
        assert!(Rings::new(4 * mib, Some(0), 16, 4096).is_err());
        assert!(Rings::new(4 * mib, Some(65), 16, 4096).is_err());
    }

    #[test]
    fn syscalls_by_name() {
        let options = Options { syscalls: vec!["openat".into(), "io_uring".into()], ..Options::default() };
        assert_eq!(options.syscalls().unwrap(), vec![Syscall::Openat, Syscall::IoUring]);
        assert!(Options { syscalls: vec!["read".into()], ..Options::default() }.syscalls().is_err());
        let follow = Options { pid: Some(5), descendants: true, ..Options::default() }.follow();
        assert_eq!(follow, Some(Follow { root: 5, descendants: true }));
    }
}
