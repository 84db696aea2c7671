//! `cargo xtask demo`: a WATS-like server, the real pyWATS client doing its
//! work in a loop, and the agent attached to it, with a live summary of what
//! the agent measures. Ctrl-C (or `--duration`) stops everything it started.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use pywats_agent_tests::{http, prom::Samples};

use crate::{build, cmd, setup};

const TOKEN: &str = "ZGVtbzpkZW1vLXRva2Vu";

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// Where the agent serves /metrics.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: String,
    /// Every Nth report submission is answered 500 by the server.
    #[arg(long, default_value_t = 5)]
    fail_every: u32,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Children that are killed and reaped however the demo ends.
struct Procs(Vec<(&'static str, Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (name, child) in self.0.iter_mut().rev() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            println!("demo: stopped {name}");
        }
    }
}

fn read_line(child: &mut Child, what: &str) -> anyhow::Result<(String, BufReader<std::process::ChildStdout>)> {
    let out = child.stdout.take().context("stdout")?;
    let mut reader = BufReader::new(out);
    let mut line = String::new();
    reader.read_line(&mut line).with_context(|| format!("reading {what}"))?;
    if line.is_empty() {
        bail!("{what} exited before it was ready");
    }
    Ok((line.trim().to_string(), reader))
}

pub fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let env = setup::setup()?;
    let agent_bin = build::agent(&env)?;
    if !cmd::is_root() {
        bail!("the agent loads eBPF programs and needs root: run `sudo -E cargo xtask demo`");
    }
    // SAFETY: installs an async-signal-safe handler that only stores a flag.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let root = cmd::root();
    let work = root.join("target/demo");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let py = |script: &str| {
        let mut c = Command::new(&env.python);
        c.arg(root.join("tests/py").join(script));
        c
    };
    let mut procs = Procs(Vec::new());

    let port = pywats_agent_tests::free_port();
    let mut server = py("wats_server.py")
        .args([&port.to_string(), TOKEN, "--fail-every", &args.fail_every.to_string()])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(work.join("server.log"))?)
        .spawn()
        .context("starting the WATS-like server")?;
    let (ready, _server_out) = read_line(&mut server, "the server")?;
    procs.0.push(("WATS-like server", server));
    if ready != "ready" {
        bail!("the server said {ready:?}");
    }
    println!("demo: WATS-like server on http://127.0.0.1:{port}");

    let mut client = py("wats_workload.py")
        .args(["--url", &format!("http://127.0.0.1:{port}"), "--token", TOKEN])
        .arg("--workdir")
        .arg(work.join("client"))
        .args(["--rounds", "100000", "--pause", "2", "--wait"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // The package logs a traceback for every injected failure and malformed file.
        .stderr(std::fs::File::create(work.join("client.log"))?)
        .spawn()
        .context("starting the pyWATS workload")?;
    let mut client_in: ChildStdin = client.stdin.take().context("stdin")?;
    let (first, _client_out) = read_line(&mut client, "the workload")?;
    procs.0.push(("pyWATS client workload", client));
    let pid: u32 =
        first.strip_prefix("pid ").and_then(|p| p.parse().ok()).with_context(|| format!("workload said {first:?}"))?;
    println!("demo: real pyWATS client (pywats-api 0.6.0rc1) running as pid {pid}");

    let agent_port: u16 =
        args.listen.rsplit(':').next().and_then(|p| p.parse().ok()).context("--listen needs a port")?;
    let agent = Command::new(&agent_bin)
        .args(["--pid", &pid.to_string(), "--target-name", "demo-station", "--listen", &args.listen, "--no-discover"])
        .args(pywats_agent_tests::py::workload_watches(&work.join("client")))
        .stderr(std::fs::File::create(work.join("agent.log"))?)
        .spawn()
        .context("starting the agent")?;
    procs.0.push(("pywats-agent", agent));
    let start = Instant::now();
    while http::get(agent_port, "/health/ready").map(|r| r.status != 200).unwrap_or(true) {
        if start.elapsed() > Duration::from_secs(30) || STOP.load(Ordering::SeqCst) {
            bail!("the agent did not become ready; see {}", work.join("agent.log").display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    writeln!(client_in, "go")?;
    println!("demo: agent attached; metrics at http://{}/metrics (logs in {})", args.listen, work.display());
    println!("demo: Ctrl-C stops everything\n");

    let started = Instant::now();
    let mut next = Instant::now();
    loop {
        if STOP.load(Ordering::SeqCst) || args.duration.is_some_and(|s| started.elapsed() >= Duration::from_secs(s)) {
            break;
        }
        for (name, child) in procs.0.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{name} exited unexpectedly ({status})");
            }
        }
        if Instant::now() >= next {
            match http::get(agent_port, "/metrics") {
                Ok(r) => summary(&pywats_agent_tests::prom::parse(&r.body), started.elapsed()),
                Err(e) => println!("demo: scrape failed: {e}"),
            }
            next += Duration::from_secs(5);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = writeln!(client_in, "exit");
    drop(procs);
    println!("demo: done");
    Ok(())
}

/// `q`-quantile of a histogram's buckets (linear within the bucket, like PromQL).
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, n) in buckets {
        if n >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            return Some(prev.0 + (le - prev.0) * (rank - prev.1) / (n - prev.1).max(1e-9));
        }
        prev = (le, n);
    }
    None
}

fn summary(m: &Samples, elapsed: Duration) {
    println!("── {:>4} s ─────────────────────────────────────────────────────────────", elapsed.as_secs());
    let mut by: BTreeMap<(String, String), Vec<(String, f64)>> = BTreeMap::new();
    for (l, v) in m.series("pywats_http_requests_total") {
        by.entry((l["method"].clone(), l["endpoint"].clone())).or_default().push((l["code"].clone(), v));
    }
    for ((method, endpoint), codes) in &by {
        let mut buckets: Vec<(f64, f64)> = m
            .series("pywats_http_request_duration_seconds_bucket")
            .into_iter()
            .filter(|(l, _)| &l["method"] == method && &l["endpoint"] == endpoint)
            .map(|(l, v)| (l["le"].parse::<f64>().unwrap_or(f64::INFINITY), v))
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let codes: Vec<String> = codes.iter().map(|(c, n)| format!("{c} ×{n}")).collect();
        let p = |q| quantile(&buckets, q).map(|s| format!("{:.1} ms", s * 1e3)).unwrap_or_else(|| "-".into());
        println!("requests   {method:6} {endpoint:34} {:24} p50 {:>8}  p95 {:>8}", codes.join("  "), p(0.5), p(0.95));
    }
    for (l, depth) in m.series("pywats_queue_depth") {
        let q = &l["queue_name"];
        let n = |o: &str| {
            m.get("pywats_queue_items_processed_total", &[("queue_name", q.as_str()), ("outcome", o)]).unwrap_or(0.0)
        };
        println!("queue      {q:10} depth {depth}  completed {}  failed {}", n("completed"), n("failed"));
    }
    for (l, running) in m.series("pywats_converter_in_progress") {
        let c = &l["converter"];
        let n = |s: &str| {
            m.get("pywats_converter_executions_total", &[("converter", c.as_str()), ("status", s)]).unwrap_or(0.0)
        };
        println!("converter  {c:10} success {}  error {}  in progress {running}", n("success"), n("error"));
    }
    let g = |name: &str| m.series(name).first().map(|(_, v)| *v).unwrap_or(0.0);
    println!(
        "process    cpu {:.1}%  rss {:.1} MiB  threads {}  processes {}",
        g("pywats_process_cpu_percent"),
        g("pywats_process_memory_bytes") / 1048576.0,
        g("pywats_process_threads"),
        g("pywats_target_processes")
    );
    let sum = |name: &str| m.series(name).iter().fold(0.0, |acc, (_, v)| acc + v);
    println!(
        "agent      events {}  lost {}  parse errors {}\n",
        sum("pywats_agent_events_total"),
        sum("pywats_agent_events_lost_total"),
        sum("pywats_agent_parse_errors_total")
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantiles_interpolate() {
        let b = [(0.01, 5.0), (0.1, 10.0), (f64::INFINITY, 10.0)];
        assert_eq!(super::quantile(&b, 0.5), Some(0.01));
        assert!((super::quantile(&b, 0.75).unwrap() - 0.055).abs() < 1e-9);
        assert_eq!(super::quantile(&[(1.0, 0.0)], 0.5), None);
    }
}
