//! Enables the 512-bit CRC path of `src/crc.rs` (cfg `wide_crc`) on compilers that have the
//! AVX-512 intrinsics it uses, stable since Rust 1.89. Older compilers, down to the workspace's
//! minimum Rust version, build the crate without it (every CRC then goes to `crc32fast`).

use std::process::Command;

/// The first Rust 1.x release with stable AVX-512 and VPCLMULQDQ intrinsics.
const WIDE_CRC_MINOR_MIN: u32 = 89;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(wide_crc)");
    println!("cargo::rerun-if-env-changed=RUSTC");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    // "rustc 1.95.0 (...)": the minor version is the second dot-separated field.
    let minor = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|version| version.split('.').nth(1)?.parse::<u32>().ok());
    if minor.is_some_and(|minor| minor >= WIDE_CRC_MINOR_MIN) {
        println!("cargo::rustc-cfg=wide_crc");
    }
}
