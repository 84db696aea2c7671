//! `cargo xtask bench`: what watching costs. The same workload (HTTP, HTTPS,
//! a file queue) runs with and without the agent attached to its process,
//! side by side in alternating order for several rounds. Reported: medians
//! over the rounds and their ratios, the agent's own CPU time per operation,
//! and its counts checked against the operations done, and its losses.

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::{bail, Context as _};
use pywats_agent_tests::{agent::Agent, free_port, py::Py, tls, wait_for};
use serde_json::{json, Value};

use crate::{build, cmd, setup};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Rounds; each runs every scenario once without and once with the agent.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Operations per run.
    #[arg(long, default_value_t = 2000)]
    ops: usize,
    /// Only these scenarios (default: all).
    #[arg(long, value_parser = SCENARIOS)]
    only: Vec<String>,
}

const SCENARIOS: [&str; 3] = ["http", "https", "queue"];

/// One run, as the workload timed it.
struct Run {
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
}

/// A run with the agent attached, and what the agent made of it.
struct Watched {
    run: Run,
    agent_cpu_s: f64,
    counted: f64,
    lost: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn run(client: &mut Py, scenario: &str, ops: usize) -> anyhow::Result<Run> {
    let answer = client.ask(&format!("{scenario} {ops}"));
    let v: Value = serde_json::from_str(&answer).with_context(|| format!("workload answered {answer:?}"))?;
    let f = |k: &str| v[k].as_f64().with_context(|| format!("{k} missing in {answer}"));
    Ok(Run { seconds: f("seconds")?, p50_us: f("p50_us")?, p99_us: f("p99_us")? })
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(") ").context("unexpected /proc/<pid>/stat")?.1;
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// How many of the run's operations the agent counted.
fn counted(agent: &Agent, scenario: &str) -> f64 {
    let m = agent.scrape();
    if scenario == "queue" {
        m.get("pywats_queue_items_processed_total", &[("queue_name", "bench"), ("outcome", "completed")])
    } else {
        m.get("pywats_http_requests_total", &[("endpoint", "/mix/{id}/{id}/cl/bench"), ("code", "200")])
    }
    .unwrap_or(0.0)
}

fn watched(client: &mut Py, scenario: &str, ops: usize, queue: &Path) -> anyhow::Result<Watched> {
    let agent = Agent::start(&[
        "--pid",
        &client.pid().to_string(),
        "--target-name",
        "bench",
        "--no-discover",
        "--queue",
        &format!("bench={}:service", queue.display()),
    ]);
    wait_for(Duration::from_secs(20), "the agent to be ready", || {
        let d = agent.details();
        (d["status"] == "healthy" && (scenario != "https" || !d["tls_libraries"].as_array()?.is_empty())).then_some(())
    });
    let cpu_before = cpu_seconds(agent.pid())?;
    let run = run(client, scenario, ops)?;
    // Everything the run caused is processed once the counts are complete.
    let counted = wait_for(Duration::from_secs(30), "the agent to count the run", || {
        let n = counted(&agent, scenario);
        (n >= ops as f64).then_some(n)
    });
    let agent_cpu_s = cpu_seconds(agent.pid())? - cpu_before;
    let lost = agent.scrape().series("pywats_agent_events_lost_total").iter().map(|(_, v)| v).sum();
    Ok(Watched { run, agent_cpu_s, counted, lost })
}

pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let env = setup::setup()?;
    if !cmd::is_root() {
        bail!("the agent loads eBPF programs and needs root: run `sudo -E cargo xtask bench`");
    }
    if args.rounds == 0 || args.ops < 2 {
        bail!("--rounds must be at least 1 and --ops at least 2");
    }
    let agent_bin = build::agent(&env)?;
    // The harness finds the agent and the venv's Python through these.
    std::env::set_var("PYWATS_AGENT_BIN", &agent_bin);
    std::env::set_var("PYWATS_AGENT_PYTHON", &env.python);
    let work = cmd::root().join("target/bench");
    let _ = std::fs::remove_dir_all(&work);
    let queue = work.join("queue");
    std::fs::create_dir_all(&queue)?;

    let (cert, key) = tls::cert();
    let (http_port, https_port) = (free_port().to_string(), free_port().to_string());
    let _plain = Py::start("http_server.py", &[&http_port]);
    let _tls = Py::start("http_server.py", &[&https_port, "--tls", &cert.to_string_lossy(), &key.to_string_lossy()]);
    let mut client = Py::start("bench_client.py", &[&http_port, &https_port, &queue.to_string_lossy()]);
    let scenarios: Vec<&str> =
        SCENARIOS.into_iter().filter(|s| args.only.is_empty() || args.only.iter().any(|o| o == s)).collect();
    for &s in &scenarios {
        run(&mut client, s, 200)?; // warm-up: connections, TLS session, caches
    }

    let mut without: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
    let mut with: BTreeMap<&str, Vec<Watched>> = BTreeMap::new();
    for round in 0..args.rounds {
        for &s in &scenarios {
            // Alternate which goes first, so drift favours neither.
            for attached in if round % 2 == 0 { [false, true] } else { [true, false] } {
                if attached {
                    with.entry(s).or_default().push(watched(&mut client, s, args.ops, &queue)?);
                } else {
                    without.entry(s).or_default().push(run(&mut client, s, args.ops)?);
                }
            }
        }
        println!("bench: round {}/{} done", round + 1, args.rounds);
    }

    println!(
        "\n{} rounds × {} operations per run; medians over rounds (without → with the agent)\n",
        args.rounds, args.ops
    );
    println!(
        "{:8} {:>26} {:>26} {:>28} {:>16} {:>10} {:>6}",
        "scenario", "p50 µs/op", "p99 µs/op", "ops/s", "agent CPU µs/op", "counted", "lost"
    );
    let mut report = Vec::new();
    for &s in &scenarios {
        let (off, on) = (&without[s], &with[s]);
        let m_off = |f: fn(&Run) -> f64| median(off.iter().map(f).collect());
        let m_on = |f: fn(&Run) -> f64| median(on.iter().map(|w| f(&w.run)).collect());
        let ops = args.ops as f64;
        let (p50, p99) = ((m_off(|r| r.p50_us), m_on(|r| r.p50_us)), (m_off(|r| r.p99_us), m_on(|r| r.p99_us)));
        let rate = (m_off(|r| r.seconds).recip() * ops, m_on(|r| r.seconds).recip() * ops);
        let cpu_us = median(on.iter().map(|w| w.agent_cpu_s * 1e6 / ops).collect());
        let counted = on.iter().map(|w| w.counted).sum::<f64>() / on.len() as f64;
        let lost: f64 = on.iter().map(|w| w.lost).sum();
        let pair = |(a, b): (f64, f64)| format!("{a:.1} → {b:.1} ({:.3}×)", b / a);
        println!(
            "{s:8} {:>26} {:>26} {:>28} {cpu_us:>16.1} {:>10} {lost:>6}",
            pair(p50),
            pair(p99),
            pair(rate),
            format!("{counted}/{}", args.ops)
        );
        report.push(json!({
            "scenario": s, "ops_per_run": args.ops, "rounds": args.rounds,
            "p50_us": [p50.0, p50.1], "p99_us": [p99.0, p99.1], "ops_per_s": [rate.0, rate.1],
            "p50_ratio": p50.1 / p50.0, "throughput_ratio": rate.1 / rate.0,
            "agent_cpu_us_per_op": cpu_us, "counted_per_run": counted, "events_lost": lost,
        }));
        if on.iter().any(|w| w.counted != ops) {
            bail!("the agent counted {counted} of {ops} {s} operations per run");
        }
    }
    let out = work.join("results.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("\nbench: results in {}", out.display());
    Ok(())
}
