//! Foundation: the agent loads the real programs, follows real processes and
//! its numbers equal what /proc says. Run as root through `cargo xtask test`.

use std::time::Duration;

use pywats_agent_tests::{
    agent::{run_to_end, Agent},
    http, proc,
    py::Py,
    wait_for,
};

const SETTLE: Duration = Duration::from_secs(10);

fn pid_arg(pid: u32) -> String {
    pid.to_string()
}

/// Threads and memory equal /proc, CPU of an idle process is near zero, the
/// info metric names the pid; the pid comes from the environment variable.
#[test]
fn gauges_match_proc_for_an_idle_process() {
    let py = Py::start("procs.py", &["sleeper"]);
    let pid = py.pid();
    let agent = Agent::start_with(
        {
            let mut c = std::process::Command::new(pywats_agent_tests::agent::bin());
            c.env("PYWATS_AGENT_PID", pid_arg(pid)).env("PYWATS_AGENT_TARGET_NAME", "station-1");
            c
        },
        &[],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let before_threads = proc::status_field(pid, "Threads").unwrap();
    let rss_kb = proc::status_field(pid, "VmRSS").unwrap();
    let fds = proc::open_fds(pid);
    let m = agent.scrape();
    let t = [("target", "station-1")];

    let threads = m.get("pywats_process_threads", &t).expect("threads gauge");
    assert_eq!(threads, before_threads as f64);
    assert_eq!(threads, 8.0, "main thread + 7 idle threads");

    let memory = m.get("pywats_process_memory_bytes", &t).expect("memory gauge");
    let truth = (rss_kb * 1024) as f64;
    assert!((memory - truth).abs() <= truth * 0.01, "memory {memory} vs VmRSS {truth}");
    assert!(memory >= 200.0 * 1024.0 * 1024.0, "the 200 MiB touched are resident: {memory}");

    let cpu = m.get("pywats_process_cpu_percent", &t).expect("cpu gauge");
    assert!(cpu < 2.0, "idle process cpu {cpu}%");
    assert_eq!(m.get("pywats_process_open_fds", &t), Some(fds as f64));
    assert!(m.get("pywats_process_cpu_seconds_total", &t).is_some());
    let start = m.get("pywats_process_start_time_seconds", &t).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(start <= now && start > now - 120.0, "start time {start} vs now {now}");
    assert_eq!(m.get("pywats_target_info", &[("target", "station-1"), ("pid", &pid_arg(pid))]), Some(1.0));
    assert_eq!(m.get("pywats_target_processes", &t), Some(1.0));
    assert_eq!(m.types["pywats_process_cpu_seconds_total"], "counter");
    assert_eq!(m.types["pywats_process_memory_bytes"], "gauge");
    // Program statistics cost every BPF program on the host: only on request.
    assert!(m.series("pywats_agent_program_runs_total").is_empty(), "program statistics on by default");

    // The 7 threads are threads, not child processes.
    assert_eq!(m.get("pywats_agent_events_total", &[("kind", "proc_fork")]), Some(0.0));
    for (_, lost) in m.series("pywats_agent_events_lost_total") {
        assert_eq!(lost, 0.0);
    }
    let attached = agent.details()["programs_attached"].as_array().unwrap().len();
    assert!(attached >= 3);
    assert_eq!(m.get("pywats_agent_programs_attached", &[]), Some(attached as f64));
}

/// CPU time of `pid` (user + system, all threads) in clock ticks, from /proc.
fn cpu_ticks(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()
}

/// The spinner's CPU% is what /proc says over the agent's window. The agent
/// reads /proc at some moment within each scrape; the test reads it before
/// and after each scrape, which brackets the agent's window: however late a
/// busy machine runs the scrapes, the agent's value lies within the bounds.
#[test]
fn cpu_percent_of_a_spinning_process() {
    let py = Py::start("procs.py", &["spinner"]);
    let agent = Agent::start(&["--pid", &pid_arg(py.pid())]);
    // Without --target-name the target is named after the process (its comm).
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", py.pid())).unwrap();
    let t = [("target", comm.trim())];
    let read = || (cpu_ticks(py.pid()), std::time::Instant::now());
    // The first scrape closes a window and opens the next.
    let a = read();
    agent.scrape();
    let b = read();
    std::thread::sleep(Duration::from_secs(3));
    let c = read();
    let cpu = agent.scrape().get("pywats_process_cpu_percent", &t).expect("cpu gauge");
    let d = read();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let secs = |from: (f64, std::time::Instant), to: (f64, std::time::Instant)| (to.1 - from.1).as_secs_f64();
    // One tick of granularity at each end of either reading.
    let least = ((c.0 - b.0 - 2.0) / hz / secs(a, d) * 100.0).max(0.0);
    let most = (d.0 - a.0 + 2.0) / hz / secs(b, c) * 100.0;
    assert!(least > 20.0, "the spinner spins: at least {least}%");
    assert!((least..=most).contains(&cpu), "agent {cpu}% outside /proc's {least:.1}% … {most:.1}%");
}

fn children(agent: &Agent) -> Vec<u64> {
    agent.details()["targets"][0]["children"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect()
}

/// A child forked after attach joins the target set, leaves it on exit; a
/// child that existed before the agent started is found; threads never count.
#[test]
fn children_join_and_leave_the_target_set() {
    let mut py = Py::start("procs.py", &["plain"]);
    let early: u32 = py.ask("fork").parse().unwrap();
    let agent = Agent::start(&["--pid", &pid_arg(py.pid()), "--target-name", "client"]);
    assert_eq!(children(&agent), vec![early as u64], "pre-existing child seeded");

    let child: u32 = py.ask("fork").parse().unwrap();
    assert_eq!(py.ask("thread"), "ok");
    let mut expected = vec![early as u64, child as u64];
    expected.sort();
    wait_for(SETTLE, "the forked child to join", || (children(&agent) == expected).then_some(()));
    let m = agent.scrape();
    assert_eq!(m.get("pywats_target_processes", &[("target", "client")]), Some(3.0));
    assert_eq!(m.get("pywats_agent_events_total", &[("kind", "proc_fork")]), Some(1.0));

    assert_eq!(py.ask(&format!("reap {child}")), "ok");
    assert_eq!(py.ask(&format!("reap {early}")), "ok");
    wait_for(SETTLE, "the children to leave", || children(&agent).is_empty().then_some(()));
    let m = agent.scrape();
    assert_eq!(m.get("pywats_target_processes", &[("target", "client")]), Some(1.0));
    assert_eq!(m.get("pywats_agent_events_total", &[("kind", "proc_exit")]), Some(2.0));
    assert_eq!(m.get("pywats_agent_events_total", &[("kind", "proc_fork")]), Some(1.0));
    assert_eq!(m.get("pywats_agent_events_lost_total", &[("kind", "proc_fork")]), Some(0.0));
}

/// Ready is 200 while the target lives, 503 once it is killed; its series go away.
#[test]
fn target_exit_turns_ready_off_and_removes_series() {
    let mut py = Py::start("procs.py", &["plain"]);
    let pid = py.pid();
    let agent = Agent::start(&["--pid", &pid_arg(pid), "--target-name", "client"]);
    assert_eq!(agent.get("/health/ready").status, 200);
    assert_eq!(agent.get("/health").status, 200);
    assert!(agent.scrape().get("pywats_process_threads", &[("target", "client")]).is_some());

    py.kill();
    wait_for(SETTLE, "ready to turn 503", || (agent.get("/health/ready").status == 503).then_some(()));
    let ready = agent.get("/health/ready");
    assert!(ready.body.contains(&format!("target client (pid {pid}) has exited")), "{}", ready.body);
    let m = agent.scrape();
    for name in
        ["pywats_process_threads", "pywats_process_memory_bytes", "pywats_process_cpu_percent", "pywats_target_info"]
    {
        assert!(m.series(name).is_empty(), "{name} still exported after exit");
    }
    let d = agent.details();
    assert_eq!(d["targets"][0]["alive"], false);
    assert_eq!(d["status"], "unhealthy");
    assert_eq!(agent.get("/health").status, 503);
    assert_eq!(agent.scrape().get("pywats_agent_events_total", &[("kind", "proc_exit")]), Some(1.0));
}

#[test]
fn health_details_and_self_metrics() {
    let mut py = Py::start("procs.py", &["plain"]);
    let agent = Agent::start(&["--pid", &pid_arg(py.pid()), "--program-stats"]);
    let d = agent.details();
    assert_eq!(d["version"], env!("CARGO_PKG_VERSION"));
    let programs: Vec<&str> = d["programs_attached"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    for p in ["task_newtask", "sched_process_exec", "sched_process_exit", "sys_enter_connect", "sys_exit_renameat2"] {
        assert!(programs.contains(&p), "{p} not attached: {programs:?}");
    }
    assert_eq!(d["targets"][0]["pid"], py.pid());
    assert_eq!(d["targets"][0]["alive"], true);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(d["kernel_release"], release.trim());
    assert!(d["uptime_seconds"].as_f64().unwrap() >= 0.0);

    let metrics = agent.get("/metrics");
    assert_eq!(metrics.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    for _ in 0..3 {
        assert_eq!(agent.get("/health/ready").status, 200);
    }
    assert_eq!(agent.get("/no/such/page?token=abc").status, 404);
    let m = agent.scrape();
    // /health/live was polled by the harness until the agent answered: at least once.
    assert_eq!(m.get("pywats_agent_http_requests_total", &[("path", "/health/ready"), ("code", "200")]), Some(3.0));
    assert_eq!(m.get("pywats_agent_http_requests_total", &[("path", "/health/details"), ("code", "200")]), Some(1.0));
    assert_eq!(m.get("pywats_agent_http_requests_total", &[("path", "/metrics"), ("code", "200")]), Some(1.0));
    assert_eq!(m.get("pywats_agent_http_requests_total", &[("path", "other"), ("code", "404")]), Some(1.0));
    assert_eq!(m.get("pywats_agent_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));
    let start = m.get("pywats_agent_start_time_seconds", &[]).unwrap();
    assert!((start - d["start_time"].as_f64().unwrap()).abs() < 1.0);
    assert!(!agent.get("/metrics").body.contains("token"), "a query string leaked into the metrics");

    // The agent's own cost in the kernel, per program: every attached program
    // has its series, and a fork by the target is a run of task_newtask.
    for p in &programs {
        assert!(m.get("pywats_agent_program_runs_total", &[("program", p)]).is_some(), "no runs for {p}");
        assert!(m.get("pywats_agent_program_cpu_seconds_total", &[("program", p)]).is_some(), "no CPU for {p}");
    }
    let runs = |m: &pywats_agent_tests::prom::Samples| {
        m.get("pywats_agent_program_runs_total", &[("program", "task_newtask")]).unwrap()
    };
    let before = runs(&m);
    let child = py.ask("fork");
    let after = agent.scrape();
    assert!(runs(&after) > before, "task_newtask runs {before} -> {}", runs(&after));
    assert!(after.get("pywats_agent_program_cpu_seconds_total", &[("program", "task_newtask")]).unwrap() > 0.0);
    assert_eq!(py.ask(&format!("reap {child}")), "ok");
}

#[test]
fn concurrent_scrapes_are_consistent() {
    let py = Py::start("procs.py", &["sleeper"]);
    let agent = Agent::start(&["--pid", &pid_arg(py.pid()), "--target-name", "client"]);
    let port = agent.port;
    let handles: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let r = http::get(port, "/metrics").expect("scrape");
                    assert_eq!(r.status, 200);
                    let m = pywats_agent_tests::prom::parse(&r.body);
                    assert_eq!(m.get("pywats_process_threads", &[("target", "client")]), Some(8.0));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("scraper thread");
    }
    let m = agent.scrape();
    assert_eq!(m.get("pywats_agent_http_requests_total", &[("path", "/metrics"), ("code", "200")]), Some(200.0));
}

#[test]
fn sigterm_and_sigint_detach_and_exit_zero() {
    let py = Py::start("procs.py", &["plain"]);
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let agent = Agent::start(&["--pid", &pid_arg(py.pid())]);
        let status = agent.stop(signal);
        assert_eq!(status.code(), Some(0), "signal {signal}");
    }
}

/// Wrong invocations: one clear line on stderr and exit code 2.
#[test]
fn bad_invocations_exit_2_with_one_line() {
    let unused = proc::unused_pid().to_string();
    let cases: [(&[&str], &str); 6] = [
        (&["--pid", &unused], "does not exist"),
        (&[], "no target: give --match PATTERN"),
        (&["--pid", "1", "--target-name", "a", "--target-name", "b"], "--target-name"),
        (&["--pid", "1", "--log-level", "loud=[["], "invalid --log-level"),
        (&["--match", "x", "--match-user", "no-such-user-here"], "no such user"),
        (&["--match", "x", "--match-exe", "python3"], "absolute path or glob"),
    ];
    for (args, message) in cases {
        let out = run_to_end(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.trim().lines().count(), 1, "{args:?}: {}", out.stderr);
    }
    // clap's own errors (unknown flag, bad number) also exit 2.
    for args in [&["--pid", "x"][..], &["--frobnicate"][..], &["--pid", "1", "--listen", "nowhere"][..]] {
        assert_eq!(run_to_end(args, &[]).status.code(), Some(2), "{args:?}");
    }
}

/// Every counter family whose label values the agent knows before anything
/// happens is on the first scrape, at 0 where nothing happened, so that
/// `rate()` and `absent()` work from the start; the rest are named here with
/// why they cannot be.
#[test]
fn counters_whose_labels_are_known_are_there_from_the_start() {
    const AFTER_FIRST_EVENT: [(&str, &str); 7] = [
        ("pywats_http_requests_total", "method, endpoint and code come from the requests"),
        ("pywats_http_server_requests_total", "method, endpoint and code come from the requests"),
        ("pywats_http_retries_total", "method and endpoint come from the requests"),
        ("pywats_errors_total", "operation is the request's method and endpoint"),
        ("pywats_agent_http_requests_total", "path and code of the requests to the agent"),
        ("pywats_agent_program_cpu_seconds_total", "only with --program-stats"),
        ("pywats_agent_program_runs_total", "only with --program-stats"),
    ];
    let dir = std::env::temp_dir().join(format!("pywats-zeros-{}", std::process::id()));
    for sub in ["q", "in", "done", "error"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let d = |sub: &str| dir.join(sub).display().to_string();
    let queue = format!("reports={}:service", d("q"));
    let converter = format!("csv={},done={},error={}", d("in"), d("done"), d("error"));
    let py = Py::start("procs.py", &["sleeper"]);
    let pid = pid_arg(py.pid());
    let agent = Agent::start(&["--pid", &pid, "--no-discover", "--queue", &queue, "--converter", &converter]);
    let m = agent.scrape();
    let counters = pywats_agent_tests::docs::metric_families(&pywats_agent_tests::root().join("agent/src"));
    for (name, _) in AFTER_FIRST_EVENT {
        assert!(counters.contains(name), "{name} is no longer a metric of the agent");
    }
    let known = counters.iter().filter(|n| n.ends_with("_total") && !AFTER_FIRST_EVENT.iter().any(|(a, _)| a == n));
    for name in known {
        assert!(!m.series(name).is_empty(), "{name} is not on the first scrape");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--help` names every variable and says how targets are named.
#[test]
fn help_lists_the_variables_and_how_targets_are_named() {
    let out = std::process::Command::new(pywats_agent_tests::agent::bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let (_, after) = help.split_once("\nEnvironment:").unwrap_or_else(|| panic!("no Environment section:\n{help}"));
    for var in
        ["PYWATS_AGENT_MATCH", "PYWATS_AGENT_PID", "PYWATS_AGENT_WEB_CONFIG", "PYWATS_AGENT_PROC_ROOT", "NODE_NAME"]
    {
        assert!(after.split_whitespace().any(|w| w == var), "{var} is not listed after the options:\n{after}");
    }
    let names = after.split_once("Target names").expect("a Target names section").1;
    let order: Vec<usize> = ["--target-name", "instance_id", "pod's name", "process name", "-2, -3"]
        .iter()
        .map(|s| names.find(s).unwrap_or_else(|| panic!("{s} missing from:\n{names}")))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "precedence out of order:\n{names}");
}

/// `hash-password` hashes standard input (one line ending dropped) with
/// bcrypt, which an independent implementation (pyca/bcrypt) verifies; bad
/// input and a cost above the agent's cap exit 2 without the password in
/// the message.
#[test]
fn hash_password_hashes_standard_input() {
    use std::io::Write;
    let hash = |stdin: &[u8], args: &[&str]| {
        let mut child = std::process::Command::new(pywats_agent_tests::agent::bin())
            .arg("hash-password")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A refused --cost exits before reading: a broken pipe then.
        let _ = child.stdin.take().unwrap().write_all(stdin);
        child.wait_with_output().unwrap()
    };
    let out = hash(b"correct horse\n", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let h = String::from_utf8(out.stdout).unwrap();
    let h = h.strip_suffix('\n').expect("one line");
    assert!(h.starts_with("$2b$10$") && h.len() == 60, "{h}");
    let check = |password: &str, hash: &str| {
        let code = format!(
            "import bcrypt, sys; sys.exit(0 if bcrypt.checkpw({password:?}.encode(), {hash:?}.encode()) else 1)"
        );
        std::process::Command::new(pywats_agent_tests::py::python()).args(["-c", &code]).status().unwrap().success()
    };
    assert!(check("correct horse", h), "pyca/bcrypt rejects the hash of the password");
    assert!(!check("correct horse\n", h));
    let out = hash(b"pw", &["--cost", "12"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("$2b$12$"));
    for (stdin, args, message) in [
        (&b""[..], &[][..], "no password on standard input"),
        (&b"hunter2-but-much-longer-than-bcrypt-reads-hunter2-hunter2-hunter2-hunter2"[..], &[][..], "72 bytes"),
        (&b"hunter2"[..], &["--cost", "13"][..], "not in 4..=12"),
    ] {
        let out = hash(stdin, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("hunter2") && out.stdout.is_empty(), "{stderr}");
    }
}

/// Without privileges the agent says what it needs instead of an aya error.
#[test]
fn unprivileged_agent_says_what_it_needs() {
    let py = Py::start("procs.py", &["plain"]);
    let bin = pywats_agent_tests::agent::bin();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(&bin)
        .args(["--pid", &pid_arg(py.pid()), "--listen", "127.0.0.1:0"])
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("CAP_BPF and CAP_PERFMON"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// With tracefs unmounted (as on a fresh machine) the agent mounts it itself.
#[test]
fn mounts_tracefs_when_missing() {
    let mounted = || std::fs::read_to_string("/proc/self/mounts").unwrap().contains(" /sys/kernel/tracing tracefs ");
    if mounted() {
        let out = std::process::Command::new("umount").arg("/sys/kernel/tracing").output().expect("run umount");
        if !out.status.success() {
            eprintln!("skipped: tracefs is in use and cannot be unmounted: {}", String::from_utf8_lossy(&out.stderr));
            return;
        }
    }
    let py = Py::start("procs.py", &["plain"]);
    let agent = Agent::start(&["--pid", &pid_arg(py.pid())]);
    assert!(mounted(), "tracefs mounted by the agent");
    assert!(agent.log().contains("mounted tracefs at /sys/kernel/tracing"), "{}", agent.log());
    assert_eq!(agent.get("/health/ready").status, 200);
}

/// The live targets `pywats_target_info` names: (target, pid).
fn target_pids(agent: &Agent) -> Vec<(String, u32)> {
    let m = agent.scrape();
    m.series("pywats_target_info").iter().map(|(l, _)| (l["target"].clone(), l["pid"].parse().unwrap())).collect()
}

/// `--match`: a client started after the agent is found; restarted, it is
/// found again under the same name and its requests keep adding up exactly.
/// Without a client the agent is ready (a DaemonSet runs on nodes without
/// one): idle, and a client that exited is counted as exited.
#[test]
fn match_finds_a_client_and_refinds_it_after_a_restart() {
    let token = format!("match-token-{}", std::process::id());
    let agent = Agent::start(&["--match", &token, "--no-discover"]);
    assert_eq!(agent.get("/health/ready").status, 200, "nothing to watch is not an error");
    let d = agent.details();
    assert_eq!((d["watching"].as_str(), d["idle_patterns"].clone()), (Some("idle"), serde_json::json!([token])));
    let m = agent.scrape();
    assert_eq!(m.get("pywats_agent_match_idle", &[]), Some(1.0));
    assert_eq!(m.get("pywats_agent_targets", &[("state", "watched")]), Some(0.0));
    assert!(target_pids(&agent).is_empty(), "the agent, or what started it, matched its own pattern");

    let port = pywats_agent_tests::free_port().to_string();
    let _server = Py::start("http_server.py", &[&port]);
    let endpoint = [("endpoint", "/mix/{id}/{id}/cl/load"), ("code", "200")];
    let mut name = String::new();
    for (round, n) in [(1, 20.0), (2, 30.0)] {
        let mut client = Py::start("http_client.py", &[&port, &token]);
        let found = wait_for(SETTLE, "the client to be found", || {
            target_pids(&agent).into_iter().find(|(_, pid)| *pid == client.pid())
        });
        if round == 1 {
            name = found.0;
        } else {
            assert_eq!(found.0, name, "a restarted client keeps its target name");
        }
        assert_eq!(agent.get("/health/ready").status, 200);
        let m = agent.scrape();
        assert_eq!(m.get("pywats_agent_match_idle", &[]), Some(0.0));
        assert_eq!(m.get("pywats_agent_targets", &[("state", "watched")]), Some(1.0));
        assert_eq!(agent.details()["watching"], "watching");
        client.ask(&format!("load {n}"));
        let want = if round == 1 { 20.0 } else { 50.0 };
        wait_for(SETTLE, "the requests", || {
            let m = agent.scrape();
            let got = m.get("pywats_http_requests_total", &[endpoint[0], endpoint[1], ("target", &name)]);
            (got == Some(want)).then_some(())
        });
        client.kill();
        // A client down is a metric (and an alert), not an unready agent.
        wait_for(SETTLE, "the client to be seen exited", || {
            (agent.scrape().get("pywats_agent_targets", &[("state", "exited")]) == Some(1.0)).then_some(())
        });
        assert_eq!(agent.get("/health/ready").status, 200);
        assert_eq!(agent.scrape().get("pywats_agent_match_idle", &[]), Some(1.0));
    }
    assert_eq!(agent.settled().get("pywats_http_requests_total", &[endpoint[0], endpoint[1]]), Some(50.0));
}

/// A child forked by a matched process has its command line too: it is the
/// target's child, not a target of its own.
#[test]
fn match_takes_the_topmost_process_of_a_tree() {
    let token = format!("match-tree-{}", std::process::id());
    let mut py = Py::start("procs.py", &["plain", &token]);
    let agent = Agent::start(&["--match", &token, "--no-discover"]);
    assert_eq!(agent.get("/health/ready").status, 200);
    let child: u32 = py.ask("fork").parse().unwrap();
    // Two scans later the child is still only the target's child.
    std::thread::sleep(Duration::from_secs(5));
    let targets = target_pids(&agent);
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert_eq!(targets[0].1, py.pid());
    assert_eq!(children(&agent), [u64::from(child)]);
    assert_eq!(agent.scrape().get("pywats_target_processes", &[("target", &targets[0].0)]), Some(2.0));
    assert_eq!(py.ask(&format!("reap {child}")), "ok");
}
