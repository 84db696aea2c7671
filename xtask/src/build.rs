//! `cargo xtask build`: the eBPF object (through agent/build.rs) and the agent, release.

use std::path::PathBuf;

use crate::{arch::Arch, cmd, setup};

/// Builds the release agent and returns its path.
pub fn agent(_env: &setup::Env) -> anyhow::Result<PathBuf> {
    cmd::run(
        std::process::Command::new("cargo")
            .args(["build", "--release", "--package", "pywats-agent"])
            .current_dir(cmd::root()),
    )?;
    Ok(cmd::root().join("target/release/pywats-agent"))
}

/// `cargo xtask build --arch ARCH`: the static (musl) agent for `arch`, as the
/// image ships it, cross-compiled when `arch` is not this machine's. The
/// kernel programs inside are built for `arch` as well: aya-build hands them
/// the agent's target CPU (`abi_arch`, agent-ebpf/build.rs).
pub fn static_agent(arch: Arch) -> anyhow::Result<PathBuf> {
    setup::cross(arch)?;
    cmd::run(
        arch.cargo()
            .args(["build", "--release", "--package", "pywats-agent", "--target", arch.musl()])
            // Symbols and debug info are two thirds of the file; the agent's
            // own package only (the eBPF object keeps its BTF).
            .args(["--config", "profile.release.package.pywats-agent.strip=\"symbols\""]),
    )?;
    let bin = cmd::root().join("target").join(arch.musl()).join("release/pywats-agent");
    println!("xtask: built {} ({})", bin.display(), arch.name());
    Ok(bin)
}
