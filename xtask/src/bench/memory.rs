//! The agent's memory, idle and over a million requests to 500 endpoints
//! (whether it stays flat), and how long scrapes of the `/metrics` such requests leave take: at about
//! 10k series (the first 100 endpoints), and with all 500.

use std::{collections::BTreeSet, time::Instant};

use pywats_agent_tests::http;

use super::{
    agent::{sum, Agent},
    load::Load,
    procs::{python, Proc},
    report::Table,
    stats::num,
    Ctx,
};

const ENDPOINTS: usize = 500;
/// Endpoints of the first phase: about 10k series (each endpoint brings its
/// request counter and duration and size histograms).
const FEW_ENDPOINTS: usize = 100;

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The `q`-quantile of sorted `v` (nearest rank).
fn quantile(v: &[f64], q: f64) -> f64 {
    v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
}

/// `n` scrapes one after another: "N series (E endpoints), S KiB" and
/// "p50 … / p99 …, agent CPU … per scrape".
fn scrapes(agent: &Agent, n: usize) -> anyhow::Result<(String, String)> {
    let m = agent.scrape()?;
    let endpoints: BTreeSet<String> =
        m.series("pywats_http_requests_total").into_iter().filter_map(|(l, _)| l.get("endpoint").cloned()).collect();
    let body = agent.get("/metrics")?.body;
    let series = body.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).count();
    let cpu = agent.cpu_ns()?;
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = http::get(agent.port(), "/metrics")?;
        anyhow::ensure!(r.status == 200, "/metrics answered {}", r.status);
        took.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let cpu_ms = (agent.cpu_ns()? - cpu) as f64 / n as f64 / 1e6;
    took.sort_by(f64::total_cmp);
    Ok((
        format!("{series} series ({} endpoints), {} KiB", endpoints.len(), body.len() / 1024),
        format!(
            "p50 {} ms, p99 {} ms; agent CPU {} ms per scrape",
            num(quantile(&took, 0.5)),
            num(quantile(&took, 0.99)),
            num(cpu_ms)
        ),
    ))
}

/// `rate`: events/s the load may make (the capacity run's lossless rate), else as fast as it can.
pub fn run(ctx: &mut Ctx, rate: Option<f64>) -> anyhow::Result<Table> {
    let mut t = Table::new("Agent memory and `/metrics`", &["what", "measured"]);

    // Idle: one idle target, default flags, after its first samplings.
    let idle = Proc::start("idle watched process", &mut python("bench_idle.py"))?;
    let mut agent = ctx.agents.start(&["--pid".into(), idle.pid().to_string()], false)?;
    agent.ready(true)?;
    let (cpu, at) = (agent.cpu_ns()?, Instant::now());
    std::thread::sleep(std::time::Duration::from_secs(5));
    let idle_cpu = (agent.cpu_ns()? - cpu) as f64 / at.elapsed().as_secs_f64() / 1e6;
    t.row(vec!["RSS, idle: one idle target, default flags, after 5 s".into(), mib(agent.rss_kib()?)]);
    t.row(vec![
        "agent CPU while idle (its timers: ring drains, samplers)".into(),
        format!("{} ms per s", num(idle_cpu)),
    ]);
    drop(agent);
    drop(idle);

    let mut load = Load::start(ctx, 2, 2, ENDPOINTS)?;
    let mut agent = ctx.agents.start(&load.agent_args(), false)?;
    agent.ready(false)?;
    t.row(vec!["RSS, two idle load generators as targets".into(), mib(agent.rss_kib()?)]);
    let processes = load.processes() as u64;
    // 80% of the lossless rate, so the agent sees every request.
    let rate = rate.map_or(0.0, |r| 0.8 * r / 2.0 / processes as f64);
    let first = ctx.plan.memory_requests / 10 / processes;
    let start = Instant::now();
    let (mut requests, _) = load.run(&format!("count {first} {rate} {FEW_ENDPOINTS}"))?;
    agent.settle()?;
    let (what, measured) = scrapes(&agent, ctx.plan.scrapes)?;
    t.row(vec![format!("`/metrics` with {what}: {} scrapes one after another", ctx.plan.scrapes), measured]);

    // The rest in quarters, RSS after each: flat once every endpoint is known.
    let rest = ctx.plan.memory_requests / processes - first;
    let mut quarters = Vec::new();
    for quarter in 0..4 {
        let n = rest / 4 + if quarter == 3 { rest % 4 } else { 0 };
        requests += load.run(&format!("count {n} {rate}"))?.0;
        agent.settle()?;
        quarters.push(mib(agent.rss_kib()?));
    }
    let took = start.elapsed().as_secs_f64();
    let after = mib(agent.rss_kib()?);
    let m = agent.scrape()?;
    t.row(vec![
        format!(
            "RSS after {requests} requests over {ENDPOINTS} endpoints ({} s; {} counted, {} events lost)",
            num(took),
            sum(&m, "pywats_http_requests_total"),
            sum(&m, "pywats_agent_events_lost_total")
        ),
        after,
    ]);
    t.row(vec!["RSS after each quarter of the requests past the first tenth".into(), quarters.join(", ")]);
    let (what, measured) = scrapes(&agent, ctx.plan.scrapes)?;
    t.row(vec![format!("`/metrics` with {what}: {} scrapes one after another", ctx.plan.scrapes), measured]);
    t.row(vec!["RSS after those scrapes".into(), mib(agent.rss_kib()?)]);
    t.note(
        "RSS is VmRSS from /proc/<agent>/status. Load: 2 watched generator processes × 2 keep-alive \
         connections (tests/src/load.rs), paths /load/e0 … /load/e499, a tenth of the requests over the \
         first 100 of them. Scrape latency is wall time from connect to the last byte \
         (`Connection: close`), as Prometheus would see it.",
    );
    ctx.progress("memory done");
    Ok(t)
}
