//! A part of the agent that dies is noticed: `/health/ready` turns 503 with
//! the part and the reason, and the agent exits non-zero (3) after a grace
//! period, so systemd or Kubernetes restart it. The fault comes from the
//! agent's test hook (`PYWATS_AGENT_TEST_FAULT`), the rest is real.

use std::{process::Command, time::Duration};

use pywats_agent_tests::{agent::Agent, http, py::Py, wait_for};

#[test]
fn a_dead_ring_reader_makes_the_agent_unready_then_exit_non_zero() {
    let py = Py::start("procs.py", &["sleeper"]);
    for part in ["net_reader", "lifecycle", "fs_reader"] {
        let mut cmd = Command::new(pywats_agent_tests::agent::bin());
        cmd.env("PYWATS_AGENT_TEST_FAULT", part);
        let mut agent = Agent::start_with(cmd, &["--pid", &py.pid().to_string()]);
        let port = agent.port;
        let body = wait_for(Duration::from_secs(5), "readiness to fail", || {
            http::get(port, "/health/ready").ok().filter(|r| r.status == 503).map(|r| r.body)
        });
        assert!(body.contains(&format!("{part} stopped")), "{part}: {body}");
        assert!(body.contains("fault injected"), "{part}: {body}");
        // Liveness still answers during the grace period: the agent is
        // exiting on its own, a restart loop is not needed to notice.
        assert_eq!(http::get(port, "/health/live").unwrap().status, 200);
        let status = agent.wait(Duration::from_secs(15));
        assert_eq!(status.code(), Some(3), "{part}: exit status");
        assert!(agent.log().contains(&format!("{part} stopped")), "{part}: log says why");
    }
}
