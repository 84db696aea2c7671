//! Sets `abi_arch`, the CPU whose syscall ABI (`abi/cpu.rs`) the build uses:
//! for the kernel programs (target `bpf`) the `bpf_target_arch` aya-build
//! passes, derived from the agent's own target, or else the host's, as
//! aya-ebpf does; for the agent's library, its target.

use std::env;

const SUPPORTED: [&str; 2] = ["x86_64", "aarch64"];

fn main() {
    println!("cargo::rerun-if-env-changed=CARGO_CFG_BPF_TARGET_ARCH");
    let var = |name: &str| env::var(name).unwrap_or_default();
    let arch = match var("CARGO_CFG_TARGET_ARCH").as_str() {
        "bpf" => match env::var("CARGO_CFG_BPF_TARGET_ARCH") {
            Ok(arch) => arch,
            Err(_) => var("HOST").split('-').next().unwrap_or_default().to_owned(),
        },
        arch => arch.to_owned(),
    };
    println!("cargo::rustc-check-cfg=cfg(abi_arch, values(\"x86_64\", \"aarch64\"))");
    if !SUPPORTED.contains(&arch.as_str()) {
        // A clear error, not a missing-item one from deep in the ABI.
        panic!("pywats-agent-ebpf: no syscall ABI for {arch:?} (supported: {SUPPORTED:?})");
    }
    println!("cargo::rustc-cfg=abi_arch=\"{arch}\"");
}
