//! TLS probes are attached per target process: a process the agent does not
//! watch never hits them, and a target's children (forked, or forked and
//! exec'd into a new program) get their own as soon as the kernel reports
//! them, detached again when they exit.

use std::{collections::BTreeMap, time::Duration};

use pywats_agent_tests::{agent::Agent, free_port, prom::Samples, py::Py, tls, wait_for};
use serde_json::Value;

struct Server {
    port: u16,
    _py: Py,
}

fn https_server() -> Server {
    let port = free_port();
    let (cert, key) = tls::cert();
    let py = Py::start("http_server.py", &[&port.to_string(), "--tls", cert.to_str().unwrap(), key.to_str().unwrap()]);
    Server { port, _py: py }
}

/// What the server answered per path.
fn server_counts(port: u16) -> BTreeMap<String, f64> {
    let body: Value = serde_json::from_str(&tls::get(port, "/__counts")).unwrap();
    let mut out = BTreeMap::new();
    for row in body["counts"].as_array().unwrap() {
        *out.entry(row[1].as_str().unwrap().to_string()).or_insert(0.0) += row[3].as_f64().unwrap();
    }
    out
}

fn agent_count(m: &Samples, endpoint: &str) -> f64 {
    m.series("pywats_http_requests_total").iter().filter(|(l, _)| l["endpoint"] == endpoint).map(|(_, v)| v).sum()
}

fn tls_runs(m: &Samples) -> f64 {
    m.series("pywats_agent_program_runs_total")
        .iter()
        .filter(|(l, _)| l["program"].starts_with("ssl_"))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn an_unwatched_process_never_runs_the_tls_probes() {
    let server = https_server();
    let port = server.port.to_string();
    let mut target = Py::start("tls_children.py", &[&port]);
    let mut bystander = Py::start("tls_children.py", &[&port]);
    let agent = Agent::start(&["--pid", &target.pid().to_string(), "--program-stats"]);
    agent.wait_tls_probed();
    let before = agent.settled();
    assert_eq!(bystander.ask("load 200"), "ok");
    let after = agent.settled();
    assert_eq!(tls_runs(&after), tls_runs(&before), "a process the agent does not watch ran its TLS probes");
    assert_eq!(after.get("pywats_agent_events_total", &[("kind", "tls_data")]), Some(0.0));
    assert_eq!(after.get("pywats_agent_tls_probed_processes", &[]), Some(1.0));

    // The target's own calls do run them, and are counted exactly.
    assert_eq!(target.ask("load 30"), "ok");
    let m = wait_for(Duration::from_secs(20), "the target's 30 requests", || {
        let m = agent.settled();
        (agent_count(&m, "/mix/{id}/{id}/cl/load") >= 30.0).then_some(m)
    });
    assert_eq!(agent_count(&m, "/mix/{id}/{id}/cl/load"), 30.0);
    assert!(tls_runs(&m) > tls_runs(&after));
    // Debian's libssl: the internal read and write functions were found, so
    // only the `_ex` pair and SSL_free run, and one run per SSL call each.
    let ran: Vec<String> = m
        .series("pywats_agent_program_runs_total")
        .iter()
        .filter(|(l, v)| l["program"].starts_with("ssl_") && *v > 0.0)
        .map(|(l, _)| l["program"].clone())
        .collect();
    assert!(
        ran.iter().all(|p| p.starts_with("ssl_read_ex") || p.starts_with("ssl_write_ex") || p == "ssl_free"),
        "{ran:?}"
    );
    let probes = agent.details()["tls_probes"].as_array().unwrap().clone();
    let programs: std::collections::BTreeSet<&str> = probes.iter().map(|p| p["program"].as_str().unwrap()).collect();
    assert_eq!(
        programs.into_iter().collect::<Vec<_>>(),
        ["ssl_free", "ssl_read_ex", "ssl_read_ex_ret", "ssl_write_ex", "ssl_write_ex_ret"],
        "{probes:?}"
    );
    // The details say where each sits.
    for p in &probes {
        let want = if p["program"] == "ssl_free" { "SSL_free" } else { "internal" };
        assert_eq!(p["function"], want, "{p}");
    }
    assert_eq!(server_counts(server.port)["/mix/200/10/cl/load"], 230.0);
}

#[test]
fn forked_and_execd_children_are_probed() {
    let server = https_server();
    let mut target = Py::start("tls_children.py", &[&server.port.to_string()]);
    let agent = Agent::start(&["--pid", &target.pid().to_string()]);
    agent.wait_tls_probed();
    for _ in 0..5 {
        assert_eq!(target.ask("fork 4"), "ok");
        assert_eq!(target.ask("spawn 4"), "ok");
    }
    let truth = server_counts(server.port);
    assert_eq!(truth["/mix/200/10/cl/fork"], 20.0);
    assert_eq!(truth["/mix/200/10/cl/spawn"], 20.0);
    let m = wait_for(Duration::from_secs(20), "every child's requests", || {
        let m = agent.settled();
        (agent_count(&m, "/mix/{id}/{id}/cl/fork") >= 20.0 && agent_count(&m, "/mix/{id}/{id}/cl/spawn") >= 20.0)
            .then_some(m)
    });
    assert_eq!(agent_count(&m, "/mix/{id}/{id}/cl/fork"), 20.0);
    assert_eq!(agent_count(&m, "/mix/{id}/{id}/cl/spawn"), 20.0);
    // How long each child went unprobed after the kernel reported it.
    let attaches = m.get("pywats_agent_tls_attach_seconds_count", &[]).unwrap();
    assert!(attaches >= 10.0, "{attaches} attaches for 10 children");
    eprintln!(
        "TLS attach latency: {:.1} ms mean",
        m.get("pywats_agent_tls_attach_seconds_sum", &[]).unwrap() / attaches * 1e3
    );
    // The children are gone, and so are their probes.
    wait_for(Duration::from_secs(10), "the children's probes to go", || {
        (agent.scrape().get("pywats_agent_tls_probed_processes", &[]) == Some(1.0)).then_some(())
    });
}
