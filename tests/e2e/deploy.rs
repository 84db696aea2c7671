//! deploy/: the Kubernetes manifests (and their TLS overlay) against Kubernetes' own schemas, and the
//! container image itself watching a client that lives in its own mount
//! namespace (its own /var/lib/pywats, its own libssl), as a client in a pod
//! does, with the DaemonSet's capabilities and mounts.

use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use pywats_agent_tests::{
    agent::Agent,
    free_port,
    image::ImageAgent,
    proc,
    prom::Samples,
    py::{self, Py},
    root, tls, wait_for,
};
use serde_json::{json, Value};

const TOKEN: &str = "ZGVwbG95OnRva2Vu";
/// The client's own config names it so: the target takes this name.
const INSTANCE: &str = "line-7-pod";
const NAMESPACE: &str = "team-a";
const POD: &str = "pywats-client-7d9f8-x2x4q";
const POD_UID: &str = "0b8e2a8c-1f3d-4e5a-9c1b-2d3e4f5a6b7c";
const CONTAINER: &str = "4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";
/// The pod's sandbox (`pause`) container: the pod exists while it runs.
const SANDBOX: &str = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b";
/// The client's folders, as the client sees them: nothing is there on the host.
const WORK: &str = "/var/lib/pywats/work";

/// `tests/py/k8s_manifests.py`: validates deploy/kubernetes and returns the
/// DaemonSet's facts.
fn manifests() -> Value {
    let out = Command::new(py::python())
        .arg(py::script("k8s_manifests.py"))
        .arg(root().join("deploy"))
        .output()
        .expect("run k8s_manifests.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "deploy/kubernetes: {}{}", stdout, String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim().strip_prefix("ok ").expect("ok line")).unwrap()
}

#[test]
fn manifests_validate_against_kubernetes_schemas() {
    let m = manifests();
    assert_eq!(m["kinds"], json!(["DaemonSet", "Namespace", "Service", "ServiceAccount", "ServiceMonitor"]));
    assert_eq!(m["host_pid"], true);
    assert_eq!(m["privileged"], false);
    assert_eq!(m["drop"], json!(["ALL"]));
    // What the agent needs at start, and keeps after (tests/e2e/privileges.rs).
    assert_eq!(m["add"], json!(["SYS_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH"]));
    // The listen address is explicit (a future default may be loopback).
    let args: Vec<&str> = m["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.windows(2).any(|w| w == ["--listen", "0.0.0.0:9090"]), "{args:?}");
    assert!(args.windows(2).any(|w| w == ["--match", "pywats_client"]), "{args:?}");
    assert_eq!((m["liveness"].as_str(), m["readiness"].as_str()), (Some("/health/live"), Some("/health/ready")));
    assert!(m["mounts"].as_array().unwrap().iter().all(|v| v[1] == true), "hostPath mounts are read-only");
    // The image is a manifest list of these two CPUs' images.
    assert_eq!(m["node_selector"], json!({"kubernetes.io/os": "linux"}));
    assert_eq!(m["node_arches"], json!([["amd64", "arm64"]]));
    // The TLS overlay: the web config from one Secret, the scrape's CA and
    // credentials from another, checked against one name for every pod.
    let tls = &m["tls"];
    assert_eq!(tls["web_config"], "/etc/pywats-agent/web/web-config.yml");
    assert_eq!(
        (tls["web_secret"].as_str(), &tls["scrape_secrets"]),
        (Some("pywats-agent-web"), &json!(["pywats-agent-scrape"]))
    );
    assert_eq!(tls["server_name"], "pywats-agent.pywats-agent.svc");
}

/// The path of the libssl this machine's Python loads.
fn host_libssl() -> PathBuf {
    let out = Command::new(py::python())
        .args(["-c", "import ssl; print([l.split()[-1] for l in open('/proc/self/maps') if '/libssl.so' in l][0])"])
        .output()
        .expect("run python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The stand-in for a pod's sandbox process, killed at the end.
struct Sandbox(std::process::Child);

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Directories made for the test, removed (deepest first) at the end.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            let _ = std::fs::remove_dir(dir).or_else(|_| std::fs::remove_dir_all(dir));
        }
    }
}

/// Creates `dir` and its missing parents, noting each one created.
fn make_dirs(dir: &Path, made: &mut Cleanup) {
    let mut missing = Vec::new();
    let mut at = dir.to_path_buf();
    while !at.exists() {
        missing.push(at.clone());
        at.pop();
    }
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    made.0.extend(missing.into_iter().rev());
}

fn get(m: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.get(name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}"))
}

#[test]
fn the_image_watches_a_client_in_its_own_mount_namespace() {
    let facts = manifests();
    let caps: Vec<String> = facts["add"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    let mounts: Vec<(String, bool)> = facts["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m[0].as_str().unwrap().to_string(), m[1].as_bool().unwrap()))
        .collect();

    let port = free_port();
    let (cert, key) = tls::cert();
    let port_s = port.to_string();
    let _server = Py::start(
        "wats_server.py",
        &[&port_s, TOKEN, "--fail-every", "3", "--tls", cert.to_str().unwrap(), key.to_str().unwrap()],
    );

    // The client's private pieces, on the host: its /var/lib/pywats (config
    // and work folders), its own copy of libssl.
    let me = std::process::id();
    let mut made = Cleanup(Vec::new());
    let host = std::env::temp_dir().join(format!("pywats-deploy-{me}"));
    let _ = std::fs::remove_dir_all(&host);
    make_dirs(&host.join("varlib"), &mut made);
    let config = json!({
        "instance_id": INSTANCE,
        "service_address": format!("https://127.0.0.1:{port}"),
        "api_token": TOKEN,
        "reports_folder": format!("{WORK}/reports"),
        "converters_enabled": true,
        "converters": [{"name": "csv", "watch_folder": format!("{WORK}/conv/in"),
                        "done_folder": format!("{WORK}/conv/done"), "error_folder": format!("{WORK}/conv/error"),
                        "enabled": true}],
    });
    std::fs::write(host.join("varlib/config_default.json"), config.to_string()).unwrap();
    let libssl = host_libssl();
    std::fs::copy(&libssl, host.join("libssl.so")).unwrap();
    // Mount points must exist on the host; those made here go again.
    make_dirs(Path::new("/var/lib/pywats"), &mut made);
    // A cgroup laid out as the kubelet lays out a pod's (cgroupfs driver).
    let pod_cgroup = PathBuf::from(format!("/sys/fs/cgroup/pids/kubepods/besteffort/pod{POD_UID}"));
    let cgroup = pod_cgroup.join(CONTAINER);
    make_dirs(&cgroup, &mut made);
    make_dirs(&pod_cgroup.join(SANDBOX), &mut made);
    let mut sandbox = Sandbox(Command::new("sleep").arg("600").spawn().expect("spawn sleep"));
    std::fs::write(pod_cgroup.join(SANDBOX).join("cgroup.procs"), sandbox.0.id().to_string()).unwrap();

    let pattern = format!("pywats_client={me}");
    let script = format!(
        "set -e
         mount --bind {host}/varlib /var/lib/pywats
         mount --bind {host}/libssl.so {libssl}
         mount -t tmpfs tmpfs /run
         mkdir -p /run/secrets/kubernetes.io/serviceaccount
         printf {NAMESPACE} > /run/secrets/kubernetes.io/serviceaccount/namespace
         echo $$ > {cgroup}/cgroup.procs
         exec {python} -X {pattern} {workload} --url https://127.0.0.1:{port} --token {TOKEN} \
              --workdir {WORK} --rounds 2 --wait",
        host = host.display(),
        libssl = libssl.display(),
        cgroup = cgroup.display(),
        python = py::python().display(),
        workload = py::script("wats_workload.py").display(),
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("SSL_CERT_FILE", &cert)
        .env("HOSTNAME", POD);
    let (mut client, first) = Py::spawn_command(cmd);
    let pid: u32 = first.strip_prefix("pid ").unwrap_or_else(|| panic!("client said {first:?}")).parse().unwrap();
    // Ground truth of the set-up: the client's libssl and folders are not the host's.
    let inode = |p: &Path| std::fs::metadata(p).unwrap().ino();
    let theirs = PathBuf::from(format!("/proc/{pid}/root{}", libssl.display()));
    assert_ne!(inode(&theirs), inode(&libssl), "the client maps its own libssl");
    assert!(!Path::new(WORK).exists(), "the client's folders are invisible on the host");

    let queue_flag = format!("pq={WORK}/pq:persistent");
    let seccomp_unconfined = match facts["seccomp"].as_str() {
        Some("RuntimeDefault") => false,
        Some("Unconfined") => true,
        other => panic!("seccomp profile {other:?}"),
    };
    let args = ["--match", &pattern, "--queue", &queue_flag, "--node-name", "node-a"];
    let mut agent = ImageAgent::start(&caps, &mounts, seccomp_unconfined, &args);
    let a = agent.agent();
    a.wait_tls_probed();
    let truth: Value = {
        let line = client.ask("go");
        serde_json::from_str(line.strip_prefix("truth ").unwrap_or_else(|| panic!("client said {line:?}"))).unwrap()
    };

    // HTTPS requests: the agent's counts equal the server's.
    let counts: Value = serde_json::from_str(&tls::get(port, "/__counts")).unwrap();
    let mut server: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    for row in counts["counts"].as_array().unwrap() {
        let path = row[1].as_str().unwrap();
        let endpoint = if path.starts_with("/api/Report/Wsjf/") {
            "/api/Report/Wsjf/{report_id}".into()
        } else {
            path.to_string()
        };
        *server.entry((row[0].as_str().unwrap().into(), endpoint, row[2].to_string())).or_default() +=
            row[3].as_f64().unwrap();
    }
    let total: f64 = server.values().sum();
    assert!(total > 0.0);
    let (pq, sq, conv) = (&truth["persistent_queue"], &truth["service_queue"], &truth["converter"]);
    let m = wait_for(Duration::from_secs(30), "the agent to count the requests, queues and converter", || {
        let m = a.settled();
        let seen: f64 = m.series("pywats_http_requests_total").iter().map(|(_, v)| v).sum();
        let errors =
            m.get("pywats_converter_executions_total", &[("converter", "csv"), ("status", "error")]).unwrap_or(0.0);
        (seen >= total && errors == conv["error"].as_f64().unwrap()).then_some(m)
    });
    let mut seen: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    for (l, v) in m.series("pywats_http_requests_total") {
        assert_eq!(l["target"], INSTANCE, "the target is named by its own config");
        *seen.entry((l["method"].clone(), l["endpoint"].clone(), l["code"].clone())).or_default() += v;
    }
    assert_eq!(seen, server, "HTTPS requests per (method, endpoint, code): agent vs server");

    // Queues (one from the client's own config, one from the agent's flag,
    // both read inside the client's root) and the converter: the client's truth.
    for (queue, t, left) in [("reports", sq, "queued"), ("pq", pq, "pending")] {
        let q = [("target", INSTANCE), ("queue_name", queue)];
        assert_eq!(get(&m, "pywats_queue_depth", &q), t[left].as_f64().unwrap(), "{queue} depth");
        for outcome in ["completed", "failed"] {
            let n = m.get("pywats_queue_items_processed_total", &[q[0], q[1], ("outcome", outcome)]).unwrap_or(0.0);
            assert_eq!(n, t[outcome].as_f64().unwrap(), "{queue} {outcome}");
        }
    }
    let c = [("target", INSTANCE), ("converter", "csv")];
    for (status, truth) in [("success", &conv["done"]), ("error", &conv["error"])] {
        let n = get(&m, "pywats_converter_executions_total", &[c[0], c[1], ("status", status)]);
        assert_eq!(n, truth.as_f64().unwrap(), "converter {status}");
    }
    for name in
        ["pywats_agent_events_lost_total", "pywats_agent_queue_corrections_total", "pywats_agent_path_errors_total"]
    {
        for (l, v) in m.series(name) {
            assert_eq!(v, 0.0, "{name} {l:?}");
        }
    }

    // Kubernetes identity, from the client's cgroup, HOSTNAME and namespace file.
    let info = m.series("pywats_target_info");
    assert_eq!(info.len(), 1, "{info:?}");
    let l = &info[0].0;
    assert_eq!((l["target"].as_str(), l["pid"].as_str()), (INSTANCE, pid.to_string().as_str()));
    assert_eq!(
        (l["k8s_namespace"].as_str(), l["k8s_pod"].as_str(), l["k8s_pod_uid"].as_str(), l["container"].as_str()),
        (NAMESPACE, POD, POD_UID, CONTAINER)
    );

    // The agent started with the DaemonSet's capabilities (and the one
    // buildah adds): after start it keeps what it needs and nothing more,
    // in its bounding set too (it may narrow it with buildah's CAP_SETPCAP).
    let agent_pid = agent.pid();
    let status = std::fs::read_to_string(format!("/proc/{agent_pid}/status")).unwrap();
    let field = |name: &str| {
        let hex = status.lines().find_map(|l| l.strip_prefix(&format!("{name}:"))).unwrap().trim();
        u64::from_str_radix(hex, 16).unwrap()
    };
    let number = |name: &str| match name {
        "CAP_DAC_READ_SEARCH" => 2,
        "CAP_SYS_PTRACE" => 19,
        "CAP_SYS_ADMIN" => 21,
        other => panic!("capability {other} is not expected in the DaemonSet"),
    };
    let want = caps.iter().fold(0u64, |acc, c| acc | 1 << number(&format!("CAP_{c}")));
    for name in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(field(name), want, "{name} of the agent in the image after start");
    }
    let rss_kib = proc::status_field(agent_pid, "VmRSS").unwrap();
    let map_bytes: u64 = std::fs::read_dir(format!("/proc/{agent_pid}/fdinfo"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter(|info| info.contains("map_type:"))
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix("memlock:")?.trim().parse::<u64>().ok()))
        .sum();
    println!("agent in the image: RSS {} KiB, eBPF maps {} KiB", rss_kib, map_bytes / 1024);

    // The client goes, its pod stays (a container restarting): the agent
    // stays ready (a DaemonSet pod must not restart for it) and reports the
    // client down.
    client.ask("exit");
    client.kill();
    let state = |s: &str| a.scrape().get("pywats_agent_targets", &[("state", s)]);
    wait_for(Duration::from_secs(10), "the target to exit", || (state("exited") == Some(1.0)).then_some(()));
    assert_eq!(a.get("/health/ready").status, 200);
    let d = a.details();
    assert_eq!((d["watching"].as_str(), d["idle_patterns"].clone()), (Some("idle"), json!([pattern])));
    assert_eq!(d["node"], "node-a");
    assert_eq!(a.scrape().get("pywats_agent_match_idle", &[]), Some(1.0));
    // The pod goes too (deleted, or moved to another node): no client down.
    sandbox.0.kill().unwrap();
    sandbox.0.wait().unwrap();
    assert_eq!((state("exited"), state("removed")), (Some(0.0), Some(1.0)));
    agent.stop();
    drop(made);
    let _ = std::fs::remove_dir_all(&host);
}

/// Two clients, each in its own mount namespace, keep their queue at the same
/// path (as clients in two pods do): one `--queue` template gives each its
/// own watch, read in its own root, and each counts only its own files.
#[test]
fn clients_with_the_same_paths_in_different_roots_stay_apart() {
    let me = std::process::id();
    let mut made = Cleanup(Vec::new());
    make_dirs(Path::new("/var/lib/pywats"), &mut made);
    let host = std::env::temp_dir().join(format!("pywats-scope-{me}"));
    let _ = std::fs::remove_dir_all(&host);
    let pattern = format!("pywats_client=scope{me}");
    let dir = "/var/lib/pywats/q";
    let mut clients = Vec::new();
    for name in ["a", "b"] {
        make_dirs(&host.join(name).join("q"), &mut made);
        let script = format!(
            "set -e; mount --bind {} /var/lib/pywats; exec {} -X {pattern} {}",
            host.join(name).display(),
            py::python().display(),
            py::script("queues.py").display()
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
        let (py, first) = Py::spawn_command(cmd);
        assert_eq!(first, "ready");
        clients.push(py);
    }
    let queue = format!("reports={dir}:service");
    let agent = Agent::start(&["--match", &pattern, "--no-discover", "--queue", &queue, "--reconcile-interval", "1"]);
    let names: BTreeMap<u32, String> = wait_for(Duration::from_secs(10), "both clients", || {
        let info = agent.scrape().series("pywats_target_info");
        (info.len() == 2).then(|| info.iter().map(|(l, _)| (l["pid"].parse().unwrap(), l["target"].clone())).collect())
    });
    // Different work in the same path: a mid-flight queue in one, the full
    // service flow in the other.
    let truth_a: Value = serde_json::from_str(&clients[0].ask(&format!("prepare {dir}"))).unwrap();
    let truth_b: Value = serde_json::from_str(&clients[1].ask(&format!("service {dir}"))).unwrap();
    let (a, b) = (&names[&clients[0].pid()], &names[&clients[1].pid()]);
    let depth = |m: &Samples, t: &str| m.get("pywats_queue_depth", &[("target", t), ("queue_name", "reports")]);
    let m = wait_for(Duration::from_secs(10), "the depths", || {
        let m = agent.settled();
        (depth(&m, a) == Some(3.0) && depth(&m, b) == truth_b["depth"].as_f64()).then_some(m)
    });
    assert_eq!(truth_a["queued"].as_f64(), Some(3.0), "{truth_a}");
    let done = |t: &str, outcome: &str| {
        m.get("pywats_queue_items_processed_total", &[("target", t), ("queue_name", "reports"), ("outcome", outcome)])
    };
    assert_eq!(done(a, "completed").unwrap_or(0.0), 0.0);
    assert_eq!(done(b, "completed"), truth_b["completed"].as_f64());
    assert_eq!(done(b, "failed"), truth_b["failed"].as_f64());
    // Re-reads later nothing needed correcting: each listing matched its own events.
    std::thread::sleep(Duration::from_secs(3));
    let m = agent.settled();
    for (l, v) in m.series("pywats_agent_queue_corrections_total") {
        assert_eq!(v, 0.0, "{l:?}");
    }
    drop(clients);
    drop(agent);
    drop(made);
    let _ = std::fs::remove_dir_all(&host);
}

/// The exposure `systemd-analyze security` gives a unit, from its last line
/// ("→ Overall exposure level for NAME: 3.0 OK 🙂").
fn exposure(report: &str) -> f64 {
    let line = report.lines().find(|l| l.contains("Overall exposure level")).expect("an overall exposure line");
    let after = line.rsplit_once(": ").expect("NAME: SCORE").1;
    after.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no score in {line:?}"))
}

/// The systemd unit: `systemd-analyze verify` accepts it, its exposure
/// (`systemd-analyze security --offline=true`) is no worse than the README
/// says, and it grants the capabilities the agent keeps after start, no more.
#[test]
fn the_systemd_unit_verifies_and_keeps_its_exposure() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("skipped: systemd-analyze is not installed (Debian: apt-get install systemd)");
        return;
    }
    let text = std::fs::read_to_string(root().join("deploy/systemd/pywats-agent.service")).unwrap();
    let setting = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("the unit sets no {key}"))
            .to_string()
    };
    assert_eq!(setting("CapabilityBoundingSet"), "CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_DAC_READ_SEARCH");
    assert_eq!(setting("LimitNOFILE"), "4096");
    assert_eq!(setting("TimeoutStopSec"), "15s");
    assert_eq!(setting("Environment").as_str(), "PYWATS_AGENT_MATCH=pywats_client");
    assert!(text.contains("Environment=PYWATS_AGENT_LISTEN=0.0.0.0:9090\n"), "the listen address is explicit");

    // verify checks that ExecStart exists: a copy that starts the built agent.
    let dir = std::env::temp_dir().join(format!("pywats-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("pywats-agent.service");
    let exec = format!("ExecStart={}", pywats_agent_tests::agent::bin().display());
    let copy: Vec<String> =
        text.lines().map(|l| if l.starts_with("ExecStart=") { exec.clone() } else { l.to_string() }).collect();
    std::fs::write(&unit, copy.join("\n") + "\n").unwrap();
    let verify = Command::new("systemd-analyze").arg("verify").arg(&unit).output().unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && complaints.trim().is_empty(), "systemd-analyze verify: {complaints}");

    let security = Command::new("systemd-analyze").args(["security", "--offline=true"]).arg(&unit).output().unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let documented = exposure(&readme);
    let measured = exposure(&report);
    println!("systemd-analyze security: {measured} (README: {documented})");
    assert!(measured <= documented, "exposure {measured} is worse than the README's {documented}:\n{report}");
    let _ = std::fs::remove_dir_all(&dir);
}
