//! The real agent binary as the bench runs it: as deployed (default log
//! level, its output in a log file), on a loopback port of its own, and
//! stopped however the bench ends.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use pywats_agent_tests::{free_port, http, prom};
use serde_json::Value;

use super::cpu;

/// How to start agents: the binary, where their logs go, and what it supports.
pub struct Launcher {
    bin: PathBuf,
    logs: PathBuf,
    started: usize,
    /// The binary has `--program-stats`; without it, older agents keep the
    /// kernel's run-time statistics on all the time.
    pub stats_flag: bool,
}

impl Launcher {
    pub fn new(bin: &Path, logs: &Path) -> anyhow::Result<Launcher> {
        std::fs::create_dir_all(logs)?;
        let help = Command::new(bin).arg("--help").output().with_context(|| format!("running {}", bin.display()))?;
        let stats_flag = String::from_utf8_lossy(&help.stdout).contains("--program-stats");
        Ok(Launcher { bin: bin.to_path_buf(), logs: logs.to_path_buf(), started: 0, stats_flag })
    }

    /// Starts an agent with `args` (plus `--program-stats` when `stats` and the
    /// binary has it) and waits until it serves.
    pub fn start(&mut self, args: &[String], stats: bool) -> anyhow::Result<Agent> {
        self.started += 1;
        let port = free_port();
        let log = self.logs.join(format!("agent-{:03}.log", self.started));
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).args(["--listen", &format!("127.0.0.1:{port}")]);
        if stats && self.stats_flag {
            cmd.arg("--program-stats");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?)
            .spawn()
            .context("starting the agent")?;
        let mut agent = Agent { child, port, log };
        agent.wait("serve /health/live", Duration::from_secs(30), |a| {
            Ok(http::get(a.port, "/health/live").is_ok_and(|r| r.status == 200))
        })?;
        Ok(agent)
    }
}

pub struct Agent {
    child: Child,
    port: u16,
    log: PathBuf,
}

/// Something of the agent's is not empty: a list, a map, a count.
fn non_empty(v: &Value) -> bool {
    match v {
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Number(n) => n.as_f64().is_some_and(|n| n > 0.0),
        _ => false,
    }
}

impl Agent {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Polls `done` every 50 ms; fails when the agent exits or `timeout` passes.
    fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Agent) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the agent exited ({status}) before it would {what}; its log is {}", self.log.display());
            }
            if done(self)? {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!("the agent did not {what} within {timeout:?}; its log is {}", self.log.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for `/health/ready` (every program attached, every target
    /// alive) and, with `tls`, for the libssl probes on the targets' libssl.
    pub fn ready(&mut self, tls: bool) -> anyhow::Result<()> {
        self.wait("become ready", Duration::from_secs(30), |a| {
            if !http::get(a.port, "/health/ready").is_ok_and(|r| r.status == 200) {
                return Ok(false);
            }
            Ok(!tls || non_empty(&a.details()?["tls_libraries"]))
        })
    }

    pub fn get(&self, path: &str) -> anyhow::Result<http::Response> {
        http::get(self.port, path).with_context(|| format!("GET {path} from the agent (log: {})", self.log.display()))
    }

    pub fn details(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.get("/health/details")?.body).context("/health/details is not JSON")
    }

    pub fn scrape(&self) -> anyhow::Result<prom::Samples> {
        let r = self.get("/metrics")?;
        if r.status != 200 {
            bail!("/metrics answered {}: {}", r.status, r.body);
        }
        Ok(prom::parse(&r.body))
    }

    /// Kernel events the agent has taken from its rings so far.
    fn events_seen(&self) -> anyhow::Result<f64> {
        let d = self.details()?;
        let seen = d["events"]["seen"].as_object().context("/health/details has no events.seen")?;
        Ok(seen.values().filter_map(Value::as_f64).sum())
    }

    /// Returns once the agent's event count stops changing: with the workload
    /// done, what it caused has been drained from the rings (every 10 ms, in
    /// batches) and applied. Asks `/health/details`, which is cheaper for the
    /// agent than a scrape, and waits no longer than a few drains, so settling
    /// adds little to the agent's measured CPU.
    pub fn settle(&mut self) -> anyhow::Result<()> {
        let mut last = self.events_seen()?;
        // Five drains apart, each reading (`wait` polls every 50 ms).
        std::thread::sleep(Duration::from_millis(50));
        self.wait("settle", Duration::from_secs(60), |a| {
            let now = a.events_seen()?;
            let still = now == last;
            last = now;
            Ok(still)
        })
    }

    /// The agent's CPU time so far (ns, all threads).
    pub fn cpu_ns(&self) -> anyhow::Result<u64> {
        cpu::process_ns(self.pid())
    }

    /// Resident memory (VmRSS) in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        pywats_agent_tests::proc::status_field(self.pid(), "VmRSS").context("no VmRSS for the agent")
    }

    /// The agent's own log, for error messages.
    pub fn log(&self) -> &Path {
        &self.log
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SIGKILL, not SIGTERM: the kernel detaches every program when the
        // process's fds close, at once, while this agent takes about 2 s to
        // exit after SIGTERM; and the next run must not start before it is gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sum of all series of `name` (0 when there are none).
pub fn sum(m: &prom::Samples, name: &str) -> f64 {
    m.series(name).iter().map(|(_, v)| v).sum()
}
