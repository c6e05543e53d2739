//! Records shared by the eBPF programs (kernel side) and the extension (user side).
//!
//! Everything here is `#[repr(C)]` with explicit padding, so both sides agree on every byte.
#![no_std]

/// Longest path the kernel accepts, including its NUL (`PATH_MAX`).
pub const PATH_MAX: usize = 4096;
/// Length of `task_struct::comm`, including its NUL.
pub const COMM_LEN: usize = 16;
/// `AT_FDCWD`: what `dfd` reports for `open` and `creat`.
pub const AT_FDCWD: i32 = -100;
/// Offset "not present in this tracepoint's format" in [`ArgOffsets`].
pub const NO_FIELD: u32 = u32::MAX;

/// The traced syscalls; the value is carried in [`EventHeader::syscall`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syscall {
    Open = 0,
    Openat = 1,
    Openat2 = 2,
    Creat = 3,
}

impl Syscall {
    pub const ALL: [Syscall; 4] = [Syscall::Open, Syscall::Openat, Syscall::Openat2, Syscall::Creat];

    pub const fn name(self) -> &'static str {
        match self {
            Syscall::Open => "open",
            Syscall::Openat => "openat",
            Syscall::Openat2 => "openat2",
            Syscall::Creat => "creat",
        }
    }

    pub fn from_name(name: &str) -> Option<Syscall> {
        Syscall::ALL.into_iter().find(|s| s.name() == name)
    }

    pub const fn from_u8(value: u8) -> Option<Syscall> {
        match value {
            0 => Some(Syscall::Open),
            1 => Some(Syscall::Openat),
            2 => Some(Syscall::Openat2),
            3 => Some(Syscall::Creat),
            _ => None,
        }
    }

    /// `O_CREAT | O_WRONLY | O_TRUNC`, the flags `creat(2)` applies.
    pub const CREAT_FLAGS: u64 = 0o100 | 0o1 | 0o1000;
}

/// Where the arguments of one `sys_enter_*` tracepoint sit in its record, read from the
/// tracepoint's `format` file at load time. [`NO_FIELD`] marks an argument the syscall lacks.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgOffsets {
    /// `const char *filename` (all four syscalls).
    pub filename: u32,
    /// `int dfd` (openat, openat2).
    pub dfd: u32,
    /// `int flags` (open, openat).
    pub flags: u32,
    /// `umode_t mode` (open, openat, creat).
    pub mode: u32,
    /// `struct open_how *how` (openat2).
    pub how: u32,
    /// `size_t usize`, the size of `*how` (openat2).
    pub how_size: u32,
}

impl ArgOffsets {
    /// The layouts of Linux 6.x on 64-bit machines; the loader replaces them with what the
    /// running kernel's format files say.
    pub const OPEN: ArgOffsets = ArgOffsets::new(16, NO_FIELD, 24, 32, NO_FIELD, NO_FIELD);
    pub const OPENAT: ArgOffsets = ArgOffsets::new(24, 16, 32, 40, NO_FIELD, NO_FIELD);
    pub const OPENAT2: ArgOffsets = ArgOffsets::new(24, 16, NO_FIELD, NO_FIELD, 32, 40);
    pub const CREAT: ArgOffsets = ArgOffsets::new(16, NO_FIELD, NO_FIELD, 24, NO_FIELD, NO_FIELD);

    pub const fn new(filename: u32, dfd: u32, flags: u32, mode: u32, how: u32, how_size: u32) -> Self {
        ArgOffsets { filename, dfd, flags, mode, how, how_size }
    }
}

/// Offset of `long ret` in every `sys_exit_*` record (the default; the loader reads the format).
pub const DEFAULT_RET_OFFSET: u32 = 16;

/// Which filters run in the kernel; set once at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filter {
    /// Bit set of `FILTER_*`.
    pub enabled: u32,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    /// The tracer's own tgid, left out when `FILTER_EXCLUDE_SELF` is set.
    pub self_tgid: u32,
    pub _pad: u32,
    /// Substring the task's comm must contain, zero-padded.
    pub comm: [u8; COMM_LEN],
    /// 0xff over the substring's bytes, 0 after them.
    pub comm_mask: [u8; COMM_LEN],
}

pub const FILTER_PID: u32 = 1 << 0;
pub const FILTER_TID: u32 = 1 << 1;
pub const FILTER_UID: u32 = 1 << 2;
pub const FILTER_FAILED: u32 = 1 << 3;
pub const FILTER_COMM: u32 = 1 << 4;
pub const FILTER_EXCLUDE_SELF: u32 = 1 << 5;

impl Filter {
    pub const NONE: Filter = Filter {
        enabled: 0,
        pid: 0,
        tid: 0,
        uid: 0,
        self_tgid: 0,
        _pad: 0,
        comm: [0; COMM_LEN],
        comm_mask: [0; COMM_LEN],
    };
}

/// What `sys_enter_*` remembers for `sys_exit_*`, keyed by thread id.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    pub timestamp_ns: u64,
    pub filename: u64,
    pub flags: u64,
    pub mode: u64,
    /// `struct open_how *` for openat2, else 0.
    pub how: u64,
    pub dfd: i32,
    pub syscall: u8,
    pub _pad: [u8; 3],
}

/// `EventHeader::status` bit: the path could not be read from user memory.
pub const STATUS_PATH_FAULT: u8 = 1 << 0;
/// `EventHeader::status` bit: `struct open_how` could not be read (openat2).
pub const STATUS_HOW_FAULT: u8 = 1 << 1;

/// The fixed part of a ring buffer record; `path_len` bytes of path follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    pub timestamp_ns: u64,
    pub ret: i64,
    pub flags: u64,
    pub mode: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub dfd: i32,
    /// Path bytes following the header, without the NUL.
    pub path_len: u16,
    pub syscall: u8,
    pub status: u8,
    pub comm: [u8; COMM_LEN],
    /// The error of the failed read behind a `STATUS_*_FAULT` bit (for the diagnostics).
    pub fault: i32,
}

pub const HEADER_SIZE: usize = core::mem::size_of::<EventHeader>();

/// Header plus room for the longest path; the eBPF side builds one in a per-CPU slot and sends
/// only `HEADER_SIZE + path_len` bytes of it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Event {
    pub header: EventHeader,
    pub path: [u8; PATH_MAX],
}

/// Indices of the per-CPU `COUNTERS` array.
pub const COUNTER_LOST_RING: u32 = 0;
pub const COUNTER_LOST_PENDING: u32 = 1;
pub const COUNTER_COUNT: u32 = 2;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays with explicit padding.
    unsafe impl aya::Pod for super::ArgOffsets {}
    unsafe impl aya::Pod for super::Filter {}
    unsafe impl aya::Pod for super::EventHeader {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn record_sizes_are_fixed() {
        assert_eq!(size_of::<EventHeader>(), 72);
        assert_eq!(align_of::<EventHeader>(), 8);
        assert_eq!(size_of::<Event>(), 72 + PATH_MAX);
        assert_eq!(size_of::<Pending>(), 48);
        assert_eq!(size_of::<ArgOffsets>(), 24);
        assert_eq!(size_of::<Filter>(), 56);
    }

    #[test]
    fn syscall_ids_round_trip() {
        for s in Syscall::ALL {
            assert_eq!(Syscall::from_u8(s as u8), Some(s));
            assert_eq!(Syscall::from_name(s.name()), Some(s));
        }
        assert_eq!(Syscall::from_name("read"), None);
        assert_eq!(Syscall::from_u8(4), None);
    }
}
