//! Loading the embedded eBPF object with this kernel's tracepoint layouts, writing the filters,
//! and attaching the programs.
use std::sync::{Mutex, PoisonError};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::{TracePoint, trace_point::TracePointLink},
};
use aya_log::EbpfLogger;
use opentrace_common::{
    ArgOffsets, COUNTER_LOST_PENDING, COUNTER_LOST_RING, Filter, NO_FIELD, Syscall, tracefs::Format,
};

use crate::{
    diag::FromKernel,
    error::{Error, Result},
    tracefs,
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/opentrace"));

pub struct Config {
    pub filter: Filter,
    pub syscalls: Vec<Syscall>,
    pub ring_size: u32,
}

/// Everything the kernel holds for one watcher. Dropping it detaches and frees all of it.
pub struct Loaded {
    pub ring: RingBuf<MapData>,
    pub counters: Counters,
    /// The programs' own diagnostics (aya-log); it holds the map they write them to.
    pub logs: EbpfLogger<FromKernel>,
    pub attached: Attached,
}

/// The attached programs. Dropping detaches them, all at once (see `Drop`).
pub struct Attached {
    links: Vec<TracePointLink>,
    pub syscalls: Vec<Syscall>,
    /// The programs and the maps not taken out of it; dropped after the links.
    _ebpf: Ebpf,
}

impl Drop for Attached {
    fn drop(&mut self) {
        // Each detach waits for an RCU tasks-trace grace period (~70 ms here); one after the other,
        // eight of them made close() take over half a second. In parallel they share one.
        std::thread::scope(|scope| {
            for link in self.links.drain(..) {
                // If no thread can be started, the closure (and the link) is dropped right here.
                let _ = std::thread::Builder::new().spawn_scoped(scope, move || drop(link));
            }
        });
    }
}

/// The per-CPU counters the programs keep.
pub struct Counters(PerCpuArray<MapData, u64>);

impl Counters {
    /// Events lost in the kernel: the ring buffer was full, or (counted at syscall entry, before the
    /// failed-only filter) the task's storage for pairing entry and exit could not be allocated.
    pub fn lost(&self) -> Result<u64> {
        let mut total = 0u64;
        for index in [COUNTER_LOST_RING, COUNTER_LOST_PENDING] {
            let values =
                self.0.get(&index, 0).map_err(|e| Error::kernel("reading the lost-event counters", &e))?;
            total += values.iter().sum::<u64>();
        }
        Ok(total)
    }
}

/// Where this kernel's `sys_enter_*`/`sys_exit_*` records keep their fields.
struct Layouts {
    /// The syscalls that have both tracepoints, with their entry layouts.
    present: Vec<(Syscall, ArgOffsets)>,
    ret_offset: u32,
}

/// What every load in this process shares: the format files do not change while the kernel runs,
/// and one `EbpfLoader` serves every load (aya 0.14 parses the kernel's whole BTF, ~15 ms, in
/// `EbpfLoader::new()`, for relocations this object does not need).
struct Shared {
    layouts: &'static Layouts,
    loader: EbpfLoader<'static>,
}

static SHARED: Mutex<Option<Shared>> = Mutex::new(None);

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
            "the tracepoint syscalls:{} has no `filename` or `pathname` field; this kernel's layout is \
             not supported",
            format.name
        )));
    }
    Ok(offsets)
}

/// Reads the layouts of all four syscalls; a tracepoint this kernel lacks is skipped, not fatal.
fn read_layouts() -> Result<Layouts> {
    let mut present = Vec::new();
    let mut ret_offset = None;
    for syscall in Syscall::ALL {
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
        if ret_offset.is_some_and(|r| r != ret) {
            return Err(Error::Other("the sys_exit_* tracepoints disagree on where `ret` is".into()));
        }
        ret_offset = Some(ret);
        present.push((syscall, arg_offsets(&enter)?));
    }
    let ret_offset = ret_offset.ok_or_else(|| {
        Error::Other(
            "this kernel has no sys_enter/sys_exit tracepoints for open, openat, openat2 or creat".into(),
        )
    })?;
    Ok(Layouts { present, ret_offset })
}

fn global_name(syscall: Syscall) -> &'static str {
    match syscall {
        Syscall::Open => "OPEN_ARGS",
        Syscall::Openat => "OPENAT_ARGS",
        Syscall::Openat2 => "OPENAT2_ARGS",
        Syscall::Creat => "CREAT_ARGS",
    }
}

/// aya 0.14's `EbpfLoader::new()` reads and parses the kernel's whole BTF (a 5 MB file: ~14 ms
/// and ~16 MB of transient memory, the larger part of the CLI's peak RSS) for CO-RE relocations
/// this object does not use; aya 0.16 defers it, but needs Rust 1.98. So `new()` runs on a
/// short-lived thread that first takes a private view of the filesystem (`unshare(CLONE_FS)`,
/// then `chroot` into `/sys/kernel/btf`, where `/sys/kernel/btf/vmlinux` does not resolve): it
/// finds no BTF, as on a kernel built without it. Where chroot is not allowed (no
/// CAP_SYS_CHROOT) nothing changes and `new()` pays the cost.
fn new_loader() -> EbpfLoader<'static> {
    let blind = || {
        // SAFETY: after `unshare(CLONE_FS)` the root directory belongs to this thread alone.
        unsafe {
            if libc::unshare(libc::CLONE_FS) == 0 {
                libc::chroot(c"/sys/kernel/btf".as_ptr());
            }
        }
        EbpfLoader::new()
    };
    let built = std::thread::scope(|scope| {
        let thread = std::thread::Builder::new().name("opentrace-load".into()).spawn_scoped(scope, blind);
        thread.ok().and_then(|t| t.join().ok())
    });
    let mut loader = built.unwrap_or_else(EbpfLoader::new);
    // Nothing here needs CO-RE relocations against the kernel's BTF.
    loader.btf(None);
    // The task storage map (PENDING) has no user-space API in aya 0.14; the programs use it alone.
    loader.allow_unsupported_maps();
    loader
}

fn shared() -> Result<Shared> {
    tracefs::ensure_mounted()?;
    // Leaked once per process: the loader keeps references to its globals.
    let layouts: &'static Layouts = Box::leak(Box::new(read_layouts()?));
    let mut loader = new_loader();
    for (syscall, offsets) in &layouts.present {
        loader.override_global(global_name(*syscall), offsets, true);
    }
    loader.override_global("RET_OFFSET", &layouts.ret_offset, true);
    Ok(Shared { layouts, loader })
}

pub fn load(config: &Config) -> Result<Loaded> {
    let mut guard = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if guard.is_none() {
        *guard = Some(shared()?);
    }
    let Shared { layouts, loader } = guard.as_mut().expect("set above");
    let wanted: Vec<Syscall> =
        layouts.present.iter().map(|(s, _)| *s).filter(|s| config.syscalls.contains(s)).collect();
    if wanted.is_empty() {
        let names: Vec<_> = config.syscalls.iter().map(|s| s.name()).collect();
        return Err(Error::Other(format!(
            "none of the requested syscalls ({}) has sys_enter/sys_exit tracepoints on this kernel",
            names.join(", ")
        )));
    }
    loader.map_max_entries("EVENTS", config.ring_size);
    let mut ebpf = loader.load(OBJECT).map_err(|e| Error::kernel("loading the eBPF programs", &e))?;
    drop(guard);

    let logs = EbpfLogger::init_with_logger(&mut ebpf, FromKernel)
        .map_err(|e| Error::kernel("opening the eBPF programs' log buffer", &e))?;
    let mut filters: Array<_, Filter> = Array::try_from(map(&mut ebpf, "CONFIG")?)
        .map_err(|e| Error::kernel("opening the filter map", &e))?;
    filters.set(0, config.filter, 0).map_err(|e| Error::kernel("writing the filters", &e))?;

    let diagnose = loaded_program(&mut ebpf, "diagnose")?;
    let diagnose_fd = diagnose
        .fd()
        .and_then(|fd| fd.try_clone().map_err(Into::into))
        .map_err(|e| Error::kernel("loading the program diagnose", &e))?;
    let mut tail: ProgramArray<_> = ProgramArray::try_from(map(&mut ebpf, "DIAGNOSE")?)
        .map_err(|e| Error::kernel("opening the program array", &e))?;
    tail.set(0, &diagnose_fd, 0).map_err(|e| Error::kernel("installing diagnose", &e))?;

    // Exit before entry: an entry recorded while attaching always has its exit attached.
    let mut links = Vec::new();
    for syscall in &wanted {
        for phase in ["exit", "enter"] {
            let name = format!("sys_{phase}_{}", syscall.name());
            let program = loaded_program(&mut ebpf, &name)?;
            let link = program
                .attach("syscalls", &name)
                .and_then(|id| program.take_link(id))
                .map_err(|e| attach_error("syscalls", &name, &e))?;
            links.push(link);
        }
    }

    let ring = RingBuf::try_from(take(&mut ebpf, "EVENTS")?)
        .map_err(|e| Error::kernel("mapping the ring buffer", &e))?;
    let counters = PerCpuArray::try_from(take(&mut ebpf, "COUNTERS")?)
        .map_err(|e| Error::kernel("opening the counters", &e))?;
    Ok(Loaded {
        ring,
        counters: Counters(counters),
        logs,
        attached: Attached { links, syscalls: wanted, _ebpf: ebpf },
    })
}

/// Why attaching to `category:name` failed. The kernel allows 64 programs per tracepoint, shared
/// by every tool on the machine, and says E2BIG when they are taken.
fn attach_error(category: &str, name: &str, err: &(dyn std::error::Error + 'static)) -> Error {
    if crate::error::os_code(err) == Some(libc::E2BIG) {
        return Error::Other(format!(
            "the tracepoint {category}:{name} already has the most programs the kernel allows on one \
             tracepoint (64, shared by every tracer on this machine: other opentrace watchers, bpftrace, \
             ...); close some of them (`bpftool perf` lists them)"
        ));
    }
    Error::kernel(&format!("attaching to the tracepoint {category}:{name}"), err)
}

/// The tracepoint program `name`, loaded into the kernel (verified).
fn loaded_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut TracePoint> {
    let program: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::Other(format!("the embedded eBPF object has no program {name}")))?
        .try_into()
        .map_err(|e| Error::kernel(&format!("preparing {name}"), &e))?;
    program.load().map_err(|e| Error::kernel(&format!("loading the program {name}"), &e))?;
    Ok(program)
}

fn missing(name: &str) -> Error {
    Error::Other(format!("the embedded eBPF object has no map {name}"))
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name).ok_or_else(|| missing(name))
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name).ok_or_else(|| missing(name))
}
