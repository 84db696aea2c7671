//! The watched client's scenarios (tests/py/bench_client.py): keep-alive
//! HTTP, HTTPS, HTTP/2 over TLS, a service-queue item and a persistent-queue
//! item, each with the agent off, on, with in-process instrumentation instead,
//! and on with program statistics.

use anyhow::{bail, Context as _};
use pywats_agent_tests::{free_port, prom::Samples, traps};
use serde_json::Value;

use super::{
    measure::{once, Client, Runs},
    procs::{python, wait_for_port, Proc},
    report::Table,
    rounds::{order, Mode},
    Ctx,
};

pub struct Scenario {
    pub name: &'static str,
    title: &'static str,
    /// Over TLS: also measured with bare uprobes at the agent's probe sites.
    tls: bool,
    /// The queue the agent watches (queue scenarios), else HTTP requests.
    queue: Option<&'static str>,
}

pub const SCENARIOS: [Scenario; 5] = [
    Scenario { name: "http", title: "HTTP/1.1 keep-alive: GET 1 kB / POST 20 kB", tls: false, queue: None },
    Scenario { name: "https", title: "HTTPS (HTTP/1.1 over TLS): GET 1 kB / POST 20 kB", tls: true, queue: None },
    Scenario { name: "h2", title: "HTTP/2 over TLS (httpx): GET 1 kB / POST 20 kB", tls: true, queue: None },
    Scenario {
        name: "squeue",
        title: "service-queue item, 20 kB (fsync + 3 renames)",
        tls: false,
        queue: Some("squeue"),
    },
    Scenario {
        name: "pqueue",
        title: "persistent-queue item, 20 kB (4 atomic writes + 4 renames)",
        tls: false,
        queue: Some("pqueue"),
    },
];

/// The agent counted exactly what the client did: requests by method (all
/// answered 200), or queue items completed.
fn check(s: &Scenario, m: &Samples, done: &Value) -> anyhow::Result<()> {
    let wanted: Vec<(String, f64)> = done
        .as_object()
        .context("close answer")?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(f64::NAN)))
        .collect();
    for (what, n) in wanted {
        let counted = match s.queue {
            Some(q) => m
                .get("pywats_queue_items_processed_total", &[("queue_name", q), ("outcome", "completed")])
                .unwrap_or(0.0),
            None => m
                .series("pywats_http_requests_total")
                .iter()
                .filter(|(l, _)| l.get("method") == Some(&what) && l.get("code").map(String::as_str) == Some("200"))
                .map(|(_, v)| v)
                .sum(),
        };
        if counted != n {
            bail!("MISCOUNT in {}: the agent counted {counted} of the client's {n} {what}", s.name);
        }
    }
    Ok(())
}

/// The queue scenarios' directories, on tmpfs: their fsyncs then wait for no
/// disk, so other disk traffic on the machine cannot stretch the runs (on a
/// busy disk an fsync took up to 25 ms here). The client's syscalls, and so
/// the agent's work, are the same as on disk; only the client's CPU per item
/// is that of a fast disk, which makes the relative costs an upper bound.
struct ShmDir(std::path::PathBuf);

impl ShmDir {
    fn new() -> anyhow::Result<ShmDir> {
        let dir = std::path::PathBuf::from(format!("/dev/shm/pywats-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(ShmDir(dir))
    }
}

impl Drop for ShmDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(ctx: &mut Ctx, selected: &[&Scenario]) -> anyhow::Result<Vec<Table>> {
    let (http_port, https_port, h2_port) = (free_port(), free_port(), free_port());
    let (cert, key) = (ctx.cert.to_string_lossy().into_owned(), ctx.key.to_string_lossy().into_owned());
    let _plain = Proc::start("HTTP server", python("http_server.py").arg(http_port.to_string()))?;
    let _tls =
        Proc::start("HTTPS server", python("http_server.py").args([&https_port.to_string(), "--tls", &cert, &key]))?;
    let _h2 = Proc::start("HTTP/2 server", python("bench_h2_server.py").args([&h2_port.to_string(), &cert, &key]))?;
    wait_for_port(h2_port)?;
    let workdir = ShmDir::new()?;
    let workdir = &workdir.0;
    let mut proc = Proc::start(
        "bench client",
        python("bench_client.py")
            .args([&http_port.to_string(), &https_port.to_string(), &h2_port.to_string()])
            .arg(workdir),
    )?;
    let pid = proc.pid().to_string();
    let dir = |q: &str| workdir.join(q).display().to_string();
    let agent_args: Vec<String> = ["--pid", &pid, "--target-name", "bench", "--no-discover"]
        .iter()
        .map(|s| s.to_string())
        .chain(["--queue".into(), format!("squeue={}:service", dir("squeue"))])
        .chain(["--queue".into(), format!("pqueue={}:persistent", dir("pqueue"))])
        .collect();
    // Imports, caches, the TLS session cache: warm before anything counts.
    for s in selected {
        proc.ask(&format!("open {} plain {}", s.name, ctx.plan.warmup))?;
        proc.ask(&format!("timed {}", ctx.plan.warmup))?;
        proc.ask("close")?;
    }
    // Where the agent puts its TLS programs in this client's libssl.
    let sites = if selected.iter().any(|s| s.tls) {
        let mut agent = ctx.agents.start(&agent_args, false)?;
        agent.ready(true)?;
        traps::sites(&agent.details()?)?
    } else {
        Vec::new()
    };
    let mut modes = vec![Mode::Off, Mode::On, Mode::InProcess];
    if ctx.agents.stats_flag {
        modes.push(Mode::Kernel);
    }
    let mut runs: Vec<Runs> = selected.iter().map(|_| Runs::default()).collect();
    for round in 0..ctx.plan.rounds {
        for (s, r) in selected.iter().zip(runs.iter_mut()) {
            let check = |m: &Samples, done: &Value| check(s, m, done);
            // Every setting of a scenario runs with the same client process.
            let mut client = Client {
                proc: &mut proc,
                agent_args: agent_args.clone(),
                tls: true,
                sites: &sites,
                warmup: ctx.plan.warmup,
                check: &check,
            };
            let mut modes = modes.clone();
            if s.tls {
                modes.push(Mode::Traps);
            }
            for mode in order(&modes, round) {
                let m = once(ctx, &mut client, mode, &format!("open {}", s.name), ctx.plan.ops)?;
                r.push(mode, m);
            }
        }
        ctx.progress(&format!("scenarios, round {}/{} done", round + 1, ctx.plan.rounds));
    }

    let mut client = Table::new(
        "Watched client: its CPU per operation",
        &[
            "scenario",
            "agent off",
            "agent on",
            "Δ on",
            "in-process instead",
            "Δ in-process",
            "bare uprobes at the agent's sites",
            "Δ bare uprobes",
        ],
    );
    let mut agent = Table::new(
        "The agent's cost per operation of the watched client",
        &[
            "scenario",
            "agent CPU",
            "in-kernel programs",
            "program runs",
            "CPU added, watched (client Δ + agent)",
            "CPU added, in-process",
            "counted",
            "events lost",
        ],
    );
    let ops = ctx.plan.ops + ctx.plan.warmup;
    let watched_runs = ctx.plan.rounds * if ctx.agents.stats_flag { 2 } else { 1 };
    for (s, r) in selected.iter().zip(&runs) {
        client.row([vec![s.title.to_string()], r.client_cells()].concat());
        let mut cells = r.agent_cells();
        let lost = cells.pop().unwrap_or_default();
        cells.extend(r.added_cells());
        cells.push(format!("{ops} of {ops} in each of {watched_runs} runs"));
        cells.push(lost);
        agent.row([vec![s.title.to_string()], cells].concat());
    }
    Ok(vec![client, agent])
}
