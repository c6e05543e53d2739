//! Where things are in the running kernel: the fields of the open-family tracepoints' records
//! (from their `format` files) and the struct members the programs read (from BTF). Read once
//! per process; neither changes while the kernel runs.
use std::{
    fs,
    os::fd::AsRawFd,
    path::PathBuf,
    sync::{Mutex, PoisonError},
};

use opentrace_common::{
    NO_FIELD,
    abi::{
        cgroup::CgroupFields,
        kernel::KernelOffsets,
        open::{ArgOffsets, Syscall},
        uring::UringArgs,
    },
    btf::{self, Btf},
    tracefs::Format,
};

use crate::{
    error::{Error, Result},
    tracefs,
};

/// Where this kernel's `sys_enter_*`/`sys_exit_*` records keep their fields, and its structs
/// their members.
pub struct Layouts {
    /// The syscalls that have both tracepoints, with their entry layouts.
    pub syscalls: Vec<(Syscall, ArgOffsets)>,
    pub ret_offset: u32,
    /// The syscall numbers of the family (`__syscall_nr`), by `Syscall` number (0: none).
    pub numbers: [u32; 4],
    pub kernel: KernelOffsets,
    /// Whether full paths can be resolved here, or why not.
    pub full_path: std::result::Result<(), String>,
    /// Whether opened files' identity can be read here, or why not.
    pub file_id: std::result::Result<(), String>,
    /// Whether a syscall's arguments can be read at its exit here (counting by file with no
    /// entry program), or why not.
    pub syscall_regs: std::result::Result<(), String>,
    /// Where `cgroup:cgroup_mkdir`/`cgroup_rename` keep their fields (None: no such tracepoints).
    pub cgroup_fields: Option<CgroupFields>,
    /// Where the io_uring tracepoints pass the request and its result (None: io_uring open
    /// requests cannot be seen here; the reason went to the log).
    pub uring_args: std::result::Result<UringArgs, String>,
    /// `btf::Layout::rdonly_cast`.
    pub rdonly_cast: std::result::Result<u32, String>,
}

/// Where the kernel's BTF is read from; `OPENTRACE_BTF` names another file (a copy, or a
/// kernel's BTF kept elsewhere).
const BTF_VAR: &str = "OPENTRACE_BTF";
const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

static LAYOUTS: Mutex<Option<&'static Layouts>> = Mutex::new(None);

/// The layouts, read on first use.
pub fn get() -> Result<&'static Layouts> {
    let mut cached = LAYOUTS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(layouts) = *cached {
        return Ok(layouts);
    }
    let (syscalls, ret_offset) = syscall_layouts()?;
    let btf::Layout { offsets: kernel, full_path, file_id, syscall_regs, io_uring: uring_args, rdonly_cast } =
        kernel_layout()?;
    // A kfunc call's ids are looked up in the running kernel's own BTF.
    let rdonly_cast = match std::env::var_os(BTF_VAR) {
        Some(_) => Err(format!("{BTF_VAR} names the BTF read: its type ids may not be the running kernel's")),
        None => rdonly_cast,
    };
    if let Err(why) = &file_id {
        crate::diag::note(
            crate::diag::Level::Info,
            format!(
                "inode, dev and mnt_id are None: this kernel's BTF lacks what they are read from ({why})"
            ),
        );
    }
    let cgroup_fields = cgroup_fields();
    // Leaked once per process: the loader borrows the globals for as long as it lives.
    let layouts = Box::leak(Box::new(Layouts {
        syscalls,
        ret_offset,
        numbers: syscall_numbers(),
        kernel,
        full_path,
        file_id,
        syscall_regs,
        cgroup_fields,
        uring_args,
        rdonly_cast,
    }));
    *cached = Some(layouts);
    Ok(layouts)
}

/// The layout of one syscall's entry tracepoint, from its format file.
fn arg_offsets(format: &Format) -> Result<ArgOffsets> {
    let at = |name: &str| format.field(name).map_or(NO_FIELD, |f| f.offset);
    let offsets = ArgOffsets {
        // creat(2) calls it `pathname`.
        filename: if at("filename") != NO_FIELD { at("filename") } else { at("pathname") },
        dfd: at("dfd"),
        flags: at("flags"),
        mode: at("mode"),
        how: at("how"),
        how_size: at("usize"),
    };
    if offsets.filename == NO_FIELD {
        return Err(Error::Other(format!(
            "the tracepoint syscalls:{} has no `filename` or `pathname` field; this kernel's layout is not supported",
            format.name
        )));
    }
    Ok(offsets)
}

/// Reads the layouts of the open-family tracepoints; one this kernel lacks is skipped, not fatal.
fn syscall_layouts() -> Result<(Vec<(Syscall, ArgOffsets)>, u32)> {
    let mut present = Vec::new();
    let mut ret_offset = None;
    for syscall in Syscall::SYSCALLS {
        let read = |phase: &str| match tracefs::format("syscalls", &format!("sys_{phase}_{}", syscall.name()))
        {
            Ok(format) => Ok(Some(format)),
            Err(Error::TracepointNotFound(_)) => Ok(None),
            Err(err) => Err(err),
        };
        let (Some(enter), Some(exit)) = (read("enter")?, read("exit")?) else { continue };
        let ret = exit.field("ret").map(|f| f.offset).ok_or_else(|| {
            Error::Other(format!("the tracepoint syscalls:{} has no `ret` field", exit.name))
        })?;
        // `count_exit` tells the syscall by it (see opentrace-ebpf's open.rs).
        if exit.field("__syscall_nr").map(|f| (f.offset, f.size)) != Some((8, 4)) {
            return Err(Error::Other(format!(
                "the tracepoint syscalls:{} has no 4-byte `__syscall_nr` at offset 8",
                exit.name
            )));
        }
        if ret_offset.is_some_and(|r| r != ret) {
            return Err(Error::Other("the sys_exit_* tracepoints disagree on where `ret` is".into()));
        }
        ret_offset = Some(ret);
        present.push((syscall, arg_offsets(&enter)?));
    }
    let names: Vec<_> = Syscall::ALL.iter().map(|s| s.name()).collect();
    let ret_offset = ret_offset.ok_or_else(|| {
        Error::Other(format!(
            "this kernel has no sys_enter/sys_exit tracepoints for {} (is it built with \
             CONFIG_FTRACE_SYSCALLS?)",
            names.join(", ")
        ))
    })?;
    Ok((present, ret_offset))
}

/// The open family's syscall numbers on this architecture, by `Syscall` number (0: it has no
/// such syscall, as aarch64 has no `open` or `creat`).
fn syscall_numbers() -> [u32; 4] {
    let mut numbers = [0; 4];
    numbers[Syscall::Openat as usize] = libc::SYS_openat as u32;
    numbers[Syscall::Openat2 as usize] = libc::SYS_openat2 as u32;
    #[cfg(target_arch = "x86_64")]
    {
        numbers[Syscall::Open as usize] = libc::SYS_open as u32;
        numbers[Syscall::Creat as usize] = libc::SYS_creat as u32;
    }
    numbers
}

/// The fields of `cgroup:cgroup_mkdir`, if it and `cgroup_rename` are there with the same layout.
fn cgroup_fields() -> Option<CgroupFields> {
    let read = |name: &str| {
        let format = tracefs::format("cgroup", name).ok()?;
        let at = |field: &str| format.field(field).map(|f| f.offset);
        Some(CgroupFields { root: at("root")?, id: at("id")?, path: at("path")? })
    };
    let mkdir = read("cgroup_mkdir");
    if mkdir.is_none() || mkdir != read("cgroup_rename") {
        crate::diag::note(
            crate::diag::Level::Debug,
            "cgroup names are looked up as events arrive: no cgroup_mkdir/cgroup_rename tracepoints".into(),
        );
        return None;
    }
    mkdir
}

/// Where the io_uring tracepoints pass the request and its result, if io_uring open requests can
/// be seen now: the kernel's BTF has the tracepoints and the request's layout, and io_uring is
/// not disabled (checked at each load: the setting can change). Else why not.
pub fn uring_args(layouts: &Layouts) -> std::result::Result<UringArgs, String> {
    if fs::read_to_string("/proc/sys/kernel/io_uring_disabled").is_ok_and(|v| v.trim() == "2") {
        return Err("io_uring is disabled (kernel.io_uring_disabled = 2)".to_owned());
    }
    layouts.uring_args.clone()
}

/// Reads the struct members the programs use from the kernel's BTF.
fn kernel_layout() -> Result<btf::Layout> {
    let path = std::env::var_os(BTF_VAR).map_or_else(|| PathBuf::from(BTF_PATH), PathBuf::from);
    let unusable = |why: String| {
        Error::Other(format!(
            "cannot read this kernel's struct layouts from its BTF ({}: {why}); opentrace needs a kernel \
             built with CONFIG_DEBUG_INFO_BTF=y",
            path.display()
        ))
    };
    let file = fs::File::open(&path).map_err(|e| unusable(crate::error::describe(&e)))?;
    let layout = match Mapped::new(&file) {
        Some(mapped) => btf::layout(&Btf::parse(mapped).map_err(unusable)?),
        // Older kernels cannot map it: read it (a few ms more).
        None => {
            let data = fs::read(&path).map_err(|e| unusable(crate::error::describe(&e)))?;
            btf::layout(&Btf::parse(data).map_err(unusable)?)
        }
    };
    layout.map_err(unusable)
}

/// A read-only private mapping of a whole file.
struct Mapped {
    at: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    fn new(file: &fs::File) -> Option<Mapped> {
        let len = usize::try_from(file.metadata().ok()?.len()).ok().filter(|&len| len > 0)?;
        // SAFETY: a fresh read-only mapping of an open file; checked for failure below.
        let at = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0)
        };
        (at != libc::MAP_FAILED).then_some(Mapped { at, len })
    }
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.at.cast(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped.
        unsafe { libc::munmap(self.at, self.len) };
    }
}
