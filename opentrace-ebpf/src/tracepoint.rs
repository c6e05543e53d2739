//! One program for any tracepoint (`watch_tracepoints`): it copies the tracepoint's own record,
//! as the kernel wrote it, and the strings in the process's memory that the record points to
//! (a syscall's path arguments), into a ring buffer record. Its attach cookie is the
//! tracepoint's id, by which `TP_CONFIG`, written by the loader from the format files, says how
//! long the record is and which fields are strings; the reader decodes the rest by the same
//! format files.
use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_user_str_bytes,
        generated::{bpf_get_attach_cookie, bpf_probe_read_kernel},
    },
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::TracePointContext,
};
use opentrace_common::abi::{
    Counter, RecordKind,
    tracepoint::{
        TP_LOCS, TP_RAW_MAX, TP_STRING_FAULT, TP_STRING_MAX, TP_STRINGS, TRACEPOINT_HEADER_SIZE,
        TracepointConfig, TracepointHeader,
    },
};

use crate::{
    filter::wanted,
    kernel::{self, opaque},
    process,
    shared::{count, counted, output},
};

/// The tracepoints being watched, by id; the loader sizes and fills it.
#[map]
static TP_CONFIG: HashMap<u32, TracepointConfig> = HashMap::with_max_entries(1, 0);

/// Room for the record and its strings, each string after a 2-byte length.
const DATA: usize = TP_RAW_MAX + TP_STRINGS * (2 + TP_STRING_MAX);

#[repr(C)]
struct Slot {
    head: TracepointHeader,
    data: [u8; DATA],
}

// Too big for the stack: each CPU builds its record here.
#[map]
static TP_SCRATCH: PerCpuArray<Slot> = PerCpuArray::with_max_entries(1, 0);

#[tracepoint]
pub fn any_tracepoint(ctx: TracePointContext) -> u32 {
    counted(try_any(&ctx))
}

#[inline(always)]
fn try_any(ctx: &TracePointContext) -> Result<u32, i64> {
    let Some((tgid, tid)) = process::current_ids() else { return Ok(0) };
    if !wanted(tgid, tid) {
        return Ok(0);
    }
    // The kernel has written a pointer over the record's `common_type`: the loader attached this
    // program to each tracepoint with the tracepoint's id as the cookie.
    // SAFETY: a helper that reads the current program's attach cookie.
    let id = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } as u32;
    // SAFETY: the value is copied out at once; the loader does not change the map while attached.
    // From here on the record passed the filters: a failure is a record lost (`counted`).
    let Some(config) = (unsafe { TP_CONFIG.get(id) }).copied() else { return Err(-1) };

    // The record ends after its fixed fields, or after its furthest dynamic (`__data_loc`) data.
    let mut end = u32::from(config.size);
    for i in 0..TP_LOCS {
        if i >= usize::from(config.n_locs) {
            break;
        }
        let at = u32::from(config.locs[i]);
        // SAFETY: as above.
        let loc: u32 = unsafe { ctx.read_at(at as usize)? };
        let mut start = loc & 0xffff;
        if config.loc_rel & (1 << i) != 0 {
            start += at + 4;
        }
        end = end.max(start + (loc >> 16));
    }

    let Some(slot) = TP_SCRATCH.get_ptr_mut(0) else { return Err(-1) };
    // SAFETY: this CPU's slot; tracepoint programs do not nest on a CPU.
    let slot = unsafe { &mut *slot };
    let len = opaque(end.min(TP_RAW_MAX as u32));
    if len == 0 || len > TP_RAW_MAX as u32 {
        return Err(-1);
    }
    // SAFETY: `len` is at most TP_RAW_MAX, which the slot holds; a probe read cannot fault.
    if unsafe { bpf_probe_read_kernel(slot.data.as_mut_ptr().cast(), len, ctx.as_ptr().cast_const()) } != 0 {
        return Err(-1);
    }
    let mut at = len as usize;
    for i in 0..TP_STRINGS {
        if i >= usize::from(config.n_strings) {
            break;
        }
        // SAFETY: as above.
        let pointer: u64 = unsafe { ctx.read_at(usize::from(config.strings[i]))? };
        // Each string takes at most 2 + TP_STRING_MAX bytes: after i of them, `at` is below
        // TP_RAW_MAX + i * (2 + TP_STRING_MAX), which leaves room for one more.
        let at_now = opaque(at as u32) as usize;
        if at_now > DATA - (2 + TP_STRING_MAX) {
            break;
        }
        let Some(room) = slot.data.get_mut(at_now..at_now + 2 + TP_STRING_MAX) else { break };
        let (length, text) = room.split_at_mut(2);
        // SAFETY: a probe read of the process's memory, which may fail but cannot fault.
        let copied = match unsafe { bpf_probe_read_user_str_bytes(pointer as *const u8, text) } {
            Ok(text) => text.len() as u16,
            Err(_) => TP_STRING_FAULT,
        };
        length.copy_from_slice(&copied.to_le_bytes());
        at += 2 + if copied == TP_STRING_FAULT { 0 } else { usize::from(copied) };
    }

    let head = &mut slot.head;
    head.kind = RecordKind::Tracepoint as u8;
    head.n_strings = config.n_strings;
    head.truncated = u8::from(end > TP_RAW_MAX as u32);
    // SAFETY: a helper with no arguments.
    head.cpu = unsafe { bpf_get_smp_processor_id() };
    // SAFETY: a helper with no arguments.
    head.timestamp_ns = unsafe { bpf_ktime_get_ns() };
    head.pid = tgid;
    head.tid = tid;
    head.uid = kernel::current_uid();
    head.raw_len = len as u16;
    head.id = id as u16;
    head.comm = kernel::current_comm();
    let size = opaque((TRACEPOINT_HEADER_SIZE + at) as u32) as usize;
    if size > core::mem::size_of::<Slot>() {
        return Err(-1);
    }
    // SAFETY: the header and `at` bytes of data are in the slot.
    let record = unsafe { core::slice::from_raw_parts((slot as *const Slot).cast::<u8>(), size) };
    if output(record).is_err() {
        count(Counter::LostRing);
    }
    Ok(0)
}
