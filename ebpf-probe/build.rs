//! Compiles the C eBPF programs in `bpf/` with Debian's clang (`-target bpf`) into `OUT_DIR`; the
//! loader embeds the object with `include_bytes!`. clang is a build requirement of this crate
//! (scripts/test.sh installs it).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    for f in ["bpf/verdict.bpf.c", "bpf/verdict.h"] {
        println!("cargo:rerun-if-changed={f}");
    }
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let status = Command::new(&clang)
        .args([
            "-O2",
            "-g",
            "-Wall",
            "-Werror",
            "-target",
            "bpf",
            "-D__TARGET_ARCH_x86",
        ])
        // Debian keeps asm/types.h under the multiarch include folder.
        .args([
            "-I/usr/include/x86_64-linux-gnu",
            "-Ibpf",
            "-c",
            "bpf/verdict.bpf.c",
            "-o",
        ])
        .arg(out.join("verdict.bpf.o"))
        .status()
        .unwrap_or_else(|e| {
            panic!("running {clang} to build the eBPF programs: {e} (install clang and libbpf-dev)")
        });
    assert!(
        status.success(),
        "{clang} failed to compile bpf/verdict.bpf.c"
    );
}
