//! Starting a command that waits for its watcher: forked here, it blocks on a pipe until the
//! programs are attached, then execs. So its very first opens (the dynamic loader's) are events,
//! and nothing the helper does before exec is: between fork and exec the child only makes
//! async-signal-safe syscalls, and opens nothing.
use std::{
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use pyo3::{exceptions::PyValueError, prelude::*};

use crate::error::Error;

/// What the child writes to the status pipe when it cannot exec: which step, and the errno.
const STEP_CHDIR: u8 = 1;
const STEP_EXEC: u8 = 2;

/// A forked child waiting to exec its command (`release`), or to be abandoned.
#[pyclass(module = "opentrace._opentrace")]
pub struct Suspended {
    pid: u32,
    /// Writing a byte (or closing it) lets the child go on.
    go: Option<OwnedFd>,
    /// Closed by exec (close-on-exec); carries the step and errno if exec did not happen.
    status: Option<OwnedFd>,
}

fn cstrings(items: Vec<Vec<u8>>, what: &str) -> PyResult<Vec<CString>> {
    items
        .into_iter()
        .map(|item| {
            CString::new(item).map_err(|_| PyValueError::new_err(format!("{what} cannot contain a NUL byte")))
        })
        .collect()
}

/// A null-terminated array of pointers into `strings` (which must outlive it).
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds, owned right away.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and belong to no one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// In the child, between fork and exec: async-signal-safe calls only (no allocation, no lock).
/// Never returns.
///
/// # Safety
/// Call only in a freshly forked child, with the pointers valid (they were built before fork).
unsafe fn child(
    go: i32,
    status: i32,
    parents_ends: [i32; 2],
    programs: &[*const libc::c_char],
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: Option<*const libc::c_char>,
) -> ! {
    // SAFETY: plain syscalls on our own fds and memory.
    unsafe {
        let fail = |step: u8| -> ! {
            let errno = *libc::__errno_location();
            let report = [step, errno as u8, (errno >> 8) as u8, 0];
            libc::write(status, report.as_ptr().cast(), report.len());
            libc::_exit(127)
        };
        // The parent's ends of the pipes: with them open here, the parent closing its own would
        // never reach us as an EOF.
        for fd in parents_ends {
            libc::close(fd);
        }
        let mut byte = 0u8;
        // The watcher says go (a byte), or gave up (EOF): only then run the command.
        if libc::read(go, (&raw mut byte).cast(), 1) != 1 {
            libc::_exit(127);
        }
        libc::close(go);
        // As a shell would start it: default dispositions for what Python ignores, nothing blocked.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // Every inherited fd but stdin/out/err closes at exec (without listing /proc/self/fd,
        // which would be an open of our own).
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 4u32 /* CLOSE_RANGE_CLOEXEC */);
        if let Some(cwd) = cwd
            && libc::chdir(cwd) != 0
        {
            fail(STEP_CHDIR);
        }
        // As execvp: try each candidate; keep going past "not there", remember "not allowed".
        let mut denied = false;
        for &program in programs {
            libc::execve(program, argv, envp);
            match *libc::__errno_location() {
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                libc::EACCES => denied = true,
                _ => fail(STEP_EXEC),
            }
        }
        if denied {
            *libc::__errno_location() = libc::EACCES;
        }
        fail(STEP_EXEC)
    }
}

#[pymethods]
impl Suspended {
    /// Forks a child that will exec `argv` (trying each of `programs`, as execvp tries PATH) with
    /// `envp`, in `cwd`, once `release()` is called.
    #[new]
    #[pyo3(signature = (programs, argv, envp, cwd=None))]
    fn new(
        programs: Vec<Vec<u8>>,
        argv: Vec<Vec<u8>>,
        envp: Vec<Vec<u8>>,
        cwd: Option<Vec<u8>>,
    ) -> PyResult<Suspended> {
        if argv.is_empty() || programs.is_empty() {
            return Err(PyValueError::new_err("a command needs at least a program"));
        }
        let (programs, argv, envp) = (
            cstrings(programs, "the program")?,
            cstrings(argv, "an argument")?,
            cstrings(envp, "the environment")?,
        );
        let cwd = cwd.map(|c| cstrings(vec![c], "cwd")).transpose()?.and_then(|mut c| c.pop());
        let (program_ptrs, argv_ptrs, envp_ptrs) = (pointers(&programs), pointers(&argv), pointers(&envp));
        let (go_read, go_write) = pipe().map_err(|e| Error::kernel("making a pipe", &e))?;
        let (status_read, status_write) = pipe().map_err(|e| Error::kernel("making a pipe", &e))?;
        // SAFETY: fork, then in the child only async-signal-safe calls on what was built above.
        match unsafe { libc::fork() } {
            -1 => Err(Error::kernel("starting the command (fork)", &std::io::Error::last_os_error()).into()),
            // SAFETY: as above: the child.
            0 => unsafe {
                child(
                    go_read.as_raw_fd(),
                    status_write.as_raw_fd(),
                    [go_write.as_raw_fd(), status_read.as_raw_fd()],
                    &program_ptrs[..programs.len()],
                    argv_ptrs.as_ptr(),
                    envp_ptrs.as_ptr(),
                    cwd.as_ref().map(|c| c.as_ptr()),
                )
            },
            pid => Ok(Suspended { pid: pid as u32, go: Some(go_write), status: Some(status_read) }),
        }
    }

    #[getter]
    fn pid(&self) -> u32 {
        self.pid
    }

    /// Lets the child exec its command. If it cannot (no such program, a bad cwd), the child has
    /// exited: it is reaped and the reason raised as an OSError (FileNotFoundError, ...), naming
    /// `what` (the program, or the cwd).
    fn release(&mut self, py: Python<'_>, program: &str, cwd: Option<&str>) -> PyResult<()> {
        let (Some(go), Some(status)) = (self.go.take(), self.status.take()) else {
            return Err(pyo3::exceptions::PyRuntimeError::new_err("the command was released already"));
        };
        let report = py.detach(move || {
            // SAFETY: one byte to the child's pipe, then a read of its report (EOF once it exec'd).
            unsafe { libc::write(go.as_raw_fd(), b"g".as_ptr().cast(), 1) };
            drop(go);
            let mut report = [0u8; 4];
            let n = loop {
                // SAFETY: reads into `report`, of the length given, from a pipe we own.
                let n = unsafe { libc::read(status.as_raw_fd(), report.as_mut_ptr().cast(), report.len()) };
                if n >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    break n;
                }
            };
            (n, report)
        });
        match report {
            (4, [step, low, high, _]) => {
                let errno = i32::from(low) | i32::from(high) << 8;
                // SAFETY: the child has exited (or is about to): reap it.
                unsafe { libc::waitpid(self.pid as i32, std::ptr::null_mut(), 0) };
                let name = if step == STEP_CHDIR { cwd.unwrap_or("") } else { program };
                let os_error = py.import("builtins")?.getattr("OSError")?;
                let strerror = std::io::Error::from_raw_os_error(errno).to_string();
                let strerror = strerror.split(" (os error").next().unwrap_or(&strerror).to_owned();
                Err(PyErr::from_value(os_error.call1((errno, strerror, name))?))
            }
            _ => Ok(()),
        }
    }

    /// Gives up on the command: the child exits without running it, and is reaped.
    fn abandon(&mut self) {
        if self.go.take().is_some() {
            // SAFETY: our own child, waiting on the pipe we just closed: it exits; reap it.
            unsafe { libc::waitpid(self.pid as i32, std::ptr::null_mut(), 0) };
        }
        self.status = None;
    }
}

impl Drop for Suspended {
    fn drop(&mut self) {
        self.abandon();
    }
}
