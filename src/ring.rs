//! Waiting for the ring buffer: one epoll set holding the ring's fd and an eventfd that `close()`
//! (from any thread) uses to wake a blocked reader.
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    time::Duration,
};

pub enum Wait {
    /// Something is readable (the ring, or the waker after `close()`).
    Ready,
    TimedOut,
    /// A signal arrived; the caller lets Python run its handlers.
    Interrupted,
}

pub struct Waiter {
    epoll: OwnedFd,
    waker: OwnedFd,
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// What a waiting syscall's return value means.
fn outcome(rc: libc::c_int) -> io::Result<Wait> {
    match rc {
        0 => Ok(Wait::TimedOut),
        n if n > 0 => Ok(Wait::Ready),
        _ => match io::Error::last_os_error() {
            err if err.raw_os_error() == Some(libc::EINTR) => Ok(Wait::Interrupted),
            err => Err(err),
        },
    }
}

impl Waiter {
    pub fn new() -> io::Result<Waiter> {
        // SAFETY: plain syscalls; the fds are owned right away.
        unsafe {
            let epoll = OwnedFd::from_raw_fd(check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?);
            let waker =
                OwnedFd::from_raw_fd(check(libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?);
            let waiter = Waiter { epoll, waker };
            waiter.watch(waiter.waker.as_raw_fd())?;
            Ok(waiter)
        }
    }

    /// Adds a readable-interest fd (the ring buffer's). It leaves the set when it is closed.
    pub fn watch(&self, fd: RawFd) -> io::Result<()> {
        let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: fd as u64 };
        // SAFETY: both fds are open; `event` outlives the call.
        check(unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) })?;
        Ok(())
    }

    /// The epoll fd: readable whenever a wait would return at once (for event loops).
    pub fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Blocks (call it without the GIL) until readable, `timeout`, or a signal.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<Wait> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 2];
        let ms = timeout.map_or(-1, |t| t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32);
        // SAFETY: `events` is writable for its length.
        outcome(unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 2, ms) })
    }

    /// Sleeps (without the GIL) for `duration` unless woken or interrupted first.
    pub fn sleep(&self, duration: Duration) -> io::Result<Wait> {
        let mut pfd = libc::pollfd { fd: self.waker.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ts = libc::timespec {
            tv_sec: duration.as_secs() as libc::time_t,
            tv_nsec: duration.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `pfd` and `ts` outlive the call; a null sigmask keeps the current one.
        outcome(unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) })
    }

    /// Makes every current and future wait return at once.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from `one`; a full counter (EAGAIN) is already a wake-up.
        unsafe { libc::write(self.waker.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}
