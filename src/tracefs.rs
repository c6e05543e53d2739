//! tracefs: finding (and when root, mounting) it, listing tracepoints, parsing `format` files.
use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

/// Where tracefs lives, in the order the kernel documentation gives.
const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
const MOUNT_POINT: &str = "/sys/kernel/tracing";
const MOUNT_HINT: &str = "mount it with `mount -t tracefs nodev /sys/kernel/tracing` (as root)";

/// Overrides where opentrace reads tracepoint formats and lists (a copy of a tracefs tree, or
/// tracefs mounted elsewhere). The kernel attaches through the standard mount in any case.
const ROOT_VAR: &str = "OPENTRACE_TRACEFS";

/// The tracefs root, mounting tracefs at `/sys/kernel/tracing` when it is missing and we may.
pub fn root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(ROOT_VAR) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(found) = find()? {
        return Ok(found);
    }
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::Other(format!("tracefs is not mounted; {MOUNT_HINT}")));
    }
    mount()?;
    find()?.ok_or_else(|| {
        Error::Other(format!("tracefs was mounted at {MOUNT_POINT} but has no events directory"))
    })
}

fn find() -> Result<Option<PathBuf>> {
    for candidate in CANDIDATES {
        let dir = Path::new(candidate);
        match fs::metadata(dir.join("events")) {
            Ok(meta) if meta.is_dir() => return Ok(Some(dir.to_path_buf())),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
                return Err(Error::Permission(format!(
                    "reading tracefs ({candidate}) is not allowed: it is readable by root only; run as \
                     root (loading also needs CAP_BPF and CAP_PERFMON)"
                )));
            }
            Err(_) => {}
        }
    }
    Ok(None)
}

fn mount() -> Result<()> {
    let c = |s: &str| CString::new(s).expect("no NUL in constants");
    let (source, target, fstype) = (c("nodev"), c(MOUNT_POINT), c("tracefs"));
    let rc = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 {
        crate::diag::note(
            crate::diag::Level::Info,
            format!("tracefs was not mounted; mounted it at {MOUNT_POINT}"),
        );
        return Ok(());
    }
    let err = io::Error::last_os_error();
    Err(Error::Other(format!(
        "tracefs is not mounted, and mounting it at {MOUNT_POINT} failed ({}); {MOUNT_HINT}, \
         or in a container start it with /sys/kernel/tracing available",
        crate::error::describe(&err)
    )))
}

/// Every tracepoint as `category:name`, sorted.
pub fn list() -> Result<Vec<String>> {
    let root = root()?;
    let path = root.join("available_events");
    let text = fs::read_to_string(&path).map_err(|e| read_error(&path, &e))?;
    let mut names: Vec<String> = text.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect();
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

fn read_error(path: &Path, err: &io::Error) -> Error {
    Error::kernel(&format!("reading {}", path.display()), err)
}

/// Splits `category:name`, refusing anything that is not two plain path components.
pub fn split_name(full: &str) -> Result<(&str, &str)> {
    let plain = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\0']);
    match full.split_once(':') {
        Some((category, name)) if plain(category) && plain(name) && !name.contains(':') => {
            Ok((category, name))
        }
        _ => Err(Error::TracepointNotFound(format!(
            "{full:?} is not a tracepoint name; names look like \"category:name\", e.g. \
             \"syscalls:sys_enter_openat\" (see `opentrace list`)"
        ))),
    }
}

/// Reads and parses `events/<category>/<name>/format`.
pub fn format(category: &str, name: &str) -> Result<Format> {
    let root = root()?;
    let path = root.join("events").join(category).join(name).join("format");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        // ENOTDIR: "syscalls:enable" names a file of the category, not a tracepoint.
        Err(err) if err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(Error::TracepointNotFound(format!(
                "no tracepoint \"{category}:{name}\" on this kernel ({} does not exist); \
                 `opentrace list` shows the available ones",
                path.display()
            )));
        }
        Err(err) => return Err(read_error(&path, &err)),
    };
    parse(&text).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// The C type as the file writes it, with any array suffix moved here (`char[16]`).
    pub ty: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub name: String,
    pub id: u32,
    pub fields: Vec<Field>,
    pub print_fmt: String,
}

impl Format {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Parses the text of a tracepoint `format` file. Errors name the line (1-based).
pub fn parse(text: &str) -> std::result::Result<Format, String> {
    let (mut name, mut id, mut print_fmt) = (None, None, None);
    let mut fields = Vec::new();
    let mut in_format = false;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let at = |msg: String| format!("line {}: {msg}", index + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("name:") {
            name = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("ID:") {
            id = Some(rest.trim().parse::<u32>().map_err(|_| at(format!("bad ID {:?}", rest.trim())))?);
        } else if line == "format:" {
            in_format = true;
        } else if let Some(rest) = line.strip_prefix("print fmt:") {
            print_fmt = Some(rest.trim().to_owned());
            in_format = false;
        } else if line.starts_with("field:") {
            if !in_format {
                return Err(at("field outside the format: section".into()));
            }
            fields.push(parse_field(line).map_err(at)?);
        } else {
            return Err(at(format!("unexpected text {line:?}")));
        }
    }
    let name = name.filter(|n| !n.is_empty()).ok_or("no name: line")?;
    let id = id.ok_or("no ID: line")?;
    if fields.is_empty() {
        return Err("no fields".into());
    }
    Ok(Format { name, id, fields, print_fmt: print_fmt.ok_or("no print fmt: line")? })
}

/// `field:const char * filename;<TAB>offset:24;<TAB>size:8;<TAB>signed:0;`
fn parse_field(line: &str) -> std::result::Result<Field, String> {
    let (mut decl, mut offset, mut size, mut signed) = (None, None, None, None);
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once(':').ok_or_else(|| format!("bad item {part:?}"))?;
        let number = || value.trim().parse::<u32>().map_err(|_| format!("bad {key} {value:?}"));
        match key.trim() {
            "field" => decl = Some(value.trim()),
            "offset" => offset = Some(number()?),
            "size" => size = Some(number()?),
            "signed" => signed = Some(number()? != 0),
            // Unknown attributes may appear in newer kernels; they do not change the layout.
            _ => {}
        }
    }
    let decl = decl.ok_or("no field declaration")?;
    let (ty, name) = split_declaration(decl).ok_or_else(|| format!("cannot read declaration {decl:?}"))?;
    Ok(Field {
        name,
        ty,
        offset: offset.ok_or("no offset")?,
        size: size.ok_or("no size")?,
        // Old kernels omit `signed:`; unsigned is what they meant for pointers and arrays.
        signed: signed.unwrap_or(false),
    })
}

/// `const char * filename` -> ("const char *", "filename"); `char comm[16]` -> ("char[16]", "comm").
fn split_declaration(decl: &str) -> Option<(String, String)> {
    let (base, suffix) = match decl.strip_suffix(']') {
        Some(_) => decl.rfind('[').map(|i| (&decl[..i], &decl[i..]))?,
        None => (decl, ""),
    };
    let base = base.trim_end();
    let start = base.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
    let (ty, name) = (base[..start].trim(), &base[start..]);
    if name.is_empty() || ty.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some((format!("{ty}{suffix}"), name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENAT: &str = "name: sys_enter_openat\nID: 700\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
        \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
        \tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n\
        \tfield:char comm[16];\toffset:32;\tsize:16;\tsigned:0;\n\
        \tfield:__data_loc char[] msg;\toffset:48;\tsize:4;\tsigned:0;\n\n\
        print fmt: \"filename: 0x%08lx\", ((unsigned long)(REC->filename))\n";

    #[test]
    fn parses_fields_in_order() {
        let f = parse(OPENAT).unwrap();
        assert_eq!((f.name.as_str(), f.id), ("sys_enter_openat", 700));
        let names: Vec<_> = f.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["common_type", "common_pid", "__syscall_nr", "filename", "comm", "msg"]);
        let filename = f.field("filename").unwrap();
        assert_eq!(
            (filename.ty.as_str(), filename.offset, filename.size, filename.signed),
            ("const char *", 24, 8, false)
        );
        assert_eq!(f.field("comm").unwrap().ty, "char[16]");
        assert_eq!(f.field("msg").unwrap().ty, "__data_loc char[]");
        assert!(f.field("common_pid").unwrap().signed);
        assert!(f.print_fmt.starts_with("\"filename"));
    }

    #[test]
    fn rejects_malformed_input() {
        for (text, needle) in [
            ("", "no name"),
            ("name: x\nformat:\n\tfield:int a;\toffset:0;\tsize:4;\n print fmt: \"\"", "no ID"),
            ("name: x\nID: 1\nformat:\n\tfield:int a;\toffset:zero;\tsize:4;\n", "line 4: bad offset"),
            ("name: x\nID: 1\nformat:\n\tfield:int;\toffset:0;\tsize:4;\n", "cannot read declaration"),
            ("name: x\nID: nope\n", "line 2: bad ID"),
            ("name: x\nID: 1\nformat:\nprint fmt: \"\"\n", "no fields"),
            ("hello\n", "line 1: unexpected text"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn split_name_refuses_paths() {
        assert_eq!(split_name("syscalls:sys_enter_openat").unwrap(), ("syscalls", "sys_enter_openat"));
        for bad in ["syscalls", ":x", "x:", "../x:y", "a:b/c", "a:..", "a:b:c"] {
            assert!(split_name(bad).is_err(), "{bad}");
        }
    }
}
