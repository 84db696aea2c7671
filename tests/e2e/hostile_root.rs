//! Files a watched process puts in its root are hostile: a FIFO named like
//! libssl held open for writing, a symlink to `/dev/zero`, a pty slave, an
//! 8 GiB sparse file, a FIFO as the client's config. The agent reads none of
//! them (each refused and counted), never blocks, never takes the pty as its
//! terminal, and counts the HTTPS requests of the target's children and of a
//! later target exactly. Run as root through `cargo xtask test`.

use std::{collections::BTreeMap, ffi::CString, os::unix::process::CommandExt, time::Duration};

use pywats_agent_tests::{agent::Agent, free_port, proc, prom::Samples, py::Py, tls, wait_for};
use serde_json::Value;

fn agent_count(m: &Samples, endpoint: &str) -> f64 {
    m.series("pywats_http_requests_total").iter().filter(|(l, _)| l["endpoint"] == endpoint).map(|(_, v)| v).sum()
}

fn server_counts(port: u16) -> BTreeMap<String, f64> {
    let body: Value = serde_json::from_str(&tls::get(port, "/__counts")).unwrap();
    let mut out = BTreeMap::new();
    for row in body["counts"].as_array().unwrap() {
        *out.entry(row[1].as_str().unwrap().to_string()).or_insert(0.0) += row[3].as_f64().unwrap();
    }
    out
}

fn refused(m: &Samples, kind: &str, reason: &str) -> f64 {
    m.get("pywats_agent_files_refused_total", &[("kind", kind), ("reason", reason)]).unwrap_or(0.0)
}

#[test]
fn hostile_files_in_a_targets_root_neither_block_nor_blind_the_agent() {
    let port = free_port();
    let (cert, key) = tls::cert();
    let _server =
        Py::start("http_server.py", &[&port.to_string(), "--tls", cert.to_str().unwrap(), key.to_str().unwrap()]);
    let dir = std::env::temp_dir().join(format!("pywats-hostile-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The client config the agent is told of is a FIFO with a writer.
    let config = dir.join("config.json");
    let c = CString::new(config.to_str().unwrap()).unwrap();
    // SAFETY: valid paths; the fd is closed at the end.
    let writer = unsafe {
        assert_eq!(libc::mkfifo(c.as_ptr(), 0o600), 0);
        libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK)
    };
    assert!(writer >= 0);

    let tag = format!("hostile-root-{}", std::process::id());
    let mut target = Py::start("tls_children.py", &[&port.to_string(), &tag]);
    // A session leader without a terminal (as under systemd): a tty it opened
    // without O_NOCTTY would become its controlling terminal.
    let mut cmd = std::process::Command::new(pywats_agent_tests::agent::bin());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let agent = Agent::start_with(cmd, &["--match", &tag, "--pywats-config", config.to_str().unwrap()]);
    agent.wait_tls_probed();
    let rss_before = proc::status_field(agent.pid(), "VmRSS").unwrap() * 1024;

    assert_eq!(target.ask(&format!("hostile {}", dir.display())), "ok");
    let m = wait_for(Duration::from_secs(20), "the hostile files refused", || {
        let m = agent.scrape();
        (refused(&m, "library", "not_regular") >= 3.0 && refused(&m, "library", "too_large") >= 1.0).then_some(m)
    });
    assert_eq!(refused(&m, "library", "not_regular"), 3.0, "the FIFO, /dev/zero and the pty");
    assert_eq!(refused(&m, "library", "too_large"), 1.0, "the 8 GiB file");
    assert_eq!(refused(&m, "client_config", "not_regular"), 1.0, "the FIFO config");
    // The pty is nobody's terminal: ^C on it reaches no one.
    assert_eq!(target.ask("ctrl_c 0"), "ok");

    // A child of the target gets its probes and is counted, as is a target found later.
    assert_eq!(target.ask("fork 10"), "ok");
    let mut later = Py::start("tls_children.py", &[&port.to_string(), &tag]);
    wait_for(Duration::from_secs(20), "the later target probed", || {
        (agent.scrape().get("pywats_agent_tls_probed_processes", &[]) == Some(2.0)).then_some(())
    });
    assert_eq!(later.ask("load 5"), "ok");
    let m = wait_for(Duration::from_secs(20), "the requests", || {
        let m = agent.settled();
        (agent_count(&m, "/mix/{id}/{id}/cl/fork") >= 10.0 && agent_count(&m, "/mix/{id}/{id}/cl/load") >= 5.0)
            .then_some(m)
    });
    let server = server_counts(port);
    assert_eq!(agent_count(&m, "/mix/{id}/{id}/cl/fork"), 10.0);
    assert_eq!(server["/mix/200/10/cl/fork"], 10.0);
    assert_eq!(agent_count(&m, "/mix/{id}/{id}/cl/load"), 5.0);
    assert_eq!(server["/mix/200/10/cl/load"], 5.0);
    assert_eq!(agent.get("/health/ready").status, 200);
    // Bounded: nothing of the 8 GiB was read.
    let rss_after = proc::status_field(agent.pid(), "VmRSS").unwrap() * 1024;
    assert!(rss_after < rss_before + (16 << 20), "RSS {rss_before} -> {rss_after}");
    // Its stop does not wait for anything the target holds.
    assert!(agent.stop(libc::SIGTERM).success());
    // SAFETY: the fd opened above.
    unsafe { libc::close(writer) };
    drop((target, later));
    std::fs::remove_dir_all(&dir).unwrap();
}
