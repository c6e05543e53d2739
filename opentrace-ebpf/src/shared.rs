//! What every program shares: this watcher's settings (a read-only global), the ring buffers the
//! records go to (`output`), the per-CPU slot an open's record is built in, and the loss counters.
use aya_ebpf::{
    btf_maps::{ArrayOfMaps, RingBuf},
    helpers::bpf_get_smp_processor_id,
    macros::{btf_map, map},
    maps::PerCpuArray,
};
use opentrace_common::abi::{Counter, open::OpenRecord, settings::Settings};

/// This watcher's filters and features, written by the loader before loading.
#[unsafe(no_mangle)]
pub static SETTINGS: Settings = Settings::NONE;

/// A read-only global, as the verifier sees it: a constant.
macro_rules! global {
    ($($path:tt)+) => {
        // SAFETY: a read-only global the loader sets before loading; the volatile read keeps the
        // compiler from folding in the default value.
        unsafe { core::ptr::read_volatile(&raw const $($path)+) }
    };
}
pub(crate) use global;

/// Whether the watcher's settings have this `FILTER_*`/`WITH_*`/`IN_*` bit.
#[inline(always)]
pub fn on(bit: u32) -> bool {
    global!(SETTINGS.enabled) & bit != 0
}

/// `bpf_ringbuf_output` flags: none, so the kernel wakes the reader only when it had caught up
/// (the reader pauses between drains, which makes that once per batch).
const ADAPTIVE_WAKEUP: u64 = 0;

/// The ring buffers, one per shard (a group of CPUs), by CPU: element `cpu` is the ring of that
/// CPU's shard. One ring's producers share its spinlock, which at 16 busy CPUs costs more than
/// the programs themselves; each shard has its own. An array of maps rather than a fixed set of
/// ring maps picked by index: aya-ebpf 0.2.1 declares it (`btf_maps::ArrayOfMaps`) and aya 0.14
/// creates it and fills it from user space (`maps::ArrayOfMaps::set`), so the number of shards
/// and their sizes are the loader's choice at run time, one lookup picks the ring, and a program
/// uses one map where up to 64 ring maps would take all 64 a program may use. The loader sets
/// the number of elements (the possible CPUs) and puts in the rings; the inner definition here
/// is only the template they are checked against (the kernel compares a ring's type and flags,
/// not its size). 64 KiB: a valid ring size for any page size up to 64 KiB.
#[btf_map]
static EVENTS: ArrayOfMaps<RingBuf<u8, { 64 << 10 }>, 1> = ArrayOfMaps::new();

/// Sends `record` to this CPU's ring (`bpf_ringbuf_output`). An error: the ring was full (or,
/// never expected, this CPU has no ring); the caller counts the event lost.
#[inline(always)]
pub fn output<T: ?Sized>(record: &T) -> Result<(), i64> {
    // SAFETY: a helper with no arguments; a program runs on one CPU from start to end.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let ring = EVENTS.get(cpu).ok_or(-1i64)?;
    ring.output_untyped::<T>(record, ADAPTIVE_WAKEUP).map_err(i64::from)
}

// The 8 KiB record does not fit the 512-byte stack; each CPU builds its record here.
#[map]
pub static SCRATCH: PerCpuArray<OpenRecord> = PerCpuArray::with_max_entries(1, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(counter) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: this CPU's counter; programs on one CPU do not run at the same time.
        unsafe { *counter += 1 };
    }
}

/// The return value of a program whose `try_*` body failed after its event passed the filters:
/// the event is lost, and counted as such (`Counter::LostError`), so that delivered + lost stays
/// exact.
#[inline(always)]
pub fn counted(result: Result<u32, i64>) -> u32 {
    result.unwrap_or_else(|_| {
        count(Counter::LostError);
        0
    })
}
