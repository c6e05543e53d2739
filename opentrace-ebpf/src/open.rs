//! The open family's syscalls (`open`, `openat`, `openat2`, `creat`): `sys_enter_*` filters and
//! remembers the arguments per thread; `sys_exit_*` pairs them with the return value, copies the
//! path (the kernel has faulted its page in by then), resolves the full path when asked, and
//! sends one variable-length record. `send_open` and `identify` also serve io_uring's opens.
use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, bpf_probe_read_user_str_bytes,
    },
    macros::{btf_map, map, tracepoint},
    maps::ProgramArray,
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use opentrace_common::{
    AT_FDCWD, NO_FIELD, PATH_MAX,
    abi::{
        Counter, RecordKind,
        count::at_exit_only,
        open::{
            ArgOffsets, DEFAULT_RET_OFFSET, FileId, OPEN_HEADER_SIZE, OpenHeader, OpenRecord, Pending,
            STATUS_COUNTED, STATUS_FILE_ID, STATUS_HOW_FAULT, STATUS_PATH_FAULT, Syscall, full,
        },
        settings::{
            FILTER_FAILED, FILTER_PATHS, PATHS_BY_DENTRY, TEST_FAILURES, WITH_COUNTS, WITH_FILE_ID,
            WITH_FULL_PATH,
        },
    },
};

use crate::{
    count::{self, Counted},
    file,
    filter::wanted,
    kernel::{self, EFAULT},
    path,
    path_filter::{self, Ancestry},
    process,
    shared::{SCRATCH, SETTINGS, count, counted, global, on, output},
    storage::TaskStorage,
};

// Argument offsets of each `sys_enter_*` record and of `ret` in `sys_exit_*`. These are the
// defaults; the loader overwrites them with what the running kernel's `format` files say.
#[unsafe(no_mangle)]
static OPEN_ARGS: ArgOffsets = ArgOffsets::OPEN;
#[unsafe(no_mangle)]
static OPENAT_ARGS: ArgOffsets = ArgOffsets::OPENAT;
#[unsafe(no_mangle)]
static OPENAT2_ARGS: ArgOffsets = ArgOffsets::OPENAT2;
#[unsafe(no_mangle)]
static CREAT_ARGS: ArgOffsets = ArgOffsets::CREAT;
#[unsafe(no_mangle)]
static RET_OFFSET: u32 = DEFAULT_RET_OFFSET;

/// What `sys_enter_*` remembers for `sys_exit_*`, in the task itself (a thread's entry and exit
/// run in that thread, one after the other).
#[btf_map]
static PENDING: TaskStorage<Pending> = TaskStorage::new();

/// Element 0: the `diagnose` program, for tail calls.
#[map]
static DIAGNOSE: ProgramArray = ProgramArray::with_max_entries(1, 0);

macro_rules! open_family {
    ($($enter:ident, $syscall:expr, $args:ident, $nargs:literal;)*) => {$(
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            let record = Record::<$nargs>::new(&ctx);
            counted(try_sys_enter(&record, $syscall, global!($args)))
        }
    )*};
}

// One entry program per syscall: each loads its record's argument slots directly, and a record
// cannot be read past its end (the kernel checks the furthest offset when attaching).
open_family! {
    sys_enter_open, Syscall::Open, OPEN_ARGS, 3;
    sys_enter_openat, Syscall::Openat, OPENAT_ARGS, 4;
    sys_enter_openat2, Syscall::Openat2, OPENAT2_ARGS, 4;
    sys_enter_creat, Syscall::Creat, CREAT_ARGS, 2;
}

/// Attached to every `sys_exit_*` of the family: the exits only read `ret`, and the syscall is in
/// the pending entry. One program verified instead of four (the full-path walk makes it the
/// costliest to verify).
#[tracepoint]
pub fn sys_exit(ctx: TracePointContext) -> u32 {
    counted(try_sys_exit(&Record::<1>::new(&ctx)))
}

/// The syscall numbers of `open`, `openat`, `openat2` and `creat`, by `Syscall` number (0: none
/// on this architecture); the loader writes them.
#[unsafe(no_mangle)]
static SYSCALL_NUMBERS: [u32; 4] = [0; 4];

/// x32's syscalls have this bit set in their number; they run the same `sys_exit_*`.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Counting mode where the loader found no entry program needed: attached alone to every
/// `sys_exit_*` of the family, in place of the entry programs and `sys_exit`; it tells the
/// syscall by the record's `__syscall_nr` (a tracepoint program may not read the event id).
/// One program verified instead of four (with the naming record's full-path walk, the counting
/// exit is as costly to verify as `sys_exit`).
#[tracepoint]
pub fn count_exit(ctx: TracePointContext) -> u32 {
    let record = Record::<1>::new(&ctx);
    // SAFETY: `int __syscall_nr` follows the 8 bytes of common fields in every syscall record.
    let nr = unsafe { *ctx.as_ptr().cast::<u8>().add(SYSCALL_NR).cast::<u32>() } & !X32_SYSCALL_BIT;
    let numbers = global!(SYSCALL_NUMBERS);
    let syscall = if nr == numbers[Syscall::Openat as usize] {
        Syscall::Openat
    } else if nr == numbers[Syscall::Open as usize] {
        Syscall::Open
    } else if nr == numbers[Syscall::Openat2 as usize] {
        Syscall::Openat2
    } else if nr == numbers[Syscall::Creat as usize] {
        Syscall::Creat
    } else {
        return 0;
    };
    counted(try_count_at_exit(&record, syscall))
}

/// The entry's filters, decided at the exit (the task is the same), then the open counted.
#[inline(always)]
fn try_count_at_exit(ctx: &Record<'_, 1>, syscall: Syscall) -> Result<u32, i64> {
    let Some((tgid, tid)) = process::current_ids() else { return Ok(0) };
    if !wanted(tgid, tid) {
        return Ok(0);
    }
    let ret = ctx.arg(global!(RET_OFFSET))? as i64;
    if on(FILTER_FAILED) && ret >= 0 {
        return Ok(0);
    }
    if at_exit_only(global!(SETTINGS.count_by)) {
        count::at_exit(syscall, ret, tgid);
        return Ok(0);
    }
    count_by_file_at_exit(ctx, syscall, ret, (tgid, tid))
}

/// Counting by file at the exit alone: the path and the directory the lookup started from are
/// the syscall's arguments, still in the task's saved user registers. A successful open is
/// counted by its file without reading them; a failed one reads the path to hash it. Only the
/// first open of a key goes on to fill in and send its record, which names the key (its flags
/// and mode are left 0: no reader of a naming record looks at them).
#[inline(always)]
fn count_by_file_at_exit(
    ctx: &Record<'_, 1>,
    syscall: Syscall,
    ret: i64,
    (tgid, tid): (u32, u32),
) -> Result<u32, i64> {
    let args = || match syscall {
        Syscall::Openat | Syscall::Openat2 => {
            let (dfd, filename) = kernel::syscall_args();
            // `int dfd`: the upper half of the register is not part of the argument.
            (dfd as i32, filename)
        }
        _ => (AT_FDCWD, kernel::syscall_args().0),
    };
    let Some(event) = SCRATCH.get_ptr_mut(0) else { return Err(-1) };
    // SAFETY: as in `try_sys_exit`.
    let event = unsafe { &mut *event };
    // A successful open is counted by its file alone: its arguments are read only for a new key.
    let (dfd, filename) = if ret < 0 { args() } else { (AT_FDCWD, 0) };
    let path_len = if ret < 0 { read_path(event, filename) } else { 0 };
    let (counted, file, status) = count::at_exit_by_file(event, syscall, ret, tgid, path_len, dfd);
    if !matches!(counted, Counted::New) {
        return Ok(0);
    }
    let (dfd, filename) = if ret < 0 { (dfd, filename) } else { args() };
    let header = &mut event.header;
    identify(header, RecordKind::Open, tgid, tid);
    // SAFETY: a helper with no arguments.
    header.timestamp_ns = unsafe { bpf_ktime_get_ns() };
    header.ret = ret;
    header.flags = 0;
    header.mode = 0;
    header.dfd = dfd;
    header.syscall = syscall as u8;
    header.file = file;
    header.status = status | STATUS_COUNTED;
    let path_len = read_path(event, filename);
    // (Counts by file always name their keys by the full path: the verifier keeps this.)
    let full_len = if on(WITH_FULL_PATH) { resolve_full(event, path_len, ret, dfd, None) } else { 0 };
    output_open(event, path_len, full_len);
    if event.header.status & (STATUS_PATH_FAULT | STATUS_HOW_FAULT) != 0 {
        // SAFETY: as in `try_sys_exit`.
        unsafe { DIAGNOSE.tail_call(ctx.ctx, 0) };
    }
    Ok(0)
}

#[inline(always)]
fn try_sys_enter<const N: usize>(
    ctx: &Record<'_, N>,
    syscall: Syscall,
    args: ArgOffsets,
) -> Result<u32, i64> {
    let Some((tgid, tid)) = process::current_ids() else { return Ok(0) };
    if !wanted(tgid, tid) {
        return Ok(0);
    }

    let filename = ctx.arg(args.filename)?;
    // `int dfd` and `int flags`: the upper half of the register is not part of the argument.
    let dfd = match args.dfd {
        NO_FIELD => AT_FDCWD,
        offset => ctx.arg(offset)? as i32,
    };
    let flags = match args.flags {
        NO_FIELD if matches!(syscall, Syscall::Creat) => Syscall::CREAT_FLAGS,
        NO_FIELD => 0,
        offset => u64::from(ctx.arg(offset)? as u32),
    };
    // `umode_t` is an unsigned short.
    let mode = match args.mode {
        NO_FIELD => 0,
        offset => u64::from(ctx.arg(offset)? as u16),
    };
    let how = match args.how {
        NO_FIELD => 0,
        offset => ctx.arg(offset)?,
    };

    let Some(pending) = PENDING.current(true) else {
        count(Counter::LostPending);
        return Ok(0);
    };
    // SAFETY: the task's own storage, which only this task's programs use (entry and exit run in
    // the task, one after the other).
    let pending = unsafe { &mut *pending };
    // Member by member: a whole `Pending` written at once zeroes its padding with a call to a
    // memset subprogram. The padding is never read (and was zeroed when the storage was made).
    // SAFETY: a helper with no arguments.
    pending.timestamp_ns = unsafe { bpf_ktime_get_ns() };
    (pending.filename, pending.flags, pending.mode, pending.how) = (filename, flags, mode, how);
    (pending.dfd, pending.syscall) = (dfd, syscall as u8);
    Ok(0)
}

/// Where a syscall tracepoint record's 8-byte argument slots start (`struct syscall_trace_enter`
/// and `_exit`: common fields, `int __syscall_nr`, then `unsigned long args[]` or `long ret`).
pub const FIRST_SLOT: u32 = 16;
/// Where its `int __syscall_nr` is.
const SYSCALL_NR: usize = 8;

/// A syscall tracepoint record with its first `N` argument slots loaded up front, by direct
/// context loads at constant offsets (a helper call each costs more; the verifier only allows
/// direct loads at offsets fixed in the instruction). Fields are then picked by the offsets the
/// format files gave; an offset outside those slots falls back to a probe read.
struct Record<'a, const N: usize> {
    ctx: &'a TracePointContext,
    slots: [u64; N],
}

impl<'a, const N: usize> Record<'a, N> {
    #[inline(always)]
    fn new(ctx: &'a TracePointContext) -> Self {
        let base = ctx.as_ptr().cast::<u8>();
        // SAFETY: the record holds `__syscall_nr` and N slots after it; the kernel checks the
        // furthest offset read against the tracepoint's record size when attaching.
        let slots = core::array::from_fn(|i| unsafe { *base.add(FIRST_SLOT as usize + 8 * i).cast::<u64>() });
        Record { ctx, slots }
    }

    #[inline(always)]
    fn arg(&self, offset: u32) -> Result<u64, i64> {
        let index = offset.wrapping_sub(FIRST_SLOT) / 8;
        if offset.is_multiple_of(8)
            && let Some(value) = self.slots.get(index as usize)
        {
            return Ok(*value);
        }
        // SAFETY: a probe read of the record, which may fail but cannot fault.
        Ok(unsafe { self.ctx.read_at::<u64>(offset as usize)? })
    }
}

#[inline(always)]
fn try_sys_exit(ctx: &Record<'_, 1>) -> Result<u32, i64> {
    let Some(slot) = PENDING.current(false) else {
        return Ok(0);
    };
    // SAFETY: as in `try_sys_enter`.
    let slot = unsafe { &mut *slot };
    // A zero timestamp marks the slot consumed (or an exit whose entry was not recorded).
    if slot.timestamp_ns == 0 {
        return Ok(0);
    }
    let pending = *slot;
    slot.timestamp_ns = 0;

    // From here on the event passed the entry's filters: a failure is an event lost (`counted`).
    let ret = ctx.arg(global!(RET_OFFSET))? as i64;
    if on(FILTER_FAILED) && ret >= 0 {
        return Ok(0);
    }
    // The tests' forced failure (see `TEST_FAILURES`): pruned by the verifier when off.
    if on(TEST_FAILURES)
        && pending.timestamp_ns.checked_rem(u64::from(global!(SETTINGS.fail_every))) == Some(0)
    {
        return Err(-1);
    }
    // A path filter of directories decides a successful open by its file's ancestors, before
    // anything is read for the event.
    let mut matched = None;
    if on(FILTER_PATHS) && on(PATHS_BY_DENTRY) && ret >= 0 {
        match path_filter::under_learned(ret) {
            Some(Ancestry::NotUnder) => return Ok(0),
            Some(Ancestry::Under(opened)) => matched = Some(opened),
            None => {}
        }
    }
    // The entry saw the task, so its namespace can see it.
    let (tgid, tid) = process::current_ids().unwrap_or_default();

    let Some(event) = SCRATCH.get_ptr_mut(0) else { return Err(-1) };
    // SAFETY: this CPU's slot, and nothing else runs on this CPU until the program returns: a
    // tracepoint program is not re-entered on its CPU (the kernel skips nested runs), and the
    // tail call to `diagnose` happens after the last write.
    let event = unsafe { &mut *event };
    let header = &mut event.header;
    identify(header, RecordKind::Open, tgid, tid);
    header.timestamp_ns = pending.timestamp_ns;
    header.ret = ret;
    header.flags = pending.flags;
    header.mode = pending.mode;
    header.dfd = pending.dfd;
    header.syscall = pending.syscall;

    send_open(event, pending.filename, pending.how, ret, pending.dfd, matched);
    if event.header.status & (STATUS_PATH_FAULT | STATUS_HOW_FAULT) != 0 {
        // Rare: the logging code lives in its own program, verified once, not in every exit.
        // SAFETY: `diagnose` is a tracepoint program, like this one; if the call fails we just return.
        unsafe { DIAGNOSE.tail_call(ctx.ctx, 0) };
    }
    Ok(0)
}

/// Completes an open's record in this CPU's slot (its header filled in): the `struct open_how`
/// at `how` (user memory; 0: none), the path at `filename` (user memory), and the full path when
/// asked; then sends it, if it passes the path filter (`matched`: it is known to, and this is the
/// opened file, where its full path starts, and the learned directory it is under). The caller
/// looks at the status for faults to report.
#[inline(always)]
pub fn send_open(
    event: &mut OpenRecord,
    filename: u64,
    how: u64,
    ret: i64,
    dfd: i32,
    matched: Option<path::Opened>,
) {
    if how != 0 {
        // `struct open_how` starts with `u64 flags; u64 mode;` (in the process's memory).
        // SAFETY: a probe read of user memory, which may fail but cannot fault.
        match unsafe { bpf_probe_read_user(how as *const [u64; 2]) } {
            Ok([flags, mode]) => {
                event.header.flags = flags;
                event.header.mode = mode;
            }
            Err(err) => {
                event.header.status |= STATUS_HOW_FAULT;
                event.header.fault = err;
            }
        }
    }

    // With a path filter, an open is counted (or not) once its full path is known to match.
    let filtered = on(FILTER_PATHS);
    // Counting mode: only the first open of a key is sent, to name it. A successful open is
    // counted by its file, before its path is read (only a new key's is).
    let count_here = on(WITH_COUNTS) && !filtered;
    if count_here && ret >= 0 && !first_of_key(event, ret, 0, dfd) {
        return;
    }

    let path_len = read_path(event, filename);

    // A failed open is counted by its path and where its lookup started.
    if count_here && ret < 0 && !first_of_key(event, ret, path_len, dfd) {
        return;
    }

    // A path filter resolves the full path to match it, unless the opened file was found under a
    // directory of the filter by its dentries; the event carries it only when asked.
    let mut full_len = if on(WITH_FULL_PATH) || (filtered && matched.is_none()) {
        resolve_full(event, path_len, ret, dfd, matched)
    } else {
        0
    };

    if filtered {
        if matched.is_none() {
            match path_filter::matches(event, path_len, full_len) {
                Ok(true) => {}
                Ok(false) => return,
                // Not compared: let through (it may match), its full path None and the reason
                // kept, so that the log says how many were let through so, and why.
                Err(why) => (event.header.full, event.header.full_len, full_len) = (why, 0, 0),
            }
        }
        // Not asked for: not sent (one not compared keeps its reason).
        if !on(WITH_FULL_PATH) && event.header.full < full::FIRST_UNRESOLVED {
            (event.header.full, event.header.full_len, full_len) = (full::NOT_ASKED, 0, 0);
        }
        let counted_len = if ret >= 0 { 0 } else { path_len };
        if on(WITH_COUNTS) && !first_of_key(event, ret, counted_len, dfd) {
            return;
        }
    }

    // A successful open's file: the fd is in the task's table by now.
    if on(WITH_FILE_ID) && ret >= 0 && event.header.status & STATUS_FILE_ID == 0 {
        let (file, status) = file::identity(ret);
        event.header.file = file;
        event.header.status |= status;
    }

    output_open(event, path_len, full_len);
}

/// The full path of the open whose path of `path_len` bytes is in the record, resolved right
/// after it (the header says how it went); its length.
#[inline(always)]
fn resolve_full(
    event: &mut OpenRecord,
    path_len: u32,
    ret: i64,
    dfd: i32,
    opened: Option<path::Opened>,
) -> u32 {
    let absolute = path_len > 0 && event.data[0] == b'/';
    let (code, full_len) = if event.header.status & STATUS_PATH_FAULT != 0 && ret < 0 {
        (full::FAULT, 0)
    } else {
        // SAFETY: the path ends before PATH_MAX; the full path (at most PATH_MAX - 1 bytes)
        // goes right after it, inside the slot's 2 * PATH_MAX bytes.
        let to = unsafe { event.data.as_mut_ptr().add((path_len & (PATH_MAX as u32 - 1)) as usize) };
        // (The verifier keeps one of the two: `SETTINGS` is a constant to it.)
        if on(PATHS_BY_DENTRY) {
            path::resolve_into::<{ path::TO_DIR }>(to, ret, absolute, dfd, opened)
        } else {
            path::resolve_into::<{ path::TO_ROOT }>(to, ret, absolute, dfd, opened)
        }
    };
    event.header.full = code;
    event.header.full_len = full_len as u16;
    full_len
}

/// Sends the record: its header, then the path and the full path of the lengths given.
#[inline(always)]
fn output_open(event: &OpenRecord, path_len: u32, full_len: u32) {
    let size = OPEN_HEADER_SIZE + (path_len as usize & (PATH_MAX - 1)) + (full_len as usize & (PATH_MAX - 1));
    // SAFETY: the header, the path and the full path are in the slot, one after the other.
    let record = unsafe { core::slice::from_raw_parts((event as *const OpenRecord).cast::<u8>(), size) };
    if output(record).is_err() {
        // A counted open's counts stay whole without it; only its key's name is missing.
        count(if event.header.status & STATUS_COUNTED != 0 { Counter::NamesLost } else { Counter::LostRing });
    }
}

/// Copies the path at `filename` (user memory) to the start of the record's data; its length
/// (0, with the fault in the header, when it cannot be read).
#[inline(always)]
fn read_path(event: &mut OpenRecord, filename: u64) -> u32 {
    let Some(path) = event.data.first_chunk_mut::<PATH_MAX>() else { return 0 };
    // SAFETY: a probe read of user memory into this CPU's slot.
    let copied = unsafe { bpf_probe_read_user_str_bytes(filename as *const u8, path) }.map(|p| p.len());
    path_copied(&mut event.header, copied)
}

/// Notes in the header how copying a path into the record's data went: its length, or the
/// fault. Returns the length (0 on a fault).
#[inline(always)]
pub fn path_copied(header: &mut OpenHeader, copied: Result<usize, i32>) -> u32 {
    let path_len = match copied {
        Ok(len) => len as u32,
        Err(err) => {
            header.status |= STATUS_PATH_FAULT;
            header.fault = err;
            0
        }
    };
    header.path_len = path_len as u16;
    path_len
}

/// Counting mode: counts the open; whether it is the first of its key (to be sent, marked).
#[inline(always)]
fn first_of_key(event: &mut OpenRecord, ret: i64, path_len: u32, dfd: i32) -> bool {
    match count::bump(event, ret, path_len, dfd) {
        Counted::New => {
            event.header.status |= STATUS_COUNTED;
            true
        }
        Counted::Known | Counted::Full => false,
    }
}

/// Fills in who opened: the ids as the watcher sees them (`tgid`, `tid`), and the rest of the
/// current task's identity; clears the status.
#[inline(always)]
pub fn identify(header: &mut OpenHeader, kind: RecordKind, tgid: u32, tid: u32) {
    header.kind = kind as u8;
    header.pid = tgid;
    header.tid = tid;
    header.uid = kernel::current_uid();
    header.ppid = process::parent();
    header.ns_pid = kernel::own_ns_tgid((bpf_get_current_pid_tgid() >> 32) as u32);
    header.cgroup_id = kernel::current_cgroup_id();
    header.comm = kernel::current_comm();
    header.status = 0;
    header.file = FileId::default();
    header.fault = 0;
    header.full = full::NOT_ASKED;
    header.full_len = 0;
}

/// Reached by tail call from a `sys_exit_*` program whose record has a `STATUS_*_FAULT` bit;
/// says what could not be read, through aya-log (the user side forwards it to Python logging).
#[tracepoint]
pub fn diagnose(ctx: TracePointContext) -> u32 {
    let Some(event) = SCRATCH.get_ptr(0) else {
        return 0;
    };
    // SAFETY: reached only by tail call from an exit program on this CPU, which filled the slot
    // and does not run again on this CPU before this program returns.
    let header = unsafe { &(*event).header };
    // With -EFAULT the process passed a bad pointer: the event's errno says it all. Otherwise the
    // kernel read the path a moment ago and we could not: say so.
    if header.status & STATUS_PATH_FAULT != 0 && header.ret != -i64::from(EFAULT) {
        warn!(
            &ctx,
            "could not read the path of an open by pid {} tid {} (error {}); reporting it empty",
            header.pid,
            header.tid,
            header.fault
        );
    }
    if header.status & STATUS_HOW_FAULT != 0 && header.ret >= 0 {
        warn!(
            &ctx,
            "could not read struct open_how of pid {} (error {}); flags and mode reported as 0",
            header.pid,
            header.fault
        );
    }
    0
}
