//! io_uring open requests: where the request carries its arguments, what a submission leaves for
//! its completion, and the completion's record.
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
    /// [`super::RecordKind::UringComplete`].
    pub kind: u8,
    /// A [`super::open::full`] code.
    pub full: u8,
    pub full_len: u16,
    /// `STATUS_FILE_ID` and `STATUS_DEV_UNSURE` bits, as in an open's header.
    pub status: u8,
    pub _pad: [u8; 3],
    /// The request's address, as its [`super::RecordKind::UringSubmit`] record gave it.
    pub req: u64,
    pub ret: i64,
    /// The `timestamp_ns` of the submission this completes (see [`UringPending`]).
    pub submitted_ns: u64,
    /// With `STATUS_FILE_ID`: the opened file.
    pub file: super::open::FileId,
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
    /// `complete_res_at` is [`crate::NO_FIELD`], else a pointer to a struct with the result (an `s32`)
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

super::layouts!(UringPending = 16, UringComplete = 48, UringArgs = 20);
