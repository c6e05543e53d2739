//! Counting mode (`watch_counts`, `opentrace top`): an open is counted under its key in a
//! per-CPU hash map rather than sent; the first open of a key is also sent (`STATUS_COUNTED`) to
//! name it. Where the loader found no entry program needed, the exit alone counts (`at_exit`,
//! `at_exit_by_file`).
//! The reader sums the per-CPU counts each interval.
use core::ffi::c_void;

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::generated::bpf_loop, macros::map, maps::PerCpuHashMap};
use opentrace_common::{
    AT_FDCWD, PATH_MAX,
    abi::{
        Counter,
        count::{BY_FILE, CountKey, HASH_START, hash_step},
        open::{FileId, OpenRecord, STATUS_START_DIR, Syscall},
    },
};

use crate::{
    file,
    kernel::{self, offset, read},
    shared::{SETTINGS, count, global},
};

/// The counts, by key (the loader sizes it; not preallocated).
#[map]
static COUNTS: PerCpuHashMap<CountKey, u64> =
    PerCpuHashMap::with_max_entries(1, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// `EEXIST`: another CPU made the key first.
const EEXIST: i32 = 17;

/// What became of an open in counting mode.
pub enum Counted {
    /// Counted under a key already known: nothing more to send.
    Known,
    /// The first open of its key: the caller sends its record, which names the key.
    New,
    /// Not counted: the map is full (counted as such).
    Full,
}

/// Counts the open whose record's header (and, for a failed one, path of `path_len` bytes) is
/// in `event`: a successful open by its file, a failed one by its path and the directory it
/// started from. A new key's file goes into the header, for the record that names it.
#[inline(always)]
pub fn bump(event: &mut OpenRecord, ret: i64, path_len: u32, dfd: i32) -> Counted {
    let by = global!(SETTINGS.count_by);
    let head = &event.header;
    let key = CountKey::of_task(by, head.syscall, ret, || head.cgroup_id, head.pid, || head.comm);
    let (counted, file, status) = with_file(key, event, ret, path_len, dfd);
    if status != 0 {
        event.header.file = file;
        event.header.status |= status;
    }
    counted
}

/// Counts an open of `syscall` that returned `ret` by what the current task says (its `tgid` as
/// the watcher sees it) and, when the counts are by file, by the file: a failed open by its path
/// of `path_len` bytes in `event` and where its lookup started (`dfd`). With the result, what
/// the header of the record that names a new key says of its file (see `file_key`).
#[inline(always)]
pub fn at_exit_by_file(
    event: &OpenRecord,
    syscall: Syscall,
    ret: i64,
    tgid: u32,
    path_len: u32,
    dfd: i32,
) -> (Counted, FileId, u8) {
    with_file(task_key(syscall, ret, tgid), event, ret, path_len, dfd)
}

/// Counts an open under `key` with its file filled in (see `file_key`); with the result, what the
/// header of the record that names a new key says of its file (nothing for a known key).
#[inline(always)]
fn with_file(
    mut key: CountKey,
    event: &OpenRecord,
    ret: i64,
    path_len: u32,
    dfd: i32,
) -> (Counted, FileId, u8) {
    let failed = file_key(&mut key, event, ret, path_len, dfd);
    match add(&key) {
        Counted::New => {
            let (file, status) = named_file(ret, failed);
            (Counted::New, file, status)
        }
        counted => (counted, FileId::default(), 0),
    }
}

/// Fills in `key`'s file when the counts are by file: a successful open's (inode, device), a
/// failed one's path hash and start directory. Returns what the header of a failed open's record
/// says of its key: the start directory (`STATUS_START_DIR`), for the reader to make the same key.
#[inline(always)]
fn file_key(key: &mut CountKey, event: &OpenRecord, ret: i64, path_len: u32, dfd: i32) -> (FileId, u8) {
    if global!(SETTINGS.count_by) & BY_FILE == 0 {
        return (FileId::default(), 0);
    }
    if ret >= 0 {
        if let Some((inode, dev)) = file::inode_key(ret) {
            (key.file, key.dev) = (inode, dev);
        }
        return (FileId::default(), 0);
    }
    key.file = path_hash(&event.data, path_len);
    if path_len > 0 && event.data[0] != b'/' {
        (key.dir, key.dev) = start_dir(dfd);
        return (FileId { inode: key.dir, dev: key.dev, mnt_id: 0 }, STATUS_START_DIR);
    }
    (FileId::default(), 0)
}

/// What the header of a new key's record says of its file: a successful open's whole identity
/// (read only now: every open reads just the key's part), else what `file_key` said of it.
#[inline(always)]
fn named_file(ret: i64, failed: (FileId, u8)) -> (FileId, u8) {
    if ret >= 0 && global!(SETTINGS.count_by) & BY_FILE != 0 { file::identity(ret) } else { failed }
}

/// Counts an open of `syscall` that returned `ret`, by what the current task says (its `tgid`
/// as the watcher sees it): `abi::count::at_exit_only`'s keys. Nothing names the key: a full
/// map is counted as such.
#[inline(always)]
pub fn at_exit(syscall: Syscall, ret: i64, tgid: u32) {
    let _ = add(&task_key(syscall, ret, tgid));
}

/// The key of an open of `syscall` that returned `ret` as far as the current task goes.
#[inline(always)]
fn task_key(syscall: Syscall, ret: i64, tgid: u32) -> CountKey {
    let by = global!(SETTINGS.count_by);
    let cgroup_id = kernel::current_cgroup_id;
    let comm = kernel::current_comm;
    CountKey::of_task(by, syscall as u8, ret, cgroup_id, tgid, comm)
}

/// One more open of `key` on this CPU.
#[inline(always)]
fn add(key: &CountKey) -> Counted {
    // SAFETY: this CPU's value of the key, not kept past the increment.
    if let Some(n) = COUNTS.get_ptr_mut(key) {
        // SAFETY: as above.
        unsafe { *n += 1 };
        return Counted::Known;
    }
    match COUNTS.insert(key, 1u64, u64::from(BPF_NOEXIST)) {
        Ok(()) => Counted::New,
        // Another CPU made it a moment ago: count here, as any open of a known key.
        Err(err) if err == -EEXIST => match COUNTS.get_ptr_mut(key) {
            Some(n) => {
                // SAFETY: as above.
                unsafe { *n += 1 };
                Counted::Known
            }
            None => full(),
        },
        Err(_) => full(),
    }
}

#[inline(always)]
fn full() -> Counted {
    count(Counter::CountsFull);
    Counted::Full
}

/// A path hash in progress, stepped by `bpf_loop` one word at a time (a loop the verifier would
/// otherwise walk through up to PATH_MAX / 8 times for each state that reaches it).
#[repr(C)]
struct Hashing {
    data: *const u8,
    len: u32,
    _pad: u32,
    hash: u64,
}

/// The hash of the first `len` bytes of `data` (see `abi::count::hash_step`).
#[inline(always)]
fn path_hash(data: &[u8; 2 * PATH_MAX], len: u32) -> u64 {
    let len = len.min(PATH_MAX as u32);
    let mut hashing = Hashing { data: data.as_ptr(), len, _pad: 0, hash: HASH_START };
    // SAFETY: `hash_word` has the callback signature bpf_loop expects; `hashing` outlives the call.
    unsafe { bpf_loop(len.div_ceil(8), hash_word as *mut c_void, (&raw mut hashing).cast(), 0) };
    hashing.hash
}

/// One word of a path into its hash.
extern "C" fn hash_word(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Hashing` on the stack of `path_hash`, waiting in `bpf_loop`.
    let hashing = unsafe { &mut *ctx.cast::<Hashing>() };
    let at = (index as u32 * 8) & (PATH_MAX as u32 - 1);
    // SAFETY: `data` is the slot's 2 * PATH_MAX bytes; a word at a masked offset below PATH_MAX is
    // inside them.
    let mut word = unsafe { hashing.data.add(at as usize).cast::<u64>().read_unaligned() };
    let left = hashing.len.saturating_sub(at);
    if left < 8 {
        word &= (1u64 << (8 * left)) - 1;
    }
    hashing.hash = hash_step(hashing.hash, word);
    0
}

/// The (inode, device) of the directory a relative lookup starts from: the task's working
/// directory, or `dfd`'s file. (0, 0) when it cannot be read.
#[inline(always)]
fn start_dir(dfd: i32) -> (u64, u32) {
    let inode = if dfd == AT_FDCWD {
        let (_, dentry) = kernel::fs_path(true);
        read::<u64>(dentry + offset!(dentry_inode)).ok()
    } else {
        file::lookup(i64::from(dfd)).ok().and_then(|f| file::file_inode(f).ok())
    };
    inode.and_then(|inode| file::inode_id(inode).ok()).unwrap_or_default()
}
