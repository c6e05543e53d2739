//! Builds `opentrace-ebpf` for `bpfel-unknown-none` and leaves the object in `OUT_DIR` for
//! `include_bytes_aligned!`. The eBPF toolchain (nightly features, `core` built from source,
//! bpf-linker) is picked by `OPENTRACE_EBPF_TOOLCHAIN`; see README "Building".
use std::env;

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

/// The rustup name `scripts/bootstrap` links to Debian's rustc-web toolchain in `/usr`.
const DEFAULT_TOOLCHAIN: &str = "debian-web";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=OPENTRACE_EBPF_TOOLCHAIN");
    println!("cargo:rerun-if-changed=opentrace-common");
    let toolchain = env::var("OPENTRACE_EBPF_TOOLCHAIN").unwrap_or_else(|_| DEFAULT_TOOLCHAIN.to_owned());

    // A stable rustc (Debian's) needs RUSTC_BOOTSTRAP for `-Z build-std=core` and aya-ebpf's
    // unstable features; it is set only for the eBPF build this script spawns.
    if env::var_os("RUSTC_BOOTSTRAP").is_none() {
        // SAFETY: the build script is single-threaded at this point.
        unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    }

    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/opentrace-ebpf");
    let package = Package { name: "opentrace-ebpf", root_dir, ..Default::default() };
    aya_build::build_ebpf([package], Toolchain::Custom(&toolchain)).with_context(|| {
        format!(
            "building the eBPF programs with the rustup toolchain {toolchain:?} failed; run \
             scripts/bootstrap (or set OPENTRACE_EBPF_TOOLCHAIN to a nightly with rust-src, \
             with bpf-linker on PATH)"
        )
    })
}
