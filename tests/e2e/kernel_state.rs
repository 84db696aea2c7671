//! The kernel-side state stays true to the processes: a socket closed by exec
//! (CLOEXEC, no `close()` call) is forgotten, so a file that reuses its fd
//! number is never taken for it; and refused map inserts are exported.

use std::time::Duration;

use pywats_agent_tests::{agent::Agent, free_port, prom::Samples, py::Py, wait_for};

fn count(m: &Samples, endpoint: &str) -> f64 {
    m.series("pywats_http_requests_total").iter().filter(|(l, _)| l["endpoint"] == endpoint).map(|(_, v)| v).sum()
}

#[test]
fn a_socket_closed_by_exec_is_not_confused_with_a_file_on_its_fd() {
    let port = free_port();
    let _server = Py::start("http_server.py", &[&port.to_string()]);
    let dir = std::env::temp_dir().join(format!("pywats-agent-exec-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut client = Py::start("exec_fd_reuse.py", &[&port.to_string(), dir.to_str().unwrap()]);
    // Attached while the keep-alive connection is open: it is found in /proc.
    let agent = Agent::start(&["--pid", &client.pid().to_string()]);
    let before = agent.settled();
    let data_before = before.get("pywats_agent_events_total", &[("kind", "sock_data")]).unwrap();

    let reused = client.ask("exec");
    assert!(reused.starts_with("reused "), "the new image did not get the socket's fd back: {reused}");
    let m = wait_for(Duration::from_secs(10), "the exec to be seen", || {
        let m = agent.settled();
        (m.get("pywats_agent_events_total", &[("kind", "proc_exec")]) == Some(1.0)).then_some(m)
    });
    assert_eq!(count(&m, "/exec/leak"), 0.0, "file bytes were taken for the socket's");
    assert_eq!(
        m.get("pywats_agent_events_total", &[("kind", "sock_data")]).unwrap(),
        data_before,
        "file I/O on the reused fd was reported as socket data"
    );
    for (l, v) in m.series("pywats_agent_parse_errors_total") {
        assert_eq!(v, 0.0, "parse errors: {l:?}");
    }
    for (l, v) in m.series("pywats_agent_map_insert_failures_total") {
        assert_eq!(v, 0.0, "map inserts refused: {l:?}");
    }
    assert_eq!(m.series("pywats_agent_map_insert_failures_total").len(), 6, "one series per map");
    let _ = std::fs::remove_dir_all(&dir);
}
