//! What watching costs a client per request, on the machine the tests run
//! on: keep-alive HTTP/1.1 and HTTPS requests (`tests/py/bench_client.py`: a
//! GET of 1 kB and a POST of a 20 kB report, alternately), the client's own
//! CPU clock around them, with the agent off and on, interleaved over rounds
//! (the order turning every round); every request the client made must be
//! counted. Over HTTPS also with bare uprobes at the agent's probe sites and
//! no agent (`traps.rs`, as the bench does): the trap's own share. `cargo
//! xtask bench` measures this and much more on x86_64; this small form is for
//! the arm64 VM (`cargo xtask vm --arch arm64`), where the bench does not
//! run. It prints the medians and judges only the counts.

use std::time::Duration;

use pywats_agent_tests::{
    agent::Agent,
    free_port,
    prom::Samples,
    py::Py,
    tls,
    traps::{self, Traps},
    wait_for,
};
use serde_json::Value;

const ROUNDS: usize = 3;
const WARMUP: u64 = 20;
const OPS: u64 = 200;

/// One run on a fresh connection: (client CPU µs per timed request, requests made in all).
fn run(client: &mut Py, scenario: &str) -> (f64, u64) {
    client.ask(&format!("open {scenario} plain {WARMUP}"));
    let timed: Value = serde_json::from_str(&client.ask(&format!("timed {OPS}"))).unwrap();
    let done: Value = serde_json::from_str(&client.ask("close")).unwrap();
    let made = done["GET"].as_u64().unwrap() + done["POST"].as_u64().unwrap();
    assert_eq!(made, WARMUP + OPS);
    (timed["cpu_ns"].as_f64().unwrap() / OPS as f64 / 1e3, made)
}

/// How a run is watched.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Off,
    On,
    /// Bare uprobes at the agent's TLS sites, no agent.
    Traps,
}

/// One run with the agent watching the client: its cost, every request counted.
fn watched(client: &mut Py, scenario: &str, round: usize) -> f64 {
    let agent = Agent::start(&["--pid", &client.pid().to_string()]);
    if scenario == "https" {
        agent.wait_tls_probed();
    }
    let (us, made) = run(client, scenario);
    let counted = |m: &Samples| -> f64 { m.series("pywats_http_requests_total").iter().map(|(_, v)| v).sum() };
    wait_for(Duration::from_secs(60), "every request counted", || {
        (counted(&agent.scrape()) >= made as f64).then_some(())
    });
    assert_eq!(counted(&agent.settled()), made as f64, "{scenario} round {round}");
    us
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
#[ignore = "a measurement, for where `cargo xtask bench` does not run: `cargo xtask vm --arch arm64` runs it"]
fn client_cpu_per_request_with_the_agent_off_and_on() {
    let (cert, key) = tls::cert();
    let (http_port, https_port) = (free_port().to_string(), free_port().to_string());
    let _http = Py::start("http_server.py", &[&http_port]);
    let _https = Py::start("http_server.py", &[&https_port, "--tls", cert.to_str().unwrap(), key.to_str().unwrap()]);
    let work = std::env::temp_dir().join(format!("pywats-agent-cost-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    // No HTTP/2 server: its scenario is not run here.
    let mut client = Py::start("bench_client.py", &[&http_port, &https_port, "0", work.to_str().unwrap()]);
    for scenario in ["http", "https"] {
        let modes: &[Mode] =
            if scenario == "https" { &[Mode::Off, Mode::On, Mode::Traps] } else { &[Mode::Off, Mode::On] };
        // Where the agent puts its TLS programs in this client's libssl.
        let sites = (scenario == "https").then(|| {
            let agent = Agent::start(&["--pid", &client.pid().to_string()]);
            agent.wait_tls_probed();
            traps::sites(&agent.details()).unwrap()
        });
        let mut us: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        for round in 0..ROUNDS {
            for i in 0..modes.len() {
                let m = (i + round) % modes.len();
                us[m].push(match modes[m] {
                    Mode::Off => run(&mut client, scenario).0,
                    Mode::On => watched(&mut client, scenario, round),
                    Mode::Traps => {
                        let traps = Traps::open(client.pid(), sites.as_deref().unwrap()).unwrap();
                        let cost = run(&mut client, scenario).0;
                        assert!(traps.fired().unwrap() >= OPS, "the bare uprobes fired less than once per request");
                        cost
                    }
                });
            }
        }
        let us: Vec<f64> = us.into_iter().map(median).collect();
        let (off, on) = (us[0], us[1]);
        let traps = us.get(2).map_or(String::new(), |t| {
            format!(
                ", {t:.1} µs with bare uprobes at the agent's sites and no agent ({:+.1}%)",
                (t / off - 1.0) * 100.0
            )
        });
        println!(
            "cost: {scenario}: client CPU per request {off:.1} µs with the agent off, {on:.1} µs on ({:+.1}%){traps}, \
             median of {ROUNDS} rounds of {OPS} requests",
            (on / off - 1.0) * 100.0
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}
