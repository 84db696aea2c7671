//! A kernel that refuses a program: the features that need it are off, the
//! agent runs and serves the rest, and says what is off and why (health,
//! metrics, log). `--require` makes such a start fail instead. The refusal is
//! the kernel's own (`PYWATS_AGENT_TEST_REFUSE`: its verifier is handed an
//! invalid program in the named program's place).

use std::{collections::BTreeMap, process::Command, time::Duration};

use pywats_agent_tests::{
    agent::{self, Agent},
    free_port, http,
    py::Py,
    wait_for,
};
use serde_json::Value;

const REFUSE: &str = "ssl_write_ret,sys_exit_openat";

fn server_total(port: u16) -> f64 {
    let body: Value = serde_json::from_str(&http::get(port, "/__counts").unwrap().body).unwrap();
    body["counts"].as_array().unwrap().iter().map(|row| row[3].as_f64().unwrap()).sum()
}

#[test]
fn a_refused_program_turns_its_feature_off_not_the_agent() {
    let port = free_port();
    let port_s = port.to_string();
    let _server = Py::start("http_server.py", &[&port_s]);
    let mut client = Py::start("http_client.py", &[&port_s]);
    let pid = client.pid().to_string();
    let mut cmd = Command::new(agent::bin());
    cmd.env("PYWATS_AGENT_TEST_REFUSE", REFUSE);
    let agent = Agent::start_with(cmd, &["--pid", &pid, "--target-name", "station"]);

    // Ready: what is off is a property of this kernel, not a fault to restart for.
    assert_eq!(agent.get("/health/ready").status, 200, "{}", agent.get("/health/ready").body);
    let d = agent.details();
    let features: BTreeMap<String, Value> = d["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["feature"].as_str().unwrap().to_owned(), f.clone()))
        .collect();
    let off = [
        ("https", "ssl_write_ret"),
        ("http2", "ssl_write_ret"),
        ("queues", "sys_exit_openat"),
        ("converters", "sys_exit_openat"),
    ];
    assert_eq!(features.len(), 6, "{features:?}");
    for (name, program) in off {
        let f = &features[name];
        assert_eq!(f["state"], "off", "{f}");
        assert_eq!(f["program"], program, "{f}");
        let reason = f["reason"].as_str().unwrap();
        assert!(reason.contains(program) && reason.contains("BPF_PROG_LOAD failed"), "{reason}");
        let log: Vec<&str> = f["verifier_log"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
        assert!(log.iter().any(|l| l.contains("R2 !read_ok")), "the verifier's own words: {log:?}");
    }
    for name in ["process_tree", "http"] {
        assert_eq!(features[name]["state"], "on", "{}", features[name]);
    }
    let attached: Vec<&str> = d["programs_attached"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(!attached.contains(&"sys_exit_openat") && attached.contains(&"sys_enter_openat"), "{attached:?}");

    let m = agent.scrape();
    for (feature, on) in
        [("process_tree", 1.0), ("http", 1.0), ("https", 0.0), ("http2", 0.0), ("queues", 0.0), ("converters", 0.0)]
    {
        assert_eq!(m.get("pywats_agent_feature_enabled", &[("feature", feature)]), Some(on), "{feature}");
    }
    let log = agent.log();
    for (feature, program) in off {
        assert!(log.contains(&format!("feature {feature} is off: the kernel refused program {program}")), "{log}");
    }

    // What is on works: plain HTTP requests, counted exactly.
    client.ask("load 25");
    let total = server_total(port);
    assert_eq!(total, 25.0);
    wait_for(Duration::from_secs(20), "the agent to count every request", || {
        let seen: f64 = agent.scrape().series("pywats_http_requests_total").iter().map(|(_, v)| v).sum();
        (seen >= total).then_some(())
    });
    let m = agent.settled();
    let seen: f64 = m.series("pywats_http_requests_total").iter().map(|(_, v)| v).sum();
    assert_eq!(seen, total);
    assert_eq!(agent.get("/health/ready").status, 200);

    // An operator who prefers a failed start says so.
    for require in ["https", "all", "queues,http"] {
        let run = agent::run_to_end(
            &["--pid", &pid, "--require", require, "--listen", "127.0.0.1:0"],
            &[("PYWATS_AGENT_TEST_REFUSE", REFUSE)],
        );
        assert_eq!(run.status.code(), Some(1), "--require {require}: {}", run.stderr);
        assert!(
            run.stderr.contains("--require ") && run.stderr.contains("is off: the kernel refused program"),
            "{}",
            run.stderr
        );
    }
    let run = agent::run_to_end(&["--pid", &pid, "--require", "tls"], &[]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("unknown feature \"tls\""), "{}", run.stderr);
}
