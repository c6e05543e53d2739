//! The path filter (`FILTER_PATHS`): whether an open's full path matches an entry. Directory and
//! exact entries are keys of the `PATH_KEYS` trie (one lookup, whatever their number); suffix
//! entries are compared with the end of the path. The path is the one `full_path` gives: the
//! opened file's, a failed absolute open's as passed, or a failed relative open's start directory
//! joined with the path as passed.
use core::ffi::c_void;

use aya_log_ebpf::warn;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_loop, bpf_probe_read_kernel},
    },
    macros::{map, tracepoint},
    maps::{Array, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::TracePointContext,
};
use opentrace_common::{
    PATH_MAX,
    abi::{
        kernel::MOUNT_WINDOW,
        open::{OpenRecord, full},
        paths::{KEY_BYTES, Learned, MAX_ENTRIES, MAX_KEYS, SUFFIX_WORDS, Suffixes},
    },
};

use crate::{
    kernel::{self, offset, word},
    open, path,
    shared::global,
};

/// The directory and exact entries (see `abi::paths::PathKey`); the loader fills it before
/// attaching. The value is unused.
#[map]
static PATH_KEYS: LpmTrie<[u8; KEY_BYTES], u8> = LpmTrie::with_max_entries(MAX_KEYS, 0);

/// The suffix entries, written by the loader before loading.
#[unsafe(no_mangle)]
static PATH_SUFFIXES: Suffixes = Suffixes::NONE;

/// Room for a joined path (a start directory, `/` and the path as passed) and for copies that
/// start at a masked offset.
const JOIN_BYTES: usize = 2 * PATH_MAX + 8;
const MASK: u32 = PATH_MAX as u32 - 1;

/// Each CPU's working space: the trie key a path is looked up by, the end of the path a suffix
/// is compared with, and a failed relative open's joined path.
#[repr(C)]
pub struct Space {
    key_len: u32,
    key: [u8; 2 * KEY_BYTES],
    _pad: u32,
    tail: [u64; SUFFIX_WORDS + 1],
    join: [u8; JOIN_BYTES],
    /// The walk of `under_learned` and the comparison of `by_suffix` (here, not on the stack:
    /// the exit program has little left).
    ascent: Ascent,
    compare: Compare,
}

#[map]
static SPACE: PerCpuArray<Space> = PerCpuArray::with_max_entries(1, 0);

/// Whether the open in `event` (its path, `path_len` bytes, and what the walk found, `full_len`
/// bytes after it) matches the path filter; `Err(code)` when it cannot be compared, with the
/// [`full`] code that says why (the open's own when its full path could not be resolved): such
/// an open is let through, since it may match, and its event says why its `full_path` is None.
#[inline(always)]
pub fn matches(event: &OpenRecord, path_len: u32, full_len: u32) -> Result<bool, u8> {
    let Some(shared) = SPACE.get_ptr_mut(0) else { return Err(full::FAULT) };
    // SAFETY: this CPU's space, used by this program alone until it returns (`by_suffix` takes
    // the pointer: its callback writes the space too).
    let space = unsafe { &mut *shared };
    let data = event.data.as_ptr();
    let (path_len, full_len) = (path_len & MASK, full_len & MASK);
    let (at, len) = match event.header.full {
        // A deleted file is matched by the path it had.
        full::FILE | full::FILE_DELETED => {
            // SAFETY: the walked path follows the path in the slot's 2 * PATH_MAX bytes.
            (unsafe { data.add(path_len as usize) }, full_len)
        }
        full::AS_PASSED => (data, path_len),
        full::START_DIR => {
            let sep = u32::from(full_len != 1);
            if full_len + sep + path_len >= PATH_MAX as u32 {
                // Longer than a path can be: not compared.
                return Err(full::TOO_LONG);
            }
            let to = space.join.as_mut_ptr();
            // SAFETY: copies within this CPU's slot and space: `full_len` and `path_len` are
            // below PATH_MAX, and `join` has room for both and the separator.
            let copied = unsafe {
                bpf_probe_read_kernel(to.cast(), full_len, data.add(path_len as usize).cast()) == 0 && {
                    *to.add(full_len as usize) = b'/';
                    bpf_probe_read_kernel(
                        to.add(((full_len + sep) & MASK) as usize).cast(),
                        path_len,
                        data.cast(),
                    ) == 0
                }
            };
            if !copied {
                return Err(full::FAULT);
            }
            (space.join.as_ptr(), full_len + sep + path_len)
        }
        unresolved => return Err(unresolved),
    };
    Ok(by_key(space, at, len)? || by_suffix(shared, at, len)?)
}

/// Whether the trie holds a prefix of the path (or the path itself, as an exact entry).
#[inline(always)]
fn by_key(space: &mut Space, at: *const u8, len: u32) -> Result<bool, u8> {
    let n = if len >= KEY_BYTES as u32 { KEY_BYTES as u32 } else { len };
    // SAFETY: `n` bytes of the path (in this CPU's slot or space) into this CPU's key.
    if unsafe { bpf_probe_read_kernel(space.key.as_mut_ptr().cast(), n, at.cast()) } != 0 {
        return Err(full::FAULT);
    }
    if let Some(end) = space.key.get_mut(len as usize) {
        *end = 0;
    }
    space.key_len = 8 * (n + u32::from(len < KEY_BYTES as u32)).min(KEY_BYTES as u32);
    // SAFETY: `key_len` and the first KEY_BYTES of `key` are a `struct bpf_lpm_trie_key` with its
    // data, laid out as `Key<[u8; KEY_BYTES]>` (a u32, then the bytes).
    let key = unsafe { &*(&raw const space.key_len).cast::<Key<[u8; KEY_BYTES]>>() };
    Ok(PATH_KEYS.get(key).is_some())
}

/// A suffix comparison: the path and what was found (`NO_SUFFIX`, `SUFFIX` or `UNREAD`).
#[repr(C)]
struct Compare {
    at: u64,
    len: u32,
    found: u32,
}

/// `Compare::found`: no suffix entry ends the path (so far).
const NO_SUFFIX: u32 = 0;
/// A suffix entry ends the path.
const SUFFIX: u32 = 1;
/// The path's end could not be read: not compared.
const UNREAD: u32 = 2;

/// Whether the path ends with a suffix entry (`Err`, as in `matches`, when its end could not be
/// read). `space` is a pointer, not a reference, and the comparison is written and read through
/// it as volatile: `suffix` writes it behind the compiler's back (through the map), which a
/// `&mut` would tell it cannot happen.
#[inline(always)]
fn by_suffix(space: *mut Space, at: *const u8, len: u32) -> Result<bool, u8> {
    let count = read_suffixes(|s| &s.count);
    if count == 0 {
        return Ok(false);
    }
    // SAFETY: this CPU's space (see `matches`).
    let compare = unsafe { &raw mut (*space).compare };
    // SAFETY: as above.
    unsafe { compare.write_volatile(Compare { at: at as u64, len, found: NO_SUFFIX }) };
    // No context, as in `under_learned`: `suffix` finds the comparison in this CPU's space.
    // SAFETY: `suffix` has the callback signature bpf_loop expects.
    unsafe { bpf_loop(count.min(MAX_ENTRIES as u32), suffix as *mut c_void, core::ptr::null_mut(), 0) };
    // SAFETY: as above.
    match unsafe { (&raw const (*compare).found).read_volatile() } {
        NO_SUFFIX => Ok(false),
        SUFFIX => Ok(true),
        _ => Err(full::FAULT),
    }
}

/// A field of `PATH_SUFFIXES`, read as the loader wrote it.
#[inline(always)]
fn read_suffixes<T: Copy>(field: impl Fn(&Suffixes) -> &T) -> T {
    // SAFETY: a read-only global the loader sets before loading; the volatile read keeps the
    // compiler from folding in the default value.
    unsafe { core::ptr::read_volatile(field(&PATH_SUFFIXES)) }
}

/// One suffix entry: whether the path ends with it (then stop, as when the end cannot be read).
extern "C" fn suffix(index: u64, _: *mut c_void) -> i64 {
    let Some(space) = SPACE.get_ptr_mut(0) else { return 1 };
    // SAFETY: this CPU's space, as in `matches`, whose `by_suffix` is waiting in `bpf_loop`: only
    // the comparison and the tail are borrowed (the path compared may be in `join`).
    let (compare, tail) = unsafe { (&mut (*space).compare, &mut (*space).tail) };
    let i = (index as usize) & (MAX_ENTRIES - 1);
    let len = read_suffixes(|s| &s.lens[i]);
    let (at, path_len) = (compare.at, compare.len);
    if len == 0 || len > path_len || len >= KEY_BYTES as u32 {
        return 0;
    }
    let from = at + u64::from(path_len - len);
    // SAFETY: the last `len` bytes of the path into this CPU's space.
    if unsafe { bpf_probe_read_kernel(tail.as_mut_ptr().cast(), len, from as *const c_void) } != 0 {
        compare.found = UNREAD;
        return 1;
    }
    for (w, &got) in tail.iter().enumerate().take(SUFFIX_WORDS) {
        let done = 8 * w as u32;
        if done >= len {
            break;
        }
        let left = len - done;
        let mask = if left >= 8 { u64::MAX } else { (1u64 << (8 * left)) - 1 };
        let want = read_suffixes(|s| &s.words[i][w]);
        if (got ^ want) & mask != 0 {
            return 0;
        }
    }
    compare.found = SUFFIX;
    1
}

/// `PATHS_BY_DENTRY`: the filter's directories as the kernel knows them (element 0).
#[map]
static LEARNED: Array<Learned> = Array::with_max_entries(1, 0);

/// The thread that teaches `learn_dir` the directories (the watcher's, while it loads), written
/// before loading.
#[unsafe(no_mangle)]
static LEARNER: u32 = 0;

/// Attached to `syscalls:sys_enter_syncfs` while the watcher runs: the thread that loaded it calls
/// `syncfs(fd)` on an `O_PATH` fd of each directory, and this adds the directory's
/// (vfsmount, dentry) to `LEARNED`, with the watcher's root, and keeps its own path
/// (`path::keep_prefix`). Other threads' calls return at once,
/// and so does every call once the directories are learned (`ready`): another watcher loaded
/// later by the same thread teaches its own.
#[tracepoint]
pub fn learn_dir(ctx: TracePointContext) -> u32 {
    if bpf_get_current_pid_tgid() as u32 != global!(LEARNER) {
        return 0;
    }
    let Some(learned) = LEARNED.get_ptr_mut(0) else { return 0 };
    // SAFETY: the map's one element; only the loading thread's calls, one at a time, write it.
    let learned = unsafe { &mut *learned };
    if learned.ready != 0 {
        return 0;
    }
    // `int fd`, the first argument slot.
    // SAFETY: the record holds its argument slots; a read past it fails, it cannot fault.
    let Ok(fd) = (unsafe { ctx.read_at::<u64>(open::FIRST_SLOT as usize) }) else { return 0 };
    let Ok((mnt, dentry)) = path::file_path(i64::from(fd as i32)) else { return 0 };
    let i = learned.count as usize;
    if let Some(dir) = learned.dirs.get_mut(i) {
        *dir = [mnt, dentry];
        learned.count += 1;
        path::keep_prefix(i as u32, (mnt, dentry));
    }
    (learned.root_mnt, learned.root_dentry) = kernel::fs_path(false);
    0
}

/// A walk up from an opened file, looking for a learned directory, stepped by `bpf_loop`.
#[repr(C)]
struct Ascent {
    dentry: u64,
    /// The `struct mount` `dentry` is on, and its window (parent, mountpoint, root).
    mount: u64,
    mount_window: [u64; MOUNT_WINDOW as usize / 8],
    /// `Ancestry::Under` as 1, `NotUnder` as 2, undecided as 0.
    found: u32,
    /// Under: which learned directory.
    dir: u32,
}

const UNDECIDED: u32 = 0;
const UNDER: u32 = 1;
const NOT_UNDER: u32 = 2;

/// What `under_learned` found.
pub enum Ancestry {
    /// Under (or is) a learned directory; the file's `f_path`, where its full path starts (the
    /// walk for it does not look the fd up again), and which directory (where that walk may stop).
    Under(path::Opened),
    NotUnder,
}

/// `PATHS_BY_DENTRY`: whether the file the current task just opened as `fd` is under (or is) one
/// of the learned directories, as seen from the watcher's root. None when that cannot be told
/// this way (the task has another root, the directories are not learned yet, a read failed):
/// its path is compared then.
#[inline(always)]
pub fn under_learned(fd: i64) -> Option<Ancestry> {
    let learned = LEARNED.get_ptr(0)?;
    // SAFETY: the map's one element, written by `learn_dir` before the programs that read it
    // were attached.
    let shared = unsafe { &*learned };
    if shared.ready == 0 || kernel::fs_path(false) != (shared.root_mnt, shared.root_dentry) {
        return None;
    }
    let (vfsmount, dentry) = path::file_path(fd).ok()?;
    let space = SPACE.get_ptr_mut(0)?;
    // SAFETY: this CPU's space, used by this program alone until it returns.
    let ascent = unsafe { &mut (*space).ascent };
    let mount = vfsmount - offset!(mount_mnt);
    (ascent.dentry, ascent.mount, ascent.found) = (dentry, mount, UNDECIDED);
    if !kernel::mount_window(&mut ascent.mount_window, mount) {
        return None;
    }
    // The first levels here when the filter has few directories, the rest (if any) stepped by
    // `bpf_loop`: a callback's call costs about as much as a level's own work. (With more
    // directories, their comparisons inline, verified level by level, make loading slow.)
    let mut left = path::MAX_STEPS;
    if shared.count as usize <= INLINE_DIRS {
        for _ in 0..INLINE_STEPS {
            left -= 1;
            if ascend_once::<INLINE_DIRS>(ascent, shared) != CONTINUE {
                left = 0;
                break;
            }
        }
    }
    if left > 0 {
        // No context: the walk's state is larger than the room left on the exit program's stack
        // (`ascend` finds it in this CPU's space).
        // SAFETY: `ascend` has the callback signature bpf_loop expects.
        unsafe { bpf_loop(left, ascend as *mut c_void, core::ptr::null_mut(), 0) };
    }
    // Read anew, through the map's pointer: `ascend` wrote it behind the compiler's back.
    // SAFETY: this CPU's space, as above.
    match unsafe { (&raw const (*space).ascent.found).read_volatile() } {
        UNDER => Some(Ancestry::Under(path::Opened {
            vfsmount,
            dentry,
            // SAFETY: as above.
            under: unsafe { (&raw const (*space).ascent.dir).read_volatile() },
        })),
        NOT_UNDER => Some(Ancestry::NotUnder),
        _ => None,
    }
}

/// Levels of the walk taken before `bpf_loop` takes over, when the filter has at most
/// `INLINE_DIRS` directories. With direct loads a level in line costs ~3 ns and one through a
/// `bpf_loop` callback ~11 (`bench/progcost.py`: an excluded open 15 components deep 279 -> 183
/// ns going from 8 to 16); loading takes ~20 ms longer.
const INLINE_STEPS: u32 = 16;
const INLINE_DIRS: usize = 4;

/// What a step of the walk says: go on, or stop (decided, or cannot be told).
const CONTINUE: i64 = 0;
const STOP: i64 = 1;

/// The walk's steps after the first `INLINE_STEPS`, called by `bpf_loop`.
extern "C" fn ascend(_: u64, _: *mut c_void) -> i64 {
    let (Some(space), Some(learned)) = (SPACE.get_ptr_mut(0), LEARNED.get_ptr(0)) else { return STOP };
    // SAFETY: this CPU's space and `LEARNED`'s element, as in `under_learned`, which is waiting
    // in `bpf_loop`.
    let (ascent, learned) = unsafe { (&mut (*space).ascent, &*learned) };
    ascend_once::<MAX_ENTRIES>(ascent, learned)
}

/// One step up: whether this (mount, dentry) is a learned directory or the root; else on to the
/// parent (across a mount point at a mount's root). Compares the first `DIRS` learned
/// directories (the caller knows there are no more).
#[inline(always)]
fn ascend_once<const DIRS: usize>(ascent: &mut Ascent, learned: &Learned) -> i64 {
    let vfsmount = ascent.mount + offset!(mount_mnt);
    // The learned directories first: the root may be one of them (an entry "/").
    for (i, dir) in learned.dirs.iter().take(DIRS).enumerate() {
        if i as u32 >= learned.count {
            break;
        }
        if dir[1] == ascent.dentry && dir[0] == vfsmount {
            (ascent.found, ascent.dir) = (UNDER, i as u32);
            return STOP;
        }
    }
    if ascent.dentry == learned.root_dentry && vfsmount == learned.root_mnt {
        ascent.found = NOT_UNDER;
        return STOP;
    }
    if ascent.dentry == word(&ascent.mount_window, offset!(mount_root)) {
        let parent = word(&ascent.mount_window, offset!(mount_parent));
        if parent == ascent.mount {
            // Outside the watcher's root: its path is compared.
            return STOP;
        }
        ascent.dentry = word(&ascent.mount_window, offset!(mount_mountpoint));
        ascent.mount = parent;
        return if kernel::mount_window(&mut ascent.mount_window, parent) { CONTINUE } else { STOP };
    }
    match kernel::dentry_member::<u64>(ascent.dentry, offset!(dentry_parent)) {
        Ok(parent) if parent != 0 && parent != ascent.dentry => {
            ascent.dentry = parent;
            CONTINUE
        }
        _ => STOP,
    }
}

/// Attached to the exits of rmdir, unlinkat, rename, renameat and renameat2 while the filter's
/// directories are decided by their dentries: once a learned directory is deleted (or replaced by
/// a rename over it), a directory made at its path later is another dentry, which the walk would
/// never meet. The filter then compares paths from that moment on (before the call returns, so
/// before anything can be made there), and says so in the log.
#[tracepoint]
pub fn forget_deleted(ctx: TracePointContext) -> u32 {
    // `long ret`, in the first slot.
    // SAFETY: the record holds it; a read past it fails, it cannot fault.
    if unsafe { ctx.read_at::<i64>(open::FIRST_SLOT as usize) } != Ok(0) {
        return 0;
    }
    let Some(learned) = LEARNED.get_ptr_mut(0) else { return 0 };
    // SAFETY: the map's one element; `ready` is a word, written whole.
    let learned = unsafe { &mut *learned };
    if learned.ready == 0 {
        return 0;
    }
    for i in 0..MAX_ENTRIES {
        if i as u32 >= learned.count {
            break;
        }
        let dentry = learned.dirs[i][1];
        // Unlinked: out of the dentry hash, and not a file system's root (which never is in it).
        // (A direct load that faulted gives 0: no dentry has a 0 parent.)
        let unhashed = kernel::dentry_member::<u64>(dentry, offset!(dentry_hash_pprev)) == Ok(0);
        let parent = kernel::dentry_member::<u64>(dentry, offset!(dentry_parent));
        if unhashed && parent.is_ok_and(|parent| parent != 0 && parent != dentry) {
            learned.ready = 0;
            warn!(
                &ctx,
                "a directory of the path filter was deleted or replaced; from now on the filter compares \
                 paths (the same rules, at a higher cost per open)"
            );
            return 0;
        }
    }
    0
}
