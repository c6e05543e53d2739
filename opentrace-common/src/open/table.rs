//! [`FIELDS`], the one table of what an open event shows (its attributes, `to_dict()`, `repr`,
//! pickling, the JSON lines), with [`Attr`] naming its rows, how an event built by hand sets
//! them, and the CLI's columns over them.
use std::sync::Arc;

use super::{Open, OwnedOpen};
use crate::{
    AT_FDCWD, COMM_LEN,
    abi::open::{FileId, OpenHeader, STATUS_DEV_UNSURE, STATUS_FILE_ID, STATUS_FIXED_SLOT, Syscall},
    cgroup::Container,
    comm::COMM_MAX,
    schema::{DICT, Field, Input, Member, REPR, SetError, Value, member_kind, table},
    text::{Align, Column, Columns, Fallback, Render},
};

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
            member: Some(Member {
                offset: core::mem::offset_of!(OpenHeader, $name),
                kind: member_kind(|h: &OpenHeader| &h.$name),
            }),
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
            member: None,
        },
        Syscall => Field {
            name: "syscall",
            get: |e| Value::Name(e.syscall()),
            set: Some(set_syscall),
            show: DICT | REPR,
            member: None,
        },
        Path => Field { name: "path", get: |e| Value::Text(e.path), set: Some(set_path), show: DICT | REPR, member: None },
        PathBytes => Field { name: "path_bytes", get: |e| Value::Bytes(e.path), set: None, show: 0, member: None },
        Dfd => int!(dfd, DICT),
        Flags => int!(flags, DICT),
        Mode => int!(mode, DICT),
        Ret => int!(ret, DICT),
        Fd => Field { name: "fd", get: |e| Value::from(e.fd()), set: Some(set_fd), show: DICT | REPR, member: None },
        Errno => Field {
            name: "errno",
            get: |e| Value::from((e.head.ret < 0).then(|| e.head.ret.saturating_neg())),
            set: None,
            show: DICT | REPR,
            member: None,
        },
        Inode => Field {
            name: "inode",
            get: |e| Value::from(e.file().map(|f| f.inode)),
            set: Some(set_inode),
            show: DICT,
            member: None,
        },
        Dev => Field { name: "dev", get: |e| Value::from(e.dev()), set: Some(set_dev), show: DICT, member: None },
        MntId => Field {
            name: "mnt_id",
            get: |e| Value::from(e.file().map(|f| f.mnt_id)),
            set: Some(set_mnt_id),
            show: DICT,
            member: None,
        },
        Ppid => int!(ppid, DICT),
        NsPid => int!(ns_pid, DICT),
        CgroupId => int!(cgroup_id, DICT),
        Cgroup => Field {
            name: "cgroup",
            get: |e| e.cgroup.map_or(Value::None, Value::Text),
            set: Some(set_cgroup),
            show: DICT,
            member: None,
        },
        ContainerId => Field {
            name: "container_id",
            get: |e| e.cgroup.and_then(crate::cgroup::container_id).map_or(Value::None, Value::Text),
            set: None,
            show: DICT,
            member: None,
        },
        ContainerName => Field {
            name: "container_name",
            get: |e| text(e.container.and_then(|c| c.name.as_deref())),
            set: Some(|o, v| set_container(o, v, "container_name", |c| &mut c.name)),
            show: DICT,
            member: None,
        },
        ContainerImage => Field {
            name: "container_image",
            get: |e| text(e.container.and_then(|c| c.image.as_deref())),
            set: Some(|o, v| set_container(o, v, "container_image", |c| &mut c.image)),
            show: DICT,
            member: None,
        },
        Pod => Field {
            name: "pod",
            get: |e| text(e.container.and_then(|c| c.pod.as_deref())),
            set: Some(|o, v| set_container(o, v, "pod", |c| &mut c.pod)),
            show: DICT,
            member: None,
        },
        Namespace => Field {
            name: "namespace",
            get: |e| text(e.container.and_then(|c| c.namespace.as_deref())),
            set: Some(|o, v| set_container(o, v, "namespace", |c| &mut c.namespace)),
            show: DICT,
            member: None,
        },
        FullPath => Field {
            name: "full_path",
            get: |e| e.full.map_or(Value::None, Value::Text),
            set: Some(set_full_path),
            show: DICT,
            member: None,
        },
        FullPathBytes => Field {
            name: "full_path_bytes",
            get: |e| e.full.map_or(Value::None,
            Value::Bytes),
            set: None,
            show: 0,
            member: None,
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
    /// A CONTAINER column (`-C`, and with `-e`): the container's name, else its id, short.
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
        // The name is known once the runtime has answered (asynchronously).
        let short_id = Fallback { field: Attr::ContainerId as usize, mark: "", render: Render::Prefix(12) };
        columns.push(Column {
            fallback: Some(short_id),
            ..column("CONTAINER", Attr::ContainerName, 12, Align::Left, "-")
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
        let as_passed = Fallback { field: Attr::Path as usize, mark: "? ", render: Render::Plain };
        columns
            .push(Column { fallback: Some(as_passed), ..column("PATH", Attr::FullPath, 0, Align::Left, "") });
    } else {
        columns.push(column("PATH", Attr::Path, 0, Align::Left, ""));
    }
    Columns(columns)
}

fn text(bytes: Option<&[u8]>) -> Value<'_> {
    bytes.map_or(Value::None, Value::Text)
}

/// One of the container's fields, of an event built by hand; a container with none left is none.
fn set_container(
    o: &mut OwnedOpen,
    v: Input<'_>,
    name: &str,
    field: fn(&mut Container) -> &mut Option<Box<[u8]>>,
) -> Result<(), SetError> {
    let value = match v {
        Input::None => None,
        v => Some(v.bytes(name)?.into()),
    };
    *field(Arc::make_mut(o.container.get_or_insert_default())) = value;
    if o.container.as_deref() == Some(&Container::default()) {
        o.container = None;
    }
    Ok(())
}

fn set_cgroup(o: &mut OwnedOpen, v: Input<'_>) -> Result<(), SetError> {
    o.cgroup = match v {
        Input::None => None,
        v => Some(v.bytes("cgroup")?.into()),
    };
    Ok(())
}

fn set_full_path(o: &mut OwnedOpen, v: Input<'_>) -> Result<(), SetError> {
    match v {
        Input::None => o.set_full(None),
        v => o.set_full(Some(v.bytes("full_path")?)),
    }
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
    o.set_path(path);
    Ok(())
}

/// `inode`, `dev`, `mnt_id` of an event built by hand: a value says the file is known (None,
/// that it is not; for `dev`, that its filesystem reports another device to `stat`).
fn set_inode(o: &mut OwnedOpen, v: Input<'_>) -> Result<(), SetError> {
    set_file_member(o, v, "inode", |file| &mut file.inode)
}

fn set_mnt_id(o: &mut OwnedOpen, v: Input<'_>) -> Result<(), SetError> {
    set_file_member(o, v, "mnt_id", |file| &mut file.mnt_id)
}

fn set_file_member<T: TryFrom<i128>>(
    o: &mut OwnedOpen,
    v: Input<'_>,
    name: &str,
    member: fn(&mut FileId) -> &mut T,
) -> Result<(), SetError> {
    if !matches!(v, Input::None) {
        *member(&mut o.head.file) = v.int(name)?;
        o.head.status |= STATUS_FILE_ID;
    }
    Ok(())
}

fn set_dev(o: &mut OwnedOpen, v: Input<'_>) -> Result<(), SetError> {
    if matches!(v, Input::None) {
        o.head.status |= STATUS_DEV_UNSURE;
        return Ok(());
    }
    let dev: u64 = v.int("dev")?;
    o.head.file.dev = super::kernel_dev(dev)
        .ok_or_else(|| SetError::Value(format!("dev {dev} is not a device number this kernel can hold")))?;
    o.head.status = (o.head.status | STATUS_FILE_ID) & !STATUS_DEV_UNSURE;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::index;

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
        owned.set_path(b"/etc/passwd");
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
        owned.set_path(b"/nope");
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
    fn the_full_path_column_marks_what_is_unresolved() {
        let columns = columns(ColumnOptions { full_path: true, ..ColumnOptions::default() });
        let mut owned = OwnedOpen::default();
        owned.set_path(b"rel");
        let mut out = String::new();
        columns.write(|i| (FIELDS[i].get)(owned.view()), &mut out);
        owned.set_full(Some(b"/abs/rel"));
        columns.write(|i| (FIELDS[i].get)(owned.view()), &mut out);
        let lines: Vec<_> = out.lines().collect();
        assert!(lines[0].ends_with("   0 ? rel") && lines[1].ends_with("   0 /abs/rel"), "{lines:?}");
    }

    #[test]
    fn the_container_column_shows_the_name_else_the_short_id() {
        let columns = columns(ColumnOptions { container: true, ..ColumnOptions::default() });
        let id = "0123456789abcdef".repeat(4);
        let mut owned = OwnedOpen::default();
        owned.head.comm[..3].copy_from_slice(b"cat");
        let mut out = String::new();
        columns.write(|i| (FIELDS[i].get)(owned.view()), &mut out);
        owned.cgroup = Some(Arc::from(format!("/docker/{id}").as_bytes()));
        columns.write(|i| (FIELDS[i].get)(owned.view()), &mut out);
        let set = |owned: &mut OwnedOpen, name, input| {
            (FIELDS[index(FIELDS, name).unwrap()].set.unwrap())(owned, input)
        };
        set(&mut owned, "container_name", Input::Bytes(b"web")).unwrap();
        columns.write(|i| (FIELDS[i].get)(owned.view()), &mut out);
        let cells: Vec<_> = out.lines().map(|l| l.split_whitespace().nth(4).unwrap()).collect();
        assert_eq!(cells, ["-", &id[..12], "web"]);
    }

    #[test]
    fn container_fields_set_by_hand() {
        let mut owned = OwnedOpen::default();
        let set = |owned: &mut OwnedOpen, name, input| {
            (FIELDS[index(FIELDS, name).unwrap()].set.unwrap())(owned, input)
        };
        set(&mut owned, "pod", Input::Bytes(b"web-0")).unwrap();
        set(&mut owned, "namespace", Input::Bytes(b"shop")).unwrap();
        let view = owned.view();
        let get = |name| (FIELDS[index(FIELDS, name).unwrap()].get)(view);
        assert_eq!((get("pod"), get("namespace")), (Value::Text(b"web-0"), Value::Text(b"shop")));
        assert_eq!((get("container_name"), get("container_image")), (Value::None, Value::None));
        set(&mut owned, "pod", Input::None).unwrap();
        assert!(owned.container.is_some());
        set(&mut owned, "namespace", Input::None).unwrap();
        // Nothing known is no container, as an event read from the ring has it.
        assert!(owned.container.is_none());
        assert!(matches!(set(&mut owned, "container_image", Input::Int(3)), Err(SetError::Type(_))));
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
