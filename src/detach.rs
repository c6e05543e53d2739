//! Detaching many tracepoints without waiting for the kernel. Each perf-event tracepoint a
//! program leaves waits for an RCU grace period (~40 ms here), one tracepoint after the other
//! under a kernel mutex: 13 s for every syscall tracepoint. A process made for it takes the last
//! references to the links and pays that wait, instead of the caller (and instead of the
//! caller's exit, which would wait for it too).
use std::{fs, os::fd::RawFd};

/// The fds of this process's BPF links (and of perf events, which older kernels attach programs
/// through): what keeps programs attached. Every watcher's: the holder only holds copies.
pub fn process_links() -> Vec<RawFd> {
    let Ok(dir) = fs::read_dir("/proc/self/fd") else { return Vec::new() };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let target = fs::read_link(entry.path()).ok()?;
        let target = target.as_os_str().as_encoded_bytes();
        (target == b"anon_inode:bpf_link" || target == b"anon_inode:[perf_event]")
            .then(|| entry.file_name().to_str()?.parse().ok())?
    })
    .collect()
}

/// Starts a process (a grandchild: reparented to init or the nearest subreaper at once, so that
/// nobody here need reap it; only in a process that is itself a subreaper, or PID 1 of a
/// namespace, does it stay a zombie of ours until we exit) that holds copies of `links` and
/// nothing else of ours. Returns the write end of a
/// pipe: once the caller has dropped its own copies of the links, closing it tells the process to
/// close them (paying the kernel's wait) and exit. None if no such process could be made.
pub fn hand_over(links: &[RawFd]) -> Option<RawFd> {
    let mut pipe = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return None;
    }
    let [read, write] = pipe;
    // What the holder keeps, sorted, made before forking (no allocation after it).
    let mut keep: Vec<u32> =
        links.iter().chain([&read]).filter(|&&fd| fd >= 0).map(|&fd| fd as u32).collect();
    keep.sort_unstable();
    // SAFETY: fork; the children only make async-signal-safe calls (fork, close, close_range,
    // read, _exit) and never return.
    match unsafe { libc::fork() } {
        // SAFETY: as above: the first child.
        0 => unsafe {
            match libc::fork() {
                0 => hold(&keep, read, write),
                -1 => libc::_exit(1),
                _ => libc::_exit(0),
            }
        },
        -1 => {
            // SAFETY: our own pipe's fds.
            unsafe {
                libc::close(read);
                libc::close(write);
            }
            None
        }
        child => {
            // SAFETY: the first child exits at once; reap it. Its child is someone else's now.
            let (reaped, status) = unsafe {
                libc::close(read);
                let mut status = 0;
                let mut reaped = libc::waitpid(child, &mut status, 0);
                while reaped == -1 && *libc::__errno_location() == libc::EINTR {
                    reaped = libc::waitpid(child, &mut status, 0);
                }
                (reaped, status)
            };
            // Not reaped (SIGCHLD ignored, or reaped elsewhere): whether the holder exists is not
            // known, and it is not relied on (if it does, it lets go once `write` is closed).
            if reaped == child && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                return Some(write);
            }
            // The holder could not be made: the caller detaches itself.
            // SAFETY: our own pipe's write end.
            unsafe { libc::close(write) };
            None
        }
    }
}

/// In the holding process: close every fd but `keep` (the links and the pipe's read end), wait
/// for the pipe's end of file, and exit (closing the links).
///
/// # Safety
/// Only in a child just forked: it closes fds that other code of the process may think it owns.
unsafe fn hold(keep: &[u32], read: RawFd, write: RawFd) -> ! {
    // SAFETY: close, close_range and read are syscalls, safe after fork.
    unsafe {
        // First of all, whatever happens to close_range: with it open, no end of file would come.
        libc::close(write);
        let mut from = 0u32;
        for &fd in keep {
            if fd > from {
                close_between(from, fd - 1);
            }
            from = fd + 1;
        }
        close_between(from, u32::MAX);
        let mut byte = 0u8;
        while libc::read(read, (&raw mut byte).cast(), 1) == -1 && *libc::__errno_location() == libc::EINTR {}
        libc::_exit(0)
    }
}

/// Closes the fds `first..=last`: close_range, or one close per fd up to the fd limit where it is
/// refused (a seccomp filter, an old kernel).
///
/// # Safety
/// As [`hold`].
unsafe fn close_between(first: u32, last: u32) {
    // SAFETY: syscalls on fds this process owns alone.
    unsafe {
        if libc::syscall(libc::SYS_close_range, first, last, 0) == 0 {
            return;
        }
        let limit = libc::sysconf(libc::_SC_OPEN_MAX).clamp(0, 1 << 20) as u32;
        for fd in first..=last.min(limit) {
            libc::close(fd as i32);
        }
    }
}
