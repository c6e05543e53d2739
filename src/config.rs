//! A watcher's configuration: `watch()`'s keyword arguments (type-checked in Python against the
//! bounds defined here, which the module exports) turned into what the loader needs, the
//! programs' `Settings` above all.
use std::{sync::Arc, time::Duration};

use opentrace_common::{
    abi::{
        open::Syscall,
        settings::{
            FILTER_CGROUP, FILTER_COMM, FILTER_EXCLUDE_SELF, FILTER_FAILED, FILTER_TID, FILTER_UID,
            IN_PID_NAMESPACE, Settings, TEST_FAILURES, WITH_FULL_PATH,
        },
    },
    comm::Needle,
    tracepoint::Schema,
};

use crate::error::{Error, Result};

/// The largest ring buffer a watcher may ask for (`ring_size`), in bytes.
pub const MAX_RING_SIZE: u32 = 1 << 30;
/// How long a busy stream may hold an event back to batch it (`latency`), by default and at most.
pub const DEFAULT_LATENCY_S: f64 = 0.002;
pub const MAX_LATENCY_S: f64 = 1.0;

/// What `watch()` (or `watch_tracepoints()`, `run()`) asks for, as checked in Python.
#[derive(Debug, Default)]
pub struct Options {
    pub syscalls: Vec<String>,
    pub ring_size: u32,
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
}

/// What the loader needs.
pub struct Config {
    pub settings: Settings,
    pub syscalls: Vec<Syscall>,
    /// Any tracepoints (`watch_tracepoints`), each with whether it was named (rather than matched
    /// by a glob): when there are some, they are watched instead of the opens, and `syscalls` is
    /// not looked at.
    pub tracepoints: Vec<(Arc<Schema>, bool)>,
    pub ring_size: u32,
    /// A pid watcher: this process, and with `descendants` every process descended from it.
    pub follow: Option<Follow>,
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
        on(FILTER_FAILED, self.failed);
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

    pub fn follow(&self) -> Option<Follow> {
        self.pid.map(|root| Follow { root, descendants: self.descendants })
    }

    /// What the loader needs, with the schemas of the tracepoints to watch (if any).
    pub fn config(&self, tracepoints: Vec<(Arc<Schema>, bool)>) -> Result<Config> {
        Ok(Config {
            settings: self.settings()?,
            syscalls: self.syscalls()?,
            tracepoints,
            ring_size: self.ring_size,
            follow: self.follow(),
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
    fn syscalls_by_name() {
        let options = Options { syscalls: vec!["openat".into(), "io_uring".into()], ..Options::default() };
        assert_eq!(options.syscalls().unwrap(), vec![Syscall::Openat, Syscall::IoUring]);
        assert!(Options { syscalls: vec!["read".into()], ..Options::default() }.syscalls().is_err());
        let follow = Options { pid: Some(5), descendants: true, ..Options::default() }.follow();
        assert_eq!(follow, Some(Follow { root: 5, descendants: true }));
    }
}
