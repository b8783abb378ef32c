//! Builds the eBPF object (agent-ebpf) with the pinned nightly, the
//! aya-template way; `include_bytes_aligned!(concat!(env!("OUT_DIR"), "/interlock"))` loads it.

/// Must match `EBPF_TOOLCHAIN` in xtask (a test there checks it).
const EBPF_TOOLCHAIN: &str = "nightly-2026-05-20";

fn main() -> anyhow::Result<()> {
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../agent-ebpf");
    let package = aya_build::Package {
        name: "agent-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(EBPF_TOOLCHAIN))
}
