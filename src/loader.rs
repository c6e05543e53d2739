//! Loading the embedded eBPF object with this kernel's tracepoint layouts and the filters, and
//! attaching its programs.
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
};
use opentrace_common::{ArgOffsets, COUNTER_LOST_PENDING, COUNTER_LOST_RING, Filter, NO_FIELD, Syscall};

use crate::{
    error::{Error, Result},
    tracefs::{self, Format},
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
    /// Holds the programs and their links.
    pub ebpf: Ebpf,
    pub attached: Vec<Syscall>,
}

/// The per-CPU counters the programs keep.
pub struct Counters(PerCpuArray<MapData, u64>);

impl Counters {
    /// Events that passed the filters but were dropped: ring full, or no room to pair entry and exit.
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

/// The layouts of one syscall's entry tracepoint, from its format file.
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

fn global_name(syscall: Syscall) -> &'static str {
    match syscall {
        Syscall::Open => "OPEN_ARGS",
        Syscall::Openat => "OPENAT_ARGS",
        Syscall::Openat2 => "OPENAT2_ARGS",
        Syscall::Creat => "CREAT_ARGS",
    }
}

pub fn load(config: &Config) -> Result<Loaded> {
    // Read every layout first: a tracepoint this kernel lacks is skipped, not fatal.
    let mut present = Vec::new();
    let mut ret_offset = None;
    for &syscall in &config.syscalls {
        let enter = match tracefs::format("syscalls", &format!("sys_enter_{}", syscall.name())) {
            Ok(format) => format,
            Err(Error::TracepointNotFound(_)) => continue,
            Err(err) => return Err(err),
        };
        let exit = match tracefs::format("syscalls", &format!("sys_exit_{}", syscall.name())) {
            Ok(format) => format,
            Err(Error::TracepointNotFound(_)) => continue,
            Err(err) => return Err(err),
        };
        let ret = exit.field("ret").map(|f| f.offset).ok_or_else(|| {
            Error::Other(format!("the tracepoint syscalls:{} has no `ret` field", exit.name))
        })?;
        if ret_offset.is_some_and(|r| r != ret) {
            return Err(Error::Other("the sys_exit_* tracepoints disagree on where `ret` is".into()));
        }
        ret_offset = Some(ret);
        present.push((syscall, arg_offsets(&enter)?));
    }
    let Some(ret_offset) = ret_offset else {
        let names: Vec<_> = config.syscalls.iter().map(|s| s.name()).collect();
        return Err(Error::Other(format!(
            "none of the requested syscalls ({}) has sys_enter/sys_exit tracepoints on this kernel",
            names.join(", ")
        )));
    };

    let mut loader = EbpfLoader::new();
    // Nothing here needs CO-RE relocations against the kernel's BTF.
    loader.btf(None);
    for (syscall, offsets) in &present {
        loader.override_global(global_name(*syscall), offsets, true);
    }
    loader.override_global("RET_OFFSET", &ret_offset, true);
    loader.override_global("FILTER", &config.filter, true);
    loader.map_max_entries("EVENTS", config.ring_size);
    let mut ebpf = loader.load(OBJECT).map_err(|e| Error::kernel("loading the eBPF programs", &e))?;

    // Exit before entry: an entry recorded while attaching always has its exit attached.
    for (syscall, _) in &present {
        for phase in ["exit", "enter"] {
            let name = format!("sys_{phase}_{}", syscall.name());
            let program: &mut TracePoint = ebpf
                .program_mut(&name)
                .ok_or_else(|| Error::Other(format!("the embedded eBPF object has no program {name}")))?
                .try_into()
                .map_err(|e| Error::kernel(&format!("preparing {name}"), &e))?;
            program.load().map_err(|e| Error::kernel(&format!("loading the program {name}"), &e))?;
            program
                .attach("syscalls", &name)
                .map_err(|e| Error::kernel(&format!("attaching to the tracepoint syscalls:{name}"), &e))?;
        }
    }

    let take = |ebpf: &mut Ebpf, name: &str| {
        ebpf.take_map(name).ok_or_else(|| Error::Other(format!("the embedded eBPF object has no map {name}")))
    };
    let ring = RingBuf::try_from(take(&mut ebpf, "EVENTS")?)
        .map_err(|e| Error::kernel("mapping the ring buffer", &e))?;
    let counters = PerCpuArray::try_from(take(&mut ebpf, "COUNTERS")?)
        .map_err(|e| Error::kernel("opening the counters", &e))?;
    Ok(Loaded {
        ring,
        counters: Counters(counters),
        ebpf,
        attached: present.into_iter().map(|(s, _)| s).collect(),
    })
}
