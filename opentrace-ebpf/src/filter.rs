//! The filters decided when a task is seen, before anything is stored or copied. The settings are
//! constants to the verifier: a filter that is off costs nothing.
use aya_ebpf::helpers::generated::bpf_get_current_ancestor_cgroup_id;
use opentrace_common::abi::settings::{
    FILTER_CGROUP, FILTER_COMM, FILTER_EXCLUDE_SELF, FILTER_TID, FILTER_TRACKED, FILTER_UID,
};

use crate::{
    kernel, process,
    shared::{SETTINGS, global, on},
};

/// Whether the current task (`tgid`, `tid`, as the watcher sees them) passes the filters.
#[inline(always)]
pub fn wanted(tgid: u32, tid: u32) -> bool {
    if on(FILTER_EXCLUDE_SELF) && tgid == global!(SETTINGS.self_tgid) {
        return false;
    }
    if on(FILTER_TRACKED) && !process::tracked(tgid) {
        return false;
    }
    if on(FILTER_TID) && tid != global!(SETTINGS.tid) {
        return false;
    }
    if on(FILTER_UID) && kernel::current_uid() != global!(SETTINGS.uid) {
        return false;
    }
    if on(FILTER_CGROUP) {
        let level = global!(SETTINGS.cgroup_level) as i32;
        // SAFETY: a helper with a plain argument.
        if unsafe { bpf_get_current_ancestor_cgroup_id(level) } != global!(SETTINGS.cgroup_id) {
            return false;
        }
    }
    if on(FILTER_COMM) {
        return global!(SETTINGS.comm).found_in(kernel::current_comm());
    }
    true
}
