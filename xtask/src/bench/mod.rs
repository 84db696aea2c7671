//! `cargo xtask bench`: what watching costs, in CPU time, not wall time.
//! The watched client's CPU per operation with the agent off and on, beside
//! the same client instrumenting itself in-process; the agent's CPU and its
//! in-kernel time per operation; the tax on processes it does not watch; the
//! real pyWATS client; the agent's capacity, memory and scrape latency.
//! Everything runs on this machine with the real agent, kernel and processes.

mod agent;
mod capacity;
mod cpu;
mod host_tax;
mod load;
mod measure;
mod memory;
mod procs;
mod pywats;
mod report;
mod rounds;
mod scenarios;
mod scrape;
mod stats;

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use pywats_agent_tests::tls;

use crate::{build, cmd, setup};

/// Parts of the bench, for `--only`: the client scenarios, then the rest.
const PARTS: [&str; 10] = ["http", "https", "h2", "squeue", "pqueue", "pywats", "host", "capacity", "memory", "scrape"];

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Rounds of each comparison; the settings alternate and their order flips every round [default: 5, --quick: 2].
    #[arg(long)]
    rounds: Option<usize>,
    /// Timed operations per run of a client scenario; the real pyWATS client submits an eighth as many reports
    /// [default: 2000, --quick: 300].
    #[arg(long)]
    ops: Option<usize>,
    /// Only these parts (repeatable; default: all).
    #[arg(long, value_parser = PARTS)]
    only: Vec<String>,
    /// A short run for development: fewer rounds, operations, syscalls and requests.
    #[arg(long)]
    quick: bool,
}

/// How much of everything one bench run does.
pub struct Plan {
    pub rounds: usize,
    pub ops: usize,
    /// Untimed operations on each fresh connection before the timed ones.
    pub warmup: usize,
    pub pywats_ops: usize,
    pub pywats_warmup: usize,
    /// Rounds of the host tax: three times as many, as they are cheap and
    /// other processes' work on the machine shows most in them.
    pub host_rounds: usize,
    /// `dd bs=1 count=…` of the host tax (two syscalls per byte).
    pub dd_bytes: u64,
    pub tls_iterations: u64,
    /// Execs of `/bin/true`, and of a Python interpreter, per host-tax round.
    pub execs: u64,
    pub python_execs: u64,
    /// Seconds per capacity step.
    pub step_secs: f64,
    pub memory_requests: u64,
    pub scrapes: usize,
}

impl Plan {
    fn new(args: &BenchArgs) -> anyhow::Result<Plan> {
        let q = args.quick;
        let rounds = args.rounds.unwrap_or(if q { 2 } else { 5 });
        let ops = args.ops.unwrap_or(if q { 300 } else { 2000 });
        if rounds == 0 || ops < 8 {
            bail!("--rounds must be at least 1 and --ops at least 8");
        }
        Ok(Plan {
            rounds,
            ops,
            warmup: if q { 20 } else { 50 },
            pywats_ops: ops / 8,
            pywats_warmup: 5,
            host_rounds: 3 * rounds,
            dd_bytes: if q { 200_000 } else { 1_000_000 },
            tls_iterations: if q { 50_000 } else { 200_000 },
            execs: if q { 1_000 } else { 5_000 },
            python_execs: if q { 20 } else { 100 },
            step_secs: if q { 1.0 } else { 3.0 },
            memory_requests: if q { 100_000 } else { 1_000_000 },
            scrapes: if q { 50 } else { 200 },
        })
    }
}

/// What every part of the bench uses.
pub struct Ctx {
    pub plan: Plan,
    pub agents: agent::Launcher,
    /// target/bench: the client's queues, logs, results.
    pub work: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The load generator and server (tests/src/bin/bench_load.rs), release build.
    pub load_bin: PathBuf,
    started: Instant,
}

impl Ctx {
    /// A progress line, with the time since the bench started.
    pub fn progress(&self, what: &str) {
        println!("bench: {what} ({} s)", self.started.elapsed().as_secs());
    }
}

/// The 1-minute load average: how busy the machine was besides the bench.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into())
}

/// Release build of the load generator.
fn build_load() -> anyhow::Result<PathBuf> {
    cmd::run(
        Command::new("cargo")
            .args(["build", "--release", "--package", "pywats-agent-tests", "--bin", "bench_load"])
            .current_dir(cmd::root()),
    )?;
    Ok(cmd::root().join("target/release/bench_load"))
}

/// Other agents on this machine (other people's runs) attach programs that
/// every process pays for: say so next to the numbers.
fn other_agents(own: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return vec![] };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
                // A replaced binary reads "pywats-agent (deleted)".
                exe.file_name().is_some_and(|n| n.to_string_lossy().starts_with("pywats-agent"))
                    && exe.to_string_lossy() != own
            })
        })
        .collect()
}

fn method(ctx: &Ctx) -> String {
    let stats = if ctx.agents.stats_flag {
        "in separate runs with `--program-stats` (statistics cost every BPF program on the host, so \
         the client's \"agent on\" column comes from runs without them)"
    } else {
        "in the same runs as \"agent on\" (this agent has no `--program-stats`: its statistics are always \
         on, and the \"agent on\" column includes their cost)"
    };
    format!(
        "**Method.** Each comparison runs in {} interleaved rounds: in every round each setting (agent \
         off, agent on, the client instrumenting itself in-process instead, and agent on with program \
         statistics; in the HTTPS and HTTP/2 scenarios also bare uprobes: no agent, the kernel's uprobes and uretprobes at the \
         sites the agent probes in that client, each with a counting perf event, for that process only, \
         as the agent attaches its programs: the least an agent built on uprobes there can cost) runs \
         once, the order flipping every round; tables give the median over rounds with \
         the range (min–max), and changes are medians of the per-round ratios. A run is a fresh \
         connection (or queue), {} untimed warm-up operations, then {} timed operations ({} for the real \
         pyWATS client, after {}); a fresh agent is started for each watched run and waits until it is ready \
         (programs attached, libssl probed). The client's CPU is its own process CPU clock \
         (`time.process_time_ns`: user + system time of all its threads, in ns) around the timed \
         operations, so it includes what the kernel programs and uprobe traps cost it. The agent's CPU is \
         its process CPU clock (`clock_getcpuclockid`: the scheduler's ns, all threads) from just before \
         the timed operations until its event count stops changing. In-kernel time is the delta of \
         `pywats_agent_program_cpu_seconds_total` over the timed operations, {stats}; it includes runs \
         for processes the agent does not watch. After every watched run the agent's counts are checked \
         against what the client did, and the bench fails on any difference. CPU time, not wall time: \
         on a 2-core machine shared by the client, its server and the agent, wall time mostly measures \
         who waited for a core.",
        ctx.plan.rounds, ctx.plan.warmup, ctx.plan.ops, ctx.plan.pywats_ops, ctx.plan.pywats_warmup
    )
}

/// Runs the parts asked for, in order: the client scenarios, the real
/// pyWATS client, the host tax, capacity, then memory (which paces its load
/// by the capacity found, when capacity ran).
fn parts(ctx: &mut Ctx, wants: &dyn Fn(&str) -> bool) -> anyhow::Result<Vec<report::Table>> {
    let mut tables = Vec::new();
    let selected: Vec<&scenarios::Scenario> = scenarios::SCENARIOS.iter().filter(|s| wants(s.name)).collect();
    if !selected.is_empty() {
        tables.extend(scenarios::run(ctx, &selected)?);
    }
    if wants("pywats") {
        tables.push(pywats::run(ctx)?);
    }
    if wants("host") {
        tables.push(host_tax::run(ctx)?);
    }
    let mut lossless = None;
    if wants("capacity") {
        let c = capacity::run(ctx)?;
        lossless = c.zero_loss;
        tables.push(c.table);
    }
    if wants("memory") {
        tables.push(memory::run(ctx, lossless)?);
    }
    if wants("scrape") {
        tables.push(scrape::run(ctx)?);
    }
    Ok(tables)
}

pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let env = setup::setup()?;
    if !cmd::is_root() {
        bail!("the agent loads eBPF programs and needs root: run `sudo -E cargo xtask bench`");
    }
    let plan = Plan::new(&args)?;
    let agent_bin = build::agent(&env)?;
    let load_bin = build_load()?;
    // The harness finds the venv's Python through this.
    std::env::set_var("PYWATS_AGENT_PYTHON", &env.python);
    let work = cmd::root().join("target/bench");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("logs")).context("creating target/bench")?;
    let (cert, key) = tls::cert();
    let agents = agent::Launcher::new(&agent_bin, &work.join("logs"))?;
    let load_before = load_average();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if load_before.parse::<f64>().is_ok_and(|l| l > cpus as f64) {
        println!("bench: load average {load_before} on {cpus} CPUs: other work will make the numbers noisy");
    }
    let mut ctx = Ctx { plan, agents, work, cert, key, load_bin, started };
    let wants = |part: &str| args.only.is_empty() || args.only.iter().any(|o| o == part);
    let others_before = other_agents(&agent_bin.to_string_lossy());

    let tables = parts(&mut ctx, &wants);
    // The certificate's directory (tls::cert makes one per process) goes, whatever happened.
    if let Some(dir) = ctx.cert.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    let tables = tables?;

    let took = Duration::from_secs(started.elapsed().as_secs());
    let mut out = format!("## Measured overhead (`cargo xtask bench`)\n\n{}\n\n", method(&ctx));
    for t in &tables {
        out.push_str(&t.markdown());
        out.push('\n');
    }
    let mut others = other_agents(&agent_bin.to_string_lossy());
    others.extend(others_before);
    others.sort_unstable();
    others.dedup();
    let kernel = cmd::output(Command::new("uname").arg("-r")).unwrap_or_default();
    out.push_str(&format!(
        "Machine: {} CPUs, kernel {}, load average {load_before} at the start and {} at the end; \
         the whole bench took {took:?}.{}\n",
        cpus,
        kernel.trim(),
        load_average(),
        if others.is_empty() {
            String::new()
        } else {
            format!(" **Other pywats-agent processes were running (pids {others:?}): their programs cost every process too.**")
        }
    ));
    println!("\n{out}");
    let file = ctx.work.join("results.md");
    std::fs::write(&file, &out)?;
    println!("bench: tables also in {}", file.display());
    Ok(())
}
