//! The file behind an fd of the current task, and its identity (inode, device, mount id), read
//! from `struct file` at the offsets BTF gave: the fd table's entries are not typed for the
//! verifier, so these are probe reads.
use opentrace_common::abi::open::{FileId, STATUS_DEV_UNSURE, STATUS_FILE_ID};

use crate::kernel::{self, offset, read};

/// `BTRFS_SUPER_MAGIC`: btrfs reports each subvolume's own device to `stat`, not its superblock's.
const BTRFS_SUPER_MAGIC: u64 = 0x9123_683e;

/// Why an fd's file could not be had.
pub enum NoFile {
    /// No such fd in the task's table.
    Missing,
    /// A kernel structure could not be read.
    Fault,
}

/// The `struct file *` behind `fd` in the current task's fd table.
#[inline(always)]
pub fn lookup(fd: i64) -> Result<u64, NoFile> {
    let (max_fds, array) = kernel::fd_table();
    if fd < 0 || fd >= i64::from(max_fds) {
        return Err(NoFile::Missing);
    }
    match read::<u64>(array + 8 * fd as u64) {
        Ok(0) => Err(NoFile::Missing),
        Ok(file) => Ok(file),
        Err(_) => Err(NoFile::Fault),
    }
}

/// The identity of the file behind `fd`, and the `STATUS_*` bits that say what it holds (0 and
/// an empty identity when it could not be read).
#[inline(always)]
pub fn identity(fd: i64) -> (FileId, u8) {
    read_identity(fd).unwrap_or_default()
}

#[inline(always)]
fn read_identity(fd: i64) -> Result<(FileId, u8), i32> {
    let file = lookup(fd).map_err(|_| 0)?;
    let inode: u64 = read(file + offset!(file_inode))?;
    let mnt: u64 = read(file + offset!(file_path) + offset!(path_mnt))?;
    let ino: u64 = read(inode + offset!(inode_ino))?;
    let sb: u64 = read(inode + offset!(inode_sb))?;
    let dev: u32 = read(sb + offset!(sb_dev))?;
    let magic: u64 = read(sb + offset!(sb_magic))?;
    // The `struct vfsmount` is embedded in its `struct mount`.
    let mnt_id: u32 = read(mnt.wrapping_sub(offset!(mount_mnt)) + offset!(mount_id))?;
    let unsure = if magic == BTRFS_SUPER_MAGIC { STATUS_DEV_UNSURE } else { 0 };
    Ok((FileId { inode: ino, dev, mnt_id }, STATUS_FILE_ID | unsure))
}
