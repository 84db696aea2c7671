//! Builds the kernel programs (agent-ebpf, for bpfel-unknown-none, with the
//! nightly toolchain and bpf-linker) so the agent can embed the object.

use anyhow::{bail, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    // A missing linker would surface as a long cargo error from the nested build.
    if std::env::var_os("AYA_BUILD_SKIP").is_none() && !on_path("bpf-linker") {
        bail!("bpf-linker is not installed: run `cargo xtask setup` first");
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../agent-ebpf");
    aya_build::build_ebpf(
        [Package { name: "pywats-agent-ebpf", root_dir: root, features: &["kernel"], ..Default::default() }],
        Toolchain::Nightly,
    )
    .context("building the eBPF programs")
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}
