//! Process trees (`pid=`, `descendants=`): the record that says a followed process has exited.

/// Sent when a followed process (all its threads) has exited: all its events are in the ring
/// before this record, and the reader checks whether any followed process is left.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessExit {
    /// [`super::RecordKind::ProcessExit`].
    pub kind: u8,
    pub _pad: [u8; 3],
    pub tgid: u32,
}

/// How many processes a pid watcher can follow at once (`descendants=True`); a fork past that
/// is counted ([`super::Counter::Unfollowed`]) and said.
pub const TRACKED_MAX: u32 = 65536;

super::layouts!(ProcessExit = 8);
