//! Loading the embedded eBPF object with this kernel's tracepoint layouts, writing the filters,
//! and attaching the programs.
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, ArrayOfMaps, HashMap, LpmTrie, Map, MapData, PerCpuArray, ProgramArray, lpm_trie},
    programs::{Program, ProgramError, RawTracePoint, TracePoint},
};
use aya_log::EbpfLogger;
use std::{
    fs::File,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use opentrace_common::abi::{
    cgroup::CgroupFields,
    count::at_exit_only,
    open::Syscall,
    paths::{self, KEY_BYTES, Learned, Prefix, Suffixes},
    settings::{FILTER_PATHS, FILTER_TRACKED, PATHS_BY_DENTRY, WITH_COUNTS, WITH_FILE_ID, WITH_FULL_PATH},
    tracepoint::TracepointConfig,
    uring::{URING_COMPLETE_ARGS, UringArgs},
};

use crate::{
    attach::{Attached, Link, attach, attach_error},
    config::{Config, Follow, Rings},
    diag::FromKernel,
    error::{Error, Result},
    follow::{self, Tracked},
    layout::{self, Layouts},
    lost::Counters,
    paths::PathFilter,
    ringbuf::Ring,
    sys, tracefs,
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/opentrace"));

/// Everything the kernel holds for one watcher. Dropping it detaches and frees all of it.
pub struct Loaded {
    /// The ring buffers, by shard: CPU `c` writes to `rings[c % rings.len()]`.
    pub rings: Vec<Ring>,
    pub counters: Counters,
    /// The programs' own diagnostics (aya-log); it holds the map they write them to.
    pub logs: EbpfLogger<FromKernel>,
    /// A pid watcher's followed processes.
    pub tracked: Option<Tracked>,
    pub attached: Attached,
}

fn global_name(syscall: Syscall) -> &'static str {
    match syscall {
        Syscall::Open => "OPEN_ARGS",
        Syscall::Openat => "OPENAT_ARGS",
        Syscall::Openat2 => "OPENAT2_ARGS",
        Syscall::Creat => "CREAT_ARGS",
        Syscall::IoUring => unreachable!("io_uring requests come through their own tracepoints"),
    }
}

/// aya 0.14's `EbpfLoader::new()` reads and parses the kernel's whole BTF (a 5 MB file: ~14 ms
/// and ~16 MB of transient memory) for CO-RE relocations this object does not use (its struct
/// offsets come from `layout`); aya 0.16 defers it, but needs Rust 1.98. So `new()` runs on a
/// short-lived thread that first takes a private view of the filesystem (`unshare(CLONE_FS)`,
/// then `chroot` into `/sys/kernel/btf`, where `/sys/kernel/btf/vmlinux` does not resolve): it
/// finds no BTF, as on a kernel built without it. Where chroot is not allowed (no
/// CAP_SYS_CHROOT) nothing changes and `new()` pays the cost.
fn new_loader<'a>() -> EbpfLoader<'a> {
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

pub fn load(config: &Config) -> Result<Loaded> {
    tracefs::ensure_mounted()?;
    let layouts = layout::get()?;
    if !config.tracepoints.is_empty() {
        return load_tracepoints(config, layouts);
    }
    // With the kfunc where the kernel has it; a kernel that refuses the programs with it (its
    // verifier, a kernel without a JIT) is asked again without it.
    let kfunc = kfunc_id(layouts);
    let (loaded, kfunc) = match load_opens(config, layouts, kfunc) {
        Err(Error::Other(err)) if kfunc.is_some() => {
            crate::diag::note(
                crate::diag::Level::Info,
                format!("loading with the kfunc bpf_rdonly_cast failed ({err}); loading without it"),
            );
            (load_opens(config, layouts, None), None)
        }
        loaded => (loaded, kfunc),
    };
    if loaded.is_ok() {
        let how = if kfunc.is_some() { "direct loads (bpf_rdonly_cast)" } else { "probe reads" };
        crate::diag::note(crate::diag::Level::Debug, format!("the programs read kernel structs by {how}"));
    }
    loaded
}

/// `load` for the open family (and io_uring's opens).
fn load_opens(config: &Config, layouts: &Layouts, kfunc: Option<u32>) -> Result<Loaded> {
    if config.settings.enabled & (WITH_FULL_PATH | FILTER_PATHS) != 0
        && let Err(why) = &layouts.full_path
    {
        let what = if config.settings.enabled & WITH_FULL_PATH != 0 {
            "full paths cannot be resolved"
        } else {
            "a path filter cannot match full paths"
        };
        return Err(Error::Other(format!(
            "{what} on this kernel: {why} (its BTF lacks what the path walk reads)"
        )));
    }
    let wanted: Vec<Syscall> =
        layouts.syscalls.iter().map(|(s, _)| *s).filter(|s| config.syscalls.contains(s)).collect();
    let uring = match config.syscalls.contains(&Syscall::IoUring).then(|| layout::uring_args(layouts)) {
        Some(Ok(args)) => Some(args),
        Some(Err(why)) if wanted.is_empty() => {
            return Err(Error::Other(format!("io_uring open requests cannot be traced here: {why}")));
        }
        Some(Err(why)) => {
            crate::diag::note(
                crate::diag::Level::Debug,
                format!("io_uring open requests are not traced: {why}"),
            );
            None
        }
        None => None,
    };
    if wanted.is_empty() && uring.is_none() {
        let names: Vec<_> = config.syscalls.iter().map(|s| s.name()).collect();
        return Err(Error::Other(format!(
            "none of the requested syscalls ({}) can be traced on this kernel: it has no \
             syscalls:sys_enter_*/sys_exit_* tracepoints for them",
            names.join(", ")
        )));
    }

    let (mut ebpf, logs, rings) = load_object(config, layouts, uring.as_ref(), 1, kfunc)?;

    let diagnose = loaded_program(&mut ebpf, "diagnose")?;
    let diagnose_fd = diagnose
        .fd()
        .and_then(|fd| fd.try_clone().map_err(Into::into))
        .map_err(|e| Error::kernel("loading the program diagnose", &e))?;
    let mut tail: ProgramArray<_> = ProgramArray::try_from(map(&mut ebpf, "DIAGNOSE")?)
        .map_err(|e| Error::kernel("opening the program array", &e))?;
    tail.set(0, &diagnose_fd, 0).map_err(|e| Error::kernel("installing diagnose", &e))?;

    let mut links = Vec::new();
    let held = match config.paths.as_ref().and_then(PathFilter::dirs) {
        Some(dirs) => learn_dirs(&mut ebpf, dirs, &mut links)?,
        None => Vec::new(),
    };
    let tracked = match config.follow {
        Some(follow) => Some(follow_processes(&mut ebpf, follow, &mut links)?),
        None => None,
    };
    // Names of cgroups made from now on come before any event from them.
    if layouts.cgroup_fields.is_some() {
        let named = loaded_program(&mut ebpf, "cgroup_named")?;
        for name in ["cgroup_mkdir", "cgroup_rename"] {
            links.push(attach(named, "cgroup", name)?);
        }
    }
    // Completions before submissions, exits before entries: whatever one program remembers for
    // the other, the other is there to take it.
    let mut attached = wanted.clone();
    if let Some(args) = uring {
        match attach_uring(&mut ebpf, args) {
            Ok(uring_links) => {
                links.extend(uring_links);
                attached.push(Syscall::IoUring);
            }
            Err(err) if wanted.is_empty() => return Err(err),
            // The open syscalls are watched all the same: `attached` says io_uring is not.
            Err(err) => crate::diag::note(
                crate::diag::Level::Warning,
                format!("io_uring open requests are not traced: {err}"),
            ),
        }
    }
    if counts_at_exit(config, layouts) {
        crate::diag::note(
            crate::diag::Level::Debug,
            "counting at the exits alone: no entry program; an event only names a new key".into(),
        );
        let program = loaded_program(&mut ebpf, "count_exit")?;
        for syscall in &wanted {
            links.push(attach(program, "syscalls", &format!("sys_exit_{}", syscall.name()))?);
        }
    } else {
        let exit = loaded_program(&mut ebpf, "sys_exit")?;
        for syscall in &wanted {
            links.push(attach(exit, "syscalls", &format!("sys_exit_{}", syscall.name()))?);
        }
        for syscall in &wanted {
            let name = format!("sys_enter_{}", syscall.name());
            links.push(attach(loaded_program(&mut ebpf, &name)?, "syscalls", &name)?);
        }
    }

    let names = attached.iter().map(|s| s.name().to_owned()).collect();
    finish(ebpf, logs, rings, tracked, (links, held), names)
}

/// Whether counting mode counts at the syscalls' exits alone (`count_exit`, no entry
/// program): always for keys without the file (`abi::count::at_exit_only`); by file, where the
/// syscall's path and start directory can be read from the task's saved registers. A path filter
/// needs the entry's path before the exit decides anything.
fn counts_at_exit(config: &Config, layouts: &Layouts) -> bool {
    config.settings.enabled & WITH_COUNTS != 0
        && config.paths.is_none()
        && (at_exit_only(config.settings.count_by) || layouts.syscall_regs.is_ok())
}

/// `PATHS_BY_DENTRY`: teaches the programs the path filter's directories (`LEARNED`): each is
/// opened `O_PATH` and named to `learn_dir` through `syncfs(fd)`. The fds are returned, to be held
/// as long as the programs run: an open directory's dentry and mount stay what they are. Should a
/// directory not be learned (another pid namespace's pid, say), the paths are compared (`ready`
/// stays 0) and it is said. `learn_dir` stays attached with the others (it returns at once for
/// any other process's syncfs): detaching it now would wait for an RCU grace period, ~85 ms here.
fn learn_dirs(ebpf: &mut Ebpf, dirs: &[Vec<u8>], links: &mut Vec<Link>) -> Result<Vec<File>> {
    use std::os::unix::{ffi::OsStrExt, fs::MetadataExt, fs::OpenOptionsExt};
    let mut held = Vec::new();
    for dir in dirs {
        let path = std::ffi::OsStr::from_bytes(dir);
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(path)
            .map_err(|e| {
                Error::Other(format!(
                    "opening {} (a directory of the path filter) failed: {e}",
                    path.display()
                ))
            })?;
        held.push(opened);
    }
    let learner = loaded_program(ebpf, "learn_dir")?;
    let link = attach(learner, "syscalls", "sys_enter_syncfs")?;
    for dir in &held {
        // SAFETY: syncfs(2) of an fd we hold; on an O_PATH fd it fails (EBADF) after its entry
        // tracepoint ran, which is all that is wanted.
        unsafe { libc::syncfs(dir.as_raw_fd()) };
    }
    links.push(link);
    // Once `ready`, `forget_deleted` sees a learned directory deleted; one deleted before is seen
    // below.
    let forget = loaded_program(ebpf, "forget_deleted")?;
    for exit in
        ["sys_exit_rmdir", "sys_exit_unlinkat", "sys_exit_rename", "sys_exit_renameat", "sys_exit_renameat2"]
    {
        // A kernel without one of these syscalls has nothing to watch there.
        if let Ok(link) = attach(forget, "syscalls", exit) {
            links.push(link);
        }
    }
    let mut learned: Array<_, Learned> = Array::try_from(map(ebpf, "LEARNED")?)
        .map_err(|e| Error::kernel("opening the path filter's directories", &e))?;
    let mut got =
        learned.get(&0, 0).map_err(|e| Error::kernel("reading the path filter's directories", &e))?;
    let fall_back = |why: String| {
        let compared = "paths are compared instead (the same rules, at a higher cost per open)";
        crate::diag::note(crate::diag::Level::Warning, format!("{why}; {compared}"));
    };
    if got.count as usize != dirs.len() || got.dirs[..dirs.len()].iter().any(|d| d[0] == 0 || d[1] == 0) {
        fall_back(format!(
            "{} of the path filter's {} directories were learned by the kernel",
            got.count,
            dirs.len()
        ));
        return Ok(held);
    }
    let mut set_ready = |ready| {
        got.ready = ready;
        learned.set(0, got, 0).map_err(|e| Error::kernel("writing the path filter's directories", &e))
    };
    set_ready(1)?;
    // One deleted before `forget_deleted` could see it.
    if held.iter().any(|dir| dir.metadata().is_ok_and(|m| m.nlink() == 0)) {
        set_ready(0)?;
        fall_back("a directory of the path filter was deleted as the watcher started".into());
        return Ok(held);
    }
    say_kept(ebpf, dirs.len());
    Ok(held)
}

/// Says (at DEBUG) how many of the learned directories have their own paths kept
/// (`path::keep_prefix`), where a matching open's walk stops.
fn say_kept(ebpf: &Ebpf, dirs: usize) {
    let Some(map) = ebpf.map("PREFIXES") else { return };
    let Ok(prefixes) = Array::<_, Prefix>::try_from(map) else { return };
    let kept = (0..dirs as u32).filter(|&i| prefixes.get(&i, 0).is_ok_and(|p| p.len != 0)).count();
    crate::diag::note(
        crate::diag::Level::Debug,
        format!(
            "the path filter keeps the paths of {kept} of its {dirs} directories (those of at most {} bytes, \
             {} levels up to the root with mount points counted): a matching open's walk stops there",
            paths::PREFIX_MAX,
            paths::CHAIN_MAX
        ),
    );
}

/// `kernel::rdonly_cast`'s call instruction as built (opentrace-ebpf): `BPF_PSEUDO_KFUNC_CALL`,
/// its function id a placeholder.
const RDONLY_CAST_CALL: [u8; 8] = [0x85, 0x20, 0x00, 0x00, 0x11, 0xf0, 0xca, 0x7f];

/// What stands in for that call where the kfunc is not used: `r0 = r1`. The programs then take
/// probe reads (`KERNEL.btf_*` are 0: `KernelOffsets::untyped`), and the verifier prunes the
/// direct loads.
const MOVE_R1_TO_R0: [u8; 8] = [0xbf, 0x10, 0, 0, 0, 0, 0, 0];

/// Set (to anything): the programs do not use the `bpf_rdonly_cast` kfunc, and read the kernel's
/// structs by probe reads only, as on a kernel without it (older than 6.2).
const NO_KFUNCS_VAR: &str = "OPENTRACE_NO_KFUNCS";

/// For the tests: a function id given to the kfunc calls instead of the kernel's, which the
/// kernel refuses (the load is then made again without them).
const TEST_KFUNC_ID_VAR: &str = "OPENTRACE_TEST_KFUNC_ID";

/// The function id the programs' calls of `bpf_rdonly_cast` get; None: the kfunc is not used.
fn kfunc_id(layouts: &Layouts) -> Option<u32> {
    if std::env::var_os(NO_KFUNCS_VAR).is_some() {
        return None;
    }
    let id = layouts.rdonly_cast.as_ref().map_err(|why| {
        crate::diag::note(crate::diag::Level::Debug, format!("the kfunc bpf_rdonly_cast is not used: {why}"))
    });
    let test = std::env::var(TEST_KFUNC_ID_VAR).ok().and_then(|v| v.parse().ok());
    id.ok().map(|id| test.unwrap_or(*id))
}

/// The programs' object (8-byte aligned, as the ELF parser wants it), every call of
/// `bpf_rdonly_cast` given the function id, or (None) replaced by a move.
fn linked_object(rdonly_cast: Option<u32>) -> Vec<u64> {
    let instruction = match rdonly_cast {
        Some(id) => {
            let mut call = RDONLY_CAST_CALL;
            call[4..].copy_from_slice(&id.to_le_bytes());
            call
        }
        None => MOVE_R1_TO_R0,
    };
    // Instructions lie at 8-byte offsets: code sections are 8-aligned in the object.
    OBJECT
        .chunks(8)
        .map(|chunk| {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            u64::from_ne_bytes(if word == RDONLY_CAST_CALL { instruction } else { word })
        })
        .collect()
}

/// The object loaded with this kernel's layouts and the watcher's settings (its maps made, the
/// rings in place; its programs are loaded as they are attached). `tracepoints`: room in
/// `TP_CONFIG`; `kfunc`: see `kfunc_id`.
fn load_object(
    config: &Config,
    layouts: &Layouts,
    uring: Option<&UringArgs>,
    tracepoints: u32,
    kfunc: Option<u32>,
) -> Result<(Ebpf, EbpfLogger<FromKernel>, Vec<Ring>)> {
    let kernel = if kfunc.is_some() { layouts.kernel } else { layouts.kernel.untyped() };
    let mut loader = new_loader();
    for (syscall, offsets) in &layouts.syscalls {
        loader.override_global(global_name(*syscall), offsets, true);
    }
    loader.override_global("RET_OFFSET", &layouts.ret_offset, true);
    loader.override_global("SYSCALL_NUMBERS", &layouts.numbers, true);
    loader.override_global("KERNEL", &kernel, true);
    loader.override_global(
        "CGROUP_FIELDS",
        layouts.cgroup_fields.as_ref().unwrap_or(&CgroupFields::DEFAULT),
        true,
    );
    loader.override_global("URING_ARGS", uring.unwrap_or(&UringArgs::DEFAULT), true);
    let mut settings = config.settings;
    // The thread that loads is the one that teaches `learn_dir` (see `learn_dirs`).
    // SAFETY: gettid(2) has no arguments and cannot fail.
    let learner = unsafe { libc::gettid() } as u32;
    if config.paths.as_ref().is_some_and(|p| p.dirs().is_some()) {
        settings.enabled |= PATHS_BY_DENTRY;
        loader.override_global("LEARNER", &learner, true);
    }
    if config.follow.is_some() {
        settings.enabled |= FILTER_TRACKED;
    }
    // Without what it is read from, identity is None (said when the layouts were read).
    if layouts.file_id.is_err() {
        settings.enabled &= !WITH_FILE_ID;
    }
    loader.override_global("SETTINGS", &settings, true);
    let suffixes = config.paths.as_ref().map_or(Suffixes::NONE, PathFilter::suffixes);
    loader.override_global("PATH_SUFFIXES", &suffixes, true);
    let keys = config.paths.as_ref().map(PathFilter::keys).unwrap_or_default();
    loader.map_max_entries("PATH_KEYS", (keys.len() as u32).max(1));
    // The learned directories' kept paths (`Prefix`, 936 bytes each), one per directory.
    let dirs = config.paths.as_ref().and_then(PathFilter::dirs).map_or(0, |dirs| dirs.len());
    loader.map_max_entries("PREFIXES", (dirs as u32).max(1));
    let cpus = aya::util::nr_cpus()
        .map_err(|(path, e)| Error::kernel(&format!("reading the possible CPUs from {path}"), &e))?
        as u32;
    loader.map_max_entries("EVENTS", cpus);
    loader.map_max_entries("TP_CONFIG", tracepoints.max(1));
    loader.map_max_entries("COUNTS", settings.count_keys.max(1));
    let object = linked_object(kfunc);
    // SAFETY: plain words viewed as their bytes, the object's length of them.
    let object = unsafe { std::slice::from_raw_parts(object.as_ptr().cast::<u8>(), OBJECT.len()) };
    let mut ebpf = loader.load(object).map_err(|e| Error::kernel("loading the eBPF programs", &e))?;
    let rings = make_rings(&mut ebpf, config.rings, cpus)?;
    if !keys.is_empty() {
        let mut trie: LpmTrie<_, [u8; KEY_BYTES], u8> = LpmTrie::try_from(map(&mut ebpf, "PATH_KEYS")?)
            .map_err(|e| Error::kernel("opening the path filter's map", &e))?;
        for key in &keys {
            trie.insert(&lpm_trie::Key::new(key.prefix_len, key.data), 1, 0)
                .map_err(|e| Error::kernel("filling the path filter's map", &e))?;
        }
    }
    let logs = EbpfLogger::init_with_logger(&mut ebpf, FromKernel)
        .map_err(|e| Error::kernel("opening the eBPF programs' log buffer", &e))?;
    Ok((ebpf, logs, rings))
}

/// Makes the watcher's ring buffers, one per shard, and gives each possible CPU its shard's in
/// `EVENTS` (an array of maps): CPU `c` writes to shard `c % shards`, so a shard's producers are
/// the CPUs that share its lock. Before any program is attached: no record finds its CPU without
/// a ring.
fn make_rings(ebpf: &mut Ebpf, rings: Rings, cpus: u32) -> Result<Vec<Ring>> {
    use aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_RINGBUF;
    let made = (0..rings.shards)
        .map(|_| {
            let def = aya_obj::Map::new_from_params(BPF_MAP_TYPE_RINGBUF as u32, 0, 0, rings.shard_size, 0);
            MapData::create(def, "EVENTS", None).map_err(|e| Error::kernel("making a ring buffer", &e))
        })
        .collect::<Result<Vec<_>>>()?;
    let outer = map(ebpf, "EVENTS")?;
    let slots: Vec<u32> = (0..cpus).collect();
    let fds: Vec<u32> =
        slots.iter().map(|cpu| made[(cpu % rings.shards) as usize].fd().as_fd().as_raw_fd() as u32).collect();
    let batched = match &*outer {
        Map::ArrayOfMaps(data) => update_batch(data.fd().as_fd(), &slots, &fds),
        _ => Err(std::io::Error::other("not an array of maps")),
    };
    if batched.is_err() {
        // A kernel without batch updates of this map type (before 5.6): one at a time.
        let mut array: ArrayOfMaps<&mut MapData, MapData> =
            ArrayOfMaps::try_from(outer).map_err(|e| Error::kernel("opening the ring buffers' array", &e))?;
        for cpu in slots {
            array
                .set(cpu, &made[(cpu % rings.shards) as usize], 0)
                .map_err(|e| Error::kernel("giving a CPU its ring buffer", &e))?;
        }
    }
    made.into_iter()
        .map(|data| Ring::new(data).map_err(|e| Error::kernel("mapping a ring buffer", &e)))
        .collect()
}

/// Puts the maps `values` (fds) at `keys` of the array of maps `outer` with one
/// `BPF_MAP_UPDATE_BATCH`, which aya 0.14 lacks: the kernel waits for an RCU grace period after
/// each update of a map of maps (~10 ms here), and once for a batch; one CPU's slot at a time,
/// `watch()` waited 10 ms per CPU.
fn update_batch(outer: BorrowedFd<'_>, keys: &[u32], values: &[u32]) -> std::io::Result<()> {
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
    /// `union bpf_attr`'s `batch`, then zeros to the size the kernel is told.
    #[repr(C)]
    struct Batch {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
        _rest: [u64; 10],
    }
    let mut attr = Batch {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: keys.len().min(values.len()) as u32,
        map_fd: outer.as_raw_fd() as u32,
        elem_flags: 0,
        flags: 0,
        _rest: [0; 10],
    };
    // SAFETY: bpf(2) with an attribute block of the size it is told; the kernel reads `count`
    // keys and values from the slices, which outlive the call, and writes back `count`.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_MAP_UPDATE_BATCH, &mut attr as *mut Batch, size_of::<Batch>() as u32)
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if attr.count as usize != keys.len() {
        return Err(std::io::Error::other("the batch update stopped early"));
    }
    Ok(())
}

/// Takes the counters out of the object; the rest stays with the links.
fn finish(
    mut ebpf: Ebpf,
    logs: EbpfLogger<FromKernel>,
    rings: Vec<Ring>,
    tracked: Option<Tracked>,
    (links, held): (Vec<Link>, Vec<File>),
    names: Vec<String>,
) -> Result<Loaded> {
    let counts = PerCpuArray::try_from(take(&mut ebpf, "COUNTERS")?)
        .map_err(|e| Error::kernel("opening the counters", &e))?;
    // The loaded programs (only attached ones are loaded) whose skipped run is a lost event.
    // Not those that name cgroups (a name not seen is looked up in /sys/fs/cgroup), nor the one
    // that learn and forget the path filter's directories (not opens), nor io_uring_complete's: a
    // request whose completion was skipped is counted when the reader finds it never completed.
    let mut programs = Vec::new();
    for (name, program) in ebpf.programs() {
        if matches!(name, "cgroup_named" | "learn_dir" | "forget_deleted")
            || name.starts_with("io_uring_complete")
        {
            continue;
        }
        if let Ok(fd) = program.fd() {
            programs
                .push(fd.as_fd().try_clone_to_owned().map_err(|e| Error::kernel("keeping a program", &e))?);
        }
    }
    let counters = Counters::new(counts, programs, rings.len() as u32);
    Ok(Loaded {
        rings,
        counters,
        logs,
        tracked,
        attached: Attached { links, names, _held: held, _ebpf: ebpf },
    })
}

/// `watch_tracepoints`: the generic program, attached to each tracepoint, told by `TP_CONFIG`
/// how to copy each one's records. A tracepoint that cannot be attached is an error if it was
/// named, and skipped (said on the log) if a glob matched it.
fn load_tracepoints(config: &Config, layouts: &Layouts) -> Result<Loaded> {
    let (mut ebpf, logs, rings) = load_object(config, layouts, None, config.tracepoints.len() as u32, None)?;
    let mut table: HashMap<_, u32, TracepointConfig> = HashMap::try_from(map(&mut ebpf, "TP_CONFIG")?)
        .map_err(|e| Error::kernel("opening the tracepoint table", &e))?;
    for (schema, _) in &config.tracepoints {
        table
            .insert(schema.id, schema.config, 0)
            .map_err(|e| Error::kernel("filling the tracepoint table", &e))?;
    }
    let mut links = Vec::new();
    let tracked = match config.follow {
        Some(follow) => Some(follow_processes(&mut ebpf, follow, &mut links)?),
        None => None,
    };
    let program = loaded_program(&mut ebpf, "any_tracepoint")?
        .fd()
        .map_err(|e| Error::kernel("loading the program any_tracepoint", &e))?;
    let mut names = Vec::new();
    let mut skipped = Vec::new();
    for (schema, named) in &config.tracepoints {
        let (category, name) = schema.name.split_once(':').unwrap_or(("", &schema.name));
        let attached = sys::attach_tracepoint(program.as_fd(), u64::from(schema.id), u64::from(schema.id));
        match attached.map_err(|e| attach_error(category, name, &e)) {
            Ok(link) => {
                links.push(Link::Cookie(link));
                names.push(schema.name.clone());
            }
            Err(err) if !named => skipped.push(format!("{} ({err})", schema.name)),
            Err(err) => return Err(err),
        }
    }
    if !skipped.is_empty() {
        crate::diag::note(
            crate::diag::Level::Info,
            format!(
                "{} tracepoints matched but could not be attached: {}",
                skipped.len(),
                skipped.join("; ")
            ),
        );
    }
    if names.is_empty() {
        return Err(Error::Other("none of the tracepoints could be attached (see the log)".into()));
    }
    finish(ebpf, logs, rings, tracked, (links, Vec::new()), names)
}

/// Attaches what keeps a pid watcher's followed set (the exit program; with `descendants` the
/// fork program, first) and fills it (see `follow::seed`).
fn follow_processes(ebpf: &mut Ebpf, follow: Follow, links: &mut Vec<Link>) -> Result<Tracked> {
    if follow.descendants {
        links.push(attach_raw(ebpf, "sched_process_fork", "sched_process_fork")?);
    }
    links.push(attach(loaded_program(ebpf, "sched_process_exit")?, "sched", "sched_process_exit")?);
    let mut tracked: Tracked = HashMap::try_from(take(ebpf, "TRACKED")?)
        .map_err(|e| Error::kernel("opening the followed-process map", &e))?;
    follow::seed(&mut tracked, follow.root, follow.descendants)?;
    Ok(tracked)
}

/// Attaches the io_uring programs: completions first, so that every request submitted from then
/// on is matched.
fn attach_uring(ebpf: &mut Ebpf, args: UringArgs) -> Result<Vec<Link>> {
    // The program that reads as many arguments as this kernel's io_uring_complete has.
    let complete = if args.complete_args as usize == URING_COMPLETE_ARGS {
        "io_uring_complete"
    } else {
        "io_uring_complete_6_0"
    };
    let mut links = vec![
        attach_raw(ebpf, complete, "io_uring_complete")?,
        attach_raw(ebpf, "io_uring_submit_req", "io_uring_submit_req")?,
    ];
    if args.req_failed != 0 {
        links.push(attach_raw(ebpf, "io_uring_req_failed", "io_uring_req_failed")?);
    } else {
        crate::diag::note(
            crate::diag::Level::Debug,
            "io_uring opens that fail before submission (an unreadable path, a refused flag) are not \
             seen: this kernel has no io_uring_req_failed(sqe, req, error) tracepoint"
                .into(),
        );
    }
    Ok(links)
}

/// Loads the raw tracepoint program `name` and attaches it to `tracepoint`.
fn attach_raw(ebpf: &mut Ebpf, name: &str, tracepoint: &str) -> Result<Link> {
    let program = loaded(ebpf, name, RawTracePoint::load)?;
    let link = program
        .attach(tracepoint)
        .and_then(|id| program.take_link(id))
        .map_err(|e| attach_error("raw tracepoint", tracepoint, &e))?;
    Ok(Link::Raw(link))
}

/// The tracepoint program `name`, loaded into the kernel (verified).
fn loaded_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut TracePoint> {
    loaded(ebpf, name, TracePoint::load)
}

/// The program `name` of type `P`, loaded into the kernel.
fn loaded<'a, P: 'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
    load: fn(&mut P) -> std::result::Result<(), ProgramError>,
) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let program: &mut P = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::Other(format!("the embedded eBPF object has no program {name}")))?
        .try_into()
        .map_err(|e| Error::kernel(&format!("preparing {name}"), &e))?;
    load(program).map_err(|e| Error::kernel(&format!("loading the program {name}"), &e))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn instructions(object: &[u8], instruction: [u8; 8]) -> usize {
        object.chunks(8).filter(|w| *w == instruction).count()
    }

    fn linked_object(kfunc: Option<u32>) -> Vec<u8> {
        let words = super::linked_object(kfunc);
        words.iter().flat_map(|w| w.to_ne_bytes()).take(OBJECT.len()).collect()
    }

    #[test]
    fn every_rdonly_cast_call_gets_the_kernels_function_id_or_becomes_a_move() {
        let calls = instructions(OBJECT, RDONLY_CAST_CALL);
        assert!(calls > 0, "the programs were built without a call of bpf_rdonly_cast");
        let linked = linked_object(Some(0x1234));
        assert_eq!(instructions(&linked, RDONLY_CAST_CALL), 0);
        assert_eq!(instructions(&linked, [0x85, 0x20, 0, 0, 0x34, 0x12, 0, 0]), calls);
        let moved = linked_object(None);
        assert_eq!(instructions(&moved, RDONLY_CAST_CALL), 0);
        assert_eq!(instructions(&moved, MOVE_R1_TO_R0), calls + instructions(OBJECT, MOVE_R1_TO_R0));
        assert_eq!(linked.len(), OBJECT.len());
    }
}
