//! `cargo xtask build`: the eBPF object (through agent/build.rs) and the agent, release.

use std::{path::PathBuf, process::Command};

use crate::{cmd, setup::Env};

/// Builds the release agent and returns its path.
pub fn agent(_env: &Env) -> anyhow::Result<PathBuf> {
    cmd::run(Command::new("cargo").args(["build", "--release", "--package", "pywats-agent"]).current_dir(cmd::root()))?;
    Ok(cmd::root().join("target/release/pywats-agent"))
}
