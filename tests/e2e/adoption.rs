//! Adoption at exec: under `--match`, a process that execs an allowed
//! executable is taken in by the kernel at its exec and judged at once, so
//! a process that lives a moment is counted whole. Run as root through
//! `cargo xtask test`.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use pywats_agent_tests::{agent::Agent, free_port, http, prom::Samples, py, py::Py, wait_for};

fn requests(m: &Samples, endpoint: &str) -> f64 {
    m.series("pywats_http_requests_total").iter().filter(|(l, _)| l["endpoint"] == endpoint).map(|(_, v)| v).sum()
}

fn server_total(port: u16) -> f64 {
    let body: serde_json::Value = serde_json::from_str(&http::get(port, "/__counts").unwrap().body).unwrap();
    body["counts"].as_array().unwrap().iter().map(|row| row[3].as_f64().unwrap()).sum()
}

/// Thirty processes, one after the other, each making its one request 50 ms
/// after its exec and exiting: every request counted, every process adopted
/// at its exec, none left watched.
#[test]
fn a_process_that_lives_a_moment_is_counted_from_its_exec() {
    let port = free_port();
    let _server = Py::start("http_server.py", &[&port.to_string()]);
    let tag = format!("moment-{}", std::process::id());
    let agent = Agent::start(&["--match", &tag, "--no-discover"]);
    for _ in 0..30 {
        let status = Command::new(py::python())
            .arg(py::script("quick_request.py"))
            .args([&port.to_string(), "/mix/200/10/cl/moment", &tag])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let endpoint = "/mix/{id}/{id}/cl/moment";
    let m = wait_for(Duration::from_secs(20), "30 requests", || {
        let m = agent.settled();
        (requests(&m, endpoint) >= 30.0).then_some(m)
    });
    assert_eq!(requests(&m, endpoint), 30.0);
    assert_eq!(server_total(port), 30.0);
    assert_eq!(m.get("pywats_agent_adoption_delay_seconds_count", &[("how", "exec")]), Some(30.0));
    assert_eq!(m.get("pywats_agent_targets_joined_total", &[("how", "match")]), Some(30.0));
    assert_eq!(
        m.get("pywats_agent_events_ignored_total", &[("kind", "sock_connect"), ("reason", "lifecycle_wait")]),
        Some(0.0)
    );
    wait_for(Duration::from_secs(10), "no target left alive", || {
        (agent.scrape().get("pywats_agent_targets", &[("state", "watched")]) == Some(0.0)).then_some(())
    });
}

/// A Python process that execs without the pattern, or of a user not
/// allowed, is taken in by the kernel and let go at once: nothing of it is
/// recorded, its events are counted as ignored, and it leaves nothing behind.
#[test]
fn a_process_taken_in_at_exec_and_rejected_leaves_nothing() {
    let port = free_port();
    let _server = Py::start("http_server.py", &[&port.to_string()]);
    let tag = format!("rejected-{}", std::process::id());
    let agent = Agent::start(&["--match", &tag, "--no-discover"]);
    let before = agent.scrape();
    let released = |m: &Samples| m.get("pywats_agent_exec_candidates_total", &[("outcome", "released")]).unwrap();
    let rejected = |m: &Samples| m.get("pywats_agent_match_rejected_total", &[("reason", "user")]).unwrap();
    // Each process stays until the agent has let it go: one that exits
    // first would be counted as gone, not judged. (Other Pythons on the
    // host are released too: the user rejection is this test's alone.)
    let judged = |child: std::process::Child, done: &dyn Fn(&Samples) -> bool| {
        wait_for(Duration::from_secs(20), "the process judged", || done(&agent.scrape()).then_some(()));
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
    };
    let quick = |cmd: &mut Command| cmd.env("HOLD", "1").stdin(Stdio::piped()).spawn().unwrap();
    // Without the pattern: a Python the kernel takes in by its name.
    let plain = quick(
        Command::new(py::python())
            .arg(py::script("quick_request.py"))
            .args([&port.to_string(), "/mix/200/10/cl/other"]),
    );
    judged(plain, &|m| released(m) > released(&before));
    // With the pattern, as nobody: not an allowed user.
    let nobody = quick(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(py::python())
            .arg(py::script("quick_request.py"))
            .args([&port.to_string(), "/mix/200/10/cl/other", &tag]),
    );
    judged(nobody, &|m| rejected(m) > rejected(&before));
    let m = agent.settled();
    assert_eq!(server_total(port), 2.0);
    assert_eq!(requests(&m, "/mix/{id}/{id}/cl/other"), 0.0);
    assert!(m.series("pywats_http_requests_total").is_empty(), "nothing recorded");
    assert_eq!(rejected(&m) - rejected(&before), 1.0);
    assert_eq!(m.get("pywats_agent_targets_joined_total", &[("how", "match")]), Some(0.0));
    let d = agent.details();
    assert!(d["targets"].as_array().unwrap().is_empty(), "{d}");
    assert!(d["connections"].as_array().unwrap().is_empty(), "{d}");
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Http,
    Https,
    H2,
}

/// Twenty runs of a per-unit script with the real pyWATS client (build the
/// unit's report, submit it, exit: about half a second each), started by a
/// process the agent does not watch: every request counted, equal to the
/// server's count, every run adopted at its exec.
fn per_unit_scripts(mode: Mode) {
    const TOKEN: &str = "ZTJlOnRva2Vu";
    let port = free_port();
    let (cert, key) = pywats_agent_tests::tls::cert();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let port_s = port.to_string();
    let mut server_args = vec![port_s.as_str(), TOKEN];
    match mode {
        Mode::Http => {}
        Mode::Https => server_args.extend(["--tls", cert, key]),
        Mode::H2 => server_args.extend(["--tls", cert, key, "--h2"]),
    }
    let _server = Py::start("wats_server.py", &server_args);
    let scheme = if mode == Mode::Http { "http" } else { "https" };
    let url = format!("{scheme}://127.0.0.1:{port}");
    let tag = format!("unit-{mode:?}-{}", std::process::id());
    let agent = Agent::start(&["--match", &tag, "--no-discover"]);
    for unit in 0..20 {
        let status = Command::new(py::python())
            .arg(py::script("per_unit.py"))
            .args([&url, TOKEN, &format!("SN-{unit}"), &tag])
            .env("SSL_CERT_FILE", cert)
            .status()
            .unwrap();
        assert!(status.success(), "unit {unit}");
    }
    let counts_text = if mode == Mode::Http {
        http::get(port, "/__counts").unwrap().body
    } else {
        pywats_agent_tests::tls::get(port, "/__counts")
    };
    let counts: serde_json::Value = serde_json::from_str(&counts_text).unwrap();
    let server: f64 = counts["counts"].as_array().unwrap().iter().map(|row| row[3].as_f64().unwrap()).sum();
    let posts: f64 = counts["counts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row[0] == "POST" && row[1] == "/api/Report/WSJF")
        .map(|row| row[3].as_f64().unwrap())
        .sum();
    assert_eq!(posts, 20.0, "the server took 20 reports");
    let m = wait_for(Duration::from_secs(30), "every request counted", || {
        let m = agent.settled();
        let seen: f64 = m.series("pywats_http_requests_total").iter().map(|(_, v)| v).sum();
        (seen >= server).then_some(m)
    });
    let seen: f64 = m.series("pywats_http_requests_total").iter().map(|(_, v)| v).sum();
    assert_eq!(seen, server, "{mode:?}: agent vs server");
    let submitted = m
        .series("pywats_http_requests_total")
        .iter()
        .filter(|(l, _)| l["method"] == "POST" && l["endpoint"] == "/api/Report/WSJF")
        .map(|(_, v)| v)
        .sum::<f64>();
    assert_eq!(submitted, 20.0, "{mode:?}: submissions");
    assert_eq!(m.get("pywats_agent_adoption_delay_seconds_count", &[("how", "exec")]), Some(20.0));
    if mode != Mode::Http {
        let attach = m.get("pywats_agent_tls_attach_seconds_count", &[]).unwrap();
        assert!(attach >= 20.0, "each run's TLS probes, timed from its exec: {attach}");
        let p = |name: &str| m.get(name, &[]).unwrap();
        eprintln!(
            "{mode:?}: TLS probes in place {:.1} ms after exec on average",
            p("pywats_agent_tls_attach_seconds_sum") / attach * 1e3
        );
    }
}

#[test]
fn per_unit_pywats_scripts_over_http_are_counted_whole() {
    per_unit_scripts(Mode::Http);
}

#[test]
fn per_unit_pywats_scripts_over_https_are_counted_whole() {
    per_unit_scripts(Mode::Https);
}

#[test]
fn per_unit_pywats_scripts_over_http2_are_counted_whole() {
    per_unit_scripts(Mode::H2);
}

/// Many short-lived targets one after the other (`PYWATS_AGENT_SHORT_LIVED`,
/// 200 by default; the proof runs 1000): each adopted at its exec and
/// gone at its exit event, and nothing piles up: one name reused, no
/// connection, no TLS probes, no kernel entry left (the agent's own count of
/// watched targets), memory flat.
#[test]
fn a_thousand_short_lived_targets_leave_nothing_behind() {
    let n: usize = std::env::var("PYWATS_AGENT_SHORT_LIVED").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let port = free_port();
    let _server = Py::start("http_server.py", &[&port.to_string()]);
    let tag = format!("short-{}", std::process::id());
    let agent = Agent::start(&["--match", &tag, "--no-discover"]);
    let script = format!(
        "import http.client; c = http.client.HTTPConnection('127.0.0.1', {port}); \
         c.request('GET', '/mix/200/10/cl/short'); c.getresponse().read()"
    );
    let run = |count: usize| {
        for _ in 0..count {
            let status = Command::new(py::python()).args(["-c", &script, &tag]).status().unwrap();
            assert!(status.success());
        }
    };
    run(20);
    let rss = |agent: &Agent| pywats_agent_tests::proc::status_field(agent.pid(), "VmRSS").unwrap();
    let before = rss(&agent);
    run(n - 20);
    let endpoint = "/mix/{id}/{id}/cl/short";
    let m = wait_for(Duration::from_secs(30), "every request", || {
        let m = agent.settled();
        (requests(&m, endpoint) >= n as f64).then_some(m)
    });
    assert_eq!(requests(&m, endpoint), n as f64);
    assert_eq!(server_total(port), n as f64);
    assert_eq!(m.get("pywats_agent_targets_joined_total", &[("how", "match")]), Some(n as f64));
    let settled = wait_for(Duration::from_secs(10), "every target gone", || {
        let m = agent.scrape();
        (m.get("pywats_agent_targets", &[("state", "watched")]) == Some(0.0)).then_some(m)
    });
    assert_eq!(settled.get("pywats_agent_targets", &[("state", "exited")]), Some(1.0), "one name, reused");
    assert_eq!(settled.get("pywats_agent_tls_probed_processes", &[]), Some(0.0));
    assert_eq!(settled.get("pywats_agent_connections_open", &[]), Some(0.0));
    let d = agent.details();
    assert_eq!(d["targets"].as_array().unwrap().len(), 1, "{d}");
    let after = rss(&agent);
    eprintln!("{n} short-lived targets: agent RSS {before} kB after 20, {after} kB after {n}");
    assert!(after < before + 8 * 1024, "RSS {before} kB -> {after} kB");
}
