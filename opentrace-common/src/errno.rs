//! errno names ("ENOENT") and the OS's words for them, with the target's own values.

macro_rules! names {
    ($($name:ident)*) => {
        /// `ENOENT` for 2 (on this target), `None` for a number this table does not name.
        pub fn name(code: i32) -> Option<&'static str> {
            match code {
                $(libc::$name => Some(stringify!($name)),)*
                _ => None,
            }
        }
    };
}

// EAGAIN and EWOULDBLOCK, EDEADLK and EDEADLOCK, ENOTSUP and EOPNOTSUPP share values: one each.
names! {
    EPERM ENOENT ESRCH EINTR EIO ENXIO E2BIG ENOEXEC EBADF ECHILD EAGAIN ENOMEM EACCES EFAULT
    ENOTBLK EBUSY EEXIST EXDEV ENODEV ENOTDIR EISDIR EINVAL ENFILE EMFILE ENOTTY ETXTBSY EFBIG
    ENOSPC ESPIPE EROFS EMLINK EPIPE EDOM ERANGE EDEADLK ENAMETOOLONG ENOLCK ENOSYS ENOTEMPTY ELOOP
    ENOMSG EIDRM ENOSTR ENODATA ETIME ENOSR EREMOTE ENOLINK EPROTO EMULTIHOP EBADMSG EOVERFLOW
    EILSEQ EUSERS ENOTSOCK EDESTADDRREQ EMSGSIZE EPROTOTYPE ENOPROTOOPT EPROTONOSUPPORT
    EOPNOTSUPP EAFNOSUPPORT EADDRINUSE EADDRNOTAVAIL ENETDOWN ENETUNREACH ECONNABORTED ECONNRESET
    ENOBUFS EISCONN ENOTCONN ETIMEDOUT ECONNREFUSED EHOSTUNREACH EALREADY EINPROGRESS ESTALE EDQUOT
    ECANCELED EOWNERDEAD ENOTRECOVERABLE ENOMEDIUM EMEDIUMTYPE
}

/// "operation not permitted (EPERM)": the OS's words, lower case, and the name where known.
pub fn describe(code: i32) -> String {
    let text = std::io::Error::from_raw_os_error(code).to_string();
    // Rust renders "Message (os error N)".
    let words = text.split(" (os error").next().unwrap_or(&text).to_lowercase();
    match name(code) {
        Some(name) => format!("{words} ({name})"),
        None => format!("{words} (errno {code})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_words() {
        assert_eq!(name(libc::ENOENT), Some("ENOENT"));
        assert_eq!(name(libc::EWOULDBLOCK), Some("EAGAIN"));
        assert_eq!(name(0), None);
        assert_eq!(describe(libc::EPERM), "operation not permitted (EPERM)");
        assert_eq!(describe(4000), "unknown error 4000 (errno 4000)");
    }
}
