//! What the agent may do once it runs: the capabilities it keeps after start,
//! and whose processes `--match` adopts. Run as root through `cargo xtask test`.

use std::process::{Child, Command, Stdio};

use pywats_agent_tests::{agent::Agent, py::Py};

/// The documented set (docs/guides/operations.md, "Least privilege"): uprobes for new targets,
/// other processes' /proc entries, a client's files whatever their modes.
const KEPT: [(&str, u32); 3] = [("CAP_DAC_READ_SEARCH", 2), ("CAP_SYS_ADMIN", 21), ("CAP_SYS_PTRACE", 19)];

/// The capability sets of every thread of `pid`: (thread, field, mask), and NoNewPrivs.
fn thread_caps(pid: u32) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        for line in status.lines() {
            if let Some((field, value)) = line.split_once(":\t") {
                if field.starts_with("Cap") {
                    out.push((tid.clone(), field.to_string(), u64::from_str_radix(value.trim(), 16).unwrap()));
                } else if field == "NoNewPrivs" {
                    out.push((tid.clone(), field.to_string(), value.trim().parse().unwrap()));
                }
            }
        }
    }
    out
}

fn own_caps(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let value = status.lines().find_map(|l| l.strip_prefix(&format!("{field}:\t"))).unwrap();
    u64::from_str_radix(value.trim(), 16).unwrap()
}

/// After start every thread of the agent holds exactly the documented set
/// (effective, permitted, bounding), nothing inheritable or ambient, and
/// no_new_privs; `--keep-capabilities` keeps what it started with.
#[test]
fn after_start_the_agent_keeps_exactly_the_documented_capabilities() {
    let py = Py::start("procs.py", &["plain"]);
    let kept = KEPT.iter().fold(0u64, |mask, (_, bit)| mask | 1 << bit);
    let agent = Agent::start(&["--pid", &py.pid().to_string(), "--no-discover"]);
    let caps = thread_caps(agent.pid());
    let threads = caps.iter().filter(|(_, f, _)| f == "CapEff").count();
    assert!(threads >= 8, "every part runs on its own thread: {threads}");
    for (tid, field, value) in &caps {
        let want = match field.as_str() {
            "CapEff" | "CapPrm" | "CapBnd" => kept,
            "CapInh" | "CapAmb" => 0,
            "NoNewPrivs" => 1,
            other => panic!("unexpected field {other}"),
        };
        assert_eq!(*value, want, "thread {tid} {field}: {value:#x}, want {want:#x}");
    }
    let names: Vec<&str> = KEPT.iter().map(|(name, _)| *name).collect();
    assert!(
        agent.log().contains(&format!("capabilities dropped after start: keeping {}", names.join(" "))),
        "{}",
        agent.log()
    );
    drop(agent);

    let agent = Agent::start(&["--pid", &py.pid().to_string(), "--no-discover", "--keep-capabilities"]);
    for (tid, field, value) in thread_caps(agent.pid()) {
        if field.starts_with("Cap") {
            assert_eq!(value, own_caps(&field), "thread {tid} {field} with --keep-capabilities");
        }
    }
}

/// The pids of the live targets.
fn targets(agent: &Agent) -> Vec<u32> {
    let m = agent.scrape();
    m.series("pywats_target_info").iter().map(|(l, _)| l["pid"].parse().unwrap()).collect()
}

/// `--match` adopts only processes of the allowed users (by default root,
/// without a client config on the machine) and executables: a process of
/// another user whose command line holds the pattern is not adopted, and is
/// counted once however often the scans meet it.
#[test]
fn match_adopts_only_processes_of_allowed_users_and_executables() {
    let configs = std::fs::read_dir("/var/lib/pywats")
        .map(|d| {
            let names = d.flatten().filter_map(|e| e.file_name().into_string().ok());
            names.filter(|n| n.starts_with("config") && n.ends_with(".json")).count()
        })
        .unwrap_or(0);
    assert_eq!(configs, 0, "the default users come from /var/lib/pywats/config*.json: there must be none here");
    let token = format!("admission-{}", std::process::id());
    let ours = Py::start("procs.py", &["plain", &token]);
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(pywats_agent_tests::py::python())
        .arg(pywats_agent_tests::py::script("procs.py"))
        .args(["plain", &token]);
    let (theirs, first) = Py::spawn_command(cmd);
    assert_eq!(first, "ready");
    let exe = std::fs::read_link(format!("/proc/{}/exe", ours.pid())).unwrap();
    let exe = exe.to_str().unwrap();

    let rejected = |agent: &Agent, reason: &str| {
        agent.scrape().get("pywats_agent_match_rejected_total", &[("reason", reason)]).unwrap()
    };
    let cases: [(&[&str], u32, &str); 3] = [
        (&[], ours.pid(), "user"),
        (&["--match-user", "nobody"], theirs.pid(), "user"),
        (&["--match-user", "root,65534", "--match-exe", "/usr/bin/no-such-python*", "--match-exe", exe], 0, ""),
    ];
    for (flags, adopted, reason) in cases {
        let mut args = vec!["--match", token.as_str(), "--no-discover"];
        args.extend_from_slice(flags);
        let agent = Agent::start(&args);
        // Three scans: at start and two rounds of the liveness loop.
        std::thread::sleep(std::time::Duration::from_millis(4500));
        if adopted == 0 {
            // Both run the same interpreter, which one glob names.
            let mut both = targets(&agent);
            both.sort();
            let mut want = vec![ours.pid(), theirs.pid()];
            want.sort();
            assert_eq!(both, want, "{flags:?}");
            assert_eq!((rejected(&agent, "user"), rejected(&agent, "exe")), (0.0, 0.0), "{flags:?}");
        } else {
            assert_eq!(targets(&agent), [adopted], "{flags:?}");
            assert_eq!(rejected(&agent, reason), 1.0, "{flags:?}");
            assert_eq!(rejected(&agent, "exe"), 0.0, "{flags:?}");
        }
    }
    let agent = Agent::start(&["--match", &token, "--no-discover", "--match-exe", "/usr/bin/no-such-python*"]);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(targets(&agent).is_empty());
    // Root's process fails the exe filter, nobody's the user filter first.
    assert_eq!((rejected(&agent, "user"), rejected(&agent, "exe")), (1.0, 1.0));
    drop(theirs);
}

/// Without `--match-exe`, only a Python interpreter is adopted: what an
/// operator types with the pattern in it (`grep`, `journalctl -g`, `less -p`,
/// `tail -f` of the client's log) never becomes a target, and is counted once
/// each as rejected.
#[test]
fn commands_typed_with_the_pattern_are_never_adopted() {
    let token = format!("typed-{}", std::process::id());
    let log = std::env::temp_dir().join(format!("{token}.log"));
    std::fs::write(&log, "").unwrap();
    let spawn = |program: &str, args: &[&str]| -> Child {
        Command::new(program).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap()
    };
    let mut typed = vec![
        // Each waits on its stdin (or the file) for as long as the test runs.
        spawn("grep", &[&token]),
        spawn("less", &["-p", &token]),
        spawn("tail", &["-f", log.to_str().unwrap()]),
        spawn("journalctl", &["--follow", "--grep", &token, "--directory", std::env::temp_dir().to_str().unwrap()]),
    ];
    std::thread::sleep(std::time::Duration::from_millis(300));
    // journalctl leaves at once where it finds no journal to follow.
    let alive: Vec<&mut Child> =
        typed.iter_mut().filter_map(|c| c.try_wait().unwrap().is_none().then_some(c)).collect();
    let running = alive.len();
    assert!(running >= 3, "grep, less and tail wait on their input");
    let client = Py::start("procs.py", &["plain", &token]);
    let agent = Agent::start(&["--match", &token, "--no-discover"]);
    // Three scans: at start and two rounds of the liveness loop.
    std::thread::sleep(std::time::Duration::from_millis(4500));
    assert_eq!(targets(&agent), [client.pid()]);
    let m = agent.scrape();
    assert_eq!(m.get("pywats_agent_match_rejected_total", &[("reason", "exe")]), Some(running as f64));
    assert_eq!(m.get("pywats_agent_targets_joined_total", &[("how", "match")]), Some(1.0));
    for mut c in typed {
        let _ = c.kill();
        let _ = c.wait();
    }
    std::fs::remove_file(&log).unwrap();
}
