//! Keep-alive HTTP load for the capacity and memory runs: the unwatched
//! server and the watched generator processes of `bench_load`
//! (tests/src/load.rs), all on loopback.

use std::process::Command;

use anyhow::Context as _;
use pywats_agent_tests::free_port;

use super::{procs::Proc, Ctx};

pub struct Load {
    _server: Proc,
    generators: Vec<Proc>,
}

impl Load {
    /// A server and `processes` generators of `conns` connections each,
    /// asking for `endpoints` distinct paths.
    pub fn start(ctx: &Ctx, processes: usize, conns: usize, endpoints: usize) -> anyhow::Result<Load> {
        let port = free_port().to_string();
        let server = Proc::start("load server", Command::new(&ctx.load_bin).args(["serve", &port]))?;
        let generators = (0..processes)
            .map(|_| {
                Proc::start(
                    "load generator",
                    Command::new(&ctx.load_bin).args(["client", &port, &conns.to_string(), &endpoints.to_string()]),
                )
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Load { _server: server, generators })
    }

    /// `--pid` flags for every generator.
    pub fn agent_args(&self) -> Vec<String> {
        self.generators.iter().flat_map(|g| ["--pid".to_string(), g.pid().to_string()]).collect()
    }

    /// Starts `command` (bench_load's `run` or `count`, with the rate per
    /// process) on every generator at once.
    pub fn send(&mut self, command: &str) -> anyhow::Result<()> {
        self.generators.iter_mut().try_for_each(|g| g.send(command))
    }

    /// Waits for the generators: requests completed in all, and the longest wall time.
    pub fn finish(&mut self) -> anyhow::Result<(f64, f64)> {
        let mut requests = 0.0;
        let mut seconds: f64 = 0.0;
        for g in &mut self.generators {
            let a = g.answer()?;
            requests += a["requests"].as_f64().context("requests")?;
            seconds = seconds.max(a["seconds"].as_f64().context("seconds")?);
        }
        Ok((requests, seconds))
    }

    pub fn run(&mut self, command: &str) -> anyhow::Result<(f64, f64)> {
        self.send(command)?;
        self.finish()
    }

    pub fn processes(&self) -> usize {
        self.generators.len()
    }
}
