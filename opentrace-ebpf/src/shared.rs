//! What every program shares: this watcher's settings (a read-only global), the ring buffer the
//! records go to, the per-CPU slot an open's record is built in, and the loss counters.
use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use opentrace_common::abi::{Counter, DEFAULT_RING_SIZE, open::OpenRecord, settings::Settings};

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
pub const ADAPTIVE_WAKEUP: u64 = 0;

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_SIZE, 0);

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
