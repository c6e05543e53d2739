//! The path filter (`FILTER_PATHS`): whether an open's full path matches an entry. Directory and
//! exact entries are keys of the `PATH_KEYS` trie (one lookup, whatever their number); suffix
//! entries are compared with the end of the path. The path is the one `full_path` gives: the
//! opened file's, a failed absolute open's as passed, or a failed relative open's start directory
//! joined with the path as passed.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_loop, bpf_probe_read_kernel},
    macros::map,
    maps::{LpmTrie, PerCpuArray, lpm_trie::Key},
};
use opentrace_common::{
    PATH_MAX,
    abi::{
        open::{OpenRecord, full},
        paths::{KEY_BYTES, MAX_ENTRIES, MAX_KEYS, SUFFIX_WORDS, Suffixes},
    },
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
}

#[map]
static SPACE: PerCpuArray<Space> = PerCpuArray::with_max_entries(1, 0);

/// Whether the open in `event` (its path, `path_len` bytes, and what the walk found, `full_len`
/// bytes after it) matches the path filter. An open whose full path could not be resolved is
/// let through: it may match, and its event says why its `full_path` is None.
#[inline(always)]
pub fn matches(event: &OpenRecord, path_len: u32, full_len: u32) -> bool {
    let Some(space) = SPACE.get_ptr_mut(0) else { return true };
    // SAFETY: this CPU's space, used by this program alone until it returns.
    let space = unsafe { &mut *space };
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
                return true;
            }
            (space.join.as_ptr(), full_len + sep + path_len)
        }
        _ => return true,
    };
    by_key(space, at, len) || by_suffix(space, at, len)
}

/// Whether the trie holds a prefix of the path (or the path itself, as an exact entry).
#[inline(always)]
fn by_key(space: &mut Space, at: *const u8, len: u32) -> bool {
    let n = if len >= KEY_BYTES as u32 { KEY_BYTES as u32 } else { len };
    // SAFETY: `n` bytes of the path (in this CPU's slot or space) into this CPU's key.
    if unsafe { bpf_probe_read_kernel(space.key.as_mut_ptr().cast(), n, at.cast()) } != 0 {
        return true;
    }
    if let Some(end) = space.key.get_mut(len as usize) {
        *end = 0;
    }
    space.key_len = 8 * (n + u32::from(len < KEY_BYTES as u32)).min(KEY_BYTES as u32);
    // SAFETY: `key_len` and the first KEY_BYTES of `key` are a `struct bpf_lpm_trie_key` with its
    // data, laid out as `Key<[u8; KEY_BYTES]>` (a u32, then the bytes).
    let key = unsafe { &*(&raw const space.key_len).cast::<Key<[u8; KEY_BYTES]>>() };
    PATH_KEYS.get(key).is_some()
}

/// What a suffix comparison is given by `bpf_loop`.
#[repr(C)]
struct Compare {
    space: *mut Space,
    at: u64,
    len: u32,
    found: u32,
}

/// Whether the path ends with a suffix entry.
#[inline(always)]
fn by_suffix(space: &mut Space, at: *const u8, len: u32) -> bool {
    let count = read_suffixes(|s| &s.count);
    if count == 0 {
        return false;
    }
    let mut compare = Compare { space, at: at as u64, len, found: 0 };
    // SAFETY: `suffix` has the callback signature bpf_loop expects; `compare` outlives the call.
    unsafe { bpf_loop(count.min(MAX_ENTRIES as u32), suffix as *mut c_void, (&raw mut compare).cast(), 0) };
    compare.found != 0
}

/// A field of `PATH_SUFFIXES`, read as the loader wrote it.
#[inline(always)]
fn read_suffixes<T: Copy>(field: impl Fn(&Suffixes) -> &T) -> T {
    // SAFETY: a read-only global the loader sets before loading; the volatile read keeps the
    // compiler from folding in the default value.
    unsafe { core::ptr::read_volatile(field(&PATH_SUFFIXES)) }
}

/// One suffix entry: whether the path ends with it (then stop).
extern "C" fn suffix(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Compare` on the stack of `by_suffix`, waiting in `bpf_loop`.
    let compare = unsafe { &mut *ctx.cast::<Compare>() };
    let i = (index as usize) & (MAX_ENTRIES - 1);
    let len = read_suffixes(|s| &s.lens[i]);
    if len == 0 || len > compare.len || len >= KEY_BYTES as u32 {
        return 0;
    }
    // SAFETY: the CPU's space, as in `matches`.
    let space = unsafe { &mut *compare.space };
    let from = compare.at + u64::from(compare.len - len);
    // SAFETY: the last `len` bytes of the path into this CPU's space.
    if unsafe { bpf_probe_read_kernel(space.tail.as_mut_ptr().cast(), len, from as *const c_void) } != 0 {
        return 0;
    }
    for w in 0..SUFFIX_WORDS {
        let done = 8 * w as u32;
        if done >= len {
            break;
        }
        let left = len - done;
        let mask = if left >= 8 { u64::MAX } else { (1u64 << (8 * left)) - 1 };
        let want = read_suffixes(|s| &s.words[i][w]);
        if (space.tail[w] ^ want) & mask != 0 {
            return 0;
        }
    }
    compare.found = 1;
    1
}
