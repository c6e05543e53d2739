//! This kernel's layout as the programs need it ([`Layout`]), read from its BTF: the struct
//! members they read, and how the io_uring raw tracepoints pass their arguments.
use super::{Btf, Param};
use crate::{
    COMM_LEN, NO_FIELD,
    abi::{
        kernel::{DENTRY_WINDOW, FILE_WINDOW, INODE_WINDOW, KernelOffsets, MOUNT_WINDOW, SB_WINDOW},
        uring::{URING_COMPLETE_ARGS, URING_COMPLETE_ARGS_6_0, UringArgs},
    },
};

/// What the programs need to know of this kernel's structs.
pub struct Layout {
    pub offsets: KernelOffsets,
    /// Whether full paths can be resolved, or why not (a member the walk reads is missing).
    pub full_path: Result<(), String>,
    /// Whether opened files' identity (inode, device, mount id) can be read, or why not.
    pub file_id: Result<(), String>,
    /// Whether a syscall's arguments can be read at its exit from the task's saved registers
    /// (`regs_arg0`, `regs_arg1`), or why not.
    pub syscall_regs: Result<(), String>,
    /// Where the io_uring tracepoints pass what the programs read, or why io_uring open
    /// requests cannot be read here.
    pub io_uring: Result<UringArgs, String>,
    /// The kernel's function id of the kfunc `bpf_rdonly_cast` (Linux 6.2 and newer), which the
    /// loader writes into the programs' calls of it; or why there is none.
    pub rdonly_cast: Result<u32, String>,
}

/// Reads the members the programs use. The ones every watcher needs (`ppid`) must be there;
/// the path walk's are needed only for `full_path=True`.
pub fn layout<D: AsRef<[u8]>>(btf: &Btf<D>) -> Result<Layout, String> {
    let sized = |outer: &str, path: &str, size: u32| {
        let member = btf.member(outer, path)?;
        if member.size == size {
            Ok(member.offset)
        } else {
            Err(format!("struct {outer} member {path} is {} bytes on this kernel, not {size}", member.size))
        }
    };
    let pointer = |outer: &str, path: &str| sized(outer, path, 8);
    let mut offsets = KernelOffsets {
        task_pid: sized("task_struct", "pid", 4)?,
        task_tgid: sized("task_struct", "tgid", 4)?,
        task_real_parent: pointer("task_struct", "real_parent")?,
        task_signal: pointer("task_struct", "signal")?,
        task_thread_pid: pointer("task_struct", "thread_pid")?,
        task_comm: btf
            .member("task_struct", "comm")
            .ok()
            .filter(|comm| comm.size == COMM_LEN as u32 && comm.offset.is_multiple_of(8))
            .map_or(NO_FIELD, |comm| comm.offset),
        task_cred: NO_FIELD,
        task_cgroups: NO_FIELD,
        signal_live: sized("signal_struct", "live", 4)?,
        signal_tgid_pid: {
            let pids = btf.member("signal_struct", "pids")?;
            if pids.element_size != 8 || pids.size < 16 {
                return Err("signal_struct.pids is not an array of pointers on this kernel".to_owned());
            }
            pids.offset + 8 // PIDTYPE_TGID
        },
        pid_level: sized("pid", "level", 4)?,
        pid_numbers: btf.member("pid", "numbers")?.offset,
        upid_size: btf.struct_size("upid")?,
        upid_nr: sized("upid", "nr", 4)?,
        upid_ns: pointer("upid", "ns")?,
        pidns_inum: sized("pid_namespace", "ns.inum", 4)?,
        ..KernelOffsets::default()
    };
    // The uid and the cgroup id by direct loads where every member on the way is there.
    if let (Ok(cred), Ok(uid)) = (pointer("task_struct", "cred"), sized("cred", "uid", 4)) {
        (offsets.task_cred, offsets.cred_uid) = (cred, uid);
    }
    if let (Ok(cgroups), Ok(dfl), Ok(kn), Ok(id)) = (
        pointer("task_struct", "cgroups"),
        pointer("css_set", "dfl_cgrp"),
        pointer("cgroup", "kn"),
        sized("kernfs_node", "id", 8),
    ) {
        (offsets.task_cgroups, offsets.css_set_dfl_cgrp, offsets.cgroup_kn, offsets.kernfs_node_id) =
            (cgroups, dfl, kn, id);
    }
    let full_path = (|| {
        offsets.task_fs = pointer("task_struct", "fs")?;
        offsets.task_files = pointer("task_struct", "files")?;
        offsets.fs_root = btf.member("fs_struct", "root")?.offset;
        offsets.fs_pwd = btf.member("fs_struct", "pwd")?.offset;
        offsets.path_mnt = pointer("path", "mnt")?;
        offsets.path_dentry = pointer("path", "dentry")?;
        if btf.struct_size("path")? != 16
            || !offsets.path_mnt.is_multiple_of(8)
            || !offsets.path_dentry.is_multiple_of(8)
        {
            return Err("struct path is not two pointers on this kernel".to_owned());
        }
        let dentry = [
            sized("dentry", "d_seq.seqcount.sequence", 4)?,
            pointer("dentry", "d_hash.pprev")?,
            pointer("dentry", "d_parent")?,
            sized("dentry", "d_name.len", 4)?,
            pointer("dentry", "d_name.name")?,
            sized("dentry", "d_name.hash", 4)?,
        ];
        let start = window(&dentry, DENTRY_WINDOW, "dentry")?;
        offsets.dentry_window = start;
        [
            offsets.dentry_seq,
            offsets.dentry_hash_pprev,
            offsets.dentry_parent,
            offsets.dentry_name_len,
            offsets.dentry_name,
            offsets.dentry_name_hash,
        ] = dentry.map(|at| at - start);
        offsets.mount_mnt = btf.member("mount", "mnt")?.offset;
        let mount = [
            pointer("mount", "mnt_parent")?,
            pointer("mount", "mnt_mountpoint")?,
            offsets.mount_mnt + pointer("vfsmount", "mnt_root")?,
        ];
        offsets.mount_window = window(&mount, MOUNT_WINDOW, "mount")?;
        [offsets.mount_parent, offsets.mount_mountpoint, offsets.mount_root] =
            mount.map(|at| at - offsets.mount_window);
        offsets.files_fdt = pointer("files_struct", "fdt")?;
        offsets.fdt_max_fds = sized("fdtable", "max_fds", 4)?;
        offsets.fdt_fd = pointer("fdtable", "fd")?;
        offsets.file_path = btf.member("file", "f_path")?.offset;
        Ok(())
    })();
    let file_id = full_path.clone().and_then(|()| {
        let file = [pointer("file", "f_inode")?, offsets.file_path + offsets.path_mnt];
        offsets.file_window = window(&file, FILE_WINDOW, "file")?;
        [offsets.file_inode, offsets.file_mnt] = file.map(|at| at - offsets.file_window);
        let inode = [sized("inode", "i_ino", 8)?, pointer("inode", "i_sb")?];
        offsets.inode_window = window(&inode, INODE_WINDOW, "inode")?;
        [offsets.inode_ino, offsets.inode_sb] = inode.map(|at| at - offsets.inode_window);
        let sb = [sized("super_block", "s_dev", 4)?, sized("super_block", "s_magic", 8)?];
        offsets.sb_window = window(&sb, SB_WINDOW, "super_block")?;
        [offsets.sb_dev, offsets.sb_magic] = sb.map(|at| at - offsets.sb_window);
        offsets.mount_id = sized("mount", "mnt_id", 4)?;
        offsets.dentry_inode = pointer("dentry", "d_inode")?;
        Ok(())
    });
    // Only x86-64's names are known here; elsewhere the entry program keeps the arguments.
    let syscall_regs = (|| {
        offsets.regs_arg0 = sized("pt_regs", "di", 8)?;
        offsets.regs_arg1 = sized("pt_regs", "si", 8)?;
        Ok(())
    })();
    let io_uring = (|| {
        offsets.req_opcode = sized("io_kiocb", "opcode", 1)?;
        offsets.req_cmd = btf.member("io_kiocb", "cmd")?.offset;
        offsets.open_dfd = sized("io_open", "dfd", 4)?;
        offsets.open_file_slot = sized("io_open", "file_slot", 4)?;
        offsets.open_filename = pointer("io_open", "filename")?;
        offsets.open_how = btf.member("io_open", "how")?.offset;
        offsets.filename_name = pointer("filename", "name")?;
        if btf.struct_size("io_open")? > btf.member("io_kiocb", "cmd")?.size {
            return Err("struct io_open does not fit io_kiocb's command data on this kernel".to_owned());
        }
        uring_args(btf)
    })();
    let rdonly_cast = btf.function("bpf_rdonly_cast");
    // Typed loads at the walk's and the identity's offsets: only with them.
    let type_id = |ok: bool, name: &str| if ok { btf.struct_type(name).unwrap_or(0) } else { 0 };
    offsets.btf_dentry = type_id(full_path.is_ok(), "dentry");
    offsets.btf_mount = type_id(full_path.is_ok(), "mount");
    // `struct fd` is one word on Linux 6.12 and newer, a pointer and flags before: either way its
    // first 8 bytes are one member, which a direct load of a slot must fall in. (Before 6.12 the
    // verifier sees the loaded slot as a `struct file *`, not a number; only 6.18 is tested here.
    // Were the programs refused for it, they are loaded again without the kfunc: see `loader`.)
    let fd_word =
        ["word", "file"].iter().any(|m| btf.member("fd", m).is_ok_and(|m| m.offset == 0 && m.size == 8));
    offsets.btf_fd_slot = type_id(full_path.is_ok() && fd_word, "fd");
    let first_word = btf.member("timespec64", "tv_sec").is_ok_and(|m| m.offset == 0 && m.size == 8);
    offsets.btf_word = type_id(full_path.is_ok() && first_word, "timespec64");
    offsets.btf_file = type_id(file_id.is_ok(), "file");
    offsets.btf_inode = type_id(file_id.is_ok(), "inode");
    offsets.btf_super_block = type_id(file_id.is_ok(), "super_block");
    Ok(Layout { offsets, full_path, file_id, syscall_regs, io_uring, rdonly_cast })
}

/// Where the request and the result are among the io_uring tracepoints' arguments: the request
/// a `struct io_kiocb *` (or `void *`) after the ring's context, the result a 32-bit argument or
/// the `res` of a `struct io_uring_cqe *` one.
pub(super) fn uring_args<D: AsRef<[u8]>>(btf: &Btf<D>) -> Result<UringArgs, String> {
    let request = |p: &Param| matches!(p, Param::Pointer) || *p == Param::StructPointer("io_kiocb".into());
    let submit = btf.raw_tracepoint_args("io_uring_submit_req")?;
    if submit != [Param::StructPointer("io_kiocb".into())] {
        return Err(format!("io_uring_submit_req takes {submit:?} on this kernel, not a request"));
    }
    let complete = btf.raw_tracepoint_args("io_uring_complete")?;
    let unknown =
        || format!("io_uring_complete takes {complete:?} on this kernel: not a request and a result");
    if complete.len() != URING_COMPLETE_ARGS && complete.len() != URING_COMPLETE_ARGS_6_0 {
        return Err(unknown());
    }
    let complete_req = complete.iter().skip(1).position(request).ok_or_else(unknown)? + 1;
    let after = |i: &usize| *i > complete_req;
    let (complete_res, complete_res_at) = if let Some(cqe) =
        complete.iter().position(|p| *p == Param::StructPointer("io_uring_cqe".into())).filter(after)
    {
        let res = btf.member("io_uring_cqe", "res")?;
        if res.size != 4 {
            return Err("struct io_uring_cqe's res is not 32 bits on this kernel".to_owned());
        }
        (cqe, res.offset)
    } else {
        let res =
            complete.iter().position(|p| *p == Param::Int { size: 4 }).filter(after).ok_or_else(unknown)?;
        (res, NO_FIELD)
    };
    Ok(UringArgs {
        complete_req: complete_req as u32,
        complete_res: complete_res as u32,
        complete_res_at,
        complete_args: complete.len() as u32,
        req_failed: u32::from(btf.raw_tracepoint_args("io_uring_req_failed").is_ok_and(|failed| {
            failed
                == [
                    Param::StructPointer("io_uring_sqe".into()),
                    Param::StructPointer("io_kiocb".into()),
                    Param::Int { size: 4 },
                ]
        })),
    })
}

/// Where a read of `size` bytes covering the members at `members` (8 bytes each at most) starts:
/// 8-byte aligned, so that the programs read each as (part of) one word.
fn window(members: &[u32], size: u32, name: &str) -> Result<u32, String> {
    let start = members.iter().min().copied().unwrap_or(0) & !7;
    if members.iter().any(|&at| at + 8 > start + size) {
        return Err(format!(
            "struct {name}'s members the programs read are spread over more than {size} bytes"
        ));
    }
    Ok(start)
}
