//! Full paths: the walk from a dentry up to the task's root directory, the way the kernel's
//! `d_path` does it (dentry by dentry, crossing mount points), written backwards into a per-CPU
//! buffer. `bpf_d_path` would do this, but it is allowed only in fentry/LSM programs, which this
//! kernel refuses; so the programs read `struct dentry` and `struct mount` themselves.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_loop, bpf_probe_read_kernel},
    macros::map,
    maps::{Array, PerCpuArray},
};
use opentrace_common::{
    AT_FDCWD, PATH_MAX,
    abi::{
        kernel::{DENTRY_WINDOW, MOUNT_WINDOW},
        open::full,
        paths::{CHAIN_MAX, LINK_DENTRY, LINK_MOUNT, Link, MAX_ENTRIES, PREFIX_MAX, Prefix},
    },
};

use crate::{
    file::{self, NoFile},
    kernel::{self, Typed, dentry_member, offset, read_into, word},
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
    /// 0 while walking, then `full::FILE` (reached the root, or took a kept path) or an
    /// unresolved code.
    code: u8,
    /// Whether the first dentry is no longer linked (`d_unlinked`).
    unlinked: u8,
    _pad: [u8; 2],
    /// The current dentry's d_seq, d_hash.pprev, d_parent and d_name, read in one go where they
    /// are probe reads (kept here, off the callback's small stack).
    window: [u64; DENTRY_WINDOW as usize / 8],
    /// `TO_DIR`: the learned directory the file is under, as (dentry, vfsmount), where its path
    /// was kept (`PREFIXES`) from the same root (whether it still holds is checked once the walk
    /// stops there: `walk`); 0 if none.
    stop_dentry: u64,
    stop_mnt: u64,
    /// `RECORD`: the links walked through, for `Prefix::chain` (how many, even past CHAIN_MAX).
    links: u32,
    _pad2: u32,
    chain: [Link; CHAIN_MAX],
}

/// `Walk::code` of a `TO_DIR` walk that met its directory.
const AT_DIR: u8 = 0xff;

/// How a walk's steps are taken (`step`'s MODE): up to the root; up to the root or to a learned
/// directory whose path was kept (a path filter's matching open: `stop_dentry`); or recording
/// its links (a learned directory's own walk).
pub const TO_ROOT: u8 = 0;
pub const TO_DIR: u8 = 1;
const RECORD: u8 = 2;

/// What `bpf_loop` is told after a step.
const CONTINUE: i64 = 0;
const STOP: i64 = 1;

/// Each CPU's walk.
#[map]
static WALKER: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

/// One step up: a mount point crossed, or one component written (see the MODE constants).
extern "C" fn step<const MODE: u8>(index: u64, _: *mut c_void) -> i64 {
    let Some(walk) = WALKER.get_ptr_mut(0) else { return STOP };
    // SAFETY: this CPU's walk, set up by `walk` below, which is waiting in `bpf_loop`.
    let walk = unsafe { &mut *walk };
    match step_once::<MODE>(walk, index == 0) {
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
fn step_once<const MODE: u8>(walk: &mut Walk, first: bool) -> Result<bool, u8> {
    let fault = |_| full::FAULT;
    if walk.dentry == walk.root_dentry && walk.mount + offset!(mount_mnt) == walk.root_mnt {
        walk.code = full::FILE;
        return Ok(false);
    }
    // (Not on the first step: an opened directory that is the learned one is walked, which reads
    // whether it is unlinked.)
    if MODE == TO_DIR
        && walk.dentry == walk.stop_dentry
        && walk.mount + offset!(mount_mnt) == walk.stop_mnt
        && !first
    {
        walk.code = AT_DIR;
        return Ok(false);
    }
    if walk.dentry == word(&walk.mount_window, offset!(mount_root)) {
        let parent = word(&walk.mount_window, offset!(mount_parent));
        if MODE == RECORD {
            let (name, root) = (
                word(&walk.mount_window, offset!(mount_mountpoint)),
                word(&walk.mount_window, offset!(mount_root)),
            );
            record(walk, Link { kind: LINK_MOUNT, seq: 0, at: walk.mount, parent, name, root });
        }
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
    // The name's hash, for a recorded link (read before `d_seq` is checked again, as the name).
    let hash: u32 = if MODE == RECORD {
        dentry_member(walk.dentry, offset!(dentry_name_hash)).map_err(fault)?
    } else {
        0
    };
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
    if !copy_name(buf.cast(), at, len, name) {
        return Err(full::FAULT);
    }
    // SAFETY: this CPU's buffer, at a masked offset.
    unsafe { *buf.cast::<u8>().add(((at - 1) & MASK) as usize) = b'/' };
    walk.start = at - 1;
    // A rename of this dentry while we read it shows as a changed sequence.
    let again: u32 = dentry_member(walk.dentry, offset!(dentry_seq)).map_err(fault)?;
    if again != seq {
        return Err(full::RENAMED);
    }
    if MODE == RECORD {
        let name = u64::from(len) << 32 | u64::from(hash);
        record(walk, Link { kind: LINK_DENTRY, seq, at: walk.dentry, parent, name, root: 0 });
    }
    walk.dentry = parent;
    Ok(true)
}

/// Copies the name of `len` bytes at `name` (kernel memory) to `buf[at..at + len]`, this CPU's
/// `WALK`; false if it could not be read. Where names can be loaded directly (`KERNEL.btf_word`),
/// the name has at most `NAME_WORDS` words and `at` leaves 8 bytes before it: 8 bytes at a time,
/// the name's whole words, then its last 8 bytes (for a name under 8 bytes, with some bytes
/// before it, which land before `at`: the '/' and the next name up are written over them). The
/// loads stay inside the name, or go back into what holds it (the dentry, or the header of an
/// external name). A load that faulted gives 0, which no word of a name is, nor its last byte (a
/// name has no NUL). Else one probe read (~25 ns more a name on a slow VM).
#[inline(always)]
fn copy_name(buf: *mut u8, at: u32, len: u32, name: u64) -> bool {
    let (at, len) = (at & MASK, kernel::opaque(len) & NAME_MAX);
    if offset!(btf_word) != 0 && at >= 8 && len <= 8 * NAME_WORDS {
        if len == 0 {
            return true;
        }
        for w in 0..NAME_WORDS {
            let from = 8 * w;
            if from + 8 > len {
                break;
            }
            let word = kernel::kernel_word(name + u64::from(from));
            if word == 0 {
                return false;
            }
            // SAFETY: this CPU's buffer: at + from + 8 <= MASK + NAME_MAX < BUF.
            unsafe { kernel::store_unaligned(buf.add((at + from) as usize), word) };
        }
        let last = kernel::kernel_word((name + u64::from(len)).wrapping_sub(8));
        if last >> 56 == 0 {
            return false;
        }
        // SAFETY: as above, and at >= 8 keeps at + len - 8 inside too.
        unsafe { kernel::store_unaligned(buf.add((at + len - 8) as usize), last) };
        return true;
    }
    // SAFETY: this CPU's buffer, used by this walk only; the masked offset and size keep the
    // write inside it (offset <= MASK, size <= NAME_MAX, BUF = MASK + 1 + 256).
    unsafe { bpf_probe_read_kernel(buf.add(at as usize).cast(), len, name as *const c_void) == 0 }
}

/// The longest name `copy_name` copies by words, in words: most names are shorter; a longer one
/// takes a probe read (each word more is code the verifier goes through in every walk).
const NAME_WORDS: u32 = 8;

/// Adds a link to a recording walk's chain (counted past CHAIN_MAX, not kept).
#[inline(always)]
fn record(walk: &mut Walk, link: Link) {
    if let Some(slot) = walk.chain.get_mut(walk.links as usize) {
        *slot = link;
    }
    walk.links = walk.links.saturating_add(1);
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

/// The path filter's learned directories' own paths, where kept (`Prefix`): element i for
/// `LEARNED`'s directory i, written by `keep_prefix` as it is learned. The loader gives it as
/// many elements as the filter has directories.
#[map]
static PREFIXES: Array<Prefix> = Array::with_max_entries(MAX_ENTRIES as u32, 0);

/// `Opened::under` when no learned directory is known to be above the file.
pub const NO_DIR: u32 = u32::MAX;

/// A successful open's file, as the caller has it already: its `f_path`, and the learned
/// directory it is under (an index of `PREFIXES`), if the path filter found one.
#[derive(Clone, Copy)]
pub struct Opened {
    pub vfsmount: u64,
    pub dentry: u64,
    pub under: u32,
}

/// Sets this CPU's walk up to start at `(vfsmount, dentry)`, from the current task's root.
#[inline(always)]
fn begin((vfsmount, dentry): (u64, u64)) -> Result<*mut Walk, u8> {
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
    Ok(state)
}

/// Steps this CPU's walk (`state`) by `bpf_loop` until it stops; its code, start, and whether its
/// file is unlinked.
#[inline(always)]
fn go<const MODE: u8>(state: *mut Walk) -> (u8, u32, bool) {
    // SAFETY: `step` is a callback of the signature bpf_loop expects; it finds the walk itself.
    unsafe { bpf_loop(MAX_STEPS, step::<MODE> as *mut c_void, core::ptr::null_mut(), 0) };
    // Read anew, through the map's pointer: `step` wrote the walk behind the compiler's back.
    // SAFETY: this CPU's walk (`begin`).
    unsafe {
        (
            (&raw const (*state).code).read_volatile(),
            (&raw const (*state).start).read_volatile(),
            (&raw const (*state).unlinked).read_volatile() != 0,
        )
    }
}

/// Walks from `from` (vfsmount, dentry) up to the current task's root. `TO_DIR`: when the file is
/// under a learned directory (`under`) whose path is kept, from the same root, the walk stops at
/// the directory; if what that path was walked through is still as it was (checked then, after
/// the names below the directory were read, as a walk to the root reads the names above them
/// after those below), the kept path is taken, else the walk goes on from the directory to the
/// root. `Err` is an unresolved code.
#[inline(always)]
fn walk<const MODE: u8>(from: (u64, u64), under: u32) -> Result<Walked, u8> {
    let state = begin(from)?;
    let mut kept = None;
    if MODE == TO_DIR {
        // SAFETY: this CPU's walk (`begin`).
        let walk = unsafe { &mut *state };
        let root = (walk.root_mnt, walk.root_dentry);
        if under != NO_DIR {
            kept = PREFIXES.get(under).filter(|p| p.len != 0 && (p.root_mnt, p.root_dentry) == root);
        }
        (walk.stop_dentry, walk.stop_mnt) = kept.map_or((0, 0), |p| (p.dentry, p.vfsmount));
    }
    let (mut code, mut start, unlinked) = go::<MODE>(state);
    if let (AT_DIR, Some(prefix)) = (code, kept) {
        if chain_holds(prefix) {
            start = prepend(prefix, start)?;
            code = full::FILE;
        } else {
            // Renamed or moved since it was learned: on up from the directory, where the walk
            // stopped (the file's own `unlinked` was read on the first step, and is kept).
            // SAFETY: this CPU's walk (`begin`), which `go` is done with.
            unsafe { (&raw mut (*state).code).write_volatile(0) };
            (code, start, _) = go::<TO_ROOT>(state);
        }
    }
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
    Ok(Walked { start, unlinked })
}

/// Whether every link of `prefix`'s chain is as it was when it was kept: each
/// dentry's `d_seq` (a rename or move of it bumps it, and so does a drop: `d_drop`, as when a
/// network or FUSE file system finds it stale), parent and name; each mount's parent,
/// mountpoint and root (a move of the mount changes the first two). A link is compared by what
/// the walk reads of it, not by its address alone: one freed and made again at the same address
/// (a mount moved away, its old parent unmounted, another mounted and the first moved back), or a
/// `d_seq` come round again after 2^31 renames, holds only where the walk would write the same
/// names. The links are checked in order, from the directory up, and the check stops at the first
/// that does not hold: the directory is held open by the watcher, and each link that holds holds
/// the next one (a dentry its parent; a mount its parent and mountpoint), so every object compared
/// is alive (and the loads cannot fault anyway: probe reads, or fault-safe direct loads). All in
/// line (~300 instructions a link for the verifier, ~5 ns a link at run time, where a step of
/// `bpf_loop` costs ~15).
#[inline(always)]
fn chain_holds(prefix: &Prefix) -> bool {
    for (i, link) in prefix.chain.iter().enumerate() {
        if i as u32 >= prefix.links {
            break;
        }
        if !link_holds(link) {
            return false;
        }
    }
    true
}

/// Whether one link is as it was (see `chain_holds`).
#[inline(always)]
fn link_holds(link: &Link) -> bool {
    if link.kind == LINK_DENTRY {
        let (dentry, at) = (Typed::new(link.at, offset!(btf_dentry) as u32), offset!(dentry_window));
        // (The hash and the length as two words: a direct load of both as `hash_len`, a member of
        // a union, is refused by some kernels' verifiers.)
        dentry.read::<u32>(at + offset!(dentry_seq)) == Ok(link.seq)
            && dentry.read::<u64>(at + offset!(dentry_parent)) == Ok(link.parent)
            && dentry.read::<u32>(at + offset!(dentry_name_hash)) == Ok(link.name as u32)
            && dentry.read::<u32>(at + offset!(dentry_name_len)) == Ok((link.name >> 32) as u32)
    } else {
        let (mount, at) = (Typed::new(link.at, offset!(btf_mount) as u32), offset!(mount_window));
        mount.read::<u64>(at + offset!(mount_parent)) == Ok(link.parent)
            && mount.read::<u64>(at + offset!(mount_mountpoint)) == Ok(link.name)
            && mount.read::<u64>(at + offset!(mount_root)) == Ok(link.root)
    }
}

/// Writes `prefix`'s path in front of the walked path that starts at `start`; the new start. By
/// loads and stores of 8-byte words from one map to the other (a probe read costs more than the
/// words of a path a few components long), the last word ending where the path ends (it may
/// overlap the one before it: the same bytes, written twice).
#[inline(always)]
fn prepend(prefix: &Prefix, start: u32) -> Result<u32, u8> {
    let len = kernel::opaque(prefix.len) & PREFIX_MAX as u32;
    // At least one byte left: a full path has at most PATH_MAX - 1 bytes.
    if len >= start {
        return Err(full::TOO_LONG);
    }
    let at = (start - len) & MASK;
    let buf = WALK.get_ptr_mut(0).ok_or(full::FAULT)?;
    let (to, from) = (buf.cast::<u8>(), prefix.path.as_ptr());
    // SAFETY: this CPU's buffer, written at `at` (<= MASK) up to `len` (<= PREFIX_MAX) bytes on
    // (BUF = MASK + 1 + 256); read from the map's element, whose `path` has PREFIX_MAX + 1 bytes.
    // Unaligned loads and stores of map memory, which the verifier allows where the CPU has them.
    unsafe {
        if len < 8 {
            for i in 0..7 {
                if i >= len {
                    break;
                }
                *to.add((at + i) as usize) = *from.add(i as usize);
            }
        } else {
            let word = |i: u32| {
                kernel::store_unaligned(
                    to.add((at + i) as usize),
                    kernel::load_unaligned(from.add(i as usize)),
                )
            };
            for w in 0..PREFIX_MAX as u32 / 8 {
                if 8 * w + 8 > len {
                    break;
                }
                word(8 * w);
            }
            word(len - 8);
        }
    }
    Ok(at)
}

/// `PATHS_BY_DENTRY`: walks from the learned directory `index`, `(vfsmount, dentry)`, up to the
/// current task's root (the watcher's: `learn_dir` runs in its thread), and keeps the path and
/// what the walk went through in `PREFIXES`: where the path has at most PREFIX_MAX bytes and the
/// walk at most CHAIN_MAX links. Else (or the walk fails) nothing is kept, and the walks of the
/// files under the directory go on up to the root.
#[inline(always)]
pub fn keep_prefix(index: u32, (vfsmount, dentry): (u64, u64)) {
    let Some(prefix) = PREFIXES.get_ptr_mut(index) else { return };
    let Ok(state) = begin((vfsmount, dentry)) else { return };
    // SAFETY: this CPU's walk (`begin`).
    unsafe { (&raw mut (*state).links).write_volatile(0) };
    let (code, start, unlinked) = go::<RECORD>(state);
    let len = PATH_MAX as u32 - start;
    // SAFETY: as above.
    let links = unsafe { (&raw const (*state).links).read_volatile() };
    if code != full::FILE
        || unlinked
        || len == 0
        || len > PREFIX_MAX as u32
        || links == 0
        || links > CHAIN_MAX as u32
    {
        return;
    }
    let Some(buf) = WALK.get_ptr(0) else { return };
    // SAFETY: the map's element, written by the learning thread alone, before the programs that
    // read it are attached; and this CPU's walk, done.
    let (prefix, walked) = unsafe { (&mut *prefix, &*state) };
    // SAFETY: `len` bytes of this CPU's buffer into the element's PREFIX_MAX + 1.
    let copied = unsafe {
        bpf_probe_read_kernel(
            prefix.path.as_mut_ptr().cast(),
            kernel::opaque(len) & PREFIX_MAX as u32,
            buf.cast::<u8>().add((start & MASK) as usize).cast(),
        )
    };
    if copied != 0 {
        return;
    }
    for (i, (to, from)) in prefix.chain.iter_mut().zip(walked.chain.iter()).enumerate() {
        if i as u32 >= links {
            break;
        }
        *to = *from;
    }
    (prefix.root_mnt, prefix.root_dentry) = (walked.root_mnt, walked.root_dentry);
    (prefix.links, prefix.vfsmount, prefix.dentry, prefix.len) = (links, vfsmount, dentry, len);
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
/// started from (the caller's cwd, or `dfd`'s). `opened`: the opened file, where the caller
/// has it already. MODE: how a successful open's walk goes (`TO_DIR` where a path filter's
/// directories are learned).
#[inline(always)]
fn resolve<const MODE: u8>(ret: i64, absolute: bool, dfd: i32, opened: Option<Opened>) -> (u8, u32) {
    let walked = if ret >= 0 {
        let (from, under) = match opened {
            Some(o) => (Ok((o.vfsmount, o.dentry)), o.under),
            None => (file_path(ret), NO_DIR),
        };
        from.and_then(|from| walk::<MODE>(from, under))
            .map(|w| (if w.unlinked { full::FILE_DELETED } else { full::FILE }, w.start))
    } else if absolute {
        Ok((full::AS_PASSED, PATH_MAX as u32))
    } else {
        let start = if dfd == AT_FDCWD { Ok(kernel::fs_path(true)) } else { file_path(i64::from(dfd)) };
        start
            .and_then(|from| walk::<TO_ROOT>(from, NO_DIR))
            .and_then(|w| if w.unlinked { Err(full::START_DELETED) } else { Ok((full::START_DIR, w.start)) })
    };
    walked.unwrap_or_else(|code| (code, PATH_MAX as u32))
}

/// Resolves the full path of an open (see `resolve`) into `to`, which has room for PATH_MAX - 1
/// bytes: the code and how many bytes were written.
#[inline(always)]
pub fn resolve_into<const MODE: u8>(
    to: *mut u8,
    ret: i64,
    absolute: bool,
    dfd: i32,
    opened: Option<Opened>,
) -> (u8, u32) {
    let (code, start) = resolve::<MODE>(ret, absolute, dfd, opened);
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
