//! The eBPF datapath: C programs in `bpf/` (built by `build.rs` with clang, embedded in the
//! binary) loaded with aya, attached with TC to the host side of every local pod's veth.
//!
//! Why aya rather than libbpf-rs: pure Rust (no libbpf/libelf C build or bindgen on the build
//! machine), pinning and LPM/ring-buffer maps supported, and the C programs stay plain libbpf-style
//! C compiled by Debian's clang.
//!
//! - [`abi`]: `#[repr(C)]` twins of `bpf/verdict.h`.
//! - [`compile`]: engine → map contents, and a Rust mirror of the kernel lookup.
//! - [`maps`]: loading with pinned maps; tear-free updates.
//! - [`attach`]: TC filters on pod veths, found by their host routes.
//! - [`datapath`]: all of it as a [`crate::datapath::Datapath`], and the ring-buffer reader.

pub mod abi;
pub mod attach;
pub mod compile;
pub mod datapath;
pub mod maps;
