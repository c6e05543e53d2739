//! tracefs: finding it (and, for a watcher run as root, mounting it), listing tracepoints and
//! reading their `format` files (parsed by `opentrace_common::tracefs`).
use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use std::sync::Arc;

use opentrace_common::{
    tracefs::{self, Format},
    tracepoint::{self, Schema},
};

use crate::{
    diag,
    error::{Error, Result},
};

/// Where tracefs lives, in the order the kernel documentation gives.
const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
const MOUNT_POINT: &str = "/sys/kernel/tracing";
const MOUNT_HINT: &str = "mount it with `mount -t tracefs nodev /sys/kernel/tracing` (as root)";

/// Overrides where opentrace reads tracepoint formats and lists (a copy of a tracefs tree, or
/// tracefs mounted elsewhere). The kernel attaches through the standard mount in any case.
const ROOT_VAR: &str = "OPENTRACE_TRACEFS";

/// The tracefs root for reading. Listing and reading formats never mount anything.
pub fn root() -> Result<PathBuf> {
    if let Some(dir) = overridden()? {
        return Ok(dir);
    }
    find()?.ok_or_else(|| Error::Other(format!("tracefs is not mounted; {MOUNT_HINT}")))
}

/// Makes sure tracefs is mounted where the kernel's attach path (and aya) looks for it, mounting
/// it at `/sys/kernel/tracing` when it is missing and we are root.
pub fn ensure_mounted() -> Result<()> {
    if find()?.is_some() {
        return Ok(());
    }
    // SAFETY: a plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::Other(format!("tracefs is not mounted; {MOUNT_HINT}")));
    }
    mount()?;
    match find()? {
        Some(_) => Ok(()),
        None => {
            Err(Error::Other(format!("tracefs was mounted at {MOUNT_POINT} but has no events directory")))
        }
    }
}

/// `$OPENTRACE_TRACEFS`, checked: it must name a directory with an `events` directory.
fn overridden() -> Result<Option<PathBuf>> {
    let Some(dir) = std::env::var_os(ROOT_VAR) else { return Ok(None) };
    if dir.is_empty() {
        return Err(Error::Other(format!(
            "{ROOT_VAR} is set but empty; unset it to use the mounted tracefs, or set it to a tracefs \
             directory (one with an events/ directory)"
        )));
    }
    let dir = PathBuf::from(dir);
    match fs::metadata(dir.join("events")) {
        Ok(meta) if meta.is_dir() => Ok(Some(dir)),
        _ => Err(Error::Other(format!(
            "{ROOT_VAR}={} is not a tracefs directory (it has no events/ directory); unset it to use \
             the mounted tracefs",
            dir.display()
        ))),
    }
}

fn find() -> Result<Option<PathBuf>> {
    for candidate in CANDIDATES {
        let dir = Path::new(candidate);
        match fs::metadata(dir.join("events")) {
            Ok(meta) if meta.is_dir() => return Ok(Some(dir.to_path_buf())),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
                return Err(Error::Permission(format!(
                    "reading tracefs ({candidate}) is not allowed: it is mounted readable by root only; \
                     run as root, or let this user read it (e.g. `mount -o remount,gid=<group>,mode=0750 \
                     {candidate}` for a group this user is in; loading also needs CAP_BPF and CAP_PERFMON)"
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
    // SAFETY: NUL-terminated strings that outlive the call; no data argument.
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
    tracefs::split_name(full).ok_or_else(|| {
        Error::TracepointNotFound(format!(
            "{full:?} is not a tracepoint name; names look like \"category:name\", e.g. \
             \"syscalls:sys_enter_openat\" (see `opentrace list`)"
        ))
    })
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
    tracefs::parse(&text).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
}

/// The schemas of the tracepoints to watch, each with whether it was named (else a glob matched
/// it): one the program cannot use is an error if named, and skipped with a note if matched.
pub fn schemas(names: Vec<(String, bool)>) -> Result<Vec<(Arc<Schema>, bool)>> {
    let mut schemas = Vec::new();
    let mut skipped = Vec::new();
    for (name, named) in names {
        let (category, event) = split_name(&name)?;
        let schema = format(category, event)
            .and_then(|format| tracepoint::schema(category, &format).map_err(Error::Other));
        match schema {
            Ok(schema) => schemas.push((Arc::new(schema), named)),
            Err(err) if named => return Err(Error::Invalid(format!("{name} cannot be watched: {err}"))),
            Err(err) => skipped.push(format!("{name} ({err})")),
        }
    }
    if !skipped.is_empty() {
        diag::note(
            diag::Level::Info,
            format!("{} matching tracepoints cannot be watched: {}", skipped.len(), skipped.join("; ")),
        );
    }
    Ok(schemas)
}
