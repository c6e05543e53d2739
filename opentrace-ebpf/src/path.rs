//! Full paths: the walk from a dentry up to the task's root directory, the way the kernel's
//! `d_path` does it (dentry by dentry, crossing mount points), written backwards into a per-CPU
//! buffer. `bpf_d_path` would do this, but it is allowed only in fentry/LSM programs, which this
//! kernel refuses; so the programs read `struct dentry` and `struct mount` themselves.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_task,
        generated::{bpf_loop, bpf_probe_read_kernel},
    },
    macros::map,
    maps::PerCpuArray,
};
use opentrace_common::{AT_FDCWD, DENTRY_WINDOW, PATH_MAX, full};

use crate::kernel::{offset, read, read_into};

/// Room for the longest path, and for a name copy that starts near the end (up to NAME_MAX
/// bytes past a masked offset, as far as the verifier can tell).
const BUF: usize = PATH_MAX + 256;
const MASK: u32 = PATH_MAX as u32 - 1;
/// Longest name of one component (`NAME_MAX`).
const NAME_MAX: u32 = 255;
/// Most steps of one walk: a component takes at least two bytes ("/a"), and mount points add
/// a step each.
const MAX_STEPS: u32 = PATH_MAX as u32 / 2 + 64;

/// Where each CPU writes the path it walks; the result ends at `PATH_MAX`.
#[map]
static WALK: PerCpuArray<[u8; BUF]> = PerCpuArray::with_max_entries(1, 0);

/// A walk in progress, kept on the program's stack and stepped by `bpf_loop`.
#[repr(C)]
struct Walk {
    dentry: u64,
    /// The `struct mount` that `dentry` is on, and that mount's root dentry.
    mount: u64,
    mount_root: u64,
    /// The task's root directory: its dentry and `struct vfsmount`.
    root_dentry: u64,
    root_mnt: u64,
    /// Where the path written so far starts in `WALK` (it ends at `PATH_MAX`).
    start: u32,
    /// 0 while walking, then `full::FILE` (reached the root) or an unresolved code.
    code: u8,
    /// Whether the first dentry is no longer linked (`d_unlinked`).
    unlinked: u8,
    _pad: [u8; 2],
    /// The current dentry's d_seq, d_hash.pprev, d_parent and d_name, read in one go (kept here,
    /// off the callback's small stack).
    window: [u64; DENTRY_WINDOW as usize / 8],
}

/// What `bpf_loop` is told after a step.
const CONTINUE: i64 = 0;
const STOP: i64 = 1;

/// One step up: a mount point crossed, or one component written.
extern "C" fn step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Walk` on the stack of `walk` below, which is waiting in `bpf_loop`.
    let walk = unsafe { &mut *ctx.cast::<Walk>() };
    match step_once(walk, index == 0) {
        Ok(true) => CONTINUE,
        Ok(false) => STOP,
        Err(code) => {
            walk.code = code;
            STOP
        }
    }
}

/// Returns whether to go on; `Err` is why the walk failed.
#[inline(always)]
fn step_once(walk: &mut Walk, first: bool) -> Result<bool, u8> {
    let fault = |_| full::FAULT;
    if walk.dentry == walk.root_dentry && walk.mount + offset!(mount_mnt) == walk.root_mnt {
        walk.code = full::FILE;
        return Ok(false);
    }
    if walk.dentry == walk.mount_root {
        let parent: u64 = read(walk.mount + offset!(mount_parent)).map_err(fault)?;
        if parent == walk.mount {
            // The root of the mount namespace, short of the task's root: the task's root is
            // elsewhere (a file outside its chroot); /proc/PID/fd shows such a path from here.
            walk.code = full::FILE;
            return Ok(false);
        }
        walk.dentry = read(walk.mount + offset!(mount_mountpoint)).map_err(fault)?;
        walk.mount = parent;
        walk.mount_root = read(parent + offset!(mount_mnt) + offset!(vfsmount_root)).map_err(fault)?;
        return Ok(true);
    }

    // d_seq, d_hash.pprev, d_parent and d_name in one read, as 8-byte words.
    if !read_into(&mut walk.window, walk.dentry + offset!(dentry_window)) {
        return Err(full::FAULT);
    }
    let seq = word(&walk.window, offset!(dentry_seq)) as u32;
    let parent = word(&walk.window, offset!(dentry_parent));
    let len = word(&walk.window, offset!(dentry_name_len)) as u32;
    let name = word(&walk.window, offset!(dentry_name));
    if seq & 1 != 0 {
        return Err(full::RENAMED);
    }
    if parent == walk.dentry {
        return Err(full::DISCONNECTED);
    }
    if first {
        walk.unlinked = u8::from(word(&walk.window, offset!(dentry_hash_pprev)) == 0);
    }
    if len > NAME_MAX {
        return Err(full::FAULT);
    }
    if len + 1 > walk.start {
        return Err(full::TOO_LONG);
    }
    let Some(buf) = WALK.get_ptr_mut(0) else { return Err(full::FAULT) };
    let at = walk.start - len;
    // SAFETY: this CPU's buffer, used by this walk only; the masked offset and size keep the
    // write inside it (offset <= MASK, size <= NAME_MAX, BUF = MASK + 1 + 256).
    unsafe {
        let to = buf.cast::<u8>().add((at & MASK) as usize);
        if bpf_probe_read_kernel(to.cast(), len & NAME_MAX, name as *const c_void) != 0 {
            return Err(full::FAULT);
        }
        *buf.cast::<u8>().add(((at - 1) & MASK) as usize) = b'/';
    }
    walk.start = at - 1;
    // A rename of this dentry while we read it shows as a changed sequence.
    let again: u32 = read(walk.dentry + offset!(dentry_window) + offset!(dentry_seq)).map_err(fault)?;
    if again != seq {
        return Err(full::RENAMED);
    }
    walk.dentry = parent;
    Ok(true)
}

/// The bytes at offset `at` of the window, from there to the end of their 8-byte word (the
/// loader checked that every offset is inside the window).
#[inline(always)]
fn word(window: &[u64; DENTRY_WINDOW as usize / 8], at: u64) -> u64 {
    match window.get((at / 8) as usize) {
        Some(word) => word >> (8 * (at % 8)),
        None => 0,
    }
}

/// The result of a walk: the path is `WALK[start..PATH_MAX]`.
pub struct Walked {
    pub start: u32,
    pub unlinked: bool,
}

/// Walks from `(dentry, vfsmount)` up to the current task's root. `Err` is an unresolved code.
#[inline(always)]
fn walk(task: u64, path: [u64; 2]) -> Result<Walked, u8> {
    let fault = |_| full::FAULT;
    let (vfsmount, dentry) = (path_word(path, offset!(path_mnt))?, path_word(path, offset!(path_dentry))?);
    let fs: u64 = read(task + offset!(task_fs)).map_err(fault)?;
    let root: [u64; 2] = read(fs + offset!(fs_root)).map_err(fault)?;
    let mut walk = Walk {
        dentry,
        mount: vfsmount - offset!(mount_mnt),
        mount_root: read(vfsmount + offset!(vfsmount_root)).map_err(fault)?,
        root_dentry: path_word(root, offset!(path_dentry))?,
        root_mnt: path_word(root, offset!(path_mnt))?,
        start: PATH_MAX as u32,
        code: 0,
        unlinked: 0,
        _pad: [0; 2],
        window: [0; DENTRY_WINDOW as usize / 8],
    };
    // SAFETY: `step` is a callback of the signature bpf_loop expects; `walk` outlives the call.
    unsafe { bpf_loop(MAX_STEPS, step as *mut c_void, (&raw mut walk).cast(), 0) };
    match walk.code {
        full::FILE => {}
        0 => return Err(full::TOO_DEEP),
        code => return Err(code),
    }
    if walk.start == PATH_MAX as u32 {
        // The root itself.
        let Some(buf) = WALK.get_ptr_mut(0) else { return Err(full::FAULT) };
        // SAFETY: this CPU's buffer, in bounds.
        unsafe { *buf.cast::<u8>().add(PATH_MAX - 1) = b'/' };
        walk.start -= 1;
    }
    Ok(Walked { start: walk.start, unlinked: walk.unlinked != 0 })
}

fn path_word(path: [u64; 2], at: u64) -> Result<u64, u8> {
    path.get((at / 8) as usize).copied().ok_or(full::FAULT)
}

/// The `struct path` of the file behind `fd` in the current task.
#[inline(always)]
fn file_path(task: u64, fd: i64) -> Result<[u64; 2], u8> {
    let fault = |_| full::FAULT;
    let files: u64 = read(task + offset!(task_files)).map_err(fault)?;
    let fdt: u64 = read(files + offset!(files_fdt)).map_err(fault)?;
    let max_fds: u32 = read(fdt + offset!(fdt_max_fds)).map_err(fault)?;
    if fd < 0 || fd >= i64::from(max_fds) {
        return Err(full::NO_FILE);
    }
    let array: u64 = read(fdt + offset!(fdt_fd)).map_err(fault)?;
    let file: u64 = read(array + 8 * fd as u64).map_err(fault)?;
    if file == 0 {
        return Err(full::NO_FILE);
    }
    read(file + offset!(file_path)).map_err(fault)
}

/// What the full path of an open is: `(code, start)`, with the walked path (if any) in `WALK`
/// from `start` to `PATH_MAX`. For a successful open, the opened file's path; for a failed one,
/// nothing more than the path as passed if it is absolute, else the directory the lookup
/// started from (the caller's cwd, or `dfd`'s).
#[inline(always)]
pub fn resolve(ret: i64, absolute: bool, dfd: i32) -> (u8, u32) {
    // SAFETY: a helper with no arguments; the task is only read through probe reads.
    let task = unsafe { bpf_get_current_task() };
    let walked = if ret >= 0 {
        file_path(task, ret)
            .and_then(|path| walk(task, path))
            .map(|w| (if w.unlinked { full::FILE_DELETED } else { full::FILE }, w.start))
    } else if absolute {
        Ok((full::AS_PASSED, PATH_MAX as u32))
    } else {
        let start = if dfd == AT_FDCWD {
            read::<u64>(task + offset!(task_fs))
                .and_then(|fs| read::<[u64; 2]>(fs + offset!(fs_pwd)))
                .map_err(|_| full::FAULT)
        } else {
            file_path(task, i64::from(dfd))
        };
        start
            .and_then(|path| walk(task, path))
            .and_then(|w| if w.unlinked { Err(full::START_DELETED) } else { Ok((full::START_DIR, w.start)) })
    };
    walked.unwrap_or_else(|code| (code, PATH_MAX as u32))
}

/// Copies the walked path (`WALK[start..PATH_MAX]`) to `to`; returns its length.
#[inline(always)]
pub fn copy_to(to: *mut u8, start: u32) -> u32 {
    let len = PATH_MAX as u32 - start;
    let Some(buf) = WALK.get_ptr(0) else { return 0 };
    // SAFETY: the caller's `to` has room for PATH_MAX - 1 bytes; the source is this CPU's buffer.
    let copied = unsafe {
        bpf_probe_read_kernel(to.cast(), len & MASK, buf.cast::<u8>().add((start & MASK) as usize).cast())
    };
    if copied == 0 { len & MASK } else { 0 }
}
