//! Detaching many tracepoints without waiting for the kernel. Each perf-event tracepoint a
//! program leaves waits for an RCU grace period (~40 ms here), one tracepoint after the other
//! under a kernel mutex: 13 s for every syscall tracepoint. A process made for it takes the last
//! references to the links and pays that wait, instead of the caller (and instead of the
//! caller's exit, which would wait for it too).
use std::os::fd::RawFd;

/// Starts a detached process (reparented to init at once, so never a zombie of ours) that holds
/// copies of `links` and nothing else of ours. Returns the write end of a pipe: once the caller
/// has dropped its own copies of the links, closing it tells the process to close them (paying
/// the kernel's wait) and exit. None if no process could be made.
pub fn hand_over(links: &[RawFd]) -> Option<RawFd> {
    let mut pipe = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return None;
    }
    let [read, write] = pipe;
    // SAFETY: fork; the children only make async-signal-safe calls (fork, close_range, read,
    // _exit) and never return.
    match unsafe { libc::fork() } {
        0 => unsafe {
            if libc::fork() == 0 {
                hold(links, read);
            }
            libc::_exit(0)
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
            // SAFETY: the first child exits at once; reap it. Its child is init's now.
            unsafe {
                libc::close(read);
                let mut status = 0;
                while libc::waitpid(child, &mut status, 0) == -1 && *libc::__errno_location() == libc::EINTR {
                }
            }
            Some(write)
        }
    }
}

/// In the holding process: close every fd but `links` and the pipe's read end, wait for the
/// pipe's end of file, and exit (closing the links).
///
/// # Safety
/// Only in a child just forked: it closes fds that other code of the process may think it owns.
unsafe fn hold(links: &[RawFd], read: RawFd) -> ! {
    let mut keep = [-1; 1024];
    let n = links.len().min(keep.len() - 1);
    keep[..n].copy_from_slice(&links[..n]);
    keep[n] = read;
    let keep = &mut keep[..=n];
    keep.sort_unstable();
    // SAFETY: close_range and read are syscalls, safe after fork.
    unsafe {
        let mut from = 0u32;
        for &fd in keep.iter() {
            if fd >= 0 && fd as u32 > from {
                libc::syscall(libc::SYS_close_range, from, fd as u32 - 1, 0);
            }
            from = fd as u32 + 1;
        }
        libc::syscall(libc::SYS_close_range, from, u32::MAX, 0);
        let mut byte = 0u8;
        while libc::read(read, (&raw mut byte).cast(), 1) == -1 && *libc::__errno_location() == libc::EINTR {}
        libc::_exit(0)
    }
}
