//! The open event: its ring record decoded ([`decode`]), borrowed ([`Open`]) or owned
//! ([`OwnedOpen`]); [`table`] has [`FIELDS`], the one table of what it shows.
mod table;

use crate::{
    AT_FDCWD, COMM_LEN,
    abi::{
        RecordKind,
        open::{
            FileId, OPEN_HEADER_SIZE, OpenHeader, STATUS_DEV_UNSURE, STATUS_FILE_ID, STATUS_FIXED_SLOT,
            Syscall, full,
        },
    },
    cgroup::Container,
};
pub use table::{Attr, ColumnOptions, FIELDS, Get, Set, columns};

/// An open event, borrowed from a ring record or from an [`OwnedOpen`].
#[derive(Clone, Copy)]
pub struct Open<'a> {
    pub head: &'a OpenHeader,
    pub path: &'a [u8],
    /// The full path, when asked for and resolved (see [`full_path`]).
    pub full: Option<&'a [u8]>,
    /// The path of the task's cgroup under the cgroup2 mount, resolved in user space.
    pub cgroup: Option<&'a [u8]>,
    /// What the runtime of the cgroup's container says of it, when known by the time the event
    /// was read (resolved in user space, asynchronously).
    pub container: Option<&'a std::sync::Arc<Container>>,
}

impl<'a> Open<'a> {
    /// The comm up to its NUL.
    pub fn comm(&self) -> &'a [u8] {
        let comm = &self.head.comm;
        &comm[..comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN)]
    }

    pub fn syscall(&self) -> &'static str {
        Syscall::from_u8(self.head.syscall).map_or("?", Syscall::name)
    }

    /// The new fd: none for a failed open, or an io_uring open into a fixed-file slot.
    pub fn fd(&self) -> Option<i64> {
        (self.head.ret >= 0 && self.head.status & STATUS_FIXED_SLOT == 0).then_some(self.head.ret)
    }

    /// The opened file's identity, when the kernel gave it (a successful open).
    pub fn file(&self) -> Option<&'a FileId> {
        (self.head.status & STATUS_FILE_ID != 0).then_some(&self.head.file)
    }

    /// The file's device as `os.stat` gives it (`st_dev`); None where its filesystem reports
    /// another device than its superblock's.
    pub fn dev(&self) -> Option<u64> {
        self.file().filter(|_| self.head.status & STATUS_DEV_UNSURE == 0).map(|f| user_dev(f.dev))
    }
}

/// The kernel's `dev_t` (major << 20 | minor) as user space encodes it (`st_dev`, glibc's
/// `makedev`).
pub fn user_dev(dev: u32) -> u64 {
    let (major, minor) = (u64::from(dev >> 20), u64::from(dev & 0xf_ffff));
    ((major & 0xfff) << 8) | ((major & !0xfff) << 32) | (minor & 0xff) | ((minor & !0xff) << 12)
}

/// The inverse of [`user_dev`]; None for a device the kernel's `dev_t` cannot hold.
pub fn kernel_dev(dev: u64) -> Option<u32> {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major < 1 << 12 && minor < 1 << 20 && user_dev((major << 20 | minor) as u32) == dev)
        .then_some((major << 20 | minor) as u32)
}

/// Why a ring record could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Short { len: usize },
    Kind(u8),
    Syscall(u8),
    PathLen { path_len: u16, full_len: u16, len: usize },
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Short { len } => write!(f, "a {len}-byte record is shorter than its header"),
            DecodeError::Kind(kind) => write!(f, "unknown record kind {kind}"),
            DecodeError::Syscall(id) => write!(f, "unknown syscall id {id}"),
            DecodeError::PathLen { path_len, full_len, len } => {
                write!(f, "paths of {path_len} and {full_len} bytes do not fit a {len}-byte record")
            }
        }
    }
}

/// An open's ring record: the header (copied out), the path as passed and what the walk for the
/// full path gave (see [`full_path`]), both borrowed.
pub struct Decoded<'a> {
    pub head: OpenHeader,
    pub path: &'a [u8],
    pub walked: &'a [u8],
}

pub fn decode(record: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    if record.len() < OPEN_HEADER_SIZE {
        return Err(DecodeError::Short { len: record.len() });
    }
    // SAFETY: the length is checked; `OpenHeader` is plain integers, read unaligned.
    let head = unsafe { record.as_ptr().cast::<OpenHeader>().read_unaligned() };
    if head.kind != RecordKind::Open as u8 && head.kind != RecordKind::UringSubmit as u8 {
        return Err(DecodeError::Kind(head.kind));
    }
    if Syscall::from_u8(head.syscall).is_none() {
        return Err(DecodeError::Syscall(head.syscall));
    }
    let (path_end, full_end) = (
        OPEN_HEADER_SIZE + usize::from(head.path_len),
        OPEN_HEADER_SIZE + usize::from(head.path_len) + usize::from(head.full_len),
    );
    let too_short =
        DecodeError::PathLen { path_len: head.path_len, full_len: head.full_len, len: record.len() };
    let (path, walked) = match (record.get(OPEN_HEADER_SIZE..path_end), record.get(path_end..full_end)) {
        (Some(path), Some(walked)) => (path, walked),
        _ => return Err(too_short),
    };
    Ok(Decoded { head, path, walked })
}

/// Appended to the path of a file that is no longer linked, as `/proc/PID/fd` shows it.
pub const DELETED: &[u8] = b" (deleted)";

/// The full path of an open from what the kernel found (`head.full`): the walked path itself,
/// or composed in `scratch` (a deleted file's path with [`DELETED`], a failed relative open's
/// starting directory joined with the path as `os.path.join` joins them), or the path as passed
/// (a failed absolute open). `None` when not asked for or not resolved.
pub fn full_path<'a>(
    head: &OpenHeader,
    path: &'a [u8],
    walked: &'a [u8],
    scratch: &'a mut Vec<u8>,
) -> Option<&'a [u8]> {
    match head.full {
        full::FILE => Some(walked),
        full::AS_PASSED => Some(path),
        full::FILE_DELETED => {
            scratch.clear();
            scratch.extend_from_slice(walked);
            scratch.extend_from_slice(DELETED);
            Some(scratch)
        }
        full::START_DIR => {
            scratch.clear();
            scratch.extend_from_slice(walked);
            if !walked.ends_with(b"/") {
                scratch.push(b'/');
            }
            scratch.extend_from_slice(path);
            Some(scratch)
        }
        _ => None,
    }
}

/// Why a full path is None, in words (for the log); None when it is not None or not asked for.
pub fn unresolved(code: u8) -> Option<&'static str> {
    Some(match code {
        full::TOO_LONG => "longer than PATH_MAX",
        full::DISCONNECTED => "a pipe, socket or other file with no path, or one cut off from the tree",
        full::RENAMED => "a directory on the way was renamed while it was read",
        full::NO_FILE => "its fd was gone from the process by the time it was looked up",
        full::START_DELETED => "the directory a relative lookup started from is deleted",
        full::FAULT => "a kernel structure could not be read",
        full::TOO_DEEP => "more nested components than the walk takes",
        full::FIXED_SLOT => "opened into an io_uring fixed-file slot (no fd to name it by)",
        code if code >= full::FIRST_UNRESOLVED => "an unknown reason",
        _ => return None,
    })
}

/// Bytes kept inside their owner when short (most paths are): no allocation per event.
#[derive(Clone)]
pub enum SmallBytes {
    Inline { len: u8, bytes: [u8; SmallBytes::INLINE] },
    Heap(Box<[u8]>),
}

impl SmallBytes {
    /// With its length and the variant's tag, 96 bytes.
    const INLINE: usize = 94;

    /// `first` followed by `second`.
    #[inline(always)]
    pub fn pair(first: &[u8], second: &[u8]) -> SmallBytes {
        let len = first.len() + second.len();
        if len <= Self::INLINE {
            let mut inline = [0; Self::INLINE];
            inline[..first.len()].copy_from_slice(first);
            inline[first.len()..len].copy_from_slice(second);
            SmallBytes::Inline { len: len as u8, bytes: inline }
        } else {
            SmallBytes::Heap([first, second].concat().into())
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            SmallBytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            SmallBytes::Heap(bytes) => bytes,
        }
    }
}

impl PartialEq for SmallBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for SmallBytes {}

impl core::hash::Hash for SmallBytes {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

/// An open event that owns its data (what `OpenEvent` holds). Equal to another, and hashed, by
/// what its fields show (see [`OwnedOpen::canonical`]).
#[derive(Clone)]
pub struct OwnedOpen {
    pub head: OpenHeader,
    /// The path (`head.path_len` bytes), then the full path if there is one (`has_full`): one
    /// buffer, the event the smaller for it (a Python loop makes and drops one per open).
    text: SmallBytes,
    has_full: bool,
    /// Shared by the events of one cgroup.
    pub cgroup: Option<std::sync::Arc<[u8]>>,
    /// Shared by the events of one container.
    pub container: Option<std::sync::Arc<Container>>,
}

impl OwnedOpen {
    /// `cgroup` is `open.cgroup`, already shared.
    #[inline(always)]
    pub fn new(open: Open<'_>, cgroup: Option<std::sync::Arc<[u8]>>) -> OwnedOpen {
        let mut head = *open.head;
        head.path_len = open.path.len() as u16;
        OwnedOpen {
            head,
            text: SmallBytes::pair(open.path, open.full.unwrap_or_default()),
            has_full: open.full.is_some(),
            cgroup,
            container: open.container.cloned(),
        }
    }

    pub fn view(&self) -> Open<'_> {
        Open {
            head: &self.head,
            path: self.path(),
            full: self.full(),
            cgroup: self.cgroup.as_deref(),
            container: self.container.as_ref(),
        }
    }

    pub fn path(&self) -> &[u8] {
        &self.text.as_bytes()[..usize::from(self.head.path_len)]
    }

    pub fn full(&self) -> Option<&[u8]> {
        self.has_full.then(|| &self.text.as_bytes()[usize::from(self.head.path_len)..])
    }

    /// A new path (at most `u16::MAX` bytes, which the caller checks), the full path kept.
    pub fn set_path(&mut self, path: &[u8]) {
        self.text = SmallBytes::pair(path, self.full().unwrap_or_default());
        self.head.path_len = path.len() as u16;
    }

    /// A new full path, or none, the path kept.
    pub fn set_full(&mut self, full: Option<&[u8]>) {
        self.text = SmallBytes::pair(self.path(), full.unwrap_or_default());
        self.has_full = full.is_some();
    }

    /// The header as the fields show it, without what only the reader used (the record kind,
    /// the diagnostics, the lengths of the pieces a full path was made of): an event and its
    /// copy built from its fields (pickled) compare equal.
    fn canonical(&self) -> OpenHeader {
        let fixed_slot = self.head.ret >= 0 && self.head.status & STATUS_FIXED_SLOT != 0;
        let view = self.view();
        let file = view.file().copied().unwrap_or_default();
        let known = match (view.file(), view.dev()) {
            (None, _) => 0,
            (Some(_), Some(_)) => STATUS_FILE_ID,
            (Some(_), None) => STATUS_FILE_ID | STATUS_DEV_UNSURE,
        };
        OpenHeader {
            kind: RecordKind::Open as u8,
            status: if fixed_slot { STATUS_FIXED_SLOT } else { 0 } | known,
            file: FileId { dev: if known & STATUS_DEV_UNSURE != 0 { 0 } else { file.dev }, ..file },
            full: 0,
            fault: 0,
            full_len: 0,
            _pad2: 0,
            ..self.head
        }
    }
}

impl PartialEq for OwnedOpen {
    fn eq(&self, other: &Self) -> bool {
        self.canonical() == other.canonical()
            && self.path() == other.path()
            && self.full() == other.full()
            && self.cgroup == other.cgroup
            && self.container == other.container
    }
}

impl Eq for OwnedOpen {}

impl core::hash::Hash for OwnedOpen {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        (self.canonical(), self.path(), self.full(), &self.cgroup, &self.container).hash(state);
    }
}

impl Default for OwnedOpen {
    /// All zero but what zero would misstate: the record kind, and `dfd` (AT_FDCWD).
    fn default() -> Self {
        let head = OpenHeader { kind: RecordKind::Open as u8, dfd: AT_FDCWD, ..OpenHeader::default() };
        OwnedOpen { head, text: SmallBytes::pair(b"", b""), has_full: false, cgroup: None, container: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(head: OpenHeader, path: &[u8]) -> Vec<u8> {
        // SAFETY: `OpenHeader` is plain integers.
        let bytes = unsafe {
            core::slice::from_raw_parts((&head as *const OpenHeader).cast::<u8>(), OPEN_HEADER_SIZE)
        };
        [bytes, path].concat()
    }

    fn header(path_len: u16) -> OpenHeader {
        let mut head = OwnedOpen::default().head;
        head.syscall = Syscall::Openat2 as u8;
        head.pid = 42;
        head.ret = -2;
        head.path_len = path_len;
        head.comm[..3].copy_from_slice(b"cat");
        head
    }

    #[test]
    fn decodes_a_record_and_refuses_broken_ones() {
        let good = record(header(4), b"/etc");
        let Decoded { head, path, walked } = decode(&good).unwrap();
        let open = Open { head: &head, path, full: None, cgroup: None, container: None };
        assert_eq!(
            (open.comm(), open.syscall(), path, walked),
            (&b"cat"[..], "openat2", &b"/etc"[..], &b""[..])
        );

        assert_eq!(decode(&good[..10]).err(), Some(DecodeError::Short { len: 10 }));
        assert_eq!(
            decode(&record(header(5), b"/etc")).err(),
            Some(DecodeError::PathLen { path_len: 5, full_len: 0, len: OPEN_HEADER_SIZE + 4 })
        );
        let mut both = header(4);
        both.full_len = 3;
        let both = record(both, b"/etcabc");
        let Decoded { path, walked, .. } = decode(&both).unwrap();
        assert_eq!((path, walked), (&b"/etc"[..], &b"abc"[..]));
        let mut bad = header(0);
        bad.syscall = 99;
        assert_eq!(decode(&record(bad, b"")).err(), Some(DecodeError::Syscall(99)));
        bad = header(0);
        bad.kind = 0;
        assert_eq!(decode(&record(bad, b"")).err(), Some(DecodeError::Kind(0)));
    }

    #[test]
    fn full_paths_from_what_the_walk_found() {
        let mut scratch = Vec::new();
        let mut head = header(0);
        let mut full = |code, path: &[u8], walked: &[u8]| {
            head.full = code;
            full_path(&head, path, walked, &mut scratch).map(<[u8]>::to_vec)
        };
        assert_eq!(full(full::FILE, b"x", b"/a/x"), Some(b"/a/x".to_vec()));
        assert_eq!(full(full::FILE_DELETED, b"x", b"/a/x"), Some(b"/a/x (deleted)".to_vec()));
        // os.path.join: one slash between, none added after a root.
        assert_eq!(full(full::START_DIR, b"../y", b"/a/b"), Some(b"/a/b/../y".to_vec()));
        assert_eq!(full(full::START_DIR, b"y", b"/"), Some(b"/y".to_vec()));
        assert_eq!(full(full::START_DIR, b"", b"/a"), Some(b"/a/".to_vec()));
        assert_eq!(full(full::AS_PASSED, b"/nope/x", b""), Some(b"/nope/x".to_vec()));
        assert_eq!(full(full::NOT_ASKED, b"x", b""), None);
        assert_eq!(full(full::TOO_LONG, b"x", b""), None);
        assert!(unresolved(full::RENAMED).is_some() && unresolved(full::FILE).is_none());
    }

    #[test]
    fn devices_in_user_space_encoding() {
        // As Python's os.makedev(major, minor).
        assert_eq!(user_dev(8 << 20 | 1), 0x801);
        assert_eq!(user_dev(52), 0x34);
        assert_eq!(user_dev(259 << 20 | 0x12345), 0x1231_0345);
        for dev in [8 << 20 | 1, 52, 259 << 20 | 0x12345, 0xfff << 20 | 0xf_ffff] {
            assert_eq!(kernel_dev(user_dev(dev)), Some(dev));
        }
        assert_eq!(kernel_dev(1 << 44), None);
    }
}
