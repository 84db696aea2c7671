//! The highest event rate the agent keeps up with, without loss, on this
//! machine: watched generator processes make keep-alive HTTP requests at a
//! rising rate (each request is a `write` and a `read`: two kernel events);
//! then far more than that, or as much as the machine can make, to see the
//! loss counted and the agent still ready.

use std::time::{Duration, Instant};

use anyhow::bail;
use pywats_agent_tests::{http, prom::Samples};

use super::{
    agent::{sum, Agent},
    load::Load,
    report::Table,
    stats::num,
    Ctx,
};

/// Event rates tried, in events per second, until the first loss or until
/// the generators cannot make the rate asked.
const STEPS: [f64; 12] = [10e3, 20e3, 40e3, 60e3, 80e3, 100e3, 130e3, 160e3, 200e3, 250e3, 320e3, 400e3];

pub struct Capacity {
    pub table: Table,
    /// The highest rate without loss (events/s), if any step had none.
    pub zero_loss: Option<f64>,
}

/// The agent's counters that a step is judged by.
struct Counters {
    events: f64,
    lost: f64,
    requests: f64,
    requests_lost: f64,
    cpu_ns: u64,
    at: Instant,
}

fn counters(agent: &Agent) -> anyhow::Result<Counters> {
    let m: Samples = agent.scrape()?;
    Ok(Counters {
        events: sum(&m, "pywats_agent_events_total"),
        lost: sum(&m, "pywats_agent_events_lost_total"),
        requests: sum(&m, "pywats_http_requests_total"),
        requests_lost: sum(&m, "pywats_agent_requests_lost_total"),
        cpu_ns: agent.cpu_ns()?,
        at: Instant::now(),
    })
}

/// What one step did: events seen and lost per second, the agent's CPU share.
struct Step {
    seen: f64,
    lost: f64,
    lost_total: f64,
    cpu_share: f64,
}

impl Step {
    fn between(a: &Counters, b: &Counters, seconds: f64) -> Step {
        let wall = (b.at - a.at).as_secs_f64();
        Step {
            seen: (b.events - a.events) / seconds,
            lost: (b.lost - a.lost) / seconds,
            lost_total: b.lost - a.lost,
            cpu_share: (b.cpu_ns - a.cpu_ns) as f64 / 1e9 / wall,
        }
    }
}

fn ready(agent: &Agent) -> String {
    match http::get(agent.port(), "/health/ready") {
        Ok(r) => r.status.to_string(),
        Err(e) => format!("no answer ({e})"),
    }
}

pub fn run(ctx: &mut Ctx) -> anyhow::Result<Capacity> {
    let mut load = Load::start(ctx, 3, 2, 50)?;
    let mut agent = ctx.agents.start(&load.agent_args(), false)?;
    agent.ready(false)?;
    load.run("run 0.5 1000")?;
    agent.settle()?;
    let secs = ctx.plan.step_secs;
    let processes = load.processes() as f64;
    let per_process = |events_per_s: f64| events_per_s / 2.0 / processes;
    let mut t = Table::new(
        "Capacity: watched keep-alive HTTP at rising rates",
        &[
            "asked (events/s)",
            "seen (events/s)",
            "lost (events/s)",
            "agent CPU (share of one core)",
            "requests counted",
        ],
    );
    let mut zero_loss: Option<f64> = None;
    let mut most_made: f64 = 0.0;
    for target in STEPS {
        let before = counters(&agent)?;
        let (requests, took) = load.run(&format!("run {secs} {}", per_process(target)))?;
        agent.settle()?;
        let after = counters(&agent)?;
        let step = Step::between(&before, &after, took);
        let counted = after.requests - before.requests;
        let lossless = step.lost_total == 0.0 && after.requests_lost == before.requests_lost;
        if lossless && counted != requests {
            bail!("MISCOUNT at {target} events/s: the agent counted {counted} of {requests} requests without losing any event");
        }
        t.row(vec![
            num(target),
            num(step.seen),
            num(step.lost),
            format!("{:.0}%", step.cpu_share * 100.0),
            format!("{counted} of {requests}"),
        ]);
        let made = step.seen + step.lost;
        most_made = most_made.max(made);
        if !lossless {
            break;
        }
        zero_loss = Some(zero_loss.unwrap_or(0.0).max(step.seen));
        if made < 0.9 * target {
            break; // the generators are at the machine's limit
        }
    }

    // Overload: ten times the lossless rate, or all the machine can make.
    let overload = zero_loss.map(|z| 10.0 * z).filter(|&r| r < most_made);
    let before = counters(&agent)?;
    load.send(&format!("run {} {}", 2.0 * secs, overload.map_or(0.0, per_process)))?;
    std::thread::sleep(Duration::from_secs_f64(secs));
    let ready_during = ready(&agent);
    let (requests, took) = load.finish()?;
    agent.settle()?;
    let after = counters(&agent)?;
    let step = Step::between(&before, &after, took);
    let ready_after = ready(&agent);
    let share = step.lost / (step.seen + step.lost).max(1.0) * 100.0;
    t.row(vec![
        overload.map_or("all it can".into(), |r| format!("{} (10× lossless)", num(r))),
        num(step.seen),
        format!("{} ({share:.1}% of events)", num(step.lost)),
        format!("{:.0}%", step.cpu_share * 100.0),
        format!("{} of {requests}", after.requests - before.requests),
    ]);
    // Lossless even at all the generators could make: the agent's limit lies above this machine's.
    let machine_limited = overload.is_none() && step.lost_total == 0.0;
    if machine_limited {
        zero_loss = Some(zero_loss.unwrap_or(0.0).max(step.seen));
    }
    let verdict = match zero_loss {
        None => "none (loss at the lowest step)".to_string(),
        Some(z) if machine_limited => format!("at least {} events/s, all the generators could make here", num(z)),
        Some(z) => format!("{} events/s", num(z)),
    };
    t.note(format!(
        "3 watched generator processes × 2 keep-alive connections (tests/src/load.rs), an unwatched server; \
         {secs} s per step, {} s of overload. Events/s are `pywats_agent_events_total` (seen) and \
         `pywats_agent_events_lost_total` deltas over the generators' wall time; the agent's CPU is its \
         CPU time over the step's wall time. **Highest lossless rate: {verdict}.** During the overload \
         `/health/ready` answered {ready_during}, after it {ready_after}.",
        2.0 * secs,
    ));
    ctx.progress("capacity done");
    Ok(Capacity { table: t, zero_loss })
}
