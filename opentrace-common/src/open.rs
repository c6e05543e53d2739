//! The open event: its ring record decoded ([`decode`]), borrowed ([`Open`]) or owned
//! ([`OwnedOpen`]), and [`FIELDS`], the one table of what it shows.
use crate::{
    AT_FDCWD, COMM_LEN,
    abi::{
        RecordKind,
        open::{OPEN_HEADER_SIZE, OpenHeader, STATUS_FIXED_SLOT, Syscall, full},
    },
    comm::COMM_MAX,
    schema::{DICT, Field, Input, REPR, SetError, Value, table},
    text::{Align, Column, Columns, Render},
};

/// An open event, borrowed from a ring record or from an [`OwnedOpen`].
#[derive(Clone, Copy)]
pub struct Open<'a> {
    pub head: &'a OpenHeader,
    pub path: &'a [u8],
    /// The full path, when asked for and resolved (see [`full_path`]).
    pub full: Option<&'a [u8]>,
    /// The path of the task's cgroup under the cgroup2 mount, resolved in user space.
    pub cgroup: Option<&'a [u8]>,
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
    const INLINE: usize = 80;

    pub fn new(bytes: &[u8]) -> SmallBytes {
        if bytes.len() <= Self::INLINE {
            let mut inline = [0; Self::INLINE];
            inline[..bytes.len()].copy_from_slice(bytes);
            SmallBytes::Inline { len: bytes.len() as u8, bytes: inline }
        } else {
            SmallBytes::Heap(bytes.into())
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
    pub path: SmallBytes,
    pub full: Option<SmallBytes>,
    /// Shared by the events of one cgroup.
    pub cgroup: Option<std::sync::Arc<[u8]>>,
}

impl OwnedOpen {
    /// `cgroup` is `open.cgroup`, already shared.
    pub fn new(open: Open<'_>, cgroup: Option<std::sync::Arc<[u8]>>) -> OwnedOpen {
        let mut head = *open.head;
        head.path_len = open.path.len() as u16;
        OwnedOpen { head, path: SmallBytes::new(open.path), full: open.full.map(SmallBytes::new), cgroup }
    }

    pub fn view(&self) -> Open<'_> {
        Open {
            head: &self.head,
            path: self.path.as_bytes(),
            full: self.full.as_ref().map(SmallBytes::as_bytes),
            cgroup: self.cgroup.as_deref(),
        }
    }

    /// The header as the fields show it, without what only the reader used (the record kind,
    /// the diagnostics, the lengths of the pieces a full path was made of): an event and its
    /// copy built from its fields (pickled) compare equal.
    fn canonical(&self) -> OpenHeader {
        let fixed_slot = self.head.ret >= 0 && self.head.status & STATUS_FIXED_SLOT != 0;
        OpenHeader {
            kind: RecordKind::Open as u8,
            status: if fixed_slot { STATUS_FIXED_SLOT } else { 0 },
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
            && self.path == other.path
            && self.full == other.full
            && self.cgroup == other.cgroup
    }
}

impl Eq for OwnedOpen {}

impl core::hash::Hash for OwnedOpen {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        (self.canonical(), &self.path, &self.full, &self.cgroup).hash(state);
    }
}

impl Default for OwnedOpen {
    /// All zero but what zero would misstate: the record kind, and `dfd` (AT_FDCWD).
    fn default() -> Self {
        let head = OpenHeader { kind: RecordKind::Open as u8, dfd: AT_FDCWD, ..OpenHeader::default() };
        OwnedOpen { head, path: SmallBytes::new(b""), full: None, cgroup: None }
    }
}

pub type Get = for<'a> fn(Open<'a>) -> Value<'a>;
pub type Set = fn(&mut OwnedOpen, Input<'_>) -> Result<(), SetError>;

/// A header integer: read as is, settable.
macro_rules! int {
    ($name:ident, $show:expr) => {
        Field {
            name: stringify!($name),
            get: |e| Value::from(e.head.$name),
            set: Some(|o, v| Ok(o.head.$name = v.int(stringify!($name))?)),
            show: $show,
        }
    };
}

table! {
    /// Every field of an open event, in the order `to_dict()` and the JSON lines give them.
    pub static FIELDS: &[Field<Get, Set>];
    /// A field of [`FIELDS`], by name.
    pub enum Attr {
        TimestampNs => int!(timestamp_ns, DICT),
        Pid => int!(pid, DICT | REPR),
        Tid => int!(tid, DICT | REPR),
        Uid => int!(uid, DICT),
        Comm => Field {
            name: "comm",
            get: |e| Value::Text(e.comm()),
            set: Some(set_comm),
            show: DICT | REPR,
        },
        Syscall => Field {
            name: "syscall",
            get: |e| Value::Name(e.syscall()),
            set: Some(set_syscall),
            show: DICT | REPR,
        },
        Path => Field { name: "path", get: |e| Value::Text(e.path), set: Some(set_path), show: DICT | REPR },
        PathBytes => Field { name: "path_bytes", get: |e| Value::Bytes(e.path), set: None, show: 0 },
        Dfd => int!(dfd, DICT),
        Flags => int!(flags, DICT),
        Mode => int!(mode, DICT),
        Ret => int!(ret, DICT),
        Fd => Field { name: "fd", get: |e| Value::from(e.fd()), set: Some(set_fd), show: DICT | REPR },
        Errno => Field {
            name: "errno",
            get: |e| Value::from((e.head.ret < 0).then(|| e.head.ret.saturating_neg())),
            set: None,
            show: DICT | REPR,
        },
        Ppid => int!(ppid, DICT),
        NsPid => int!(ns_pid, DICT),
        CgroupId => int!(cgroup_id, DICT),
        Cgroup => Field {
            name: "cgroup",
            get: |e| e.cgroup.map_or(Value::None, Value::Text),
            set: Some(set_cgroup),
            show: DICT,
        },
        ContainerId => Field {
            name: "container_id",
            get: |e| e.cgroup.and_then(crate::cgroup::container_id).map_or(Value::None, Value::Text),
            set: None,
            show: DICT,
        },
        FullPath => Field {
            name: "full_path",
            get: |e| e.full.map_or(Value::None, Value::Text),
            set: Some(set_full_path),
            show: DICT,
        },
        FullPathBytes => Field {
            name: "full_path_bytes",
            get: |e| e.full.map_or(Value::None,
            Value::Bytes),
            set: None,
            show: 0,
        },
    }
}

/// Which optional columns the CLI shows (opensnoop's `-T`, `-U`, `-e`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ColumnOptions {
    /// `TIME(s)`, counted from this CLOCK_MONOTONIC instant.
    pub timestamp_from: Option<u64>,
    pub uid: bool,
    /// Flags (and the dfd where it is not AT_FDCWD): opensnoop's `-e`.
    pub extended: bool,
    /// The full path in the PATH column (opensnoop's `-F`).
    pub full_path: bool,
    /// A CONTAINER column (`-C`, and with `-e`): the container id, short.
    pub container: bool,
}

/// The CLI's columns: opensnoop's `PID COMM FD ERR PATH` (FD -1 and ERR the errno on failure),
/// with the optional ones in opensnoop's places.
pub fn columns(options: ColumnOptions) -> Columns {
    let column = |title, field: Attr, width, align, none| Column {
        title,
        field: field as usize,
        width,
        align,
        render: Render::Plain,
        none,
        fallback: None,
    };
    let mut columns = Vec::new();
    if let Some(start_ns) = options.timestamp_from {
        columns.push(Column {
            render: Render::Seconds { start_ns },
            ..column("TIME(s)", Attr::TimestampNs, 8, Align::Left, "")
        });
    }
    if options.uid {
        columns.push(column("UID", Attr::Uid, 7, Align::Left, ""));
    }
    columns.push(column("PID", Attr::Pid, 6, Align::Left, ""));
    columns.push(column("COMM", Attr::Comm, 16, Align::Left, ""));
    columns.push(column("FD", Attr::Fd, 3, Align::Right, "-1"));
    columns.push(column("ERR", Attr::Errno, 3, Align::Right, "0"));
    if options.container || options.extended {
        columns.push(Column {
            render: Render::Prefix(12),
            ..column("CONTAINER", Attr::ContainerId, 12, Align::Left, "-")
        });
    }
    if options.extended {
        columns.push(Column { render: Render::Octal, ..column("FLAGS", Attr::Flags, 8, Align::Left, "") });
        columns.push(Column {
            render: Render::Except(i64::from(AT_FDCWD)),
            ..column("DFD", Attr::Dfd, 4, Align::Right, "-")
        });
    }
    if options.full_path {
        // An unresolved full path shows the path as passed, marked.
        columns.push(Column {
            fallback: Some(Attr::Path as usize),
            ..column("PATH", Attr::FullPath, 0, Align::Left, "? ")
        });
    } else {
        columns.push(column("PATH", Attr::Path, 0, Align::Left, ""));
    }
    Columns(columns)
}

fn set_cgroup(o: &mut OwnedOpen, v: Input<'_>) -> Result<(), SetError> {
    o.cgroup = match v {
        Input::None => None,
        v => Some(v.bytes("cgroup")?.into()),
    };
    Ok(())
}

fn set_full_path(o: &mut OwnedOpen, v: Input<'_>) -> Result<(), SetError> {
    o.full = match v {
        Input::None => None,
        v => Some(SmallBytes::new(v.bytes("full_path")?)),
    };
    Ok(())
}

fn set_comm(o: &mut OwnedOpen, v: Input<'_>) -> Result<(), SetError> {
    let comm = v.bytes("comm")?;
    if comm.len() > COMM_MAX || comm.contains(&0) {
        return Err(SetError::Value(format!("comm must be at most {COMM_MAX} bytes with no NUL")));
    }
    o.head.comm = [0; COMM_LEN];
    o.head.comm[..comm.len()].copy_from_slice(comm);
    Ok(())
}

fn set_syscall(o: &mut OwnedOpen, v: Input<'_>) -> Result<(), SetError> {
    let name = v.bytes("syscall")?;
    let syscall = Syscall::ALL.into_iter().find(|s| s.name().as_bytes() == name).ok_or_else(|| {
        let names: Vec<_> = Syscall::ALL.iter().map(|s| s.name()).collect();
        let name = String::from_utf8_lossy(name);
        SetError::Value(format!("syscall must be one of {}, not {name:?}", names.join(", ")))
    })?;
    o.head.syscall = syscall as u8;
    Ok(())
}

/// `fd`: `ret`, or None, which with `ret` >= 0 is an io_uring open into a fixed-file slot (the
/// constructor checks that an int is `ret`, whichever is given first).
fn set_fd(o: &mut OwnedOpen, v: Input<'_>) -> Result<(), SetError> {
    if let Input::None = v {
        o.head.status |= STATUS_FIXED_SLOT;
    } else {
        v.int::<i64>("fd")?;
        o.head.status &= !STATUS_FIXED_SLOT;
    }
    Ok(())
}

fn set_path(o: &mut OwnedOpen, v: Input<'_>) -> Result<(), SetError> {
    let path = v.bytes("path")?;
    if path.len() > u16::MAX as usize {
        return Err(SetError::Value("path is longer than any the kernel reports".into()));
    }
    o.path = SmallBytes::new(path);
    o.head.path_len = path.len() as u16;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::index;

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
        let open = Open { head: &head, path, full: None, cgroup: None };
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
    fn every_field_reads_and_the_settable_ones_write() {
        let mut owned = OwnedOpen::default();
        for (name, input) in [
            ("pid", Input::Int(7)),
            ("ret", Input::Int(-13)),
            ("path", Input::Bytes(b"/x\xff")),
            ("comm", Input::Bytes(b"sh")),
            ("syscall", Input::Bytes(b"creat")),
        ] {
            let field = &FIELDS[index(FIELDS, name).unwrap()];
            (field.set.unwrap())(&mut owned, input).unwrap();
        }
        let get = |name| (FIELDS[index(FIELDS, name).unwrap()].get)(owned.view());
        assert_eq!(get("pid"), Value::UInt(7));
        assert_eq!((get("fd"), get("errno")), (Value::None, Value::Int(13)));
        assert_eq!((get("path"), get("path_bytes")), (Value::Text(b"/x\xff"), Value::Bytes(b"/x\xff")));
        assert_eq!((get("comm"), get("syscall")), (Value::Text(b"sh"), Value::Name("creat")));
    }

    #[test]
    fn setters_refuse_bad_values() {
        let mut owned = OwnedOpen::default();
        let set = |owned: &mut OwnedOpen, name, input| {
            (FIELDS[index(FIELDS, name).unwrap()].set.unwrap())(owned, input)
        };
        let value = |e| matches!(e, SetError::Value(m) if !m.is_empty());
        assert_eq!(
            set(&mut owned, "pid", Input::Int(-1)),
            Err(SetError::Value("pid is out of range: -1".into()))
        );
        assert!(value(set(&mut owned, "comm", Input::Bytes(b"0123456789abcdef")).unwrap_err()));
        assert!(
            matches!(set(&mut owned, "syscall", Input::Bytes(b"read")), Err(SetError::Value(m)) if m.contains("openat2"))
        );
        assert!(matches!(set(&mut owned, "path", Input::Int(5)), Err(SetError::Type(_))));
    }

    #[test]
    fn columns_like_opensnoop() {
        let mut owned = OwnedOpen::default();
        owned.head.timestamp_ns = 1_500_000_000;
        (owned.head.pid, owned.head.uid, owned.head.ret, owned.head.flags) = (42, 1000, 3, 0o100101);
        owned.head.comm[..3].copy_from_slice(b"cat");
        owned.path = SmallBytes::new(b"/etc/passwd");
        let columns = columns(ColumnOptions {
            timestamp_from: Some(500_000_000),
            uid: true,
            extended: true,
            full_path: false,
            container: false,
        });
        assert_eq!(
            columns.header(),
            "TIME(s)  UID     PID    COMM              FD ERR CONTAINER    FLAGS     DFD PATH\n"
        );
        let mut out = String::new();
        columns.write(|i| (FIELDS[i].get)(owned.view()), &mut out);
        owned.head.ret = -2;
        owned.path = SmallBytes::new(b"/nope");
        columns.write(|i| (FIELDS[i].get)(owned.view()), &mut out);
        assert_eq!(
            out,
            "1.000    1000    42     cat                3   0 -            00100101    - /etc/passwd\n\
             1.000    1000    42     cat               -1   2 -            00100101    - /nope\n"
        );
        let plain = super::columns(ColumnOptions::default());
        assert_eq!(plain.header(), "PID    COMM              FD ERR PATH\n");
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
    fn the_full_path_column_marks_what_is_unresolved() {
        let columns = columns(ColumnOptions { full_path: true, ..ColumnOptions::default() });
        let mut owned = OwnedOpen { path: SmallBytes::new(b"rel"), ..OwnedOpen::default() };
        let mut out = String::new();
        columns.write(|i| (FIELDS[i].get)(owned.view()), &mut out);
        owned.full = Some(SmallBytes::new(b"/abs/rel"));
        columns.write(|i| (FIELDS[i].get)(owned.view()), &mut out);
        let lines: Vec<_> = out.lines().collect();
        assert!(lines[0].ends_with("   0 ? rel") && lines[1].ends_with("   0 /abs/rel"), "{lines:?}");
    }

    #[test]
    fn names_are_unique() {
        for (i, field) in FIELDS.iter().enumerate() {
            assert_eq!(index(FIELDS, field.name), Some(i));
        }
    }

    #[test]
    fn each_typed_index_names_its_row() {
        assert_eq!(Attr::ALL.len(), FIELDS.len());
        for (i, attr) in Attr::ALL.iter().enumerate() {
            let snake: String = format!("{attr:?}")
                .chars()
                .enumerate()
                .flat_map(|(at, c)| {
                    let lower = c.to_ascii_lowercase();
                    if c.is_ascii_uppercase() && at > 0 { vec!['_', lower] } else { vec![lower] }
                })
                .collect();
            assert_eq!((*attr as usize, attr.field().name), (i, snake.as_str()));
        }
    }
}
