//! The agent's memory, idle and after a million requests over 500 endpoints,
//! and how long a scrape of the `/metrics` those requests leave takes.

use std::time::{Duration, Instant};

use pywats_agent_tests::http;

use super::{
    agent::sum,
    load::Load,
    procs::{python, Proc},
    report::Table,
    stats::num,
    Ctx,
};

const ENDPOINTS: usize = 500;

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The `q`-quantile of sorted `v` (nearest rank).
fn quantile(v: &[f64], q: f64) -> f64 {
    v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
}

/// `rate`: events/s the load may make (the capacity run's lossless rate), else as fast as it can.
pub fn run(ctx: &mut Ctx, rate: Option<f64>) -> anyhow::Result<Table> {
    let mut t = Table::new("Agent memory and `/metrics`", &["what", "measured"]);

    // Idle: one idle target, default flags, after its first samplings.
    let idle = Proc::start("idle watched process", &mut python("bench_idle.py"))?;
    let mut agent = ctx.agents.start(&["--pid".into(), idle.pid().to_string()], false)?;
    agent.ready(true)?;
    std::thread::sleep(Duration::from_secs(5));
    t.row(vec!["RSS, idle (one idle target, default flags, after 5 s)".into(), mib(agent.rss_kib()?)]);
    drop(agent);
    drop(idle);

    let mut load = Load::start(ctx, 2, 2, ENDPOINTS)?;
    let mut agent = ctx.agents.start(&load.agent_args(), false)?;
    agent.ready(false)?;
    let before = agent.rss_kib()?;
    let per_process = ctx.plan.memory_requests / load.processes() as u64;
    // 80% of the lossless rate, so the agent sees every request.
    let rate_per_process = rate.map_or(0.0, |r| 0.8 * r / 2.0 / load.processes() as f64);
    let start = Instant::now();
    let (requests, _) = load.run(&format!("count {per_process} {rate_per_process}"))?;
    agent.settle()?;
    let took = start.elapsed().as_secs_f64();
    let m = agent.scrape()?;
    let counted = sum(&m, "pywats_http_requests_total");
    let endpoints = m
        .series("pywats_http_requests_total")
        .iter()
        .filter_map(|(l, _)| l.get("endpoint").cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    t.row(vec!["RSS, two idle targets with their connections open".into(), mib(before)]);
    t.row(vec![
        format!(
            "RSS after {requests} requests over {endpoints} endpoints ({} s, {} counted, {} events lost)",
            num(took),
            counted,
            sum(&m, "pywats_agent_events_lost_total")
        ),
        mib(agent.rss_kib()?),
    ]);

    let body = agent.get("/metrics")?.body;
    let series = body.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).count();
    let cpu = agent.cpu_ns()?;
    let mut took: Vec<f64> = (0..ctx.plan.scrapes)
        .map(|_| {
            let t = Instant::now();
            http::get(agent.port(), "/metrics").map(|r| (r.status == 200, t.elapsed().as_secs_f64() * 1e3))
        })
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(|(ok, ms)| if ok { ms } else { f64::NAN })
        .collect();
    let cpu_per_scrape = (agent.cpu_ns()? - cpu) as f64 / ctx.plan.scrapes as f64 / 1e6;
    took.sort_by(f64::total_cmp);
    t.row(vec!["`/metrics`: series, size".into(), format!("{series} series, {} KiB", body.len() / 1024)]);
    t.row(vec![
        format!("`/metrics` scrape latency, {} scrapes one after another: p50 / p99", ctx.plan.scrapes),
        format!("{} ms / {} ms", num(quantile(&took, 0.5)), num(quantile(&took, 0.99))),
    ]);
    t.row(vec!["agent CPU per scrape".into(), format!("{} ms", num(cpu_per_scrape))]);
    t.note(
        "RSS is VmRSS from /proc/<agent>/status. Load: 2 watched generator processes × 2 keep-alive \
         connections, paths /load/e0 … /load/e499. Scrape latency is wall time from connect to the \
         last byte, with `Connection: close`, as Prometheus sees it.",
    );
    Ok(t)
}
