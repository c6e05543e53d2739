//! Attached programs: attaching one to a tracepoint (with the error a user can act on), and
//! holding the links, whose drop detaches them all at once.
use std::os::fd::OwnedFd;

use aya::{
    Ebpf,
    programs::{TracePoint, raw_trace_point::RawTracePointLink, trace_point::TracePointLink},
};

use crate::error::{Error, Result};

/// One attached program, held for its `Drop` (which detaches it).
#[expect(dead_code, reason = "held until dropped: dropping a link detaches its program")]
pub enum Link {
    Tracepoint(TracePointLink),
    Raw(RawTracePointLink),
    /// A tracepoint link with a cookie (see `sys`).
    Cookie(OwnedFd),
}

/// The attached programs. Dropping detaches them, all at once (see `Drop`).
pub struct Attached {
    pub links: Vec<Link>,
    /// What is watched: the syscalls (and `io_uring`), or the tracepoints.
    pub names: Vec<String>,
    /// The path filter's directories, open (`O_PATH`) while the programs compare files with
    /// them: an open directory's dentry and mount are not freed (and their addresses not reused).
    /// Closed after the links are dropped.
    pub _held: Vec<std::fs::File>,
    /// The programs and the maps not taken out of it; dropped after the links.
    pub _ebpf: Ebpf,
}

impl Attached {
    /// Takes the map `name` out of the object (counting mode's map: the reader reads it).
    pub fn take_map(&mut self, name: &str) -> Option<aya::maps::Map> {
        self._ebpf.take_map(name)
    }

    /// How many programs are attached (links).
    pub fn len(&self) -> usize {
        self.links.len()
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        // Each detach waits for an RCU tasks-trace grace period (~70 ms here); one after the other,
        // eight of them made close() take over half a second. In parallel they share one.
        // Tracepoints with cookies are detached one at a time by the kernel anyway (or were
        // handed over: see `detach`).
        self.links.retain(|l| !matches!(l, Link::Cookie(_)));
        std::thread::scope(|scope| {
            for link in self.links.drain(..) {
                // If no thread can be started, the closure (and the link) is dropped right here.
                let _ = std::thread::Builder::new().spawn_scoped(scope, move || drop(link));
            }
        });
    }
}

/// Attaches `program` to the tracepoint `category:name`.
pub fn attach(program: &mut TracePoint, category: &str, name: &str) -> Result<Link> {
    program
        .attach(category, name)
        .and_then(|id| program.take_link(id))
        .map(Link::Tracepoint)
        .map_err(|e| attach_error(category, name, &e))
}

/// Why attaching to `category:name` failed. The kernel allows 64 programs per tracepoint, shared
/// by every tool on the machine, and says E2BIG when they are taken.
pub fn attach_error(category: &str, name: &str, err: &(dyn std::error::Error + 'static)) -> Error {
    if crate::error::os_code(err) == Some(libc::E2BIG) {
        return Error::Other(format!(
            "the tracepoint {category}:{name} already has the most programs the kernel allows on one \
             tracepoint (64, shared by every tracer on this machine: other opentrace watchers, bpftrace, \
             ...); close some of them (`bpftool perf` lists them)"
        ));
    }
    Error::kernel(&format!("attaching to the tracepoint {category}:{name}"), err)
}
