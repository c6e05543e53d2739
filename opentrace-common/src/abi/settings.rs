//! A watcher's filters and features, as its programs see them (a read-only global).
use crate::comm;

/// A watcher's settings, a read-only global of its programs: the verifier sees the values, so
/// what a watcher does not use (a filter, full paths) is pruned from the code it runs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Bit set of `FILTER_*` and `WITH_*`.
    pub enabled: u32,
    pub tid: u32,
    pub uid: u32,
    /// The tracer's own tgid, left out when `FILTER_EXCLUDE_SELF` is set.
    pub self_tgid: u32,
    /// The substring the task's comm must contain (see [`comm::Needle`]).
    pub comm: comm::Needle,
    /// `FILTER_CGROUP`: only tasks in the cgroup v2 with this id, at this depth, or below it.
    pub cgroup_id: u64,
    pub cgroup_level: u32,
    /// `TEST_FAILURES`: one in about this many opens fails in the exit program.
    pub fail_every: u32,
    /// `IN_PID_NAMESPACE`: the tracer's PID namespace (the device and inode of its nsfs file);
    /// ids are those of that namespace and tasks it cannot see are left out.
    pub pidns_dev: u64,
    pub pidns_ino: u64,
    /// `WITH_COUNTS`: `count::BY_*` bits, what opens are counted by.
    pub count_by: u32,
    /// `WITH_COUNTS`: how many keys the map holds (the loader sizes it; the programs do not read it).
    pub count_keys: u32,
}

pub const FILTER_TID: u32 = 1 << 1;
pub const FILTER_UID: u32 = 1 << 2;
pub const FILTER_FAILED: u32 = 1 << 3;
pub const FILTER_COMM: u32 = 1 << 4;
pub const FILTER_EXCLUDE_SELF: u32 = 1 << 5;
/// Only the processes in the `TRACKED` map (a pid watcher: the process, and with `descendants`
/// every process it starts, added as they fork).
pub const FILTER_TRACKED: u32 = 1 << 6;
/// Only tasks in a cgroup (`Settings::cgroup_id`) or below it.
pub const FILTER_CGROUP: u32 = 1 << 7;
/// The tracer runs in a PID namespace other than the initial one (`Settings::pidns_*`).
pub const IN_PID_NAMESPACE: u32 = 1 << 9;
/// Resolve each open's full path and send it (`full_path=True`, or counts by file: a new key's
/// name). A path filter resolves the ones it has to match without it, and does not send them
/// (but io_uring's, which the reader matches as they complete, then drops).
pub const WITH_FULL_PATH: u32 = 1 << 8;
/// For the tests of loss accounting only: the exit program fails (as a kernel read can) for about
/// one open in `Settings::fail_every`, after the event passed the filters, so that the test can
/// check that delivered + lost stays exact. Off, the verifier prunes it.
pub const TEST_FAILURES: u32 = 1 << 10;
/// Read each successful open's file identity (inode, device, mount id) (`file_id=True`, the
/// default; the loader clears it when this kernel's BTF lacks what it takes).
pub const WITH_FILE_ID: u32 = 1 << 11;
/// Counting mode: opens are counted in the kernel (see `abi::count`), not sent one by one.
pub const WITH_COUNTS: u32 = 1 << 12;
/// Only opens whose full path matches an entry of the path filter (see `abi::paths`); full
/// paths are resolved to be matched (but for a file found under a directory entry by its
/// dentries), and sent only with `WITH_FULL_PATH` (io_uring's go to the reader, which matches
/// them). An open that cannot be compared is let through with the reason its full path is None.
pub const FILTER_PATHS: u32 = 1 << 13;
/// With `FILTER_PATHS`, every entry is a directory that existed when the watcher started: a
/// successful open is matched by its file's ancestors (see `abi::paths::Learned`).
pub const PATHS_BY_DENTRY: u32 = 1 << 14;

impl Settings {
    pub const NONE: Settings = Settings {
        enabled: 0,
        tid: 0,
        uid: 0,
        self_tgid: 0,
        comm: comm::Needle::EMPTY,
        cgroup_id: 0,
        cgroup_level: 0,
        fail_every: 0,
        pidns_dev: 0,
        pidns_ino: 0,
        count_by: 0,
        count_keys: 0,
    };
}

super::layouts!(Settings = 88);
