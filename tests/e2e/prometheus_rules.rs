//! The shipped Prometheus files, checked by Prometheus's own `promtool`: the
//! scrape configs, the alert rules, and their unit tests
//! (`deploy/prometheus/alerts_test.yml`), which must cover every alert with
//! a case where it fires and one where it does not; and the agent's
//! `--web-config` example, in the format promtool also reads. No root needed.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use pywats_agent_tests::{http, pki::Pki, prometheus::Prometheus, promtool, root, wait_for};

fn prometheus_dir() -> PathBuf {
    root().join("deploy/prometheus")
}

fn path(name: &str) -> String {
    prometheus_dir().join(name).to_str().expect("UTF-8 path").to_string()
}

/// What Debian's promtool says of a file that names Kubernetes discovery:
/// Debian builds Prometheus without it.
const NO_KUBERNETES_SD: &str = "field kubernetes_sd_configs not found";

/// The shipped Prometheus configs, by name: every `.yml` that is neither a
/// rule file (`groups:`) nor a rule unit test (`tests:`).
fn shipped_configs() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(prometheus_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yml"))
        .filter(|n| {
            let text = std::fs::read_to_string(path(n)).unwrap();
            !text.contains("\ngroups:") && !text.contains("\ntests:")
        })
        .collect();
    names.sort();
    names
}

/// An agent-mode config (a station's, `station.yml`) is checked as agent
/// mode loads it: its header shows the flag it runs with.
fn agent_mode(text: &str) -> bool {
    text.contains("--enable-feature=agent")
}

/// Every shipped config loads in Debian's Prometheus as shipped (the
/// fleet's too: the station's in agent mode, the centre's with its rule
/// files), except the one for Kubernetes, whose header says it needs another build: Debian's
/// promtool refuses exactly its discovery block, and with that one block
/// swapped for a file discovery its relabelling (the part that can be
/// wrong) is checked. The stations' config, with the alert rules, is then
/// loaded by a real Prometheus, as a deployment loads it.
#[test]
fn debians_prometheus_loads_every_shipped_config() {
    let configs = shipped_configs();
    for wanted in ["scrape.yml", "scrape-kubernetes.yml", "station.yml", "central.yml"] {
        assert!(configs.iter().any(|n| n == wanted), "{wanted} not among {configs:?}");
    }
    let dir = std::env::temp_dir().join(format!("pywats-agent-promconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in &configs {
        let text = std::fs::read_to_string(path(name)).unwrap();
        let check = |file: &str| {
            let mut args = vec!["check", "config"];
            args.extend(agent_mode(&text).then_some("--agent"));
            args.push(file);
            promtool::run(&args, "")
        };
        let out = check(&path(name));
        let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !text.contains("kubernetes_sd_configs") {
            assert!(out.status.success(), "Debian's promtool refuses {name}:\n{printed}");
            continue;
        }
        assert!(name.contains("kubernetes"), "{name} names Kubernetes discovery: Debian's Prometheus refuses it");
        assert!(text.starts_with('#') && text.contains("not Debian's"), "{name}'s header must say what loads it");
        if out.status.success() {
            continue;
        }
        assert!(printed.contains(NO_KUBERNETES_SD), "promtool check config {name}:\n{printed}");
        let sd = "    kubernetes_sd_configs:\n      - role: pod\n";
        assert!(text.contains(sd), "{name}'s discovery changed: update this test");
        let targets = dir.join("targets.json");
        std::fs::write(&targets, "[]").unwrap();
        let swapped = dir.join(name);
        let files = format!("    file_sd_configs:\n      - files: [{:?}]\n", targets.to_str().unwrap());
        std::fs::write(&swapped, text.replace(sd, &files)).unwrap();
        let out = check(swapped.to_str().unwrap());
        let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "promtool check config {name} with file discovery:\n{printed}");
    }
    // As a station's Prometheus loads them: the scrape config with the alert rules.
    let scrape = std::fs::read_to_string(path("scrape.yml")).unwrap();
    let config = format!("rule_files:\n  - {:?}\n{scrape}", path("alerts.yml"));
    let with_rules = dir.join("prometheus.yml");
    std::fs::write(&with_rules, &config).unwrap();
    let out = promtool::ok(&["check", "config", with_rules.to_str().unwrap()], "");
    assert!(out.contains(&format!("SUCCESS: {} rules found", alert_names().len())), "{out}");
    let prometheus = Prometheus::start(&config);
    wait_for(Duration::from_secs(30), "the station job's targets", || {
        prometheus.targets().contains_key("pywats-agent").then_some(())
    });
    let rules = http::get(prometheus.port, "/api/v1/rules?type=alert").unwrap().body;
    let rules: serde_json::Value = serde_json::from_str(&rules).unwrap();
    let loaded: usize =
        rules["data"]["groups"].as_array().unwrap().iter().map(|g| g["rules"].as_array().unwrap().len()).sum();
    assert_eq!(loaded, alert_names().len(), "{rules}");
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
