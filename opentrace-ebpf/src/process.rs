//! Following processes for a pid watcher: the process, and with `descendants` every process it
//! starts, decided in the kernel as they fork, so that no child's first opens are missed however
//! short-lived it is. A process leaves the set when it exits (before its pid can be reused).
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST, bpf_pidns_info},
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_ns_current_pid_tgid},
    macros::{map, raw_tracepoint, tracepoint},
    maps::HashMap,
    programs::{RawTracePointContext, TracePointContext},
};
use opentrace_common::abi::{
    Counter, RecordKind,
    process::{ProcessExit, TRACKED_MAX},
    settings::IN_PID_NAMESPACE,
};

use crate::{
    kernel::{self, offset, read},
    shared::{SETTINGS, count, global, on, output},
};

/// The current task's (tgid, tid) as the watcher sees them: the kernel's global ids, or, for a
/// watcher in a PID namespace, that namespace's, and `None` for a task it cannot see.
#[inline(always)]
pub fn current_ids() -> Option<(u32, u32)> {
    if on(IN_PID_NAMESPACE) {
        let mut ids = bpf_pidns_info { pid: 0, tgid: 0 };
        let (dev, ino) = (global!(SETTINGS.pidns_dev), global!(SETTINGS.pidns_ino));
        // SAFETY: the helper writes `ids`, of the size given.
        let found = unsafe {
            bpf_get_ns_current_pid_tgid(dev, ino, &raw mut ids, size_of::<bpf_pidns_info>() as u32)
        };
        return (found == 0).then_some((ids.tgid, ids.pid));
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    Some(((pid_tgid >> 32) as u32, pid_tgid as u32))
}

/// The current task's parent's tgid as the watcher sees it (0 if its namespace cannot see it).
#[inline(always)]
pub fn parent() -> u32 {
    if on(IN_PID_NAMESPACE) {
        kernel::pid_in_ns(kernel::parent_tgid_pid(), global!(SETTINGS.pidns_ino))
    } else {
        kernel::parent_tgid()
    }
}

/// The followed processes, by tgid. The loader puts the watched process (and, with
/// `descendants`, those already descended from it) in before attaching. Not preallocated: most
/// watchers follow no process, or a few.
#[map]
pub static TRACKED: HashMap<u32, u8> = HashMap::with_max_entries(TRACKED_MAX, BPF_F_NO_PREALLOC);

#[inline(always)]
pub fn tracked(tgid: u32) -> bool {
    // SAFETY: the value is not kept past the lookup.
    unsafe { TRACKED.get(tgid) }.is_some()
}

/// `sched_process_fork(parent, child)` as a raw tracepoint, for the child's task: the plain
/// tracepoint has only its thread id, not whether it is a new process. It fires before the child
/// first runs.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    let Some((forker, _)) = current_ids() else { return 0 };
    if !tracked(forker) {
        return 0;
    }
    let child: u64 = ctx.arg(1);
    let (Ok(pid), Ok(tgid)) =
        (read::<u32>(child + offset!(task_pid)), read::<u32>(child + offset!(task_tgid)))
    else {
        count(Counter::Unfollowed);
        return 0;
    };
    // A new thread joins a followed process; a new process is followed from now on (whichever
    // parent the clone gives it, as strace -f does), by the number the watcher sees.
    if pid != tgid {
        return 0;
    }
    let seen = if on(IN_PID_NAMESPACE) {
        match read::<u64>(child + offset!(task_thread_pid)) {
            Ok(thread_pid) => kernel::pid_in_ns(thread_pid, global!(SETTINGS.pidns_ino)),
            Err(_) => 0,
        }
    } else {
        tgid
    };
    if seen == 0 || TRACKED.insert(seen, 1, u64::from(BPF_NOEXIST)).is_err() {
        count(Counter::Unfollowed);
    }
    0
}

/// At the exit of a followed process's last thread: forget it, and tell the reader.
#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let Some((tgid, _)) = current_ids() else { return 0 };
    if !tracked(tgid) || !kernel::process_dying() {
        return 0;
    }
    if TRACKED.remove(tgid).is_ok() {
        let record = ProcessExit { kind: RecordKind::ProcessExit as u8, _pad: [0; 3], tgid };
        // A lost record only delays the end: the reader also looks at the map when idle.
        let _ = output(&record);
    }
    0
}
