//! The open family (`open`, `openat`, `openat2`, `creat`, and io_uring's open requests): the
//! syscalls' names, where their arguments are, what entry keeps for exit, and the open record.
use crate::{COMM_LEN, NO_FIELD, PATH_MAX};

/// The traced syscalls (from 0, in this order); the value is carried in [`OpenHeader::syscall`]. The one list of their
/// names: the programs, the loader, the Python API and the CLI all take it from here.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Syscall {
    Open,
    Openat,
    Openat2,
    Creat,
    /// `IORING_OP_OPENAT` and `IORING_OP_OPENAT2` requests.
    IoUring,
}

impl Syscall {
    pub const ALL: [Syscall; 5] =
        [Syscall::Open, Syscall::Openat, Syscall::Openat2, Syscall::Creat, Syscall::IoUring];
    /// The ones traced through `syscalls:sys_enter_*`/`sys_exit_*`.
    pub const SYSCALLS: [Syscall; 4] = [Syscall::Open, Syscall::Openat, Syscall::Openat2, Syscall::Creat];

    pub const fn name(self) -> &'static str {
        match self {
            Syscall::Open => "open",
            Syscall::Openat => "openat",
            Syscall::Openat2 => "openat2",
            Syscall::Creat => "creat",
            Syscall::IoUring => "io_uring",
        }
    }

    pub fn from_name(name: &str) -> Option<Syscall> {
        Syscall::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn from_u8(value: u8) -> Option<Syscall> {
        Syscall::ALL.get(usize::from(value)).copied()
    }

    /// `O_CREAT | O_WRONLY | O_TRUNC`, the flags `creat(2)` applies (the generic values, which
    /// x86-64 and arm64 share).
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

/// What `sys_enter_*` remembers for `sys_exit_*`, in the task's own local storage.
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

/// `OpenHeader::status` bit: the path could not be read from user memory.
pub const STATUS_PATH_FAULT: u8 = 1 << 0;
/// `OpenHeader::status` bit: `struct open_how` could not be read (openat2).
pub const STATUS_HOW_FAULT: u8 = 1 << 1;
/// `OpenHeader::status` bit: an io_uring open into a fixed-file slot (no fd).
pub const STATUS_FIXED_SLOT: u8 = 1 << 2;
/// `OpenHeader::status` bit: `file` holds the opened file's inode and mount (a successful open).
pub const STATUS_FILE_ID: u8 = 1 << 3;
/// `OpenHeader::status` bit: with `STATUS_FILE_ID`, the filesystem reports another device to
/// `stat` than its superblock's (btrfs subvolumes): `dev` is not what `os.stat` gives.
pub const STATUS_DEV_UNSURE: u8 = 1 << 4;
/// `OpenHeader::status` bit, counting mode: this open is counted in the kernel's map, and sent
/// because it is the first of its key (see `abi::count`).
pub const STATUS_COUNTED: u8 = 1 << 5;
/// `OpenHeader::status` bit, counting mode: `file` holds the inode and device of the directory a
/// failed relative open started from (its counting key has them).
pub const STATUS_START_DIR: u8 = 1 << 6;

/// The identity of an opened file, read from its `struct file`: the inode number, the device of
/// its filesystem (the kernel's `dev_t`: major << 20 | minor) and the id of the mount it was
/// opened through (as `/proc/PID/fdinfo` shows it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileId {
    pub inode: u64,
    pub dev: u32,
    pub mnt_id: u32,
}

/// `OpenHeader::full`: what follows the path (`full_len` bytes), or why nothing does.
pub mod full {
    /// `full_path` was not asked for.
    pub const NOT_ASKED: u8 = 0;
    /// The absolute path of the opened file.
    pub const FILE: u8 = 1;
    /// The absolute path of the opened file, which is no longer linked (`(deleted)`).
    pub const FILE_DELETED: u8 = 2;
    /// The absolute path of the directory a failed relative lookup started from; the full path
    /// is it joined with the path as passed.
    pub const START_DIR: u8 = 3;
    /// A failed open of an absolute path: the path as passed is the full path.
    pub const AS_PASSED: u8 = 4;
    // Unresolved (full_path None), and why. Codes from here on.
    pub const FIRST_UNRESOLVED: u8 = 16;
    /// Longer than PATH_MAX - 1.
    pub const TOO_LONG: u8 = 16;
    /// A dentry with no parent that is not a mount's root: pseudo files (pipes, sockets, ...),
    /// and entries cut off from the tree.
    pub const DISCONNECTED: u8 = 17;
    /// A directory on the way was renamed while it was read.
    pub const RENAMED: u8 = 18;
    /// The fd (the new one, or `dfd`) was not found in the task's table.
    pub const NO_FILE: u8 = 19;
    /// The directory a failed relative lookup started from is deleted.
    pub const START_DELETED: u8 = 20;
    /// A kernel structure could not be read.
    pub const FAULT: u8 = 21;
    /// More components than the walk takes.
    pub const TOO_DEEP: u8 = 22;
    /// An io_uring open into a fixed-file slot: no fd to look the file up by.
    pub const FIXED_SLOT: u8 = 23;
}

/// The fixed part of an open's ring buffer record; `path_len` bytes of path follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OpenHeader {
    /// [`super::RecordKind::Open`].
    pub kind: u8,
    /// A [`Syscall`].
    pub syscall: u8,
    /// `STATUS_*` bits.
    pub status: u8,
    /// A [`full`] code.
    pub full: u8,
    pub dfd: i32,
    pub timestamp_ns: u64,
    pub ret: i64,
    pub flags: u64,
    pub mode: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    /// The error of the failed read behind a `STATUS_*_FAULT` bit (for the diagnostics).
    pub fault: i32,
    /// Path bytes following the header, without the NUL.
    pub path_len: u16,
    /// Bytes of full path following the path (see [`full`]).
    pub full_len: u16,
    pub ppid: u32,
    pub comm: [u8; COMM_LEN],
    /// The task's cgroup v2 id.
    pub cgroup_id: u64,
    /// The pid in the process's own (innermost) PID namespace.
    pub ns_pid: u32,
    pub _pad2: u32,
    /// With `STATUS_FILE_ID`.
    pub file: FileId,
}

pub const OPEN_HEADER_SIZE: usize = core::mem::size_of::<OpenHeader>();

/// Header plus room for the longest path and full path; the eBPF side builds one in a per-CPU
/// slot and sends only `OPEN_HEADER_SIZE + path_len + full_len` bytes of it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OpenRecord {
    pub header: OpenHeader,
    pub data: [u8; 2 * PATH_MAX],
}

super::layouts!(
    ArgOffsets = 24,
    FileId = 16,
    OpenHeader = 112,
    Pending = 48,
    OpenRecord = 112 + 2 * PATH_MAX
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_comes_first() {
        assert_eq!(core::mem::offset_of!(OpenHeader, kind), 0);
        assert_eq!(core::mem::align_of::<OpenHeader>(), 8);
    }

    #[test]
    fn syscall_ids_round_trip() {
        for s in Syscall::ALL {
            assert_eq!(Syscall::from_u8(s as u8), Some(s));
            assert_eq!(Syscall::from_name(s.name()), Some(s));
        }
        assert_eq!(Syscall::from_name("read"), None);
        assert_eq!(Syscall::from_u8(Syscall::ALL.len() as u8), None);
    }
}
