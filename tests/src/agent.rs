//! The real agent binary as a child process.

use std::{
    fs::File,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use crate::{free_port, http, prom, wait_for};

/// The agent binary `cargo xtask test` built (or the release build in target/).
pub fn bin() -> PathBuf {
    let bin = std::env::var_os("PYWATS_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target/release/pywats-agent"));
    assert!(bin.is_file(), "no agent binary at {}: run the tests through `cargo xtask test`", bin.display());
    bin
}

pub struct Agent {
    child: Child,
    pub port: u16,
    log: PathBuf,
    /// How the helpers below reach it (TLS, credentials).
    pub client: http::Client,
}

/// Output of an agent run that ended by itself.
pub struct Finished {
    pub status: ExitStatus,
    pub stderr: String,
}

/// Runs the agent with `args` to completion (for argument errors).
pub fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> Finished {
    let out = Command::new(bin()).args(args).envs(env.iter().copied()).output().expect("run agent");
    Finished { status: out.status, stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

impl Agent {
    /// Starts the agent on a free loopback port and waits until it serves.
    pub fn start(args: &[&str]) -> Agent {
        Self::start_with(Command::new(bin()), args)
    }

    pub fn start_with(cmd: Command, args: &[&str]) -> Agent {
        Self::start_client(cmd, args, http::Client::plain())
    }

    /// Starts the agent and reaches it through `client` (TLS, credentials).
    pub fn start_client(cmd: Command, args: &[&str], client: http::Client) -> Agent {
        Self::start_at(cmd, args, client, free_port())
    }

    /// Starts the agent on a given port (an agent restarted where its scraper looks).
    pub fn start_at(mut cmd: Command, args: &[&str], client: http::Client, port: u16) -> Agent {
        let log = std::env::temp_dir().join(format!("pywats-agent-test-{port}.log"));
        let stderr = File::create(&log).expect("create agent log");
        let child = cmd
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--log-level", "debug,aya=info,aya_obj=info"])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn agent");
        let mut agent = Agent { child, port, log, client };
        wait_for(Duration::from_secs(30), "the agent to serve /health/live", || {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("agent exited early ({status}):\n{}", agent.log());
            }
            agent.client.get(port, "/health/live").ok().filter(|r| r.status == 200)
        });
        agent
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> http::Response {
        self.client.get(self.port, path).unwrap_or_else(|e| panic!("GET {path}: {e}\nagent log:\n{}", self.log()))
    }

    pub fn scrape(&self) -> prom::Samples {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "{}", r.body);
        prom::parse(&r.body)
    }

    /// Scrapes once the agent's event counts stop changing: with the workload
    /// done, everything it caused has been drained from the rings (the agent
    /// collects them in batches every 10 ms) and applied.
    pub fn settled(&self) -> prom::Samples {
        let events = |m: &prom::Samples| -> f64 { m.series("pywats_agent_events_total").iter().map(|(_, v)| v).sum() };
        let mut last = self.scrape();
        loop {
            std::thread::sleep(Duration::from_millis(60));
            let m = self.scrape();
            if events(&m) == events(&last) {
                return m;
            }
            last = m;
        }
    }

    pub fn details(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/health/details").body).expect("details are JSON")
    }

    /// Waits until the agent has attached its TLS probes to a libssl of a
    /// target (they are attached per process, once it is adopted).
    pub fn wait_tls_probed(&self) {
        wait_for(Duration::from_secs(20), "the TLS probes", || {
            (!self.details()["tls_libraries"].as_array().unwrap().is_empty()).then_some(())
        });
    }

    /// Waits for the agent to exit by itself (at most `timeout`).
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        wait_for(timeout, "the agent to exit", || self.child.try_wait().expect("wait agent"))
    }

    /// Sends `signal` and waits for the agent to exit.
    pub fn stop(mut self, signal: i32) -> ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let status = self.child.wait().expect("wait agent");
        let _ = std::fs::remove_file(&self.log);
        std::mem::forget(self);
        status
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("agent log:\n{}", self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
