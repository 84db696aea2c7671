//! `cargo xtask test`: unit tests of every crate, then the integration tests in
//! `tests/`, which load the real programs into the running kernel (root only).

use std::process::Command;

use anyhow::bail;

use crate::{build, cmd, setup};

#[derive(clap::Args)]
pub struct TestArgs {
    /// Run only the tests whose name contains this.
    filter: Option<String>,
}

pub fn test(args: TestArgs) -> anyhow::Result<()> {
    let env = setup::setup()?;
    if !cmd::is_root() {
        bail!("the integration tests load eBPF programs and need root: run `sudo -E cargo xtask test`");
    }
    let agent = build::agent(&env)?;
    let mut cargo = Command::new("cargo");
    cargo
        .current_dir(cmd::root())
        .args(["test", "--release", "--package", "pywats-agent-ebpf", "--package", "pywats-agent"])
        .args(["--package", "pywats-agent-tests", "--package", "xtask", "--"])
        .arg("--test-threads=1")
        .env("PYWATS_AGENT_BIN", &agent)
        .env("PYWATS_AGENT_PYTHON", &env.python);
    if let Some(f) = &args.filter {
        cargo.arg(f);
    }
    cmd::run(&mut cargo)
}
