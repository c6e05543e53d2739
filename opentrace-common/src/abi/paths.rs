//! Path filters in the kernel (`watch(paths=...)`, `--path`): what the exit programs match an
//! open's full path against before anything is sent. Directory (prefix) and exact entries are
//! keys of one longest-prefix-match trie, looked up once per open whatever their number; suffix
//! entries (`*.so`) are compared word by word with the end of the path.

/// The most entries a watcher may give.
pub const MAX_ENTRIES: usize = 64;
/// The longest entry, in bytes (a directory entry with its trailing `/`).
pub const ENTRY_MAX: usize = 255;
/// The bytes of a trie key: an entry and its terminating NUL.
pub const KEY_BYTES: usize = ENTRY_MAX + 1;
/// How many keys the trie holds at most: each entry gives up to four (a directory entry: its
/// prefix and the directory itself, for the path as given and for its resolved form).
pub const MAX_KEYS: u32 = 4 * MAX_ENTRIES as u32;

/// A key of the `PATH_KEYS` trie (`struct bpf_lpm_trie_key` with its data). A directory entry
/// `/a/b/` is the prefix `/a/b/` (8 bits per byte); an exact entry `/a/f` (and the directory
/// itself, `/a/b`) is `/a/f` with its NUL, so that it only matches a path that ends there. A path
/// is looked up as its first `KEY_BYTES - 1` bytes and its NUL.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathKey {
    pub prefix_len: u32,
    pub data: [u8; KEY_BYTES],
}

/// The words of a suffix entry, zero-padded.
pub const SUFFIX_WORDS: usize = KEY_BYTES / 8;

/// The suffix entries (`*.so` is `.so`), a read-only global of the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Suffixes {
    pub count: u32,
    pub _pad: u32,
    pub lens: [u32; MAX_ENTRIES],
    /// Each suffix's bytes as little-endian words, the last one zero-padded.
    pub words: [[u64; SUFFIX_WORDS]; MAX_ENTRIES],
}

impl Suffixes {
    pub const NONE: Suffixes =
        Suffixes { count: 0, _pad: 0, lens: [0; MAX_ENTRIES], words: [[0; SUFFIX_WORDS]; MAX_ENTRIES] };
}

/// `PATHS_BY_DENTRY`: the directories of the filter as the kernel knows them, learned when the
/// watcher starts (it keeps each open, so that they stay what they are): for each, its
/// `struct vfsmount` and `struct dentry`, and the watcher's root directory. A successful open is
/// under one when the walk up from its file meets that pair, which takes one read per level where
/// building its path to compare takes three and a copy.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Learned {
    /// Set by the reader once every directory is learned; until then the paths are compared.
    pub ready: u32,
    pub count: u32,
    pub root_mnt: u64,
    pub root_dentry: u64,
    /// (vfsmount, dentry) of each directory.
    pub dirs: [[u64; 2]; MAX_ENTRIES],
}

super::layouts!(
    PathKey = 260,
    Suffixes = 8 + 4 * MAX_ENTRIES + KEY_BYTES * MAX_ENTRIES,
    Learned = 24 + 16 * MAX_ENTRIES,
);
