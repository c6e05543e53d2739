//! Reading kernel structures at the offsets the loader took from BTF (`KERNEL`).
use aya_ebpf::helpers::{bpf_get_current_task_btf, bpf_probe_read_kernel, generated};
use opentrace_common::KernelOffsets;

/// This kernel's struct layouts; the loader writes them before loading (the values here are
/// placeholders). A read-only global: the verifier sees each offset as a constant.
#[unsafe(no_mangle)]
pub static KERNEL: KernelOffsets = KernelOffsets {
    task_tgid: 0,
    task_real_parent: 0,
    task_fs: 0,
    task_files: 0,
    fs_root: 0,
    fs_pwd: 0,
    path_mnt: 0,
    path_dentry: 0,
    dentry_window: 0,
    dentry_seq: 0,
    dentry_hash_pprev: 0,
    dentry_parent: 0,
    dentry_name_len: 0,
    dentry_name: 0,
    mount_mnt: 0,
    mount_parent: 0,
    mount_mountpoint: 0,
    vfsmount_root: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_path: 0,
};

/// One offset of `KERNEL`, as a `u64` to add to an address.
macro_rules! offset {
    ($field:ident) => {
        // SAFETY: a read-only global the loader sets before loading; the volatile read keeps the
        // compiler from folding in the placeholder.
        u64::from(unsafe { core::ptr::read_volatile(&raw const $crate::kernel::KERNEL.$field) })
    };
}
pub(crate) use offset;

/// A value of type `T` at kernel address `at`; a failed read (a bad pointer) is `Err`.
#[inline(always)]
pub fn read<T>(at: u64) -> Result<T, i32> {
    // SAFETY: a probe read, which may fail but cannot fault.
    unsafe { bpf_probe_read_kernel(at as *const T) }
}

/// Reads `*to` from kernel address `at` in place (no copy of a large value through a `Result`,
/// which costs stack the path walk does not have). Returns whether the read succeeded.
#[inline(always)]
pub fn read_into<T>(to: &mut T, at: u64) -> bool {
    // SAFETY: a probe read into `to`, which is `size_of::<T>()` writable bytes; it may fail but
    // cannot fault.
    unsafe {
        generated::bpf_probe_read_kernel((to as *mut T).cast(), size_of::<T>() as u32, at as *const _) == 0
    }
}

/// The tgid of the current task's real parent, by direct loads through the task's BTF pointer
/// (the verifier turns them into fault-safe loads; the offsets are constants to it).
#[inline(always)]
pub fn parent_tgid() -> u32 {
    // SAFETY: `bpf_get_current_task_btf` returns the current task, valid while the program runs;
    // its `real_parent` is RCU-protected and the loads are fault-safe (PROBE_MEM).
    let (parent_at, tgid_at) = (offset!(task_real_parent) as usize, offset!(task_tgid) as usize);
    unsafe {
        let task = bpf_get_current_task_btf().cast::<u8>();
        let parent = *task.add(parent_at).cast::<*const u8>();
        *parent.add(tgid_at).cast::<u32>()
    }
}
