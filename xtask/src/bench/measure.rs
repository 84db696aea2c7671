//! One run of a watched client, and the runs of all rounds: the client's CPU
//! per operation (measured by the client), the agent's CPU per operation and
//! its in-kernel program time per operation, its losses, its counts checked.

use std::collections::BTreeMap;

use anyhow::Context as _;
use pywats_agent_tests::{
    prom::Samples,
    traps::{Site, Traps},
};
use serde_json::Value;

use super::{
    agent::{sum, Agent},
    procs::Proc,
    rounds::Mode,
    stats::{change, differences, show, signed},
    Ctx,
};

/// What one run cost, per operation, in nanoseconds.
pub struct Measured {
    pub client: f64,
    /// The agent's own CPU (On runs).
    pub agent: Option<f64>,
    /// Time in the agent's kernel programs, and their runs (runs with statistics).
    pub kernel: Option<(f64, f64)>,
    /// Kernel events and requests the agent lost.
    pub lost: f64,
}

/// How the client of a comparison is driven and its work checked.
pub struct Client<'a> {
    pub proc: &'a mut Proc,
    /// Agent flags besides `--listen` (the target, its queues).
    pub agent_args: Vec<String>,
    /// Wait for the libssl probes before measuring.
    pub tls: bool,
    /// The agent's TLS probe sites, for [`Mode::Traps`].
    pub sites: &'a [Site],
    /// Untimed operations after the fresh connection, before the timed ones.
    pub warmup: usize,
    /// Checks the agent's count of the run against what the client says it did
    /// (its answer to `close`); an error fails the bench.
    pub check: &'a dyn Fn(&Samples, &Value) -> anyhow::Result<()>,
}

fn program_seconds_and_runs(m: &Samples) -> Option<(f64, f64)> {
    let seconds = m.series("pywats_agent_program_cpu_seconds_total");
    (!seconds.is_empty()).then(|| (seconds.iter().map(|(_, v)| v).sum(), sum(m, "pywats_agent_program_runs_total")))
}

/// One run of `ops` operations in `mode`: an agent started for it when the
/// mode watches (stopped after), then the client's `{open} MODE WARMUP`
/// (fresh connection, untimed warm-up), `timed OPS`, `close`.
pub fn once(ctx: &mut Ctx, c: &mut Client, mode: Mode, open: &str, ops: usize) -> anyhow::Result<Measured> {
    let mut agent: Option<Agent> = None;
    if mode.watched() {
        let mut a = ctx.agents.start(&c.agent_args, mode == Mode::Kernel)?;
        a.ready(c.tls)?;
        agent = Some(a);
    }
    let traps = (mode == Mode::Traps).then(|| Traps::open(c.proc.pid(), c.sites)).transpose()?;
    c.proc.ask(&format!("{open} {} {}", mode.client_mode(), c.warmup))?;
    // Baselines: programs' totals (a scrape, outside the agent's CPU window), then the agent's CPU.
    let kernel_before = agent.as_ref().map(Agent::scrape).transpose()?.as_ref().and_then(program_seconds_and_runs);
    let cpu_before = agent.as_ref().map(Agent::cpu_ns).transpose()?;
    let timed = c.proc.ask(&format!("timed {ops}"))?;
    let client = timed["cpu_ns"].as_f64().with_context(|| format!("the client answered {timed}"))? / ops as f64;
    if let Some(traps) = &traps {
        anyhow::ensure!(traps.fired()? >= ops as u64, "the bare uprobes fired less than once per operation");
    }
    let Some(mut agent) = agent else {
        c.proc.ask("close")?;
        return Ok(Measured { client, agent: None, kernel: None, lost: 0.0 });
    };
    agent.settle()?;
    let agent_cpu = (agent.cpu_ns()? - cpu_before.unwrap_or(0)) as f64 / ops as f64;
    let after = agent.scrape()?;
    let kernel = kernel_before
        .zip(program_seconds_and_runs(&after))
        .map(|((s0, r0), (s1, r1))| ((s1 - s0) * 1e9 / ops as f64, (r1 - r0) / ops as f64));
    let done = c.proc.ask("close")?;
    agent.settle()?;
    let m = agent.scrape()?;
    (c.check)(&m, &done).with_context(|| format!("{mode:?} run; agent log: {}", agent.log().display()))?;
    let lost = sum(&m, "pywats_agent_events_lost_total") + sum(&m, "pywats_agent_requests_lost_total");
    Ok(Measured { client, agent: (mode == Mode::On).then_some(agent_cpu), kernel, lost })
}

/// The runs of one comparison, by mode, in round order.
#[derive(Default)]
pub struct Runs(BTreeMap<Mode, Vec<Measured>>);

impl Runs {
    pub fn push(&mut self, mode: Mode, m: Measured) {
        self.0.entry(mode).or_default().push(m);
    }

    fn values(&self, mode: Mode, f: impl Fn(&Measured) -> Option<f64>) -> Vec<f64> {
        self.0.get(&mode).map(|v| v.iter().filter_map(f).collect()).unwrap_or_default()
    }

    fn client_us(&self, mode: Mode) -> Vec<f64> {
        self.values(mode, |m| Some(m.client / 1e3))
    }

    fn agent_us(&self) -> Vec<f64> {
        self.values(Mode::On, |m| m.agent.map(|ns| ns / 1e3))
    }

    /// Client CPU per operation in µs: agent off, on, Δ, in-process, Δ,
    /// bare uprobes, Δ ("–" where not measured).
    pub fn client_cells(&self) -> Vec<String> {
        let (off, on, inproc) = (self.client_us(Mode::Off), self.client_us(Mode::On), self.client_us(Mode::InProcess));
        let traps = self.client_us(Mode::Traps);
        vec![
            show(&off, " µs"),
            show(&on, " µs"),
            change(&off, &on),
            show(&inproc, " µs"),
            change(&off, &inproc),
            show(&traps, " µs"),
            change(&off, &traps),
        ]
    }

    /// CPU added per operation, per round: watched (the client's increase
    /// plus the agent's own CPU) and in-process (the client's increase).
    pub fn added_cells(&self) -> Vec<String> {
        let off = self.client_us(Mode::Off);
        let client = differences(&off, &self.client_us(Mode::On));
        let watched: Vec<f64> = client.iter().zip(self.agent_us()).map(|(c, a)| c + a).collect();
        vec![signed(&watched, " µs"), signed(&differences(&off, &self.client_us(Mode::InProcess)), " µs")]
    }

    /// The agent's CPU per operation (µs), in-kernel program time per
    /// operation (µs) and program runs per operation, events lost.
    pub fn agent_cells(&self) -> Vec<String> {
        // Statistics come from Kernel runs when the agent has --program-stats,
        // else from On runs (older agents keep them on all the time).
        let kernel_mode = if self.0.contains_key(&Mode::Kernel) { Mode::Kernel } else { Mode::On };
        let lost: f64 = self.0.values().flatten().map(|m| m.lost).sum();
        vec![
            show(&self.agent_us(), " µs"),
            show(&self.values(kernel_mode, |m| m.kernel.map(|(ns, _)| ns / 1e3)), " µs"),
            show(&self.values(kernel_mode, |m| m.kernel.map(|(_, runs)| runs)), ""),
            format!("{lost}"),
        ]
    }
}
