//! Where this kernel keeps the struct members the programs read, from its BTF at load time.

/// How deep a PID namespace the programs translate ids from (the kernel allows 32).
pub const PIDNS_DEPTH: u32 = 32;

/// Bytes of `struct dentry` that hold the members the path walks read, from
/// [`KernelOffsets::dentry_window`]: read in one go by probe reads (without `bpf_rdonly_cast`;
/// with it, each member is a direct load).
pub const DENTRY_WINDOW: u32 = 48;
/// Bytes of `struct mount` that hold the members the path walks read, from
/// [`KernelOffsets::mount_window`]: read as `DENTRY_WINDOW`'s are.
pub const MOUNT_WINDOW: u32 = 32;
/// Bytes of `struct file`, `struct inode` and `struct super_block` that hold the members an
/// opened file's identity is read from, from [`KernelOffsets::file_window`] and the others. By
/// probe reads (without `bpf_rdonly_cast`), the inode's are read in one go; the file's and the
/// superblock's, far apart, one by one (a probe read costs more the more it copies).
pub const FILE_WINDOW: u32 = 48;
pub const INODE_WINDOW: u32 = 32;
pub const SB_WINDOW: u32 = 96;

/// Where the members the programs read sit in this kernel's structs, from its BTF at load time
/// (byte offsets). The `dentry_*` ones are relative to `dentry_window`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_signal: u32,
    pub task_thread_pid: u32,
    /// `task_struct.comm`, where it is 16 bytes at a multiple of 8 (read as two words); else
    /// `NO_FIELD` (the programs ask `bpf_get_current_comm`).
    pub task_comm: u32,
    /// `task_struct.cred` and `cred.uid` (a `kuid_t`: the uid in the initial user namespace);
    /// `task_cred` `NO_FIELD` where either is missing (the programs ask
    /// `bpf_get_current_uid_gid`).
    pub task_cred: u32,
    pub cred_uid: u32,
    /// `task_struct.cgroups`, `css_set.dfl_cgrp`, `cgroup.kn` and `kernfs_node.id`: the task's
    /// cgroup v2 id; `task_cgroups` `NO_FIELD` where one is missing (the programs ask
    /// `bpf_get_current_cgroup_id`).
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    /// `signal_struct.live`: threads of the process not yet exiting (0: the process is dying).
    pub signal_live: u32,
    /// `signal_struct.pids[PIDTYPE_TGID]`: the process's `struct pid`.
    pub signal_tgid_pid: u32,
    /// `struct pid`: `level` and `numbers[]` (`struct upid { int nr; struct pid_namespace *ns; }`,
    /// one per namespace level, each `upid_size` bytes).
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_size: u32,
    pub upid_nr: u32,
    pub upid_ns: u32,
    /// `pid_namespace.ns.inum`: the namespace's inode number, as its nsfs file shows it.
    pub pidns_inum: u32,
    pub task_fs: u32,
    pub task_files: u32,
    pub fs_root: u32,
    pub fs_pwd: u32,
    /// `struct path`: `mnt` (a `struct vfsmount *`) and `dentry`.
    pub path_mnt: u32,
    pub path_dentry: u32,
    /// Start of the [`DENTRY_WINDOW`] bytes of `struct dentry` the walk reads per component.
    pub dentry_window: u32,
    /// `d_seq.seqcount.sequence`, `d_hash.pprev`, `d_parent`, `d_name.len`, `d_name.name`, and
    /// `d_name.hash` (the name's hash, salted with the parent).
    pub dentry_seq: u32,
    pub dentry_hash_pprev: u32,
    pub dentry_parent: u32,
    pub dentry_name_len: u32,
    pub dentry_name: u32,
    pub dentry_name_hash: u32,
    /// `struct mount`: where its embedded `struct vfsmount mnt` is, and the start of the
    /// [`MOUNT_WINDOW`] bytes read per mount; then, relative to that, `mnt_parent`,
    /// `mnt_mountpoint` and `mnt.mnt_root`.
    pub mount_mnt: u32,
    pub mount_window: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    pub mount_root: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_path: u32,
    /// File identity: the start of each window ([`FILE_WINDOW`] bytes of `struct file`, ...),
    /// and relative to it `file.f_inode` and `f_path.mnt`, `inode.i_ino` and `i_sb`,
    /// `super_block.s_dev` and `s_magic`; and `mount.mnt_id`.
    pub file_window: u32,
    pub inode_window: u32,
    pub sb_window: u32,
    pub file_mnt: u32,
    pub file_inode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    pub sb_magic: u32,
    pub mount_id: u32,
    /// `dentry.d_inode`: the start directory of a failed relative open (counting mode).
    pub dentry_inode: u32,
    /// The BTF type ids of `struct dentry`, `file`, `inode`, `super_block` and `mount`, for
    /// `bpf_rdonly_cast` (0: the kfunc is not used, and the programs take probe reads).
    pub btf_dentry: u32,
    pub btf_file: u32,
    pub btf_inode: u32,
    pub btf_super_block: u32,
    pub btf_mount: u32,
    /// And of a struct whose first 8 bytes are one member (`struct fd`: on Linux 6.12 and newer
    /// one word, a file pointer with flags in its low bits; before, a file pointer, then flags):
    /// an fd table's slot (a `struct file *`, of no struct type) is loaded through a pointer
    /// given this type, so that the load is direct too.
    pub btf_fd_slot: u32,
    /// And of a struct whose first 8 bytes are an integer member (`struct timespec64`): a
    /// dentry's name (bytes, of no struct type) is loaded 8 bytes at a time through pointers given
    /// this type, where a probe read of it costs more.
    pub btf_word: u32,
    /// `struct pt_regs`: where a syscall's first two arguments are among the task's saved user
    /// registers (x86-64: `di`, `si`), which still hold them at the syscall's exit.
    pub regs_arg0: u32,
    pub regs_arg1: u32,
    /// `struct io_kiocb`: `opcode` and its command data, which for an open request is
    /// a `struct io_open`; then, relative to that, `dfd`, `file_slot`, `filename`, `how`; and
    /// `struct filename`'s `name`.
    pub req_opcode: u32,
    pub req_cmd: u32,
    pub open_dfd: u32,
    pub open_file_slot: u32,
    pub open_filename: u32,
    pub open_how: u32,
    pub filename_name: u32,
}

impl KernelOffsets {
    /// These offsets for programs that do not use `bpf_rdonly_cast` (they take probe reads).
    pub fn untyped(mut self) -> KernelOffsets {
        [
            self.btf_dentry,
            self.btf_file,
            self.btf_inode,
            self.btf_super_block,
            self.btf_mount,
            self.btf_fd_slot,
            self.btf_word,
        ] = [0; 7];
        self
    }
}

super::layouts!(KernelOffsets = 276);
