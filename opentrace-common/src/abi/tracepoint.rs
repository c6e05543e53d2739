//! Any tracepoint (`watch_tracepoints`): what the generic program is told of each tracepoint, and
//! the head of the records it sends.
use crate::{COMM_LEN, PATH_MAX};

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

/// The head of a [`super::RecordKind::Tracepoint`] record. `raw_len` bytes of the tracepoint's own
/// record follow it, then `n_strings` strings, each a
/// little-endian `u16` length ([`TP_STRING_FAULT`]: it could not be read) and that many bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TracepointHeader {
    /// [`super::RecordKind::Tracepoint`].
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

super::layouts!(TracepointConfig = 36, TracepointHeader = 48);
