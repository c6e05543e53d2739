//! In-kernel counting (`watch_counts`, `opentrace top`): the exit programs count opens per key in
//! a per-CPU hash map instead of sending an event each; the first open of a key is sent as usual,
//! marked `STATUS_COUNTED`, to name it (the reader makes the same key from the event). Keys
//! without the file are counted at the exit alone, with no entry program and nothing sent (see
//! `at_exit_only`). The reader sums the per-CPU counters every interval: the differences are the
//! interval's opens.

/// What an open is counted under. Fields the watcher does not group by are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CountKey {
    /// `BY_CGROUP`: the task's cgroup v2 id.
    pub cgroup_id: u64,
    /// `BY_FILE`: a successful open's inode; a failed one's hash of the path as passed.
    pub file: u64,
    /// `BY_FILE`, a failed open of a relative path: the inode of the directory it started from.
    pub dir: u64,
    /// `BY_PID`: the process.
    pub pid: u32,
    /// `BY_FILE`: the file's device (a failed open: the start directory's; the kernel's `dev_t`).
    pub dev: u32,
    /// 0 for a successful open, else its errno.
    pub errno: u32,
    /// `BY_SYSCALL`: the open's `Syscall`, as a number.
    pub syscall: u32,
    /// `BY_COMM`: the task's command name.
    pub comm: [u8; crate::COMM_LEN],
}

impl CountKey {
    /// The key of an open as far as who made it and its result go (the file is the caller's):
    /// the fields `by` groups by, each asked for only then (in the kernel some are helper
    /// calls), and the errno of a failed open.
    #[inline(always)]
    pub fn of_task(
        by: u32,
        syscall: u8,
        ret: i64,
        cgroup_id: impl FnOnce() -> u64,
        pid: u32,
        comm: impl FnOnce() -> [u8; crate::COMM_LEN],
    ) -> CountKey {
        let mut key = CountKey::default();
        if by & BY_CGROUP != 0 {
            key.cgroup_id = cgroup_id();
        }
        if by & BY_PID != 0 {
            key.pid = pid;
        }
        if by & BY_COMM != 0 {
            key.comm = comm();
        }
        if by & BY_SYSCALL != 0 {
            key.syscall = u32::from(syscall);
        }
        if ret < 0 {
            key.errno = ret.unsigned_abs() as u32;
        }
        key
    }
}

/// `Settings::count_by` bits: what the counts are grouped by.
pub const BY_PID: u32 = 1 << 0;
pub const BY_COMM: u32 = 1 << 1;
pub const BY_CGROUP: u32 = 1 << 2;
pub const BY_FILE: u32 = 1 << 3;
pub const BY_SYSCALL: u32 = 1 << 4;

/// Whether opens grouped by `by` are counted by the exit programs alone (`count_at_exit`): a key
/// without the file needs nothing the entry has (the exit tracepoint gives the result, the task
/// the rest), and no event names it (the reader names the cgroup by its id).
#[inline(always)]
pub const fn at_exit_only(by: u32) -> bool {
    by & BY_FILE == 0
}

/// How many keys the counting map holds by default (`watch_counts(max_keys=...)`).
pub const DEFAULT_KEYS: u32 = 65536;

/// The hash of a failed open's path (FNV-1a over little-endian 8-byte words, the last one
/// zero-padded): one step, for a word of the path.
#[inline(always)]
pub const fn hash_step(hash: u64, word: u64) -> u64 {
    (hash ^ word).wrapping_mul(0x0000_0100_0000_01b3)
}

/// Where a hash starts.
pub const HASH_START: u64 = 0xcbf2_9ce4_8422_2325;

super::layouts!(CountKey = 56);
