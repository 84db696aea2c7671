//! The liveness check: only "no such process" ends a target. Run as root
//! through `cargo xtask test`.

use std::time::Duration;

use pywats_agent_tests::{
    agent::Agent,
    free_port,
    http::{self, KeepAlive},
    proc,
    prom::{self, Samples},
    py::Py,
    wait_for,
};

const TARGET: &str = "client";

fn requests(m: &Samples) -> f64 {
    m.get("pywats_http_requests_total", &[("target", TARGET), ("endpoint", "/mix/{id}/{id}/cl/load"), ("code", "200")])
        .unwrap_or(0.0)
}

/// What the server answered, all requests of the test being `load` GETs.
fn server_total(port: &str) -> f64 {
    let body: serde_json::Value =
        serde_json::from_str(&http::get(port.parse().unwrap(), "/__counts").unwrap().body).unwrap();
    body["counts"].as_array().unwrap().iter().map(|row| row[3].as_f64().unwrap()).sum()
}

/// The agent's fds run out (as a flood of idle connections to its port did
/// under systemd's limit of 1024): every file it opens fails with EMFILE for
/// two liveness rounds. Its `--pid` target stays watched, and every request
/// the target made before, during and after is counted exactly; each failed
/// liveness read is counted under `emfile`, one per round for the one process.
#[test]
fn a_target_stays_watched_while_the_agent_can_open_no_file() {
    let port = free_port().to_string();
    let _server = Py::start("http_server.py", &[&port]);
    let mut client = Py::start("http_client.py", &[&port]);
    let agent = Agent::start(&["--pid", &client.pid().to_string(), "--target-name", TARGET, "--no-discover"]);
    // The TLS probes are attached on a thread of their own, which holds fds
    // while it works: the limit is taken from the fds the agent keeps.
    agent.wait_tls_probed();
    client.ask("load 10");
    // Opened now, it serves scrapes while no new connection can be accepted.
    let mut scraper = KeepAlive::connect(agent.port).unwrap();
    let mut scrape = || {
        let r = scraper.get("/metrics").unwrap_or_else(|e| panic!("scrape: {e}\nagent log:\n{}", agent.log()));
        assert_eq!(r.status, 200, "{}", r.body);
        prom::parse(&r.body)
    };
    let errors = |m: &Samples| m.get("pywats_agent_proc_read_errors_total", &[("kind", "emfile")]);
    assert_eq!(errors(&scrape()), Some(0.0));

    let lowest = proc::lowest_free_fd(agent.pid());
    let before = proc::set_nofile(agent.pid(), lowest);
    client.ask("load 20");
    // Two failed rounds: the limit stayed down for longer than the liveness
    // interval (2 s). The next round is 2 s after the second: the limit is
    // back long before.
    let seen =
        wait_for(Duration::from_secs(20), "two failed liveness rounds", || errors(&scrape()).filter(|&n| n >= 2.0));
    proc::set_nofile(agent.pid(), before);
    assert_eq!(seen, 2.0, "one failed read per liveness round");

    client.ask("load 30");
    wait_for(Duration::from_secs(20), "the requests", || (requests(&agent.scrape()) >= 60.0).then_some(()));
    let m = agent.settled();
    assert_eq!(requests(&m), server_total(&port), "requests: agent vs server");
    assert_eq!(requests(&m), 60.0);
    assert_eq!(errors(&m), Some(2.0));
    let d = agent.details();
    assert_eq!(
        (d["targets"][0]["alive"].as_bool(), d["targets"][0]["pid"].as_u64()),
        (Some(true), Some(client.pid().into()))
    );
    assert_eq!(agent.get("/health/ready").status, 200);
    assert_eq!(m.get("pywats_target_processes", &[("target", TARGET)]), Some(1.0));
    assert!(agent.log().contains("cannot tell whether pid"), "the first failure is logged");
}
