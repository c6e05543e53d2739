//! One error type for the extension, mapped to the package's Python exceptions in one place.
use std::{error::Error as StdError, fmt, io};

use aya::programs::ProgramError;
use pyo3::{PyErr, exceptions::PyValueError};

pyo3::import_exception!(opentrace.exceptions, OpentraceError);
pyo3::import_exception!(opentrace.exceptions, PermissionDenied);
pyo3::import_exception!(opentrace.exceptions, TracepointNotFound);

/// What privileged work needs, said once.
pub const PRIVILEGES: &str = "run as root, or with the capabilities CAP_BPF and CAP_PERFMON";

#[derive(Debug)]
pub enum Error {
    /// The kernel refused for lack of privileges; the string says what was attempted.
    Permission(String),
    /// No tracepoint of that name; the string is the full message.
    TracepointNotFound(String),
    /// A malformed `format` file or argument.
    Invalid(String),
    /// Anything else, as a whole sentence.
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Classifies a failed kernel operation. EPERM means privileges; so does EACCES, unless we
    /// have them (the verifier answers EACCES when it rejects a program). The message is one
    /// line; a verifier log goes to the `opentrace` logger at DEBUG level.
    pub fn kernel(what: &str, err: &(dyn StdError + 'static)) -> Error {
        let code = os_error(err).and_then(io::Error::raw_os_error);
        if code == Some(libc::EPERM) || (code == Some(libc::EACCES) && !may_use_bpf()) {
            let os = os_error(err).map(describe).unwrap_or_default();
            return Error::Permission(format!("{what} was refused by the kernel ({os}); {PRIVILEGES}"));
        }
        if let Some(ProgramError::LoadError { io_error, verifier_log }) = find::<ProgramError>(err) {
            crate::diag::note(
                crate::diag::Level::Debug,
                format!("{what}: the verifier said:\n{verifier_log}"),
            );
            return Error::Other(format!(
                "{what} failed: the kernel's verifier rejected it ({}); this kernel is not supported as \
                 is (its log is on the 'opentrace' logger at DEBUG level)",
                describe(io_error)
            ));
        }
        Error::Other(format!("{what} failed: {}", chain(err)))
    }
}

/// Whether this process holds CAP_BPF or CAP_SYS_ADMIN (effective), from /proc/self/status.
fn may_use_bpf() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return false };
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    effective & (1 << CAP_SYS_ADMIN | 1 << CAP_BPF) != 0
}

/// The first error of type `E` in an error's source chain.
fn find<'a, E: StdError + 'static>(mut err: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    loop {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        err = err.source()?;
    }
}

/// "operation not permitted (EPERM)": the OS's words without Rust's "(os error 1)".
pub fn describe(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => opentrace_common::errno::describe(code),
        None => err.to_string(),
    }
}

/// The errno of the first `io::Error` in an error's source chain.
pub fn os_code(err: &(dyn StdError + 'static)) -> Option<i32> {
    os_error(err).and_then(io::Error::raw_os_error)
}

/// The first `io::Error` in an error's source chain.
fn os_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a io::Error> {
    find::<io::Error>(err)
}

/// "outer: inner: innermost", without repeating a message that a wrapper already quotes.
fn chain(err: &(dyn StdError + 'static)) -> String {
    let show = |e: &(dyn StdError + 'static)| match e.downcast_ref::<io::Error>() {
        Some(io) => describe(io),
        None => e.to_string(),
    };
    let mut text = show(err);
    let mut source = err.source();
    while let Some(inner) = source {
        let part = show(inner);
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    // One line, as the CLI prints it.
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Permission(m) | Error::TracepointNotFound(m) | Error::Invalid(m) | Error::Other(m) => {
                f.write_str(m)
            }
        }
    }
}

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        match err {
            Error::Permission(m) => PermissionDenied::new_err(m),
            Error::TracepointNotFound(m) => TracepointNotFound::new_err(m),
            Error::Invalid(m) => PyValueError::new_err(m),
            Error::Other(m) => OpentraceError::new_err(m),
        }
    }
}
