//! Filling the followed-process set of a pid watcher (the `TRACKED` map) with the watched process
//! and, with `descendants`, every process already descended from it. Processes forked from now on
//! are added by the programs; the order below leaves no gap for a fork to slip through.
use std::{
    collections::VecDeque,
    fs,
    os::fd::{FromRawFd, OwnedFd, RawFd},
};

use aya::maps::{HashMap, MapData};

use crate::error::{Error, Result};

pub type Tracked = HashMap<MapData, u32, u8>;

/// A pidfd: a handle on one process that a later process reusing its number cannot take over.
struct Pidfd(OwnedFd);

impl Pidfd {
    /// `None` if there is no such process (now).
    fn open(pid: u32) -> Option<Pidfd> {
        // SAFETY: a plain syscall; the fd is owned right away.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        // SAFETY: a new fd that nothing else owns.
        (fd >= 0).then(|| Pidfd(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }

    /// Whether the process has exited (a pidfd becomes readable then).
    fn exited(&self) -> bool {
        use std::os::fd::AsRawFd as _;
        let mut pfd = libc::pollfd { fd: self.0.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut pfd, 1, 0) > 0 }
    }
}

/// The parent (ppid) of `pid` as /proc says, if it is still there.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": the comm may hold spaces and parentheses.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// The children of every thread of `pid` (/proc/PID/task/TID/children).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut children = Vec::new();
    for task in tasks.flatten() {
        if let Ok(list) = fs::read_to_string(task.path().join("children")) {
            children.extend(list.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
        }
    }
    children
}

/// Puts `root` (and with `descendants` its current descendants) into `tracked`. The programs
/// that add forked children and remove exited processes are attached already, so: a process is
/// put in, then its children are listed (a child forked after it was put in is added by the
/// programs; one forked before is in the list); and once in, a process that has exited meanwhile
/// (its exit came before it was in the set) is taken out again.
pub fn seed(tracked: &mut Tracked, root: u32, descendants: bool) -> Result<()> {
    let Some(root_fd) = Pidfd::open(root) else {
        return Err(Error::Invalid(format!("pid: there is no process {root} (it has exited, or never was)")));
    };
    let mut followed = vec![(root, root_fd)];
    insert(tracked, root)?;
    let mut queue = VecDeque::from([root]);
    while descendants && let Some(parent) = queue.pop_front() {
        for child in children_of(parent) {
            // The number may have been reused since the list was read: a pidfd pins the process,
            // and its parent must still be the one it was listed under.
            let Some(fd) = Pidfd::open(child) else { continue };
            if parent_of(child) != Some(parent) {
                continue;
            }
            insert(tracked, child)?;
            followed.push((child, fd));
            queue.push_back(child);
        }
    }
    for (pid, fd) in &followed {
        if fd.exited() {
            let _ = tracked.remove(pid);
        }
    }
    Ok(())
}

fn insert(tracked: &mut Tracked, pid: u32) -> Result<()> {
    tracked.insert(pid, 1, 0).map_err(|e| Error::kernel("adding a process to follow", &e))
}

/// Whether no followed process is left.
pub fn none_left(tracked: &Tracked) -> bool {
    tracked.keys().next().is_none()
}
