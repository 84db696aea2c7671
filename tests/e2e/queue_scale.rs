//! Queues of tens of thousands of items: the depth stays exact and the agent's
//! CPU time grows with the events, not with the events times the items.

use std::time::{Duration, Instant};

use pywats_agent_tests::{agent::Agent, proc, prom::Samples, py::Py, wait_for};
use serde_json::Value;

const TARGET: &str = "station";

fn get(m: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.get(name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}"))
}

/// `n` items enqueued the way the service queue's writers do (tmp + rename),
/// `done` of them through processing; returns the agent's CPU seconds for it.
fn load(n: usize, done: usize) -> f64 {
    let dir = std::env::temp_dir().join(format!("pywats-agent-scale-{n}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut py = Py::start("queues.py", &[]);
    let pid = py.pid().to_string();
    let queue = format!("reports={}:service", dir.display());
    let a = Agent::start(&["--pid", &pid, "--target-name", TARGET, "--no-discover", "--queue", &queue]);
    a.settled();
    let cpu_before = proc::cpu_seconds(a.pid());
    let rss_before = proc::status_field(a.pid(), "VmRSS").unwrap_or(0);
    let started = Instant::now();
    let answer = py.ask(&format!("load {} {n} {done}", dir.display()));
    let written = started.elapsed();
    let on_disk: Value = serde_json::from_str(&answer).unwrap();
    let want = |state: &str| on_disk[state].as_f64().unwrap();
    let q = [("target", TARGET), ("queue_name", "reports")];
    wait_for(Duration::from_secs(60), "the depth to equal the files on disk", || {
        (a.scrape().get("pywats_queue_depth", &q) == Some(want("queued"))).then_some(())
    });
    let m = a.settled();
    let cpu = proc::cpu_seconds(a.pid()) - cpu_before;
    let lost: f64 = m.series("pywats_agent_events_lost_total").iter().map(|(_, v)| v).sum();
    eprintln!(
        "{n} items ({done} processed): written in {:.1} s, agent CPU {cpu:.2} s, events lost {lost}, \
         RSS {rss_before} -> {} kB",
        written.as_secs_f64(),
        proc::status_field(a.pid(), "VmRSS").unwrap_or(0)
    );
    assert_eq!(get(&m, "pywats_queue_depth", &q), want("queued"));
    for state in ["queued", "processing", "completed", "failed"] {
        assert_eq!(get(&m, "pywats_queue_items", &[q[0], q[1], ("state", state)]), want(state), "{state}");
    }
    assert_eq!(lost, 0.0, "the agent lost file events");
    // Re-reads during the run met files whose events were still on their way: none was "corrected".
    assert_eq!(get(&m, "pywats_agent_queue_corrections_total", &q), 0.0);
    assert_eq!(get(&m, "pywats_agent_queue_items_untracked_total", &q), 0.0);
    let outcomes = |o: &str| get(&m, "pywats_queue_items_processed_total", &[q[0], q[1], ("outcome", o)]);
    assert_eq!(outcomes("completed"), want("completed"));
    assert_eq!(outcomes("failed"), want("failed"));
    let _ = std::fs::remove_dir_all(&dir);
    cpu
}

#[test]
fn thirty_thousand_queued_items() {
    let cpu = load(30_000, 3_000);
    assert!(cpu <= 2.0, "the agent used {cpu:.2} s of CPU for 30000 items");
}

#[test]
fn a_hundred_thousand_queued_items() {
    let cpu = load(100_000, 10_000);
    // Linear in the events: what 30000 items may cost, times 10/3.
    assert!(cpu <= 6.7, "the agent used {cpu:.2} s of CPU for 100000 items");
}
