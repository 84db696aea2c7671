//! `cargo xtask run --pid PID [-- agent flags]`: build, then run the agent as root.

use std::process::Command;

use crate::{build, cmd, setup};

#[derive(clap::Args)]
pub struct RunArgs {
    /// Process to watch (repeatable).
    #[arg(long = "pid", required = true)]
    pids: Vec<u32>,
    /// Further agent flags, after `--`.
    #[arg(last = true)]
    rest: Vec<String>,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let env = setup::setup()?;
    let bin = build::agent(&env)?;
    let mut agent = if cmd::is_root() {
        Command::new(&bin)
    } else {
        // Only the agent needs root; cargo did not.
        let mut sudo = Command::new("sudo");
        sudo.arg("-E").arg(&bin);
        sudo
    };
    for pid in &args.pids {
        agent.arg("--pid").arg(pid.to_string());
    }
    agent.args(&args.rest);
    cmd::run(&mut agent)
}
