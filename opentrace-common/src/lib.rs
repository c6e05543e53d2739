//! What the eBPF programs (kernel side) and the extension (user side) share.
//!
//! Without features this crate is `no_std` and holds only what both sides compile: [`abi`], the
//! ring buffer records, settings and kernel offsets of each feature, and [`comm`], the comm
//! substring match the programs run. The `user` feature adds the host-side logic that needs no
//! kernel and no Python, so plain `cargo test` covers it: decoding records into events and the
//! table of their fields ([`schema`], [`open`], [`tracepoint`]), the tracefs `format` parser
//! ([`tracefs`]), BTF ([`btf`]), the CLI's text and JSON output ([`text`]), and errno names
//! ([`errno`]).
#![cfg_attr(not(feature = "user"), no_std)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod abi;
#[cfg(feature = "user")]
pub mod arrow;
pub mod comm;
#[cfg(feature = "user")]
pub mod counts;

#[cfg(feature = "user")]
pub mod btf;
#[cfg(feature = "user")]
pub mod cgroup;
#[cfg(feature = "user")]
pub mod errno;
#[cfg(feature = "user")]
pub mod open;
#[cfg(feature = "user")]
pub mod schema;
#[cfg(feature = "user")]
pub mod text;
#[cfg(feature = "user")]
pub mod tracefs;
#[cfg(feature = "user")]
pub mod tracepoint;

/// Longest path the kernel accepts, including its NUL (`PATH_MAX`).
pub const PATH_MAX: usize = 4096;
/// Length of `task_struct::comm`, including its NUL.
pub const COMM_LEN: usize = 16;
/// `AT_FDCWD`: what `dfd` reports for `open` and `creat`.
pub const AT_FDCWD: i32 = -100;
/// Offset "not present in this tracepoint's format" in [`abi::open::ArgOffsets`].
pub const NO_FIELD: u32 = u32::MAX;
/// Largest process or thread id the kernel can hand out (`PID_MAX_LIMIT - 1` on 64-bit).
pub const PID_MAX: u32 = (1 << 22) - 1;
