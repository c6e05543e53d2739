//! The file behind an fd of the current task, and its identity (inode, device, mount id), read
//! from `struct file` at the offsets BTF gave: the fd table's slot and the file's members by
//! direct loads where the loader found `bpf_rdonly_cast` to type them (`kernel::typed_read`),
//! else by probe reads.
use opentrace_common::abi::{
    kernel::INODE_WINDOW,
    open::{FileId, STATUS_DEV_UNSURE, STATUS_FILE_ID},
};

use crate::kernel::{self, offset, read, typed_read, word};

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
    // The slot, loaded through a pointer typed `struct fd` (its first word) where the kfunc is
    // used, else a probe read; a direct load that faults gives 0, as an empty slot does (said as
    // no file, not as a fault: they cannot be told apart; the slot is in bounds, so it does not
    // fault).
    match typed_read::<u64>(array + 8 * fd as u64, offset!(btf_fd_slot) as u32, 0) {
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

/// The (inode, device) of the file behind `fd`: what a count's key needs, in the fewest reads
/// that give it (the fd's file, its inode, the inode's number and superblock, the superblock's
/// device).
#[inline(always)]
pub fn inode_key(fd: i64) -> Option<(u64, u32)> {
    let inode = lookup(fd).ok().and_then(|file| file_inode(file).ok())?;
    inode_id(inode).ok()
}

#[inline(always)]
fn read_identity(fd: i64) -> Result<(FileId, u8), i32> {
    let file = lookup(fd).map_err(|_| 0)?;
    let (ino, dev, magic) = inode_words(file_inode(file)?)?;
    let mnt = file_pointer(file, offset!(file_mnt))?;
    // The `struct vfsmount` is embedded in its `struct mount`.
    let mount = mnt.wrapping_sub(offset!(mount_mnt));
    // `mount_id` is known where the identity's layout is (`btf_file` is set then): a direct load
    // at an offset BTF did not give would be refused by the verifier.
    let mnt_id: u32 = if offset!(btf_file) != 0 {
        kernel::mount_member(mount, offset!(mount_id))?
    } else {
        read(mount + offset!(mount_id))?
    };
    let unsure = if magic == BTRFS_SUPER_MAGIC { STATUS_DEV_UNSURE } else { 0 };
    Ok((FileId { inode: ino, dev, mnt_id }, STATUS_FILE_ID | unsure))
}

/// An inode's number, its filesystem's device (the kernel's `dev_t`) and that filesystem's magic.
#[inline(always)]
fn inode_words(inode: u64) -> Result<(u64, u32, u64), i32> {
    let (ino, sb) = ino_and_sb(inode)?;
    Ok((ino, sb_dev(sb)?, sb_member(sb, offset!(sb_magic))?))
}

/// An inode's number and its filesystem's device (the kernel's `dev_t`).
#[inline(always)]
pub fn inode_id(inode: u64) -> Result<(u64, u32), i32> {
    let (ino, sb) = ino_and_sb(inode)?;
    Ok((ino, sb_dev(sb)?))
}

/// The inode of the file behind `file` (a `struct file *`).
#[inline(always)]
pub fn file_inode(file: u64) -> Result<u64, i32> {
    file_pointer(file, offset!(file_inode))
}

/// The file's `f_path`, as (vfsmount, dentry): two direct loads, or one probe read of the
/// `struct path` (see `typed_read`).
#[inline(always)]
pub fn path_of(file: u64) -> Result<(u64, u64), i32> {
    let (btf_id, at) = (offset!(btf_file) as u32, offset!(file_path));
    if btf_id != 0 {
        let member = |m: u64| nonzero(typed_read(file, btf_id, at + m));
        return Ok((member(offset!(path_mnt))?, member(offset!(path_dentry))?));
    }
    let path: [u64; 2] = read(file + at)?;
    Ok((word(&path, offset!(path_mnt)), word(&path, offset!(path_dentry))))
}

/// The pointer `at` bytes into `struct file`'s window (see `typed_read`).
#[inline(always)]
fn file_pointer(file: u64, at: u64) -> Result<u64, i32> {
    nonzero(typed_read(file, offset!(btf_file) as u32, offset!(file_window) + at))
}

/// A pointer read, refused if 0: a direct load that faults gives 0 (see `typed_read`), which
/// must not go on to an identity of zeros.
#[inline(always)]
fn nonzero(pointer: Result<u64, i32>) -> Result<u64, i32> {
    pointer.and_then(|p| if p == 0 { Err(-kernel::EFAULT) } else { Ok(p) })
}

/// An inode's number and its `struct super_block *`.
#[inline(always)]
fn ino_and_sb(inode: u64) -> Result<(u64, u64), i32> {
    let btf_id = offset!(btf_inode) as u32;
    if btf_id != 0 {
        let at = offset!(inode_window);
        let ino = typed_read(inode, btf_id, at + offset!(inode_ino))?;
        return Ok((ino, nonzero(typed_read(inode, btf_id, at + offset!(inode_sb)))?));
    }
    let window: [u64; INODE_WINDOW as usize / 8] = read_window(inode + offset!(inode_window))?;
    Ok((word(&window, offset!(inode_ino)), word(&window, offset!(inode_sb))))
}

/// A superblock's device (the kernel's `dev_t`).
#[inline(always)]
fn sb_dev(sb: u64) -> Result<u32, i32> {
    sb_member(sb, offset!(sb_dev))
}

/// The member `at` bytes into `struct super_block`'s window, read alone where it is a probe
/// read: one costs more the more it copies (~40 ns for the superblock's 96 bytes here, against
/// ~10 for 8), so members far apart are read one by one.
#[inline(always)]
fn sb_member<T: Copy>(sb: u64, at: u64) -> Result<T, i32> {
    typed_read(sb, offset!(btf_super_block) as u32, offset!(sb_window) + at)
}

/// The `N` words at kernel address `at`, read in place (through a `Result` they would take the
/// stack twice, and the exit programs' 512 bytes are tight).
#[inline(always)]
fn read_window<const N: usize>(at: u64) -> Result<[u64; N], i32> {
    let mut words = [0u64; N];
    if kernel::read_into(&mut words, at) { Ok(words) } else { Err(-1) }
}
