//! Reading kernel structures at the offsets the loader took from BTF (`KERNEL`).
use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_task_btf, bpf_get_current_uid_gid, bpf_probe_read_kernel, generated,
};
use opentrace_common::{
    COMM_LEN, NO_FIELD,
    abi::kernel::{KernelOffsets, MOUNT_WINDOW},
    comm::comm_from_words,
};

/// This kernel's struct layouts; the loader writes them before loading (the values here are
/// placeholders). A read-only global: the verifier sees each offset as a constant.
#[unsafe(no_mangle)]
pub static KERNEL: KernelOffsets = KernelOffsets {
    task_pid: 0,
    task_tgid: 0,
    task_real_parent: 0,
    task_signal: 0,
    task_thread_pid: 0,
    task_comm: 0,
    task_cred: 0,
    cred_uid: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    signal_live: 0,
    signal_tgid_pid: 0,
    pid_level: 0,
    pid_numbers: 0,
    upid_size: 0,
    upid_nr: 0,
    upid_ns: 0,
    pidns_inum: 0,
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
    dentry_name_hash: 0,
    mount_mnt: 0,
    mount_window: 0,
    mount_parent: 0,
    mount_mountpoint: 0,
    mount_root: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_path: 0,
    file_window: 0,
    inode_window: 0,
    sb_window: 0,
    file_mnt: 0,
    file_inode: 0,
    inode_ino: 0,
    inode_sb: 0,
    sb_dev: 0,
    sb_magic: 0,
    mount_id: 0,
    dentry_inode: 0,
    btf_dentry: 0,
    btf_file: 0,
    btf_inode: 0,
    btf_super_block: 0,
    btf_mount: 0,
    btf_fd_slot: 0,
    btf_word: 0,
    regs_arg0: 0,
    regs_arg1: 0,
    req_opcode: 0,
    req_cmd: 0,
    open_dfd: 0,
    open_file_slot: 0,
    open_filename: 0,
    open_how: 0,
    filename_name: 0,
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

/// Loads of the current task's own structures go straight through its BTF pointer: the verifier
/// knows their types and turns the loads into fault-safe ones (a few ns, where a probe read costs
/// ~10); the offsets are constants to it. Pointers read from memory the verifier has no type for
/// take probe reads, or direct loads through a pointer `bpf_rdonly_cast` types (`typed_read`; an
/// fd table's slot as a `struct fd`).
///
/// The tgid of the current task's real parent.
#[inline(always)]
pub fn parent_tgid() -> u32 {
    let (parent_at, tgid_at) = (offset!(task_real_parent) as usize, offset!(task_tgid) as usize);
    // SAFETY: `bpf_get_current_task_btf` returns the current task, valid while the program runs;
    // its `real_parent` is RCU-protected and the loads are fault-safe (PROBE_MEM).
    unsafe {
        let task = bpf_get_current_task_btf().cast::<u8>();
        let parent = *task.add(parent_at).cast::<*const u8>();
        *parent.add(tgid_at).cast::<u32>()
    }
}

/// The current task's command name, as `bpf_get_current_comm` gives it: by two direct loads where
/// the loader found `task_struct.comm` as the programs read it (the helper costs ~60 ns more on a
/// slow VM), else by the helper.
#[inline(always)]
pub fn current_comm() -> [u8; COMM_LEN] {
    let at = offset!(task_comm);
    if at == u64::from(NO_FIELD) {
        return bpf_get_current_comm().unwrap_or_default();
    }
    // SAFETY: as in `parent_tgid`; `comm` is the task's own, 16 bytes at a multiple of 8 (the
    // loader checked), read as two words.
    let (lo, hi) = unsafe {
        let comm = bpf_get_current_task_btf().cast::<u8>().add(at as usize).cast::<u64>();
        (*comm, *comm.add(1))
    };
    comm_from_words(lo, hi)
}

/// The current task's uid in the initial user namespace, as `bpf_get_current_uid_gid` gives it
/// (a `kuid_t` is that uid): `cred->uid` by two direct loads where the loader found them (the
/// helper costs ~30 ns more on a slow VM), else by the helper.
#[inline(always)]
pub fn current_uid() -> u32 {
    let (cred_at, uid_at) = (offset!(task_cred), offset!(cred_uid));
    if cred_at == u64::from(NO_FIELD) {
        return bpf_get_current_uid_gid() as u32;
    }
    // SAFETY: as in `parent_tgid`; `cred` is the task's own (RCU-protected: a non-sleepable
    // program runs inside an RCU read-side section).
    unsafe {
        let task = bpf_get_current_task_btf().cast::<u8>();
        let cred = *task.add(cred_at as usize).cast::<*const u8>();
        *cred.add(uid_at as usize).cast::<u32>()
    }
}

/// The id of the current task's cgroup v2, as `bpf_get_current_cgroup_id` gives it
/// (`task->cgroups->dfl_cgrp->kn->id`): by direct loads where the loader found those members (the
/// helper costs ~30 ns more on a slow VM), else by the helper.
#[inline(always)]
pub fn current_cgroup_id() -> u64 {
    let cgroups_at = offset!(task_cgroups);
    if cgroups_at == u64::from(NO_FIELD) {
        // SAFETY: a helper with no arguments.
        return unsafe { generated::bpf_get_current_cgroup_id() };
    }
    let (dfl_at, kn_at, id_at) = (offset!(css_set_dfl_cgrp), offset!(cgroup_kn), offset!(kernfs_node_id));
    // SAFETY: as in `current_uid`: the task's own css_set, its default hierarchy's cgroup and
    // that cgroup's kernfs node, RCU-protected, by fault-safe loads.
    unsafe {
        let task = bpf_get_current_task_btf().cast::<u8>();
        let cgroups = *task.add(cgroups_at as usize).cast::<*const u8>();
        let cgroup = *cgroups.add(dfl_at as usize).cast::<*const u8>();
        let kn = *cgroup.add(kn_at as usize).cast::<*const u8>();
        *kn.add(id_at as usize).cast::<u64>()
    }
}

/// The current process's `struct pid` (of its thread group) and the tgid it has in its own,
/// innermost PID namespace (`global` when that is the initial one: no read needed).
#[inline(always)]
pub fn own_ns_tgid(global: u32) -> u32 {
    let (signal_at, tgid_pid_at, level_at) =
        (offset!(task_signal) as usize, offset!(signal_tgid_pid) as usize, offset!(pid_level) as usize);
    // SAFETY: as in `parent_tgid`; `signal` and its pids are the task's own.
    let (pid, level) = unsafe {
        let task = bpf_get_current_task_btf().cast::<u8>();
        let signal = *task.add(signal_at).cast::<*const u8>();
        let pid = *signal.add(tgid_pid_at).cast::<*const u8>();
        (pid as u64, *pid.add(level_at).cast::<u32>())
    };
    if level == 0 {
        return global;
    }
    let at = pid + offset!(pid_numbers) + u64::from(level) * offset!(upid_size) + offset!(upid_nr);
    read::<u32>(at).unwrap_or(0)
}

/// The number the `struct pid` at `pid` has in the PID namespace whose inode is `ino`; 0 when
/// that namespace cannot see it (as `getppid()` is 0 for a container's first process).
#[inline(always)]
pub fn pid_in_ns(pid: u64, ino: u64) -> u32 {
    let Ok(level) = read::<u32>(pid + offset!(pid_level)) else { return 0 };
    let mut found = 0;
    for i in 0..opentrace_common::abi::kernel::PIDNS_DEPTH {
        if i > level {
            break;
        }
        let upid = pid + offset!(pid_numbers) + u64::from(i) * offset!(upid_size);
        let (Ok(nr), Ok(ns)) = (read::<u32>(upid + offset!(upid_nr)), read::<u64>(upid + offset!(upid_ns)))
        else {
            break;
        };
        if read::<u32>(ns + offset!(pidns_inum)).is_ok_and(|inum| u64::from(inum) == ino) {
            found = nr;
            break;
        }
    }
    found
}

/// The address of the `struct pid` of the current task's real parent's thread group.
#[inline(always)]
pub fn parent_tgid_pid() -> u64 {
    let (parent_at, signal_at, tgid_pid_at) = (
        offset!(task_real_parent) as usize,
        offset!(task_signal) as usize,
        offset!(signal_tgid_pid) as usize,
    );
    // SAFETY: as in `parent_tgid`.
    unsafe {
        let task = bpf_get_current_task_btf().cast::<u8>();
        let parent = *task.add(parent_at).cast::<*const u8>();
        let signal = *parent.add(signal_at).cast::<*const u8>();
        *signal.add(tgid_pid_at).cast::<u64>()
    }
}

/// Whether the current task's process is dying: every thread has started to exit (the last
/// thread's `sched_process_exit` sees `signal->live` at 0).
#[inline(always)]
pub fn process_dying() -> bool {
    let (signal_at, live_at) = (offset!(task_signal) as usize, offset!(signal_live) as usize);
    // SAFETY: as in `parent_tgid`; `signal` is the task's own.
    unsafe {
        let task = bpf_get_current_task_btf().cast::<u8>();
        let signal = *task.add(signal_at).cast::<*const u8>();
        *signal.add(live_at).cast::<i32>() == 0
    }
}

/// The current task's root or working directory (`fs->root` or `fs->pwd`) as (vfsmount, dentry).
#[inline(always)]
pub fn fs_path(cwd: bool) -> (u64, u64) {
    let which = if cwd { offset!(fs_pwd) } else { offset!(fs_root) } as usize;
    let (fs_at, mnt_at, dentry_at) =
        (offset!(task_fs) as usize, offset!(path_mnt) as usize, offset!(path_dentry) as usize);
    // SAFETY: as in `parent_tgid`; `fs` is the task's own.
    unsafe {
        let task = bpf_get_current_task_btf().cast::<u8>();
        let fs = *task.add(fs_at).cast::<*const u8>();
        (*fs.add(which + mnt_at).cast::<u64>(), *fs.add(which + dentry_at).cast::<u64>())
    }
}

/// The current task's fd table: (number of slots, address of the array of `struct file *`).
#[inline(always)]
pub fn fd_table() -> (u32, u64) {
    let (files_at, fdt_at) = (offset!(task_files) as usize, offset!(files_fdt) as usize);
    let (max_at, fd_at) = (offset!(fdt_max_fds) as usize, offset!(fdt_fd) as usize);
    // SAFETY: as in `parent_tgid`; the table is the task's own.
    unsafe {
        let task = bpf_get_current_task_btf().cast::<u8>();
        let files = *task.add(files_at).cast::<*const u8>();
        let fdt = *files.add(fdt_at).cast::<*const u8>();
        (*fdt.add(max_at).cast::<u32>(), *fdt.add(fd_at).cast::<u64>())
    }
}

/// `value`, as a number the compiler knows nothing about: a bound checked on the result stays
/// in the code, where the verifier sees it (the compiler would otherwise check one copy and use
/// another).
#[inline(always)]
pub fn opaque(value: u32) -> u32 {
    let mut cell = value;
    // SAFETY: a local variable, written and read back.
    unsafe {
        core::ptr::write_volatile(&mut cell, value);
        core::ptr::read_volatile(&cell)
    }
}

/// The kernel's `EFAULT`.
pub const EFAULT: i32 = 14;

/// The `T` `at` bytes into the kernel struct at `base`, whose BTF type id is `btf_id` (one of
/// `KERNEL.btf_*`): a direct load through a pointer typed by `bpf_rdonly_cast` where the loader
/// found the kfunc (a few ns), else (`btf_id` 0) a probe read (~10 ns on a fast machine, 30-50
/// on a slow VM). A direct load that faults gives 0. `T` must be the member's own size: the
/// verifier checks a direct load against the member it falls in.
#[inline(always)]
pub fn typed_read<T: Copy>(base: u64, btf_id: u32, at: u64) -> Result<T, i32> {
    if btf_id == 0 {
        return read(base + at);
    }
    let typed = rdonly_cast(base, btf_id);
    // SAFETY: a load through a pointer the verifier knows as the kernel's type `btf_id`
    // (untrusted: it makes the load fault-safe), at a member's offset (the loader read it from
    // BTF).
    Ok(unsafe { typed.add(at as usize).cast::<T>().read() })
}

/// Several members of one kernel struct, read as `typed_read` does, its pointer typed once.
pub struct Typed {
    base: u64,
    btf_id: u32,
    typed: *const u8,
}

impl Typed {
    /// The struct at `base`, whose BTF type id is `btf_id` (0: probe reads).
    #[inline(always)]
    pub fn new(base: u64, btf_id: u32) -> Typed {
        let typed = if btf_id == 0 { core::ptr::null() } else { rdonly_cast(base, btf_id) };
        Typed { base, btf_id, typed }
    }

    /// The `T` `at` bytes in (see `typed_read`).
    #[inline(always)]
    pub fn read<T: Copy>(&self, at: u64) -> Result<T, i32> {
        if self.btf_id == 0 {
            return read(self.base + at);
        }
        // SAFETY: as in `typed_read`: a load through a pointer the verifier types.
        Ok(unsafe { self.typed.add(at as usize).cast::<T>().read() })
    }
}

/// The member `at` bytes into the window of the `struct dentry` at `dentry` that the path walk
/// reads (`KERNEL.dentry_window`), `T` its size (see `typed_read`).
#[inline(always)]
pub fn dentry_member<T: Copy>(dentry: u64, at: u64) -> Result<T, i32> {
    typed_read(dentry, offset!(btf_dentry) as u32, offset!(dentry_window) + at)
}

/// Reads the `MOUNT_WINDOW` bytes of the `struct mount` at `mount` that the walks use (its
/// parent, the dentry it is mounted on and its root dentry) into `window`: by direct loads of
/// those three pointers where the kfunc is used, else in one probe read. False if they cannot
/// be read (a mount always has a root dentry: 0 is a direct load that faulted).
#[inline(always)]
pub fn mount_window(window: &mut [u64; MOUNT_WINDOW as usize / 8], mount: u64) -> bool {
    if offset!(btf_mount) == 0 {
        return read_into(window, mount + offset!(mount_window));
    }
    for at in [offset!(mount_parent), offset!(mount_mountpoint), offset!(mount_root)] {
        // Each is a pointer inside the window (the loader checked), so a word of it: pointers
        // are 8-aligned in `struct mount` (not packed), and the window starts at a multiple of 8.
        let (Ok(pointer), Some(slot)) =
            (mount_member::<u64>(mount, offset!(mount_window) + at), window.get_mut((at / 8) as usize))
        else {
            return false;
        };
        *slot = pointer;
    }
    word(window, offset!(mount_root)) != 0
}

/// The `T` `at` bytes into the `struct mount` at `mount` (see `typed_read`).
#[inline(always)]
pub fn mount_member<T: Copy>(mount: u64, at: u64) -> Result<T, i32> {
    typed_read(mount, offset!(btf_mount) as u32, at)
}

/// The 8 bytes at `at`, at any alignment, in one load (the compiler would split an unaligned
/// one into 8: BPF has no unaligned access of its own, but the verifier allows it in map memory
/// on the CPUs that have it, as x86-64 and arm64 do).
///
/// # Safety
/// `at` must be 8 readable bytes of map memory (the verifier checks the bounds).
#[inline(always)]
pub unsafe fn load_unaligned(at: *const u8) -> u64 {
    let value: u64;
    // SAFETY: the caller's: 8 readable bytes.
    unsafe {
        core::arch::asm!(
            "{value} = *(u64 *)({at} + 0)",
            at = in(reg) at,
            value = lateout(reg) value,
            options(nostack, readonly, preserves_flags),
        );
    }
    value
}

/// Stores `value` at `at`, at any alignment, in one store (see `load_unaligned`).
///
/// # Safety
/// `at` must be 8 writable bytes of map memory (the verifier checks the bounds).
#[inline(always)]
pub unsafe fn store_unaligned(at: *mut u8, value: u64) {
    // SAFETY: the caller's: 8 writable bytes.
    unsafe {
        core::arch::asm!(
            "*(u64 *)({at} + 0) = {value}",
            at = in(reg) at,
            value = in(reg) value,
            options(nostack, preserves_flags),
        );
    }
}

/// The 8 bytes of kernel memory at `at`, by a direct load through a pointer `bpf_rdonly_cast`
/// types as `KERNEL.btf_word` (which must be set): a struct whose first 8 bytes are an integer.
/// A load that faults gives 0.
#[inline(always)]
pub fn kernel_word(at: u64) -> u64 {
    let typed = rdonly_cast(at, offset!(btf_word) as u32);
    // SAFETY: a load through a pointer the verifier types (untrusted: fault-safe), at the offset
    // of the type's first member, its size.
    unsafe { typed.cast::<u64>().read() }
}

/// `bpf_rdonly_cast(ptr, btf_id)`: `ptr` typed for the verifier as the kernel's type `btf_id`
/// (read-only, untrusted: its loads are made fault-safe), so that loads through it, and through
/// the pointers loaded from it, are direct. The verifier turns the call into a move. Written as
/// the call instruction itself (aya 0.14 cannot link a kfunc): `src_reg` 2
/// (`BPF_PSEUDO_KFUNC_CALL`) and a placeholder function id that the loader replaces with the
/// kernel's, or the call with a move where the kfunc is not used (see `typed_read`).
#[inline(always)]
fn rdonly_cast(ptr: u64, btf_id: u32) -> *const u8 {
    let cast: u64;
    // SAFETY: the kfunc reads no memory; it takes r1 and r2 and returns in r0, clobbering r1-r5
    // as any call does.
    unsafe {
        core::arch::asm!(
            ".byte 0x85, 0x20, 0x00, 0x00, 0x11, 0xf0, 0xca, 0x7f",
            inout("r1") ptr => _,
            inout("r2") u64::from(btf_id) => _,
            lateout("r0") cast,
            lateout("r3") _,
            lateout("r4") _,
            lateout("r5") _,
        );
    }
    cast as *const u8
}

/// The first two arguments of the current task's syscall, from its saved user registers: the
/// syscall reads its arguments from them and leaves them as they were, so at its exit they are
/// still what it was called with.
#[inline(always)]
pub fn syscall_args() -> (u64, u64) {
    let (arg0_at, arg1_at) = (offset!(regs_arg0) as usize, offset!(regs_arg1) as usize);
    // SAFETY: `bpf_task_pt_regs` returns the task's `struct pt_regs`, typed for the verifier,
    // which makes the loads fault-safe; the task is the current one, valid while the program runs.
    unsafe {
        let regs = generated::bpf_task_pt_regs(bpf_get_current_task_btf().cast()) as *const u8;
        (*regs.add(arg0_at).cast::<u64>(), *regs.add(arg1_at).cast::<u64>())
    }
}

/// The 8 bytes at offset `at` of a window read in one go, from there to the end of their word
/// (the loader checked that every offset is inside its window).
#[inline(always)]
pub fn word<const N: usize>(window: &[u64; N], at: u64) -> u64 {
    match window.get((at / 8) as usize) {
        Some(word) => word >> (8 * (at % 8)),
        None => 0,
    }
}
