//! The watcher's own PID namespace: when it is not the initial one, the programs give ids as it
//! numbers them and leave out the tasks it cannot see.
use std::os::unix::fs::MetadataExt;

/// The inode of the initial PID namespace (`PROC_PID_INIT_INO`).
const INIT_INO: u64 = 0xEFFF_FFFC;

/// (device, inode) of this process's PID namespace as `bpf_get_ns_current_pid_tgid` takes them,
/// or `None` in the initial namespace (or where `/proc/self/ns/pid` cannot be read).
pub fn own() -> Option<(u64, u64)> {
    let meta = std::fs::metadata("/proc/self/ns/pid").ok()?;
    if meta.ino() == INIT_INO {
        return None;
    }
    // stat(2) encodes the device for user space; the kernel compares its own dev_t (major << 20 |
    // minor), which differs once the minor is past 255.
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    Some((u64::from(major) << 20 | u64::from(minor), meta.ino()))
}
