//! The eBPF programs, one module per feature: [`open`] (the open family's syscalls), [`uring`]
//! (io_uring's open requests), [`process`] (following a process tree), [`cgroup`] (cgroup names),
//! [`tracepoint`] (any tracepoint). Each program is a thin `#[tracepoint]` (or raw tracepoint)
//! entry around a `try_*` body; what they share (settings, the ring buffer, counters) is in
//! [`shared`], the filters in [`filter`], kernel struct reads in [`kernel`] and the full-path walk
//! in [`path`], the opened file's identity in [`file`].
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod cgroup;
mod count;
mod file;
mod filter;
mod kernel;
mod open;
mod path;
mod path_filter;
mod process;
mod shared;
mod storage;
mod tracepoint;
mod uring;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
