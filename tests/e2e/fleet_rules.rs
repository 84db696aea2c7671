//! The fleet's Prometheus files, checked by Prometheus's own `promtool`: a
//! station's agent-mode config, the central config (with the client alerts
//! and the fleet rules), and the fleet rules' unit tests, which must test
//! every recording rule and every fleet alert (firing and silent). No root
//! needed; the outage test with real processes is `tests/e2e/fleet.rs`.

use std::path::PathBuf;

use pywats_agent_tests::{promtool, root};

fn path(name: &str) -> String {
    let p: PathBuf = root().join("deploy/prometheus").join(name);
    p.to_str().expect("UTF-8 path").to_string()
}

fn lines_after(file: &str, prefix: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path(file)).unwrap();
    text.lines().filter_map(|l| l.trim().strip_prefix(prefix)).map(|n| n.trim().to_string()).collect()
}

#[test]
fn the_station_config_is_valid_for_agent_mode() {
    let out = promtool::ok(&["check", "config", "--agent", &path("station.yml")], "");
    assert!(out.contains("SUCCESS"), "{out}");
    // Agent mode has no rules: the central config is not one for it.
    let refused = promtool::run(&["check", "config", "--agent", &path("central.yml")], "");
    assert!(!refused.status.success());
}

#[test]
fn the_central_config_loads_the_client_alerts_and_the_fleet_rules() {
    let out = promtool::ok(&["check", "config", &path("central.yml")], "");
    let alerts = lines_after("alerts.yml", "- alert:").len();
    let fleet = lines_after("fleet.yml", "- alert:").len() + lines_after("fleet.yml", "- record:").len();
    assert!(out.contains("SUCCESS: 2 rule files found"), "{out}");
    assert!(out.contains(&format!("SUCCESS: {alerts} rules found")), "{out}");
    assert!(out.contains(&format!("SUCCESS: {fleet} rules found")), "{out}");
}

#[test]
fn the_fleet_rule_unit_tests_pass_and_cover_every_rule() {
    promtool::ok(&["check", "rules", &path("fleet.yml")], "");
    promtool::ok(&["test", "rules", &path("fleet_test.yml")], "");
    let records = lines_after("fleet.yml", "- record:");
    assert!(records.len() >= 8, "{records:?}");
    let tested = lines_after("fleet_test.yml", "- expr:");
    for r in &records {
        assert!(tested.contains(r), "recording rule {r} has no promql_expr_test in fleet_test.yml");
    }
    let test = std::fs::read_to_string(path("fleet_test.yml")).unwrap();
    for alert in lines_after("fleet.yml", "- alert:") {
        let cases: Vec<&str> = test
            .split("alertname:")
            .skip(1)
            .filter(|c| c.trim_start().starts_with(&alert))
            .map(|c| c.split("exp_alerts:").nth(1).unwrap_or_default().trim_start())
            .collect();
        let firing = cases.iter().filter(|c| !c.starts_with("[]")).count();
        let silent = cases.iter().filter(|c| c.starts_with("[]")).count();
        assert!(firing > 0 && silent > 0, "{alert}: {firing} firing and {silent} silent cases in fleet_test.yml");
    }
}
