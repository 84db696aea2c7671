//! A real Prometheus (Debian's `prometheus` package) started by a test on a
//! free loopback port, with its data in a temporary directory (`promtool`
//! is in `promtool.rs`).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::{free_port, http, wait_for};

pub struct Prometheus {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    /// Its command line, for a restart.
    args: Vec<String>,
}

impl Prometheus {
    /// Starts `prometheus` with `config` (its YAML) and waits until it is ready.
    pub fn start(config: &str) -> Prometheus {
        Self::start_with(config, &[])
    }

    /// The same, with more flags (`--enable-feature=…`).
    pub fn start_with(config: &str, flags: &[&str]) -> Prometheus {
        Self::launch(config, |dir| {
            let mut args = vec![format!("--storage.tsdb.path={}", dir.join("data").display())];
            args.extend(flags.iter().map(|f| f.to_string()));
            args
        })
    }

    /// In agent mode: scrapes and remote-writes, no queries.
    pub fn start_agent(config: &str) -> Prometheus {
        Self::launch(config, |dir| {
            vec!["--enable-feature=agent".into(), format!("--storage.agent.path={}", dir.join("data").display())]
        })
    }

    fn launch(config: &str, storage: impl FnOnce(&std::path::Path) -> Vec<String>) -> Prometheus {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("pywats-agent-prometheus-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let mut args =
            vec![format!("--config.file={}", config_file.display()), format!("--web.listen-address=127.0.0.1:{port}")];
        args.extend(storage(&dir));
        let child = Self::spawn(&dir, &args);
        let mut p = Prometheus { child, port, dir, args };
        p.wait_ready();
        p
    }

    fn spawn(dir: &std::path::Path, args: &[String]) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("prometheus.log")).unwrap();
        Command::new("prometheus")
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (Debian package `prometheus`; `cargo xtask setup` installs it)")
    }

    fn wait_ready(&mut self) {
        let port = self.port;
        wait_for(Duration::from_secs(60), "prometheus to be ready", || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", self.log());
            }
            http::get(port, "/-/ready").ok().filter(|r| r.status == 200)
        });
    }

    /// Stops it as a service manager would (SIGTERM), keeping its data.
    pub fn stop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }

    /// Starts it again after [`stop`](Prometheus::stop): same port, same data.
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.dir, &self.args);
        self.wait_ready();
    }

    /// Bytes in its data directory (an agent's write-ahead log, a server's TSDB).
    pub fn data_bytes(&self) -> u64 {
        let mut dirs = vec![self.dir.join("data")];
        let mut total = 0;
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                match entry.metadata() {
                    Ok(m) if m.is_dir() => dirs.push(entry.path()),
                    Ok(m) => total += m.len(),
                    Err(_) => {}
                }
            }
        }
        total
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query through the HTTP API: each series' labels and value.
    pub fn query(&self, expr: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let r = http::get(self.port, &format!("/api/v1/query?query={}", percent_encode(expr)))
            .unwrap_or_else(|e| panic!("query {expr}: {e}"));
        assert_eq!(r.status, 200, "query {expr}: {}", r.body);
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["status"], "success", "{body}");
        body["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                (labels, s["value"][1].as_str().unwrap().parse().unwrap())
            })
            .collect()
    }

    /// A GET of its HTTP API (`path` with its query, already encoded): the `data` of a successful answer.
    pub fn api(&self, path: &str) -> Value {
        let r = http::get(self.port, path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["status"], "success", "{body}");
        body["data"].clone()
    }

    /// The scrape targets' state: job → (health, last error).
    pub fn targets(&self) -> BTreeMap<String, (String, String)> {
        let r = http::get(self.port, "/api/v1/targets").unwrap();
        let body: Value = serde_json::from_str(&r.body).unwrap();
        body["data"]["activeTargets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let job = t["labels"]["job"].as_str().unwrap().to_string();
                (job, (t["health"].as_str().unwrap().to_string(), t["lastError"].as_str().unwrap().to_string()))
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("prometheus log:\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A query parameter's value, percent-encoded.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
