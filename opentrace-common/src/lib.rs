//! What the eBPF programs (kernel side) and the extension (user side) share.
//!
//! Without features this crate is `no_std`: the `#[repr(C)]` records of the ring buffer ABI (every
//! field explicit, padding spelled out, sizes checked in a test), the names of the traced
//! syscalls, and the comm substring match. The `user` feature adds the host-side logic that needs
//! no kernel and no Python, so plain `cargo test` covers it: decoding records into events and the
//! table of their fields ([`schema`], [`open`]), the tracefs `format` parser ([`tracefs`]), the
//! CLI's text and JSON output ([`text`]), and errno names ([`errno`]).
#![cfg_attr(not(feature = "user"), no_std)]

pub mod comm;

#[cfg(feature = "user")]
pub mod btf;
#[cfg(feature = "user")]
pub mod cgroup;

#[cfg(feature = "user")]
pub mod errno;
#[cfg(feature = "user")]
pub mod open;
#[cfg(feature = "user")]
pub mod schema;
#[cfg(feature = "user")]
pub mod text;
#[cfg(feature = "user")]
pub mod tracefs;
#[cfg(feature = "user")]
pub mod tracepoint;

/// Longest path the kernel accepts, including its NUL (`PATH_MAX`).
pub const PATH_MAX: usize = 4096;
/// Length of `task_struct::comm`, including its NUL.
pub const COMM_LEN: usize = 16;
/// `AT_FDCWD`: what `dfd` reports for `open` and `creat`.
pub const AT_FDCWD: i32 = -100;
/// Offset "not present in this tracepoint's format" in [`ArgOffsets`].
pub const NO_FIELD: u32 = u32::MAX;
/// Largest process or thread id the kernel can hand out (`PID_MAX_LIMIT - 1` on 64-bit).
pub const PID_MAX: u32 = (1 << 22) - 1;

/// The first byte of every ring buffer record says what follows.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// An [`OpenHeader`] and its path.
    Open = 1,
    /// A [`ProcessExit`]: a process a pid watcher follows has exited.
    ProcessExit = 2,
    /// A [`CgroupName`] and its path: a cgroup v2 was made or renamed.
    CgroupName = 3,
    /// An [`OpenHeader`] and its path for an open request submitted to io_uring; its `ret` is the
    /// request's address until the [`UringComplete`] of that request gives the result.
    UringSubmit = 4,
    /// A [`UringComplete`] (and the full path): the result of an io_uring open request.
    UringComplete = 5,
    /// A [`TracepointHeader`], the tracepoint's record as the kernel wrote it, and the strings
    /// its [`TracepointConfig`] names (see [`TracepointHeader`]).
    Tracepoint = 6,
}

impl RecordKind {
    pub const fn from_u8(value: u8) -> Option<RecordKind> {
        match value {
            1 => Some(RecordKind::Open),
            2 => Some(RecordKind::ProcessExit),
            3 => Some(RecordKind::CgroupName),
            4 => Some(RecordKind::UringSubmit),
            5 => Some(RecordKind::UringComplete),
            6 => Some(RecordKind::Tracepoint),
            _ => None,
        }
    }
}

/// Most user-memory strings one tracepoint record carries (`rename`'s two paths, `mount`'s three).
pub const TP_STRINGS: usize = 4;
/// Most `__data_loc`/`__rel_loc` fields of a tracepoint the program can size a record by.
pub const TP_LOCS: usize = 8;
/// Most bytes of a tracepoint's own record that are copied (a power of two: the verifier bounds
/// the copy by a mask).
pub const TP_RAW_MAX: usize = 8192;
/// Each string is copied up to this many bytes, its NUL included (as an open's path).
pub const TP_STRING_MAX: usize = PATH_MAX;
/// A string's length when it could not be read from the process.
pub const TP_STRING_FAULT: u16 = u16::MAX;

/// What the generic program needs to know of one tracepoint, by its id (`common_type`): how long
/// its record is and which of its fields are pointers to strings in the process's memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointConfig {
    /// The fixed part of the record: where the last field ends.
    pub size: u16,
    /// How many of `strings` and `locs` are used.
    pub n_strings: u8,
    pub n_locs: u8,
    /// Offsets of the 8-byte fields holding user pointers to NUL-terminated strings.
    pub strings: [u16; TP_STRINGS],
    /// Offsets of the 4-byte `__data_loc`/`__rel_loc` fields (`len << 16 | offset`): the record
    /// goes on to the end of the furthest.
    pub locs: [u16; TP_LOCS],
    /// Bit `i`: `locs[i]` is a `__rel_loc` (its offset counts from the end of the field), not a
    /// `__data_loc` (from the start of the record).
    pub loc_rel: u8,
    pub _pad: [u8; 7],
}

/// The head of a [`RecordKind::Tracepoint`] record. `raw_len` bytes of the tracepoint's own
/// record follow it, then `n_strings` strings, each a
/// little-endian `u16` length ([`TP_STRING_FAULT`]: it could not be read) and that many bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TracepointHeader {
    /// [`RecordKind::Tracepoint`].
    pub kind: u8,
    pub n_strings: u8,
    /// Bytes of the record beyond [`TP_RAW_MAX`] were not copied.
    pub truncated: u8,
    pub _pad: u8,
    pub cpu: u32,
    pub timestamp_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub raw_len: u16,
    /// The tracepoint's id (from its format file): the kernel hands BPF programs the record with
    /// a pointer written over its own `common_type`, so its first eight bytes mean nothing.
    pub id: u16,
    pub comm: [u8; COMM_LEN],
}

pub const TRACEPOINT_HEADER_SIZE: usize = core::mem::size_of::<TracepointHeader>();

/// Sent when a followed process (all its threads) has exited: all its events are in the ring
/// before this record, and the reader checks whether any followed process is left.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessExit {
    /// [`RecordKind::ProcessExit`].
    pub kind: u8,
    pub _pad: [u8; 3],
    pub tgid: u32,
}

/// A cgroup v2 and its path under the hierarchy's root (`path_len` bytes follow), sent when it is
/// made or renamed: events name their cgroup even once it is gone.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupName {
    /// [`RecordKind::CgroupName`].
    pub kind: u8,
    pub _pad: [u8; 5],
    pub path_len: u16,
    pub id: u64,
}

pub const CGROUP_NAME_SIZE: usize = core::mem::size_of::<CgroupName>();

/// Where `cgroup:cgroup_mkdir` and `cgroup:cgroup_rename` keep their fields (`int root`,
/// `u64 id`, `__data_loc char[] path`), from their format files.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupFields {
    pub root: u32,
    pub id: u32,
    pub path: u32,
}

impl CgroupFields {
    /// Linux 6.x; the loader reads the format files.
    pub const DEFAULT: CgroupFields = CgroupFields { root: 8, id: 16, path: 24 };
}

/// How many processes a pid watcher can follow at once (`descendants=True`); a fork past that
/// is counted (`COUNTER_UNFOLLOWED`) and said.
pub const TRACKED_MAX: u32 = 65536;

/// The traced syscalls; the value is carried in [`OpenHeader::syscall`]. The one list of their
/// names: the programs, the loader, the Python API and the CLI all take it from here.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Syscall {
    Open = 0,
    Openat = 1,
    Openat2 = 2,
    Creat = 3,
    /// `IORING_OP_OPENAT` and `IORING_OP_OPENAT2` requests.
    IoUring = 4,
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

    pub const fn from_u8(value: u8) -> Option<Syscall> {
        match value {
            0 => Some(Syscall::Open),
            1 => Some(Syscall::Openat),
            2 => Some(Syscall::Openat2),
            3 => Some(Syscall::Creat),
            4 => Some(Syscall::IoUring),
            _ => None,
        }
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
    pub _pad: u32,
    /// `IN_PID_NAMESPACE`: the tracer's PID namespace (the device and inode of its nsfs file);
    /// ids are those of that namespace and tasks it cannot see are left out.
    pub pidns_dev: u64,
    pub pidns_ino: u64,
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
/// Resolve each open's full path (`full_path=True`).
pub const WITH_FULL_PATH: u32 = 1 << 8;

impl Settings {
    pub const NONE: Settings = Settings {
        enabled: 0,
        tid: 0,
        uid: 0,
        self_tgid: 0,
        comm: comm::Needle::EMPTY,
        cgroup_id: 0,
        cgroup_level: 0,
        _pad: 0,
        pidns_dev: 0,
        pidns_ino: 0,
    };
}

/// How deep a PID namespace the programs translate ids from (the kernel allows 32).
pub const PIDNS_DEPTH: u32 = 32;

/// Bytes of `struct dentry` read in one go by the path walk, from [`KernelOffsets::dentry_window`].
pub const DENTRY_WINDOW: u32 = 48;
/// Bytes of `struct mount` read in one go by the path walk, from [`KernelOffsets::mount_window`].
pub const MOUNT_WINDOW: u32 = 32;

/// Where the members the programs read sit in this kernel's structs, from its BTF at load time
/// (byte offsets). The `dentry_*` ones are relative to `dentry_window`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_signal: u32,
    pub task_thread_pid: u32,
    /// `signal_struct.live`: threads of the process not yet exiting (0: the process is dying).
    pub signal_live: u32,
    /// `signal_struct.pids[PIDTYPE_TGID]`: the process's `struct pid`.
    pub signal_tgid_pid: u32,
    /// `struct pid`: `level` and `numbers[]` (`struct upid { int nr; struct pid_namespace *ns; }`,
    /// one per namespace level, each `upid_size` bytes).
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_size: u32,
    pub upid_nr: u32,
    pub upid_ns: u32,
    /// `pid_namespace.ns.inum`: the namespace's inode number, as its nsfs file shows it.
    pub pidns_inum: u32,
    pub task_fs: u32,
    pub task_files: u32,
    pub fs_root: u32,
    pub fs_pwd: u32,
    /// `struct path`: `mnt` (a `struct vfsmount *`) and `dentry`.
    pub path_mnt: u32,
    pub path_dentry: u32,
    /// Start of the [`DENTRY_WINDOW`] bytes of `struct dentry` the walk reads per component.
    pub dentry_window: u32,
    /// `d_seq.seqcount.sequence`, `d_hash.pprev`, `d_parent`, `d_name.len`, `d_name.name`.
    pub dentry_seq: u32,
    pub dentry_hash_pprev: u32,
    pub dentry_parent: u32,
    pub dentry_name_len: u32,
    pub dentry_name: u32,
    /// `struct mount`: where its embedded `struct vfsmount mnt` is, and the start of the
    /// [`MOUNT_WINDOW`] bytes read per mount; then, relative to that, `mnt_parent`,
    /// `mnt_mountpoint` and `mnt.mnt_root`.
    pub mount_mnt: u32,
    pub mount_window: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    pub mount_root: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_path: u32,
    /// `struct io_kiocb`: `opcode` and its command data, which for an open request is
    /// a `struct io_open`; then, relative to that, `dfd`, `file_slot`, `filename`, `how`; and
    /// `struct filename`'s `name`.
    pub req_opcode: u32,
    pub req_cmd: u32,
    pub open_dfd: u32,
    pub open_file_slot: u32,
    pub open_filename: u32,
    pub open_how: u32,
    pub filename_name: u32,
}

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

/// `IORING_OP_OPENAT` and `IORING_OP_OPENAT2` (uapi values).
pub const IORING_OP_OPENAT: u8 = 18;
pub const IORING_OP_OPENAT2: u8 = 28;

/// Where `struct io_uring_sqe` (uapi, the same on every kernel) keeps what an open request
/// carries: `opcode`, `fd` (the dfd), `addr2` (openat2's `struct open_how *`), `addr` (the path),
/// `len` (openat's mode), `open_flags`.
pub mod sqe {
    pub const OPCODE: u64 = 0;
    pub const FD: u64 = 4;
    pub const ADDR2: u64 = 8;
    pub const ADDR: u64 = 16;
    pub const LEN: u64 = 24;
    pub const OPEN_FLAGS: u64 = 28;
}

/// How many io_uring open requests the kernel's map keeps waiting for their completions.
pub const URING_PENDING_MAX: u32 = 16384;

/// What the result of an io_uring open request needs from its submission, kept in the kernel
/// by the request's address until it completes (an LRU map: requests that never complete, when a
/// ring is torn down, age out).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UringPending {
    /// The submission record's `timestamp_ns`: the completion echoes it, so that the reader
    /// pairs it only with that submission (never with an older request at the same address).
    pub submitted_ns: u64,
    pub dfd: i32,
    /// Whether the path starts with '/'.
    pub absolute: u8,
    /// An open into a fixed-file slot.
    pub fixed: u8,
    pub _pad: [u8; 2],
}

/// The result of an io_uring open request; `full_len` bytes of full path follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UringComplete {
    /// [`RecordKind::UringComplete`].
    pub kind: u8,
    /// A [`full`] code.
    pub full: u8,
    pub full_len: u16,
    pub _pad: u32,
    /// The request's address, as its [`RecordKind::UringSubmit`] record gave it.
    pub req: u64,
    pub ret: i64,
    /// The `timestamp_ns` of the submission this completes (see [`UringPending`]).
    pub submitted_ns: u64,
}

pub const URING_COMPLETE_SIZE: usize = core::mem::size_of::<UringComplete>();

/// Where the raw tracepoints `io_uring_submit_req` and `io_uring_complete` pass the request and
/// the result (raw tracepoints: the kernel builds no record for them, which for a process doing
/// millions of io_uring requests is most of the cost of watching them).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UringArgs {
    /// Which argument of `io_uring_complete` is the request (`io_uring_submit_req`'s only
    /// argument is).
    pub complete_req: u32,
    /// Which argument of `io_uring_complete` holds the result: the result itself when
    /// `complete_res_at` is [`NO_FIELD`], else a pointer to a struct with the result (an `s32`)
    /// at that offset (`struct io_uring_cqe`).
    pub complete_res: u32,
    pub complete_res_at: u32,
    /// How many arguments `io_uring_complete` has: [`URING_COMPLETE_ARGS`] or
    /// [`URING_COMPLETE_ARGS_6_0`] (the program that reads them all is chosen by it).
    pub complete_args: u32,
    /// 1: `io_uring_req_failed(sqe, req, error)` is there, for requests that fail before they
    /// are submitted (their path cannot be read, a bad flag): they never reach `submit_req`.
    pub req_failed: u32,
}

impl UringArgs {
    /// Linux 6.13 and newer: `io_uring_submit_req(req)`, `io_uring_complete(ctx, req, cqe)`; the
    /// loader reads the prototypes from BTF.
    pub const DEFAULT: UringArgs = UringArgs {
        complete_req: 1,
        complete_res: 2,
        complete_res_at: 8,
        complete_args: URING_COMPLETE_ARGS as u32,
        req_failed: 1,
    };
}

/// How many arguments `io_uring_complete` has since Linux 6.13 (`ctx, req, cqe`).
pub const URING_COMPLETE_ARGS: usize = 3;
/// ... and from 6.0 to 6.12 (`ctx, req, user_data, res, cflags, extra1, extra2`).
pub const URING_COMPLETE_ARGS_6_0: usize = 7;

/// The fixed part of an open's ring buffer record; `path_len` bytes of path follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OpenHeader {
    /// [`RecordKind::Open`].
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

/// Indices of the per-CPU `COUNTERS` array.
pub const COUNTER_LOST_RING: u32 = 0;
pub const COUNTER_LOST_PENDING: u32 = 1;
/// Processes started by a followed one that could not be followed (`TRACKED` full).
pub const COUNTER_UNFOLLOWED: u32 = 2;
pub const COUNTER_COUNT: u32 = 3;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays with explicit padding.
    unsafe impl aya::Pod for super::ArgOffsets {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::OpenHeader {}
    unsafe impl aya::Pod for super::ProcessExit {}
    unsafe impl aya::Pod for super::CgroupName {}
    unsafe impl aya::Pod for super::CgroupFields {}
    unsafe impl aya::Pod for super::UringArgs {}
    unsafe impl aya::Pod for super::UringPending {}
    unsafe impl aya::Pod for super::UringComplete {}
    unsafe impl aya::Pod for super::TracepointConfig {}
}

#[cfg(test)]
mod tests {
    use core::mem::{align_of, size_of};

    use super::*;

    #[test]
    fn record_sizes_are_fixed() {
        assert_eq!(size_of::<OpenHeader>(), 96);
        assert_eq!(align_of::<OpenHeader>(), 8);
        assert_eq!(size_of::<OpenRecord>(), 96 + 2 * PATH_MAX);
        assert_eq!(size_of::<Pending>(), 48);
        assert_eq!(size_of::<ArgOffsets>(), 24);
        assert_eq!(size_of::<Settings>(), 80);
        assert_eq!(size_of::<ProcessExit>(), 8);
        assert_eq!(size_of::<CgroupName>(), 16);
        assert_eq!(size_of::<UringComplete>(), 32);
        assert_eq!(size_of::<UringPending>(), 16);
        assert_eq!(size_of::<TracepointConfig>(), 36);
        assert_eq!(size_of::<TracepointHeader>(), 48);
        assert_eq!(core::mem::offset_of!(OpenHeader, kind), 0);
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

    #[test]
    fn record_kinds_round_trip() {
        assert_eq!(RecordKind::from_u8(RecordKind::Open as u8), Some(RecordKind::Open));
        assert_eq!(RecordKind::from_u8(0), None);
    }
}
