//! cgroup v2 on this machine: where the hierarchy is mounted, a cgroup's id and depth for the
//! `cgroup` filter, and a cgroup id's path for events (resolved as events are read, while the
//! cgroup still exists, and kept: a cgroup removed since still has its name), with what the
//! runtime of the container it names says of it (see `containers`).
use std::{
    collections::HashMap,
    ffi::{CString, OsStr},
    fs,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::{Path, PathBuf},
    sync::Arc,
};

use opentrace_common::cgroup::{Container, cgroup2_mount};

use crate::{
    containers,
    error::{Error, Result},
};

/// The mount point of the cgroup2 hierarchy's root, from /proc/self/mountinfo. The root cgroup's
/// directory is the one without `cgroup.type` (a file every other cgroup has), which tells it
/// from a cgroup namespace's own root mounted inside it.
pub fn mount() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let is_root = |m: &[u8]| !Path::new(OsStr::from_bytes(m)).join("cgroup.type").exists();
    cgroup2_mount(&mountinfo, is_root).map(|m| PathBuf::from(OsStr::from_bytes(&m)))
}

/// The id (its directory's inode) and depth (0 for the root) of the cgroup `path` names: a path
/// under the cgroup2 mount ("/system.slice/x.scope"), or the same with the mount point in front.
pub fn filter(path: &str) -> Result<(u64, u32)> {
    let mount = mount().ok_or_else(|| {
        Error::Other(
            "cgroup: this machine has no cgroup2 hierarchy mounted (mount -t cgroup2 none /sys/fs/cgroup)"
                .into(),
        )
    })?;
    let given = Path::new(path);
    let relative = given.strip_prefix(&mount).unwrap_or(given);
    let relative = relative.strip_prefix("/").unwrap_or(relative);
    if relative.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return Err(Error::Invalid(format!(
            "cgroup: {path:?} is not a plain path under {}",
            mount.display()
        )));
    }
    let dir = mount.join(relative);
    match fs::metadata(&dir) {
        Ok(meta) if meta.is_dir() => Ok((meta.ino(), relative.components().count() as u32)),
        _ if given.is_absolute() && on_cgroup_v1(given) => Err(Error::Invalid(format!(
            "cgroup: {path:?} is in a cgroup v1 hierarchy; only cgroup v2 paths work: under {} \
             (or relative to it, e.g. /system.slice)",
            mount.display()
        ))),
        _ => Err(Error::Invalid(format!(
            "cgroup: there is no cgroup {path:?} ({} does not exist)",
            dir.display()
        ))),
    }
}

/// Whether `path` is in a cgroup v1 hierarchy (on a hybrid host, /sys/fs/cgroup/memory/...).
fn on_cgroup_v1(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: a NUL-terminated path and room for one `struct statfs`, read only once filled.
    unsafe {
        libc::statfs(c.as_ptr(), stat.as_mut_ptr()) == 0
            && stat.assume_init().f_type == libc::CGROUP_SUPER_MAGIC
    }
}

/// cgroup ids to their paths under the mount, looked up once each.
pub struct Names {
    /// The cgroup2 mount, opened: handles are resolved relative to it.
    mount: Option<(OwnedFd, Vec<u8>)>,
    known: HashMap<u64, Option<Arc<[u8]>>>,
    /// The last cgroup asked for: runs of events from one cgroup skip the table.
    last: Option<(u64, Arc<[u8]>)>,
    containers: containers::Lookup,
}

/// `struct file_handle` for a kernfs node (cgroup2's export format: the node's 64-bit id).
#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

const FILEID_KERNFS: i32 = 0xfe;

/// Cgroups `Names::learn_existing` learns at most.
const MAX_WALKED: usize = 65_536;

impl Names {
    pub fn new() -> Names {
        let mount = mount().and_then(|path| {
            let c = CString::new(path.as_os_str().as_bytes()).ok()?;
            // SAFETY: a NUL-terminated path; the fd is owned right away.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
            // SAFETY: a new fd that nothing else owns.
            (fd >= 0).then(|| (unsafe { OwnedFd::from_raw_fd(fd) }, path.as_os_str().as_bytes().to_vec()))
        });
        Names { mount, known: HashMap::new(), last: None, containers: containers::Lookup::default() }
    }

    /// The path of cgroup `id` under the mount ("/" for the root), or None if it is gone.
    pub fn get(&mut self, id: u64) -> Option<Arc<[u8]>> {
        if let Some((last, path)) = &self.last
            && *last == id
        {
            return Some(path.clone());
        }
        if id == 0 {
            return None;
        }
        let found = match self.known.get(&id) {
            Some(known) => known.clone(),
            None => {
                let found = self.look_up(id).map(Arc::from);
                // A cgroup found is kept (its name outlives it); one not found may appear: not kept.
                if found.is_some() {
                    self.known.insert(id, found.clone());
                }
                found
            }
        };
        self.last = found.clone().map(|path| (id, path));
        found
    }

    /// What the runtime of the container that cgroup `id` (at `path`) names says of it, as far as
    /// known now (never waits: see `containers`).
    pub fn container(&mut self, id: u64, path: &[u8]) -> Option<Arc<Container>> {
        self.containers.get(id, path)
    }

    /// Learns every cgroup there is now, by walking the mount (a cgroup's id is its directory's
    /// inode), at most [`MAX_WALKED`] of them: one removed before it is first asked for is still
    /// named. For counts read once a second, called once the programs are attached (cgroups made
    /// after that are learned from the kernel's record of each).
    pub fn learn_existing(&mut self) {
        let Some((_, mount)) = &self.mount else { return };
        let root = PathBuf::from(OsStr::from_bytes(mount));
        let mut dirs = vec![root.clone()];
        let mut walked = 0;
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                let path = entry.path();
                let Ok(under) = path.strip_prefix(&root) else { continue };
                let name = [b"/", under.as_os_str().as_bytes()].concat();
                self.known.entry(meta.ino()).or_insert_with(|| Some(Arc::from(name)));
                dirs.push(path);
                walked += 1;
                if walked >= MAX_WALKED {
                    return;
                }
            }
        }
    }

    /// Learns a cgroup's path (from the kernel, as it is made or renamed).
    pub fn insert(&mut self, id: u64, path: &[u8]) {
        let path: &[u8] = if path.is_empty() { b"/" } else { path };
        self.known.insert(id, Some(Arc::from(path)));
        if self.last.as_ref().is_some_and(|(last, _)| *last == id) {
            self.last = None; // renamed
        }
    }

    /// open_by_handle_at on the mount: the cgroup's directory, then its path from /proc/self/fd.
    fn look_up(&self, id: u64) -> Option<Vec<u8>> {
        let (mount_fd, mount) = self.mount.as_ref()?;
        let mut handle = KernfsHandle { handle_bytes: 8, handle_type: FILEID_KERNFS, id };
        // SAFETY: a handle of the size it says; the fd is owned right away.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                mount_fd.as_raw_fd(),
                &raw mut handle,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: a new fd that nothing else owns.
        let dir = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let link = fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()?;
        let link = link.as_os_str().as_bytes();
        let rest = link.strip_prefix(mount.as_slice())?;
        Some(if rest.is_empty() { b"/".to_vec() } else { rest.to_vec() })
    }
}
