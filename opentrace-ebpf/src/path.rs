//! Full paths: the walk from a dentry up to the task's root directory, the way the kernel's
//! `d_path` does it (dentry by dentry, crossing mount points), written backwards into a per-CPU
//! buffer. `bpf_d_path` would do this, but it is allowed only in fentry/LSM programs, which this
//! kernel refuses; so the programs read `struct dentry` and `struct mount` themselves.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_loop, bpf_probe_read_kernel},
    macros::map,
    maps::PerCpuArray,
};
use opentrace_common::{
    AT_FDCWD, PATH_MAX,
    abi::{
        kernel::{DENTRY_WINDOW, MOUNT_WINDOW},
        open::full,
    },
};

use crate::{
    file::{self, NoFile},
    kernel::{self, dentry_member, offset, read_into, word},
};

/// Room for the longest path, and for a name copy that starts near the end (up to NAME_MAX
/// bytes past a masked offset, as far as the verifier can tell).
const BUF: usize = PATH_MAX + 256;
const MASK: u32 = PATH_MAX as u32 - 1;
/// Longest name of one component (`NAME_MAX`).
const NAME_MAX: u32 = 255;
/// Most steps of one walk: a component takes at least two bytes ("/a"), and mount points add
/// a step each.
pub const MAX_STEPS: u32 = PATH_MAX as u32 / 2 + 64;

/// Where each CPU writes the path it walks; the result ends at `PATH_MAX`.
#[map]
static WALK: PerCpuArray<[u8; BUF]> = PerCpuArray::with_max_entries(1, 0);

/// A walk in progress, stepped by `bpf_loop`; in a per-CPU map rather than on the stack, which
/// the exit program has used up (the 512 bytes are shared with the callbacks' frames).
#[repr(C)]
struct Walk {
    dentry: u64,
    /// The `struct mount` that `dentry` is on, and that mount's window (its parent mount, the
    /// dentry it is mounted on and its root dentry).
    mount: u64,
    mount_window: [u64; MOUNT_WINDOW as usize / 8],
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
    /// The current dentry's d_seq, d_hash.pprev, d_parent and d_name, read in one go where they
    /// are probe reads (kept here, off the callback's small stack).
    window: [u64; DENTRY_WINDOW as usize / 8],
}

/// What `bpf_loop` is told after a step.
const CONTINUE: i64 = 0;
const STOP: i64 = 1;

/// Each CPU's walk.
#[map]
static WALKER: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

/// One step up: a mount point crossed, or one component written.
extern "C" fn step(index: u64, _: *mut c_void) -> i64 {
    let Some(walk) = WALKER.get_ptr_mut(0) else { return STOP };
    // SAFETY: this CPU's walk, set up by `walk` below, which is waiting in `bpf_loop`.
    let walk = unsafe { &mut *walk };
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
    if walk.dentry == word(&walk.mount_window, offset!(mount_root)) {
        let parent = word(&walk.mount_window, offset!(mount_parent));
        if parent == walk.mount {
            // The root of the mount namespace, short of the task's root: the task's root is
            // elsewhere (a file outside its chroot); /proc/PID/fd shows such a path from here.
            walk.code = full::FILE;
            return Ok(false);
        }
        walk.dentry = word(&walk.mount_window, offset!(mount_mountpoint));
        walk.mount = parent;
        if !kernel::mount_window(&mut walk.mount_window, parent) {
            return Err(full::FAULT);
        }
        return Ok(true);
    }

    let Level { seq, parent, len, name } = level(walk, first)?;
    if seq & 1 != 0 {
        return Err(full::RENAMED);
    }
    if parent == walk.dentry {
        return Err(full::DISCONNECTED);
    }
    if len > NAME_MAX {
        return Err(full::FAULT);
    }
    // "/" and the name, leaving at least one byte: a full path has at most PATH_MAX - 1 bytes.
    if len + 1 >= walk.start {
        return Err(full::TOO_LONG);
    }
    let Some(buf) = WALK.get_ptr_mut(0) else { return Err(full::FAULT) };
    let at = walk.start - len;
    // SAFETY: this CPU's buffer, used by this walk only; the masked offset and size keep the
    // write inside it (offset <= MASK, size <= NAME_MAX, BUF = MASK + 1 + 256).
    unsafe {
        let to = buf.cast::<u8>().add((at & MASK) as usize);
        if bpf_probe_read_kernel(to.cast(), kernel::opaque(len) & NAME_MAX, name as *const c_void) != 0 {
            return Err(full::FAULT);
        }
        *buf.cast::<u8>().add(((at - 1) & MASK) as usize) = b'/';
    }
    walk.start = at - 1;
    // A rename of this dentry while we read it shows as a changed sequence.
    let again: u32 = dentry_member(walk.dentry, offset!(dentry_seq)).map_err(fault)?;
    if again != seq {
        return Err(full::RENAMED);
    }
    walk.dentry = parent;
    Ok(true)
}

/// What a step reads of the current dentry.
struct Level {
    /// `d_seq`: odd while the dentry is being renamed.
    seq: u32,
    /// `d_parent`: the dentry itself at the root of a file system (or a disconnected one).
    parent: u64,
    /// `d_name`: its length and bytes.
    len: u32,
    name: u64,
}

/// Reads `d_seq`, `d_parent` and `d_name` of the walk's dentry, and on the first step
/// `d_hash.pprev` (0 once the dentry is unlinked) into `walk.unlinked`: by direct loads where the
/// loader found `bpf_rdonly_cast` (a few ns each), else in one probe read of the window they are
/// in (the verifier prunes the branch not taken: `KERNEL.btf_dentry` is a constant).
#[inline(always)]
fn level(walk: &mut Walk, first: bool) -> Result<Level, u8> {
    let dentry = walk.dentry;
    if offset!(btf_dentry) != 0 {
        let fault = |_| full::FAULT;
        if first {
            let pprev: u64 = dentry_member(dentry, offset!(dentry_hash_pprev)).map_err(fault)?;
            walk.unlinked = u8::from(pprev == 0);
        }
        let level = Level {
            seq: dentry_member(dentry, offset!(dentry_seq)).map_err(fault)?,
            parent: dentry_member(dentry, offset!(dentry_parent)).map_err(fault)?,
            len: dentry_member(dentry, offset!(dentry_name_len)).map_err(fault)?,
            name: dentry_member(dentry, offset!(dentry_name)).map_err(fault)?,
        };
        // A direct load that faults gives 0: no dentry has no parent (and then the loads before
        // faulted too).
        if level.parent == 0 {
            return Err(full::FAULT);
        }
        return Ok(level);
    }
    // d_seq, d_hash.pprev, d_parent and d_name in one read, as 8-byte words.
    if !read_into(&mut walk.window, dentry + offset!(dentry_window)) {
        return Err(full::FAULT);
    }
    if first {
        walk.unlinked = u8::from(word(&walk.window, offset!(dentry_hash_pprev)) == 0);
    }
    Ok(Level {
        seq: word(&walk.window, offset!(dentry_seq)) as u32,
        parent: word(&walk.window, offset!(dentry_parent)),
        len: word(&walk.window, offset!(dentry_name_len)) as u32,
        name: word(&walk.window, offset!(dentry_name)),
    })
}

/// The result of a walk: the path is `WALK[start..PATH_MAX]`.
pub struct Walked {
    pub start: u32,
    pub unlinked: bool,
}

/// Walks from `(vfsmount, dentry)` up to the current task's root. `Err` is an unresolved code.
#[inline(always)]
fn walk((vfsmount, dentry): (u64, u64)) -> Result<Walked, u8> {
    let (root_mnt, root_dentry) = kernel::fs_path(false);
    let mount = vfsmount - offset!(mount_mnt);
    let state = WALKER.get_ptr_mut(0).ok_or(full::FAULT)?;
    // SAFETY: this CPU's walk; a program is not re-entered on its CPU.
    let walk = unsafe { &mut *state };
    (walk.dentry, walk.mount, walk.root_dentry, walk.root_mnt) = (dentry, mount, root_dentry, root_mnt);
    (walk.start, walk.code, walk.unlinked) = (PATH_MAX as u32, 0, 0);
    if !kernel::mount_window(&mut walk.mount_window, mount) {
        return Err(full::FAULT);
    }
    // SAFETY: `step` is a callback of the signature bpf_loop expects; it finds the walk itself.
    unsafe { bpf_loop(MAX_STEPS, step as *mut c_void, core::ptr::null_mut(), 0) };
    // Read anew, through the map's pointer: `step` wrote the walk behind the compiler's back.
    // SAFETY: this CPU's walk, as above.
    let (code, mut start, unlinked) = unsafe {
        (
            (&raw const (*state).code).read_volatile(),
            (&raw const (*state).start).read_volatile(),
            (&raw const (*state).unlinked).read_volatile(),
        )
    };
    match code {
        full::FILE => {}
        0 => return Err(full::TOO_DEEP),
        code => return Err(code),
    }
    if start == PATH_MAX as u32 {
        // The root itself.
        let Some(buf) = WALK.get_ptr_mut(0) else { return Err(full::FAULT) };
        // SAFETY: this CPU's buffer, in bounds.
        unsafe { *buf.cast::<u8>().add(PATH_MAX - 1) = b'/' };
        start -= 1;
    }
    Ok(Walked { start, unlinked: unlinked != 0 })
}

/// The `struct path` of the file behind `fd` in the current task, as (vfsmount, dentry).
#[inline(always)]
pub fn file_path(fd: i64) -> Result<(u64, u64), u8> {
    let fault = |_| full::FAULT;
    let file = file::lookup(fd).map_err(|why| match why {
        NoFile::Missing => full::NO_FILE,
        NoFile::Fault => full::FAULT,
    })?;
    file::path_of(file).map_err(fault)
}

/// What the full path of an open is: `(code, start)`, with the walked path (if any) in `WALK`
/// from `start` to `PATH_MAX`. For a successful open, the opened file's path; for a failed one,
/// nothing more than the path as passed if it is absolute, else the directory the lookup
/// started from (the caller's cwd, or `dfd`'s). `opened`: the opened file's `f_path`, where the
/// caller has it already.
#[inline(always)]
fn resolve(ret: i64, absolute: bool, dfd: i32, opened: Option<(u64, u64)>) -> (u8, u32) {
    let walked = if ret >= 0 {
        opened
            .map_or_else(|| file_path(ret), Ok)
            .and_then(walk)
            .map(|w| (if w.unlinked { full::FILE_DELETED } else { full::FILE }, w.start))
    } else if absolute {
        Ok((full::AS_PASSED, PATH_MAX as u32))
    } else {
        let start = if dfd == AT_FDCWD { Ok(kernel::fs_path(true)) } else { file_path(i64::from(dfd)) };
        start
            .and_then(walk)
            .and_then(|w| if w.unlinked { Err(full::START_DELETED) } else { Ok((full::START_DIR, w.start)) })
    };
    walked.unwrap_or_else(|code| (code, PATH_MAX as u32))
}

/// Resolves the full path of an open (see `resolve`) into `to`, which has room for PATH_MAX - 1
/// bytes: the code and how many bytes were written.
#[inline(always)]
pub fn resolve_into(
    to: *mut u8,
    ret: i64,
    absolute: bool,
    dfd: i32,
    opened: Option<(u64, u64)>,
) -> (u8, u32) {
    let (code, start) = resolve(ret, absolute, dfd, opened);
    let len = if code < full::FIRST_UNRESOLVED && start < PATH_MAX as u32 { copy_to(to, start) } else { 0 };
    (code, len)
}

/// Copies the walked path (`WALK[start..PATH_MAX]`) to `to`; returns its length.
#[inline(always)]
fn copy_to(to: *mut u8, start: u32) -> u32 {
    let len = PATH_MAX as u32 - start;
    let Some(buf) = WALK.get_ptr(0) else { return 0 };
    // SAFETY: the caller's `to` has room for PATH_MAX - 1 bytes; the source is this CPU's buffer.
    let copied = unsafe {
        bpf_probe_read_kernel(to.cast(), len & MASK, buf.cast::<u8>().add((start & MASK) as usize).cast())
    };
    if copied == 0 { len & MASK } else { 0 }
}
