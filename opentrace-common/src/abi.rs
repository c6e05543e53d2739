//! The binary interface between the eBPF programs and the reader, per feature: `no_std`
//! `#[repr(C)]` layouts (every field explicit, padding spelled out, sizes fixed by a test), the
//! constants both sides use, and with the `user` feature their `aya::Pod` impls.
/// For each `#[repr(C)]` record or global `TYPE = SIZE`: its size, fixed at compile time (a field
/// added without its padding does not build), and, with the `user` feature, `aya::Pod`.
macro_rules! layouts {
    ($($ty:ty = $size:expr),+ $(,)?) => {$(
        const _: () = assert!(core::mem::size_of::<$ty>() == $size);
        // SAFETY: `#[repr(C)]` integers and byte arrays with every padding byte a named field
        // (the size assertion holds it to that): any bit pattern is a valid value.
        #[cfg(feature = "user")]
        unsafe impl aya::Pod for $ty {}
    )+};
}
use layouts;

pub mod cgroup;
pub mod count;
pub mod kernel;
pub mod open;
pub mod paths;
pub mod process;
pub mod settings;
pub mod tracepoint;
pub mod uring;

/// The first byte of every ring buffer record says what follows (from 1, in this order).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// An [`open::OpenHeader`] and its path.
    Open = 1,
    /// A [`process::ProcessExit`]: a process a pid watcher follows has exited.
    ProcessExit,
    /// A [`cgroup::CgroupName`] and its path: a cgroup v2 was made or renamed.
    CgroupName,
    /// An [`open::OpenHeader`] and its path for an open request submitted to io_uring; its `ret` is the
    /// request's address until the [`uring::UringComplete`] of that request gives the result.
    UringSubmit,
    /// A [`uring::UringComplete`] (and the full path): the result of an io_uring open request.
    UringComplete,
    /// A [`tracepoint::TracepointHeader`], the tracepoint's record as the kernel wrote it, and the strings
    /// its [`tracepoint::TracepointConfig`] names (see [`tracepoint::TracepointHeader`]).
    Tracepoint,
}

impl RecordKind {
    /// Every kind, in the order of their values (from 1).
    const ALL: [RecordKind; 6] = [
        RecordKind::Open,
        RecordKind::ProcessExit,
        RecordKind::CgroupName,
        RecordKind::UringSubmit,
        RecordKind::UringComplete,
        RecordKind::Tracepoint,
    ];

    pub fn from_u8(value: u8) -> Option<RecordKind> {
        RecordKind::ALL.get(usize::from(value).wrapping_sub(1)).copied()
    }
}

/// The ring buffer's size when the watcher does not say (`ring_size`): the eBPF object declares
/// it, and the reader's checks and defaults take it from here.
pub const DEFAULT_RING_SIZE: u32 = 4 << 20;

/// What the programs count, per CPU: the indices of the `COUNTERS` array (from 0, in this order).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Events the ring buffer had no room for (or io_uring requests that could not be remembered).
    LostRing,
    /// Syscall entries that could not be remembered for their exit (no task storage).
    LostPending,
    /// Processes started by a followed one that could not be followed (`TRACKED` full).
    Unfollowed,
    /// Events that passed the filters and then could not be made: a kernel read or a map failed in
    /// the program (see the eBPF crate's `shared::counted`).
    LostError,
    /// Counting mode: opens not counted, the map of keys being full.
    CountsFull,
    /// Counting mode: records naming a new key that found the ring buffer full (the counts are
    /// whole; the key's path is not known).
    NamesLost,
}

impl Counter {
    /// The size of the `COUNTERS` array.
    pub const COUNT: u32 = 6;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_kinds_round_trip() {
        assert_eq!(RecordKind::from_u8(RecordKind::Open as u8), Some(RecordKind::Open));
        assert_eq!(RecordKind::from_u8(0), None);
    }
}
