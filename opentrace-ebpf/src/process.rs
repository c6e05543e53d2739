//! Following processes for a pid watcher: the process, and with `descendants` every process it
//! starts, decided in the kernel as they fork, so that no child's first opens are missed however
//! short-lived it is. A process leaves the set when it exits (before its pid can be reused).
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_get_current_pid_tgid,
    macros::{map, raw_tracepoint, tracepoint},
    maps::HashMap,
    programs::{RawTracePointContext, TracePointContext},
};
use opentrace_common::{COUNTER_UNFOLLOWED, ProcessExit, RecordKind, TRACKED_MAX};

use crate::{
    ADAPTIVE_WAKEUP, EVENTS, count,
    kernel::{self, offset, read},
};

/// The followed processes, by tgid. The loader puts the watched process (and, with
/// `descendants`, those already descended from it) in before attaching.
#[map]
pub static TRACKED: HashMap<u32, u8> = HashMap::with_max_entries(TRACKED_MAX, 0);

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
    let forker = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !tracked(forker) {
        return 0;
    }
    let child: u64 = ctx.arg(1);
    let (Ok(pid), Ok(tgid)) =
        (read::<u32>(child + offset!(task_pid)), read::<u32>(child + offset!(task_tgid)))
    else {
        count(COUNTER_UNFOLLOWED);
        return 0;
    };
    // A new thread joins a followed process; a new process is followed from now on (whichever
    // parent the clone gives it, as strace -f does).
    if pid == tgid && TRACKED.insert(tgid, 1, u64::from(BPF_NOEXIST)).is_err() {
        count(COUNTER_UNFOLLOWED);
    }
    0
}

/// At the exit of a followed process's last thread: forget it, and tell the reader.
#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !tracked(tgid) || !kernel::process_dying() {
        return 0;
    }
    if TRACKED.remove(tgid).is_ok() {
        let record = ProcessExit { kind: RecordKind::ProcessExit as u8, _pad: [0; 3], tgid };
        // A lost record only delays the end: the reader also looks at the map when idle.
        let _ = EVENTS.output::<ProcessExit>(&record, ADAPTIVE_WAKEUP);
    }
    0
}
