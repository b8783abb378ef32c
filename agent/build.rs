//! Builds the eBPF object (agent-ebpf) with the pinned nightly, the
//! aya-template way; `include_bytes_aligned!(concat!(env!("OUT_DIR"), "/interlock"))` loads it.
//!
//! With `AYA_BUILD_SKIP=1` (the fuzz targets, which never load it) the
//! object is left out: an empty file stands in for it, and a daemon built
//! so refuses to start with a message saying why.

/// Must match `EBPF_TOOLCHAIN` in xtask (a test there checks it).
const EBPF_TOOLCHAIN: &str = "nightly-2026-05-20";

fn main() -> anyhow::Result<()> {
    let skip =
        std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("interlock");
        std::fs::write(out, b"")?;
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../agent-ebpf");
    let package = aya_build::Package {
        name: "agent-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(EBPF_TOOLCHAIN))
}
