//! `examples/observability/`: the example a user follows, run as the user
//! would, against the real pyWATS client and the real agent, with Debian's
//! Prometheus scraping the agent. Its answers are checked against what the
//! WATS-like server received.

use std::{collections::BTreeMap, path::PathBuf, process::Command, time::Duration};

use pywats_agent_tests::{agent::Agent, free_port, http, py, py::Py, root, wait_for};
use serde_json::Value;

const TOKEN: &str = "ZXhhbXBsZTp0b2tlbg==";

fn answer<'a>(answers: &'a Value, query: &str) -> &'a [Value] {
    answers["answers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["query"] == query)
        .unwrap_or_else(|| panic!("no answer to {query}"))["result"]
        .as_array()
        .unwrap()
}

#[test]
fn the_example_answers_every_recipe_from_a_real_prometheus() {
    let port = free_port();
    let _server = Py::start("wats_server.py", &[&port.to_string(), TOKEN, "--fail-every", "5"]);
    let work: PathBuf = std::env::temp_dir().join(format!("pywats-example-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let url = format!("http://127.0.0.1:{port}");
    let client_dir = work.join("client");
    let (mut client, first) = Py::spawn(
        "wats_workload.py",
        &["--url", &url, "--token", TOKEN, "--workdir", client_dir.to_str().unwrap(), "--rounds", "10", "--wait"],
    );
    let pid = first.strip_prefix("pid ").unwrap_or_else(|| panic!("workload said {first:?}")).to_string();
    // The demo's flags (xtask/src/demo.rs).
    let watches = py::workload_watches(&client_dir);
    let mut args = vec!["--pid", &pid, "--target-name", "demo-station", "--no-discover"];
    args.extend(watches.iter().map(String::as_str));
    let agent = Agent::start(&args);
    let truth: Value = serde_json::from_str(client.ask("go").strip_prefix("truth ").expect("the workload's truth"))
        .expect("truth JSON");

    // What the server received, by (method, path, code): the ground truth.
    let counts: Value = serde_json::from_str(&http::get(port, "/__counts").unwrap().body).unwrap();
    let received: f64 = counts["counts"].as_array().unwrap().iter().map(|row| row[3].as_f64().unwrap()).sum();
    wait_for(Duration::from_secs(20), "the agent to count every request", || {
        let seen: f64 = agent.scrape().series("pywats_http_requests_total").iter().map(|(_, v)| v).sum();
        (seen == received).then_some(())
    });

    let answers_file = work.join("answers.json");
    let out = Command::new("python3")
        .arg(root().join("examples/observability/prometheus_monitoring.py"))
        .args(["--agent", &format!("127.0.0.1:{}", agent.port), "--port", &free_port().to_string()])
        .arg("--workdir")
        .arg(work.join("prometheus"))
        .arg("--answers")
        .arg(&answers_file)
        .arg("--exit")
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the example failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Value = serde_json::from_str(&std::fs::read_to_string(&answers_file).unwrap()).unwrap();

    // Every recipe that should have data has it, and is printed.
    let recipes: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("examples/observability/recipes.json")).unwrap())
            .unwrap();
    for r in recipes.as_array().unwrap() {
        let query = r["query"].as_str().unwrap();
        assert!(stdout.contains(query), "the example did not print {query}");
        if r["expect_data"] == true {
            assert!(!answer(&answers, query).is_empty(), "no data for {query}");
        }
    }
    assert_eq!(answer(&answers, "up{job=\"pywats-agent\"}")[0]["value"][1], "1");

    // Prometheus has exactly what the server received and what the client converted.
    let mut from_prometheus: BTreeMap<String, f64> = BTreeMap::new();
    for s in answer(&answers, "sum by (target, method, endpoint, code) (pywats_http_requests_total)") {
        assert_eq!(s["metric"]["target"], "demo-station");
        *from_prometheus.entry(s["metric"]["code"].as_str().unwrap().to_string()).or_default() +=
            s["value"][1].as_str().unwrap().parse::<f64>().unwrap();
    }
    let mut at_server: BTreeMap<String, f64> = BTreeMap::new();
    for row in counts["counts"].as_array().unwrap() {
        *at_server.entry(row[2].to_string()).or_default() += row[3].as_f64().unwrap();
    }
    assert_eq!(from_prometheus, at_server, "requests by code: Prometheus (from the agent) vs the server");
    let executions: BTreeMap<String, f64> =
        answer(&answers, "sum by (target, converter, status) (pywats_converter_executions_total)")
            .iter()
            .map(|s| {
                (s["metric"]["status"].as_str().unwrap().to_string(), s["value"][1].as_str().unwrap().parse().unwrap())
            })
            .collect();
    let conv = &truth["converter"];
    let expected: BTreeMap<String, f64> = [("success", &conv["done"]), ("error", &conv["error"])]
        .into_iter()
        .map(|(s, n)| (s.to_string(), n.as_f64().unwrap()))
        .collect();
    assert_eq!(executions, expected, "converter executions: Prometheus vs the client's own count");

    // Every rule of alerts.yml was loaded and evaluated.
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap();
    let alerts: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("- alert:")).map(str::trim).collect();
    let loaded = answers["alerts"].as_object().unwrap();
    assert_eq!(loaded.len(), alerts.len(), "{loaded:?}");
    for a in alerts {
        assert!(loaded.contains_key(a), "alert {a} not loaded: {loaded:?}");
    }
    client.send("exit");
    let _ = std::fs::remove_dir_all(&work);
}
