//! Two stations, one centre, with real processes: on each station the real
//! pyWATS client, the agent watching it, and Prometheus in agent mode with
//! the shipped `station.yml`, remote-writing to a central Prometheus with
//! the shipped `central.yml`. The centre is stopped for 60 s while the
//! clients keep working, and one station's agent is restarted meanwhile;
//! once the stations' write-ahead logs have drained, the centre has every
//! scrape of the outage (no gap) and the increase over the whole window is
//! exactly what each client did, the agent's restart included (a counter
//! reset, handled by `increase()`).
//!
//! Minutes long, so not in `cargo xtask test` (CI's budget): run it with
//! `cargo xtask fleet`. The configs themselves are checked by promtool in
//! the normal suite (`fleet_rules.rs`).

use std::{
    collections::BTreeMap,
    thread,
    time::{Duration, Instant},
};

use pywats_agent_tests::{
    agent::{self, Agent},
    free_port, http,
    prometheus::{percent_encode, Prometheus},
    py::Py,
    root, unix_now, wait_for,
};
use serde_json::Value;

const TOKEN: &str = "ZmxlZXQ6c2VjcmV0LXRva2Vu";
/// The stations' scrape interval in this test (shipped: 15 s), so that a
/// minute's outage holds thirty scrapes.
const INTERVAL: f64 = 2.0;
const OUTAGE: Duration = Duration::from_secs(60);

fn deploy(name: &str) -> String {
    std::fs::read_to_string(root().join("deploy/prometheus").join(name)).unwrap()
}

/// `text` with `from` replaced, which must be there (the shipped file changed otherwise).
fn swap(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is no longer in the shipped config: update this test");
    text.replace(from, to)
}

struct Station {
    name: &'static str,
    client: Py,
    agent: Option<Agent>,
    agent_port: u16,
    agent_args: Vec<String>,
    /// The station's agent-mode Prometheus.
    prometheus: Prometheus,
}

impl Station {
    fn start(name: &'static str, wats_port: u16, central_port: u16) -> Station {
        let url = format!("http://127.0.0.1:{wats_port}");
        let (client, first) = Py::spawn("station_client.py", &["--url", &url, "--token", TOKEN]);
        let pid = first.strip_prefix("pid ").unwrap_or_else(|| panic!("station_client said {first:?}")).to_string();
        let agent_args: Vec<String> =
            ["--pid", &pid, "--target-name", "client", "--no-discover"].iter().map(|s| s.to_string()).collect();
        let agent_port = free_port();
        let agent = Self::agent(&agent_args, agent_port);
        // The shipped station config, with this test's addresses, names and interval.
        let mut config = deploy("station.yml");
        config = swap(&config, "scrape_interval: 15s", &format!("scrape_interval: {INTERVAL}s"));
        config = swap(&config, "scrape_timeout: 10s", "scrape_timeout: 1s");
        config = swap(&config, "station: station-01", &format!("station: {name}"));
        config = swap(&config, "replacement: station-01", &format!("replacement: {name}"));
        config = swap(&config, "\"127.0.0.1:9090\"", &format!("\"127.0.0.1:{agent_port}\""));
        config = swap(
            &config,
            "https://prometheus.central.example/api/v1/write",
            &format!("http://127.0.0.1:{central_port}/api/v1/write"),
        );
        let prometheus = Prometheus::start_agent(&config);
        Station { name, client, agent: Some(agent), agent_port, agent_args, prometheus }
    }

    fn agent(args: &[String], port: u16) -> Agent {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Agent::start_at(std::process::Command::new(agent::bin()), &args, http::Client::plain(), port)
    }

    fn totals(&mut self) -> f64 {
        let t: Value = serde_json::from_str(&self.client.ask("totals")).unwrap();
        t["requests"].as_f64().unwrap()
    }

    /// Waits until the agent has counted `n` requests since it started.
    fn counted(&self, n: f64) {
        let agent = self.agent.as_ref().expect("the agent runs");
        wait_for(Duration::from_secs(30), "the agent to count every request", || {
            let m = agent.scrape();
            let seen: f64 = m.series("pywats_http_requests_total").iter().map(|(_, v)| v).sum();
            (seen == n).then_some(())
        });
    }
}

/// An instant query at `time` (seconds since the epoch): labels and value per series.
fn query_at(p: &Prometheus, expr: &str, time: f64) -> Vec<(BTreeMap<String, String>, f64)> {
    let data = p.api(&format!("/api/v1/query?query={}&time={time:.3}", percent_encode(expr)));
    data["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels = serde_json::from_value(s["metric"].clone()).unwrap();
            (labels, s["value"][1].as_str().unwrap().parse().unwrap())
        })
        .collect()
}

/// The one value of `expr` at `time`.
fn value_at(p: &Prometheus, expr: &str, time: f64) -> Option<f64> {
    let r = query_at(p, expr, time);
    assert!(r.len() <= 1, "{expr}: {r:?}");
    r.first().map(|(_, v)| *v)
}

/// Timestamps of the raw samples of the one series `selector` in `[from, to]`.
fn sample_times(p: &Prometheus, selector: &str, from: f64, to: f64) -> Vec<f64> {
    let expr = format!("{selector}[{}ms]", ((to - from) * 1000.0).round() as u64);
    let data = p.api(&format!("/api/v1/query?query={}&time={to:.3}", percent_encode(&expr)));
    let result = data["result"].as_array().unwrap();
    assert!(result.len() <= 1, "{selector}: {} series", result.len());
    result
        .first()
        .map_or_else(Vec::new, |s| s["values"].as_array().unwrap().iter().map(|v| v[0].as_f64().unwrap()).collect())
}

/// The newest sample time of a station's request counters at the centre.
fn newest(p: &Prometheus, station: &str) -> Option<f64> {
    value_at(p, &format!("max(timestamp(pywats_http_requests_total{{station=\"{station}\"}}))"), unix_now())
}

#[test]
#[ignore = "minutes long: run by `cargo xtask fleet`"]
fn two_stations_lose_nothing_while_the_centre_is_down_for_a_minute() {
    let wats_port = free_port();
    let _wats = Py::start("wats_server.py", &[&wats_port.to_string(), TOKEN, "--fail-every", "5"]);
    let mut central_config = deploy("central.yml");
    let rules = root().join("deploy/prometheus");
    central_config = swap(&central_config, "  - alerts.yml", &format!("  - {}", rules.join("alerts.yml").display()));
    central_config = swap(&central_config, "  - fleet.yml", &format!("  - {}", rules.join("fleet.yml").display()));
    let mut central = Prometheus::start_with(&central_config, &["--web.enable-remote-write-receiver"]);
    let mut stations = [Station::start("st1", wats_port, central.port), Station::start("st2", wats_port, central.port)];

    // Before: each client uploads, the centre gets every request.
    let started = unix_now();
    for s in stations.iter_mut() {
        s.client.send("submit 10 0.3");
    }
    let mut before = BTreeMap::new();
    for s in stations.iter_mut() {
        s.client.ask("");
        let n = s.totals();
        s.counted(n);
        before.insert(s.name, n);
    }
    for s in &stations {
        wait_for(Duration::from_secs(60), "the centre to have each station's requests", || {
            let q = format!("sum(pywats_http_requests_total{{station=\"{}\"}})", s.name);
            (value_at(&central, &q, unix_now()) == Some(before[s.name])).then_some(())
        });
    }
    // The last sample before the outage with every request in it: one end of the window.
    let window_start: BTreeMap<&str, f64> =
        stations.iter().map(|s| (s.name, newest(&central, s.name).unwrap())).collect();

    // The outage: the centre stops for a minute; st1 uploads throughout, st2
    // uploads, restarts its agent, uploads again.
    let wal_before: Vec<u64> = stations.iter().map(|s| s.prometheus.data_bytes()).collect();
    let stopped = unix_now();
    central.stop();
    let outage = Instant::now();
    stations[0].client.send("submit 30 2");
    let st2 = &mut stations[1];
    st2.client.ask("submit 12 2");
    let n = st2.totals() - before["st2"];
    st2.counted(before["st2"] + n);
    // Its Prometheus scrapes once more with every request counted, then the agent goes.
    thread::sleep(Duration::from_secs_f64(2.5 * INTERVAL));
    let counted_before_restart = st2.totals();
    st2.agent.take().expect("the agent runs").stop(libc::SIGTERM);
    let agent = Station::agent(&st2.agent_args, st2.agent_port);
    wait_for(Duration::from_secs(30), "the restarted agent to be ready", || {
        (agent.get("/health/ready").status == 200).then_some(())
    });
    st2.agent = Some(agent);
    thread::sleep(Duration::from_secs_f64(1.5 * INTERVAL));
    st2.client.ask("submit 12 2");
    let after_restart = st2.totals() - counted_before_restart;
    st2.counted(after_restart);
    stations[0].client.ask("");
    thread::sleep(OUTAGE.saturating_sub(outage.elapsed()));
    let wal_during: Vec<u64> = stations.iter().map(|s| s.prometheus.data_bytes()).collect();
    let restarted = unix_now();
    central.restart();
    let drain = Instant::now();

    // The write-ahead logs drain: every scrape of the outage reaches the centre.
    let expected_scrapes = ((restarted - stopped) / INTERVAL).floor();
    for s in &stations {
        let up = format!("up{{station=\"{}\"}}", s.name);
        wait_for(Duration::from_secs(180), "the outage's samples at the centre", || {
            let n = sample_times(&central, &up, stopped, restarted).len() as f64;
            (n >= expected_scrapes).then_some(())
        });
    }
    let drained = drain.elapsed();

    // After: a few more uploads with the centre back.
    for s in stations.iter_mut() {
        s.client.send("submit 5 0.3");
    }
    let mut truth = BTreeMap::new();
    for (i, s) in stations.iter_mut().enumerate() {
        s.client.ask("");
        let total = s.totals();
        // st2's agent counts from its restart on.
        s.counted(if i == 0 { total } else { total - counted_before_restart });
        truth.insert(s.name, total);
    }
    let settled = unix_now();
    let window_end: BTreeMap<&str, f64> = stations
        .iter()
        .map(|s| {
            let t = wait_for(Duration::from_secs(60), "a sample at the centre taken after the last request", || {
                newest(&central, s.name).filter(|t| *t > settled)
            });
            (s.name, t)
        })
        .collect();

    let mut report = Vec::new();
    for s in &stations {
        let (from, to) = (window_start[s.name], window_end[s.name]);
        // No gap: the station's scrapes arrive every interval, through the outage too.
        let up = format!("up{{station=\"{}\"}}", s.name);
        let times = sample_times(&central, &up, started, to);
        let widest = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
        assert!(widest <= 1.5 * INTERVAL, "{}: a gap of {widest} s between samples at the centre", s.name);
        let counter = format!(
            "pywats_http_requests_total{{station=\"{}\",method=\"POST\",endpoint=\"/api/Report/WSJF\",code=\"200\"}}",
            s.name
        );
        let during = sample_times(&central, &counter, stopped, restarted).len();
        let in_window = |a: f64, b: f64| times.iter().filter(|t| **t >= a && **t <= b).count();
        // count_over_time over the outage counts every scrape of it.
        let outage_ms = ((restarted - stopped) * 1000.0).round();
        let count_over_time = value_at(&central, &format!("count_over_time({up}[{outage_ms}ms])"), restarted).unwrap();
        assert_eq!(count_over_time as usize, in_window(restarted - outage_ms / 1000.0, restarted));
        assert!(count_over_time >= expected_scrapes, "{}: {count_over_time} of {expected_scrapes} scrapes", s.name);
        // Exactly what the client did between the window's two samples, whose
        // ends are samples (no extrapolation), the agent's restart included.
        let range = format!("{}ms", ((to - from) * 1000.0).round() as u64);
        let increase = value_at(
            &central,
            &format!("sum(increase(pywats_http_requests_total{{station=\"{}\"}}[{range}]))", s.name),
            to,
        )
        .unwrap();
        let did = truth[s.name] - before[s.name];
        assert!((increase - did).abs() < 1e-6, "{}: increase {increase} vs the client's {did}", s.name);
        let resets = value_at(&central, &format!("sum(resets({counter}[{range}]))"), to).unwrap();
        assert_eq!(resets, if s.name == "st2" { 1.0 } else { 0.0 }, "{}: counter resets", s.name);
        let per_scrape =
            value_at(&central, &format!("max(scrape_samples_scraped{{station=\"{}\"}})", s.name), to).unwrap();
        let i = usize::from(s.name == "st2");
        report.push(format!(
            "{}: samples of `up` {} before the outage, {} during, {} after; the upload counter {during} during; \
             increase {increase} = the client's {did}; resets {resets}; {per_scrape} samples per scrape; \
             write-ahead log {} -> {} bytes over the outage",
            s.name,
            in_window(started, stopped),
            in_window(stopped, restarted),
            in_window(restarted, to),
            wal_before[i],
            wal_during[i],
        ));
    }
    // The fleet rules run over the centre's data too (evaluated every minute).
    wait_for(Duration::from_secs(150), "the fleet rules' upload ratio of both stations", || {
        (query_at(&central, "station:pywats_upload_success:ratio_rate5m", unix_now()).len() == 2).then_some(())
    });
    println!(
        "fleet: central down {:.1} s; the stations' WAL drained {:.1} s after it came back\n{}",
        restarted - stopped,
        drained.as_secs_f64(),
        report.join("\n")
    );
}
