//! The binary interface between the eBPF programs and the reader, per feature: `no_std`
//! `#[repr(C)]` layouts (every field explicit, padding spelled out, sizes fixed by a test), the
//! constants both sides use, and with the `user` feature their `aya::Pod` impls.
pub mod cgroup;
pub mod kernel;
pub mod open;
pub mod process;
pub mod settings;
pub mod tracepoint;
pub mod uring;

/// The first byte of every ring buffer record says what follows.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// An [`open::OpenHeader`] and its path.
    Open = 1,
    /// A [`process::ProcessExit`]: a process a pid watcher follows has exited.
    ProcessExit = 2,
    /// A [`cgroup::CgroupName`] and its path: a cgroup v2 was made or renamed.
    CgroupName = 3,
    /// An [`open::OpenHeader`] and its path for an open request submitted to io_uring; its `ret` is the
    /// request's address until the [`uring::UringComplete`] of that request gives the result.
    UringSubmit = 4,
    /// A [`uring::UringComplete`] (and the full path): the result of an io_uring open request.
    UringComplete = 5,
    /// A [`tracepoint::TracepointHeader`], the tracepoint's record as the kernel wrote it, and the strings
    /// its [`tracepoint::TracepointConfig`] names (see [`tracepoint::TracepointHeader`]).
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

/// The ring buffer's size when the watcher does not say (`ring_size`): the eBPF object declares
/// it, and the reader's checks and defaults take it from here.
pub const DEFAULT_RING_SIZE: u32 = 4 << 20;

/// Indices of the per-CPU `COUNTERS` array.
pub const COUNTER_LOST_RING: u32 = 0;
pub const COUNTER_LOST_PENDING: u32 = 1;
/// Processes started by a followed one that could not be followed (`TRACKED` full).
pub const COUNTER_UNFOLLOWED: u32 = 2;
/// Events that passed the filters and then could not be made: a kernel read or a map failed in
/// the program (see the eBPF crate's `shared::counted`).
pub const COUNTER_LOST_ERROR: u32 = 3;
pub const COUNTER_COUNT: u32 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_kinds_round_trip() {
        assert_eq!(RecordKind::from_u8(RecordKind::Open as u8), Some(RecordKind::Open));
        assert_eq!(RecordKind::from_u8(0), None);
    }
}
