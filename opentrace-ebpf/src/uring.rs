//! io_uring open requests (`IORING_OP_OPENAT`, `IORING_OP_OPENAT2`), which no syscall
//! tracepoint sees. At submission the request is prepared: the kernel has copied the path into a
//! `struct filename` that the request's `struct io_open` points to, with `dfd` and `open_how`
//! beside it; the path is freed before completion, so the submission sends a record with all of
//! it, and the completion (whichever task or worker completes the request) one with the result.
//! The reader pairs them by the request's address.
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes},
    macros::{map, raw_tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::RawTracePointContext,
};
use opentrace_common::{
    NO_FIELD, PATH_MAX,
    abi::{
        Counter, RecordKind,
        open::{FileId, OPEN_HEADER_SIZE, OpenHeader, OpenRecord, STATUS_FIXED_SLOT, Syscall, full},
        settings::{FILTER_PATHS, WITH_FILE_ID, WITH_FULL_PATH},
        uring::{
            IORING_OP_OPENAT, IORING_OP_OPENAT2, URING_COMPLETE_ARGS, URING_COMPLETE_ARGS_6_0,
            URING_COMPLETE_SIZE, URING_PENDING_MAX, UringArgs, UringComplete, UringPending, sqe,
        },
    },
};

use crate::{
    file,
    filter::wanted,
    kernel::{offset, read},
    open::{identify, path_copied, send_open},
    path, process,
    shared::{SCRATCH, count, counted, global, on, output},
};

/// Where the two tracepoints pass the request and the result; the loader writes what BTF says.
#[unsafe(no_mangle)]
static URING_ARGS: UringArgs = UringArgs::DEFAULT;

/// Submitted open requests not completed yet, by address. An LRU map: a request that never
/// completes (its ring torn down) ages out instead of holding memory. The kernel reuses
/// requests, so an entry left behind (its completion not traced) must not be taken for a later
/// request's: every open submitted at that address replaces or removes it.
#[map]
static URING_PENDING: LruHashMap<u64, UringPending> = LruHashMap::with_max_entries(URING_PENDING_MAX, 0);

/// The completion's record (a header and the full path).
#[repr(C)]
struct Completed {
    head: UringComplete,
    full: [u8; PATH_MAX],
}

#[map]
static COMPLETED: PerCpuArray<Completed> = PerCpuArray::with_max_entries(1, 0);

/// `io_uring_submit_req(req)` (the only argument: the loader checked), for every request, so
/// the opcode is looked at first. A raw
/// tracepoint: a plain one would have the kernel format a record (the opcode's name included)
/// for each of a process's millions of reads, which is most of what watching them costs.
#[raw_tracepoint(tracepoint = "io_uring_submit_req")]
pub fn io_uring_submit_req(ctx: RawTracePointContext) -> i32 {
    try_submit_req(ctx.arg(0));
    0
}

/// For every request: an open's record, or nothing. Every way it can fail is counted here, once.
#[inline(always)]
fn try_submit_req(req: u64) {
    if !is_open(req) {
        return;
    }
    match try_submit(req) {
        Ok(true) => {}
        // Filtered out, or lost (counted): its completion must find nothing here. A removal that
        // fails found nothing to remove.
        Ok(false) => {
            let _ = URING_PENDING.remove(req);
        }
        // The request could not be read: lost, and counted.
        Err(_) => {
            count(Counter::LostError);
            let _ = URING_PENDING.remove(req);
        }
    }
}

/// Argument `n` of `io_uring_complete`, which has `N` of them. The verifier takes only loads from
/// the context itself at constant offsets, and attaching checks that none is beyond the
/// tracepoint's arguments: every argument is loaded (volatile, so that the compiler cannot turn
/// the choice into one load through a computed pointer), then one is chosen.
#[inline(always)]
fn complete_arg<const N: usize>(ctx: &RawTracePointContext, n: u32) -> u64 {
    let args = ctx.as_ptr().cast::<u64>();
    // SAFETY: a raw tracepoint's context is its arguments as u64s; the loader attached the
    // program for N arguments to a tracepoint that has N (it checked the prototype in BTF).
    let all: [u64; N] = core::array::from_fn(|i| unsafe { args.add(i).read_volatile() });
    all[(n as usize).min(N - 1)]
}

/// Whether request `req` is an open.
#[inline(always)]
fn is_open(req: u64) -> bool {
    matches!(read::<u8>(req + offset!(req_opcode)), Ok(IORING_OP_OPENAT | IORING_OP_OPENAT2))
}

/// Sends the request's record and leaves what its completion needs in `URING_PENDING`. Whether
/// it did. An open submitted with `IOSQE_CQE_SKIP_SUCCESS` is no different here: if it fails,
/// the kernel posts (and traces) its completion after all; if it succeeds, no completion comes,
/// and the reader counts it lost when its address is reused or the watcher ends.
#[inline(always)]
fn try_submit(req: u64) -> Result<bool, i64> {
    let Some((tgid, tid)) = process::current_ids() else { return Ok(false) };
    if !wanted(tgid, tid) {
        return Ok(false);
    }
    let open = req + offset!(req_cmd);
    let dfd: i32 = read(open + offset!(open_dfd))?;
    let slot: u32 = read(open + offset!(open_file_slot))?;
    let [flags, mode]: [u64; 2] = read(open + offset!(open_how))?;
    let filename: u64 = read(open + offset!(open_filename))?;
    let name: u64 = read(filename + offset!(filename_name))?;

    let Some(event) = SCRATCH.get_ptr_mut(0) else { return Err(0) };
    // SAFETY: this CPU's slot; tracepoint programs do not nest on a CPU.
    let event = unsafe { &mut *event };
    let header = &mut event.header;
    // Until the completion comes, the request's address stands in for the result.
    open_header(header, RecordKind::UringSubmit, (tgid, tid), dfd, [flags, mode], req as i64);
    if slot != 0 {
        header.status |= STATUS_FIXED_SLOT;
    }
    let path = event.data.first_chunk_mut::<PATH_MAX>().ok_or(0)?;
    // SAFETY: a probe read of the kernel's copy of the path into this CPU's slot.
    let copied = unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, path) }.map(|p| p.len());
    let path_len = path_copied(&mut event.header, copied);
    // The entry first: without it the completion cannot be matched, and the event is lost
    // (counted here, once: no record is sent).
    let pending = UringPending {
        submitted_ns: event.header.timestamp_ns,
        dfd,
        absolute: u8::from(path_len > 0 && event.data[0] == b'/'),
        fixed: u8::from(slot != 0),
        _pad: [0; 2],
    };
    if URING_PENDING.insert(req, pending, 0).is_err() {
        // Lost, counted here (once); whatever the map held for this address goes (see the caller).
        count(Counter::LostRing);
        return Ok(false);
    }
    let size = OPEN_HEADER_SIZE + (path_len as usize & (PATH_MAX - 1));
    // SAFETY: the header and the path are in the slot.
    let record = unsafe { core::slice::from_raw_parts((event as *const OpenRecord).cast::<u8>(), size) };
    if output(record).is_err() {
        // The reader never sees this request: lost, counted now (once), and its completion, if
        // one comes, finds nothing to complete.
        count(Counter::LostRing);
        return Ok(false);
    }
    Ok(true)
}

/// `io_uring_req_failed(sqe, req, error)`: a request that failed before submission (its path
/// unreadable, a flag refused) never reaches `io_uring_submit_req`; for an open, the whole event
/// is sent from here, read from the submission queue entry (uapi: the same on every kernel).
#[raw_tracepoint(tracepoint = "io_uring_req_failed")]
pub fn io_uring_req_failed(ctx: RawTracePointContext) -> i32 {
    counted(try_req_failed(ctx.arg(0), ctx.arg(1), ctx.arg(2))) as i32
}

#[inline(always)]
fn try_req_failed(sqe: u64, req: u64, error: u64) -> Result<u32, i64> {
    let Ok(opcode @ (IORING_OP_OPENAT | IORING_OP_OPENAT2)) = read::<u8>(sqe + sqe::OPCODE) else {
        return Ok(0);
    };
    // Its completion (the error) must not be paired with an entry a request before it left. A
    // removal that fails found nothing to remove.
    let _ = URING_PENDING.remove(req);
    try_failed(sqe, opcode, i64::from(error as i32))
}

#[inline(always)]
fn try_failed(sqe: u64, opcode: u8, ret: i64) -> Result<u32, i64> {
    let Some((tgid, tid)) = process::current_ids() else { return Ok(0) };
    if !wanted(tgid, tid) {
        return Ok(0);
    }
    let dfd: i32 = read(sqe + sqe::FD)?;
    let filename: u64 = read(sqe + sqe::ADDR)?;
    let (flags, mode, how) = if opcode == IORING_OP_OPENAT {
        (read::<u32>(sqe + sqe::OPEN_FLAGS)?, read::<u32>(sqe + sqe::LEN)?, 0)
    } else {
        (0, 0, read::<u64>(sqe + sqe::ADDR2)?)
    };
    let Some(event) = SCRATCH.get_ptr_mut(0) else { return Err(-1) };
    // SAFETY: this CPU's slot; tracing programs do not nest on a CPU.
    let event = unsafe { &mut *event };
    open_header(&mut event.header, RecordKind::Open, (tgid, tid), dfd, [flags, mode].map(u64::from), ret);
    send_open(event, filename, how, ret, dfd, None);
    Ok(0)
}

/// The header of an io_uring open's record: the submitting task, now, and the request's `dfd`,
/// `[flags, mode]` and result (or what stands in for it).
#[inline(always)]
fn open_header(
    header: &mut OpenHeader,
    kind: RecordKind,
    (tgid, tid): (u32, u32),
    dfd: i32,
    [flags, mode]: [u64; 2],
    ret: i64,
) {
    identify(header, kind, tgid, tid);
    // SAFETY: a helper with no arguments.
    header.timestamp_ns = unsafe { bpf_ktime_get_ns() };
    header.syscall = Syscall::IoUring as u8;
    header.dfd = dfd;
    header.flags = flags;
    header.mode = mode;
    header.ret = ret;
}

/// `io_uring_complete(ctx, req, cqe)` (Linux 6.13 and newer): every completion; only those of a
/// pending open matter.
#[raw_tracepoint(tracepoint = "io_uring_complete")]
pub fn io_uring_complete(ctx: RawTracePointContext) -> i32 {
    complete::<URING_COMPLETE_ARGS>(&ctx)
}

/// `io_uring_complete(ctx, req, user_data, res, cflags, extra1, extra2)` (Linux 6.0 to 6.12).
#[raw_tracepoint(tracepoint = "io_uring_complete")]
pub fn io_uring_complete_6_0(ctx: RawTracePointContext) -> i32 {
    complete::<URING_COMPLETE_ARGS_6_0>(&ctx)
}

#[inline(always)]
fn complete<const N: usize>(ctx: &RawTracePointContext) -> i32 {
    let args = global!(URING_ARGS);
    let req = complete_arg::<N>(ctx, args.complete_req);
    if !is_open(req) {
        return 0;
    }
    let res = complete_arg::<N>(ctx, args.complete_res);
    // Not counted here if it fails: the reader holds the request's submission, and counts it lost
    // (once) when its address is reused or the watcher ends without a completion.
    let _ = try_complete(req, res, args);
    0
}

#[inline(always)]
fn try_complete(req: u64, res: u64, args: UringArgs) -> Result<u32, i64> {
    // SAFETY: the value is copied out before the entry is removed.
    let Some(pending) = (unsafe { URING_PENDING.get(req) }).copied() else { return Ok(0) };
    // It was just found: the removal cannot fail but for a concurrent one, which is as good.
    let _ = URING_PENDING.remove(req);
    let ret = i64::from(if args.complete_res_at == NO_FIELD {
        res as i32
    } else {
        read::<i32>(res + u64::from(args.complete_res_at))?
    });
    let Some(done) = COMPLETED.get_ptr_mut(0) else { return Ok(0) };
    // SAFETY: this CPU's slot; tracepoint programs do not nest on a CPU.
    let done = unsafe { &mut *done };
    let (mut code, mut full_len) = (full::NOT_ASKED, 0);
    // The reader matches a path filter by it, and drops it when not asked.
    if on(WITH_FULL_PATH) || on(FILTER_PATHS) {
        (code, full_len) = if pending.fixed != 0 && ret >= 0 {
            (full::FIXED_SLOT, 0)
        } else {
            // The completing task (the submitter, or an io-wq or SQPOLL thread of its process)
            // shares its fd table and working directory.
            path::resolve_into::<{ path::TO_ROOT }>(
                done.full.as_mut_ptr(),
                ret,
                pending.absolute != 0,
                pending.dfd,
                None,
            )
        };
    }
    // The opened file, by the fd in the process's table (none for a fixed-file slot).
    let (file, status) = if on(WITH_FILE_ID) && ret >= 0 && pending.fixed == 0 {
        file::identity(ret)
    } else {
        (FileId::default(), 0)
    };
    done.head = UringComplete {
        kind: RecordKind::UringComplete as u8,
        full: code,
        full_len: full_len as u16,
        status,
        _pad: [0; 3],
        req,
        ret,
        submitted_ns: pending.submitted_ns,
        file,
    };
    let size = URING_COMPLETE_SIZE + (full_len as usize & (PATH_MAX - 1));
    // SAFETY: the header and the full path are in the slot.
    let record = unsafe { core::slice::from_raw_parts((done as *const Completed).cast::<u8>(), size) };
    // A completion that does not fit is not counted here: the reader, holding the request, counts
    // it lost when the request's address is reused or the watcher ends (once).
    let _ = output(record);
    Ok(0)
}
