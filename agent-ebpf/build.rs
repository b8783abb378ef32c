//! Rebuild the eBPF object when bpf-linker changes (it is the linker, so cargo
//! does not track it on its own).
use which::which;

fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
