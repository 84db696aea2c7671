//! `cargo xtask test`: unit tests of every crate, then the integration tests in
//! `tests/`, which load the real programs into the running kernel (root only).
//! `cargo xtask fleet`: the minutes-long fleet outage test, left out of `test`.

use std::process::Command;

use anyhow::bail;

use crate::{arch::Arch, build, cmd, image, setup};

/// Tests that run the container image (tests/e2e/deploy.rs).
const IMAGE_TEST: &str = "deploy::the_image_watches_a_client_in_its_own_mount_namespace";

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
    // The image takes a minute to build: only when its test is selected.
    let image = match &args.filter {
        Some(f) if !IMAGE_TEST.contains(f.as_str()) => None,
        _ => Some(image::build(Arch::host())?),
    };
    let mut cargo = Command::new("cargo");
    cargo
        .current_dir(cmd::root())
        .args(["test", "--release", "--package", "pywats-agent-ebpf", "--package", "pywats-agent"])
        .args(["--package", "pywats-agent-tests", "--package", "xtask", "--"])
        .arg("--test-threads=1")
        .env("PYWATS_AGENT_BIN", &agent)
        .env("PYWATS_AGENT_PYTHON", &env.python);
    if let Some(tag) = &image {
        cargo.env("PYWATS_AGENT_IMAGE", tag);
    }
    if let Some(f) = &args.filter {
        cargo.arg(f);
    }
    cmd::run(&mut cargo)
}

/// The fleet outage test (tests/e2e/fleet.rs): two stations, a central
/// Prometheus stopped for a minute. Ignored by `cargo xtask test` (minutes
/// long); its output has the numbers (samples, WAL drain time).
pub fn fleet() -> anyhow::Result<()> {
    let env = setup::setup()?;
    if !cmd::is_root() {
        bail!("the fleet test loads eBPF programs and needs root: run `sudo -E cargo xtask fleet`");
    }
    let agent = build::agent(&env)?;
    cmd::run(
        Command::new("cargo")
            .current_dir(cmd::root())
            .args(["test", "--release", "--package", "pywats-agent-tests", "--test", "fleet", "--"])
            .args(["--ignored", "--nocapture", "--test-threads=1"])
            .env("PYWATS_AGENT_BIN", &agent)
            .env("PYWATS_AGENT_PYTHON", &env.python),
    )
}
