//! The user guide keeps up with the code: every metric family the agent can
//! export, every alert and every dashboard panel is described in
//! `docs/guides/observability.md`, and the guide names nothing that is gone.
//! No root needed: these read files only.

use std::{collections::BTreeSet, fs, path::Path};

use pywats_agent_tests::{docs, root};

const GUIDE: &str = "docs/guides/observability.md";

fn guide() -> String {
    fs::read_to_string(root().join(GUIDE)).expect("read the user guide")
}

/// Names in the first column of the guide's tables: "| `name` | …".
fn guide_table_names(guide: &str, prefix: &str) -> BTreeSet<String> {
    guide
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name))
        .filter(|name| name.starts_with(prefix))
        .map(String::from)
        .collect()
}

#[test]
fn every_metric_family_is_in_the_user_guide() {
    let code = docs::metric_families(&root().join("agent/src"));
    assert!(code.len() >= 50, "found only {} metric names in agent/src: {code:?}", code.len());
    let mut documented = guide_table_names(&guide(), "pywats_");
    documented.extend(guide_table_names(&guide(), "process_"));
    let missing: Vec<_> = code.difference(&documented).collect();
    assert!(missing.is_empty(), "metric families without a row in {GUIDE}'s tables: {missing:?}");
    let stale: Vec<_> = documented.difference(&code).collect();
    assert!(stale.is_empty(), "{GUIDE} describes metric families the agent no longer has: {stale:?}");
}

#[test]
fn every_alert_is_explained_and_unit_tested() {
    let mut alerts = BTreeSet::new();
    for file in ["alerts.yml", "fleet.yml"] {
        let rules = fs::read_to_string(root().join("deploy/prometheus").join(file)).expect("read the rules");
        alerts.extend(rules.lines().filter_map(|l| l.trim().strip_prefix("- alert:")).map(|a| a.trim().to_string()));
    }
    assert!(!alerts.is_empty(), "no alerts found in alerts.yml");
    let documented = guide_table_names(&guide(), "Pywats");
    assert_eq!(alerts, documented, "alerts in alerts.yml and fleet.yml vs rows of the alerts tables in {GUIDE}");
}

#[test]
fn every_dashboard_panel_is_explained() {
    let path = root().join("deploy/grafana/pywats-agent.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).expect("read the dashboard")).expect("dashboard JSON");
    let guide = guide();
    let panels: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter_map(|p| p["title"].as_str().map(String::from))
        .collect();
    assert!(panels.len() > 10, "{panels:?}");
    for title in &panels {
        // Panels that share a row of the guide's table are named together
        // ("CPU, Memory (RSS), Threads and open fds").
        assert!(guide.contains(title.as_str()), "dashboard panel {title:?} is not explained in {GUIDE}");
    }
}

#[test]
fn the_guides_links_lead_somewhere() {
    let docs = [
        "README.md",
        GUIDE,
        "docs/guides/operations.md",
        "docs/performance.md",
        "docs/development/README.md",
        "docs/development/metrics.md",
        "examples/observability/README.md",
    ];
    for doc in docs {
        let path = root().join(doc);
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{doc}: {e}"));
        for link in docs::relative_links(&text) {
            let target = path.parent().expect("a file's folder").join(&link);
            assert!(Path::new(&target).exists(), "{doc} links to {link}, which does not exist");
        }
    }
}

#[test]
fn every_recipe_of_the_example_is_in_the_guide() {
    let path = root().join("examples/observability/recipes.json");
    let recipes: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).expect("read recipes.json")).expect("recipes JSON");
    let guide = guide();
    for r in recipes.as_array().expect("a list of recipes") {
        let query = r["query"].as_str().expect("a query");
        assert!(guide.contains(query), "the example's recipe {query} is not in {GUIDE}");
    }
}
