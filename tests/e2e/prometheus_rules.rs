//! The shipped Prometheus files, checked by Prometheus's own `promtool`: the
//! scrape config, the alert rules, and their unit tests
//! (`deploy/prometheus/alerts_test.yml`), which must cover every alert with
//! a case where it fires and one where it does not; and the agent's
//! `--web-config` example, in the format promtool also reads. No root needed.

use std::{collections::BTreeMap, path::PathBuf};

use pywats_agent_tests::{pki::Pki, promtool, root};

fn prometheus_dir() -> PathBuf {
    root().join("deploy/prometheus")
}

fn path(name: &str) -> String {
    prometheus_dir().join(name).to_str().expect("UTF-8 path").to_string()
}

/// Debian's Prometheus (what setup installs) is built without Kubernetes
/// service discovery: its promtool refuses `kubernetes_sd_configs` as an
/// unknown field. The pod job is then checked with that one block swapped
/// for a file discovery, so its relabelling (the part that can be wrong)
/// is still checked; a promtool with Kubernetes discovery checks the file as shipped.
const NO_KUBERNETES_SD: &str = "field kubernetes_sd_configs not found";

/// The scrape config as promtool here can read it, written into `dir`.
fn checkable_scrape_config(dir: &std::path::Path) -> String {
    let scrape = std::fs::read_to_string(path("scrape.yml")).unwrap();
    let out = promtool::run(&["check", "config", &path("scrape.yml")], "");
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        return scrape;
    }
    assert!(printed.contains(NO_KUBERNETES_SD), "promtool check config scrape.yml:\n{printed}");
    eprintln!("this promtool lacks Kubernetes discovery: the pod job is checked with a file discovery instead");
    let sd = "    kubernetes_sd_configs:\n      - role: pod\n";
    assert!(scrape.contains(sd), "scrape.yml's pod job changed: update this test");
    let targets = dir.join("targets.json");
    std::fs::write(&targets, "[]").unwrap();
    scrape.replace(sd, &format!("    file_sd_configs:\n      - files: [{:?}]\n", targets.to_str().unwrap()))
}

#[test]
fn the_scrape_config_loads_with_the_alert_rules() {
    let dir = std::env::temp_dir().join(format!("pywats-agent-promconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scrape = checkable_scrape_config(&dir);
    let alone = dir.join("scrape.yml");
    std::fs::write(&alone, &scrape).unwrap();
    promtool::ok(&["check", "config", alone.to_str().unwrap()], "");
    // As a deployment loads them: the scrape config with the alert rules.
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, format!("rule_files:\n  - {:?}\n{scrape}", path("alerts.yml"))).unwrap();
    let out = promtool::ok(&["check", "config", config.to_str().unwrap()], "");
    assert!(out.contains(&format!("SUCCESS: {} rules found", alert_names().len())), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_alert_rules_are_valid() {
    let out = promtool::ok(&["check", "rules", &path("alerts.yml")], "");
    assert!(out.contains(&format!("SUCCESS: {} rules found", alert_names().len())), "{out}");
}

#[test]
fn the_alert_unit_tests_pass() {
    promtool::ok(&["test", "rules", &path("alerts_test.yml")], "");
}

/// `- alert: NAME` lines of alerts.yml.
fn alert_names() -> Vec<String> {
    let text = std::fs::read_to_string(path("alerts.yml")).unwrap();
    text.lines().filter_map(|l| l.trim().strip_prefix("- alert:")).map(|n| n.trim().to_string()).collect()
}

/// Per alert name in alerts_test.yml: (cases where it fires, cases where it does not),
/// from each `alertname:` and the `exp_alerts:` that follows it.
fn unit_cases() -> BTreeMap<String, (usize, usize)> {
    let text = std::fs::read_to_string(path("alerts_test.yml")).unwrap();
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim().to_string());
        } else if let Some(expected) = line.strip_prefix("exp_alerts:") {
            let name = current.take().expect("exp_alerts follows an alertname");
            let entry = cases.entry(name).or_default();
            if expected.trim() == "[]" {
                entry.1 += 1;
            } else {
                entry.0 += 1;
            }
        }
    }
    cases
}

/// A new alert without unit tests fails here.
#[test]
fn every_alert_has_a_firing_and_a_silent_unit_test() {
    let names = alert_names();
    assert!(names.len() >= 9, "{names:?}");
    for wanted in ["PywatsDependencyDown", "PywatsQueueStalled"] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} missing from alerts.yml");
    }
    let cases = unit_cases();
    for name in &names {
        let (firing, silent) = cases.get(name).copied().unwrap_or_default();
        assert!(firing > 0 && silent > 0, "{name}: {firing} firing and {silent} silent cases in alerts_test.yml");
    }
    for tested in cases.keys() {
        assert!(names.contains(tested), "alerts_test.yml tests {tested}, which alerts.yml does not have");
    }
}

/// `deploy/web-config.yml` as shipped, beside certificate files where it
/// names them (promtool loads them, relative to the config's directory).
#[test]
fn the_web_config_example_is_valid() {
    let pki = Pki::new("webconfig");
    let server = pki.server("server");
    let tls = pki.dir.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    std::fs::copy(&server.cert, tls.join("server.crt")).unwrap();
    std::fs::copy(&server.key, tls.join("server.key")).unwrap();
    let config = pki.dir.join("web-config.yml");
    std::fs::copy(root().join("deploy/web-config.yml"), &config).unwrap();
    let out = promtool::ok(&["check", "web-config", config.to_str().unwrap()], "");
    assert!(out.contains("SUCCESS"), "{out}");
}
