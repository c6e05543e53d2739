//! Counting mode (`watch_counts`, `opentrace top`): an open is counted under its key in a
//! per-CPU hash map rather than sent; the first open of a key is also sent (`STATUS_COUNTED`) to
//! name it. The reader sums the per-CPU counts each interval.
use aya_ebpf::{bindings::BPF_NOEXIST, macros::map, maps::PerCpuHashMap};
use opentrace_common::{
    AT_FDCWD, PATH_MAX,
    abi::{
        Counter,
        count::{BY_CGROUP, BY_COMM, BY_FILE, BY_PID, CountKey, HASH_START, hash_step},
        open::{OpenRecord, STATUS_FILE_ID, STATUS_START_DIR},
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
/// in `event`: a successful open by its file (read here into the header), a failed one by its
/// path and the directory it started from.
#[inline(always)]
pub fn bump(event: &mut OpenRecord, ret: i64, path_len: u32, dfd: i32) -> Counted {
    let by = global!(SETTINGS.count_by);
    let head = &mut event.header;
    let mut key = CountKey::default();
    if by & BY_CGROUP != 0 {
        key.cgroup_id = head.cgroup_id;
    }
    if by & BY_PID != 0 {
        key.pid = head.pid;
    }
    if by & BY_COMM != 0 {
        key.comm = head.comm;
    }
    if ret < 0 {
        key.errno = ret.unsigned_abs() as u32;
    }
    if by & BY_FILE != 0 {
        if ret >= 0 {
            let (id, status) = file::identity(ret);
            head.file = id;
            head.status |= status;
            if status & STATUS_FILE_ID != 0 {
                (key.file, key.dev) = (id.inode, id.dev);
            }
        } else {
            key.file = path_hash(&event.data, path_len);
            if path_len > 0 && event.data[0] != b'/' {
                (key.dir, key.dev) = start_dir(dfd);
                // For the reader to make the same key from the event.
                (head.file.inode, head.file.dev) = (key.dir, key.dev);
                head.status |= STATUS_START_DIR;
            }
        }
    }
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

/// The hash of the first `len` bytes of `data` (see `abi::count::hash_step`).
#[inline(always)]
fn path_hash(data: &[u8], len: u32) -> u64 {
    let mut hash = HASH_START;
    let words = len.div_ceil(8).min(PATH_MAX as u32 / 8);
    for i in 0..PATH_MAX / 8 {
        if i as u32 >= words {
            break;
        }
        let Some(bytes) = data.get(i * 8..i * 8 + 8) else { break };
        let mut word = u64::from_le_bytes([
            bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
        ]);
        let left = len - i as u32 * 8;
        if left < 8 {
            word &= (1u64 << (8 * left)) - 1;
        }
        hash = hash_step(hash, word);
    }
    hash
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
