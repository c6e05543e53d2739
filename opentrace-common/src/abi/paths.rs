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

/// The most links a learned directory's chain may have for its path to be kept (`Prefix`): its
/// depth below the root, with one more for each mount point crossed on the way.
pub const CHAIN_MAX: usize = 16;
/// The longest path of a learned directory that is kept (a longer one is walked each time).
pub const PREFIX_MAX: usize = 255;
// The programs mask lengths with it.
const _: () = assert!((PREFIX_MAX + 1).is_power_of_two());

/// `Link::kind` of a dentry whose name the walk wrote.
pub const LINK_DENTRY: u32 = 1;
/// `Link::kind` of a mount's root, where the walk crossed to the mount's parent (or stopped, at
/// the root of the mount namespace).
pub const LINK_MOUNT: u32 = 2;

/// One step of the walk up from a learned directory to the root (see `Prefix`), as it read it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub kind: u32,
    /// The dentry's `d_seq`.
    pub seq: u32,
    /// The dentry, or the `struct mount`.
    pub at: u64,
    /// The dentry's `d_parent`, or the mount's `mnt_parent`.
    pub parent: u64,
    /// The dentry's name as `d_name.len << 32 | d_name.hash` (the hash salted with the parent),
    /// or the mount's `mnt_mountpoint`.
    pub name: u64,
    /// The mount's root dentry (`mnt.mnt_root`); 0 for a dentry.
    pub root: u64,
}

/// `PATHS_BY_DENTRY`: a learned directory's own full path, as its walk from the watcher's root
/// gave it when it was learned, and what that walk went through (`chain`). While each link is
/// as it was (a dentry's `d_seq`, parent and name; a mount's parent, mountpoint and root), the
/// same walk would give the same path (a rename or move of a dentry bumps its `d_seq` and gives
/// it another parent or name, and a drop bumps it too; a mount's move gives it another parent or
/// mountpoint), so a
/// matching open's walk from that root stops at the directory and takes this path. `len` 0:
/// none kept.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub len: u32,
    pub links: u32,
    /// The directory, as (vfsmount, dentry): where a walk may stop.
    pub vfsmount: u64,
    pub dentry: u64,
    /// The root the path is from, as (vfsmount, dentry).
    pub root_mnt: u64,
    pub root_dentry: u64,
    pub chain: [Link; CHAIN_MAX],
    pub path: [u8; PREFIX_MAX + 1],
}

super::layouts!(
    Link = 40,
    Prefix = 40 + 40 * CHAIN_MAX + PREFIX_MAX + 1,
    PathKey = 260,
    Suffixes = 8 + 4 * MAX_ENTRIES + KEY_BYTES * MAX_ENTRIES,
    Learned = 24 + 16 * MAX_ENTRIES,
);
