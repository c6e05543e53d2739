//! The bpf and perf syscalls aya 0.14 has no API for: attaching a tracepoint program with a BPF
//! cookie, and a program's count of runs the kernel skipped.
//!
//! The generic tracepoint program learns which tracepoint fired from its cookie: the kernel
//! writes a `pt_regs` pointer over the first eight bytes of the record it hands a BPF program,
//! where `common_type` (the tracepoint's id) was.
use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

const PERF_TYPE_TRACEPOINT: u32 = 2;
/// `PERF_ATTR_SIZE_VER7`: the kernel accepts any size it knows, and zeros beyond what it reads.
const PERF_ATTR_SIZE: u32 = 128;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_LINK_CREATE: libc::c_long = 28;
/// Where `struct bpf_prog_info` keeps `recursion_misses` (uapi; Linux 5.12+), and how much of
/// it is read.
const RECURSION_MISSES: usize = 208;
const PROG_INFO_SIZE: usize = 256;
const BPF_PERF_EVENT: u32 = 41;

/// `union bpf_attr` for `BPF_LINK_CREATE` with a perf event: `prog_fd`, `target_fd`,
/// `attach_type`, `flags`, then `perf_event.bpf_cookie`.
#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    bpf_cookie: u64,
    /// The rest of the union (the kernel checks that what it does not read is zero).
    _rest: [u64; 12],
}

/// Attaches `program` to the tracepoint with id `id` (from its format file), for every process
/// on every CPU; `bpf_get_attach_cookie()` gives the program `cookie`. Dropping the returned
/// link detaches it.
pub fn attach_tracepoint(program: BorrowedFd<'_>, id: u64, cookie: u64) -> io::Result<OwnedFd> {
    let mut attr = [0u64; PERF_ATTR_SIZE as usize / 8];
    attr[0] = u64::from(PERF_TYPE_TRACEPOINT) | u64::from(PERF_ATTR_SIZE) << 32;
    attr[1] = id; // config
    // wakeup_events = 1 (offset 48), as for any tracepoint event that samples nothing.
    attr[6] = 1;
    // SAFETY: perf_event_open with an attribute block of the size it says; pid -1 with cpu 0 is
    // the whole system's events on that CPU (a BPF program runs on every CPU regardless).
    let perf = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1 as libc::pid_t,
            0,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if perf < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    let perf = unsafe { OwnedFd::from_raw_fd(perf as i32) };
    let attr = LinkCreate {
        prog_fd: program.as_raw_fd() as u32,
        target_fd: perf.as_fd().as_raw_fd() as u32,
        attach_type: BPF_PERF_EVENT,
        flags: 0,
        bpf_cookie: cookie,
        _rest: [0; 12],
    };
    // SAFETY: `LinkCreate` is that command's attribute block, zero-padded; it points at no memory.
    let link = unsafe { bpf(BPF_LINK_CREATE, &attr) }?;
    // SAFETY: a new fd that nothing else owns. The link keeps the perf event; its fd can go.
    Ok(unsafe { OwnedFd::from_raw_fd(link as i32) })
}

/// The bpf syscall: command `cmd` with attribute block `attr` (its size given as the block's).
///
/// # Safety
/// `attr` must be the attribute block `cmd` takes, zero where unused; any memory it points at
/// must be valid for what the kernel reads or writes there.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    // SAFETY: as the caller promises.
    let done = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const T, size_of::<T>() as libc::c_uint) };
    if done < 0 { Err(io::Error::last_os_error()) } else { Ok(done) }
}

/// How many times the kernel skipped program `program` because another BPF program was running
/// on that CPU (a tracepoint hit in an interrupt during one): those events are lost. 0 on a
/// kernel that does not count them.
pub fn recursion_misses(program: BorrowedFd<'_>) -> io::Result<u64> {
    let mut info = [0u64; PROG_INFO_SIZE / 8];
    #[repr(C)]
    struct GetInfo {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
        _rest: [u64; 5],
    }
    let attr = GetInfo {
        bpf_fd: program.as_raw_fd() as u32,
        info_len: PROG_INFO_SIZE as u32,
        info: info.as_mut_ptr() as u64,
        _rest: [0; 5],
    };
    // SAFETY: `GetInfo` is that command's attribute block, zero-padded; the kernel writes at most
    // `info_len` bytes into `info`, which has them.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) }?;
    Ok(info[RECURSION_MISSES / 8])
}

/// Takes `key` out of hash map `map` with its value, in one step (`BPF_MAP_LOOKUP_AND_DELETE_ELEM`,
/// which aya 0.14 lacks; per-CPU hash maps since Linux 5.14): `value` gets what the key held (for
/// a per-CPU map, every possible CPU's value, each padded to 8 bytes). False when the key is not
/// there.
pub fn lookup_and_delete(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    #[repr(C)]
    struct Elem {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
        _rest: [u64; 4],
    }
    let attr = Elem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
        _rest: [0; 4],
    };
    // SAFETY: `Elem` is that command's attribute block, zero-padded; the kernel reads the map's
    // key size from `key` and writes its value size into `value`, which the caller sized so.
    match unsafe { bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &attr) } {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}
