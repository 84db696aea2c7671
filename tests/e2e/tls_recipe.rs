//! The README's TLS recipe ("Securing the endpoint"), run as written: each
//! `<!-- recipe: NAME -->` block in order, as root, with /etc overlaid by a
//! scratch directory (what the blocks write there vanishes with the test)
//! and in a network namespace of its own (the recipe's port 9090 is this
//! test's alone). Then a real Prometheus scrapes the agent with the
//! recipe's job. What cannot run here is stood in for, and said: `sudo`
//! (the test is root already) runs its command, and `systemctl restart`
//! is recorded, then the unit's ExecStart is started as systemd would,
//! with the unit's environment and /etc/default/pywats-agent. Root.

use std::{
    collections::BTreeMap,
    ffi::CString,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use pywats_agent_tests::{agent, prometheus::Prometheus, root, wait_for};

/// The README's recipe blocks: name → code.
fn recipe() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut blocks = BTreeMap::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix("<!-- recipe: ").and_then(|l| l.strip_suffix(" -->")) else { continue };
        let fence = lines.next().unwrap_or_default();
        assert!(fence.starts_with("```"), "recipe {name}: a code block must follow its marker, not {fence:?}");
        let code: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
        blocks.insert(name.to_string(), code.join("\n") + "\n");
    }
    blocks
}

fn must(status: std::io::Result<std::process::ExitStatus>, what: &str) {
    let status = status.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(status.success(), "{what}: {status}");
}

/// This thread (and all it starts) gets mount and network namespaces of its
/// own, /etc overlaid by `scratch`, and loopback up.
fn isolate(scratch: &Path) {
    // SAFETY: plain syscalls on this thread; the strings outlive them.
    unsafe {
        assert_eq!(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWNET), 0, "unshare");
        let slash = CString::new("/").unwrap();
        let flags = libc::MS_REC | libc::MS_PRIVATE;
        assert_eq!(libc::mount(std::ptr::null(), slash.as_ptr(), std::ptr::null(), flags, std::ptr::null()), 0);
    }
    std::fs::create_dir_all(scratch).unwrap();
    must(Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(scratch).status(), "mount tmpfs");
    for d in ["upper", "work", "bin"] {
        std::fs::create_dir(scratch.join(d)).unwrap();
    }
    let options = format!("lowerdir=/etc,upperdir={0}/upper,workdir={0}/work", scratch.display());
    must(Command::new("mount").args(["-t", "overlay", "overlay", "-o", &options, "/etc"]).status(), "overlay /etc");
    must(Command::new("ip").args(["link", "set", "lo", "up"]).status(), "ip link set lo up");
}

/// `sh -e -c code` with the stand-ins and the agent first on PATH.
fn shell(bin: &Path, code: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-e", "-c", code]).env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()));
    c
}

/// Runs the check block until the agent answers it; its output.
fn checked(bin: &Path, check: &str, agent: &mut Child) -> String {
    wait_for(Duration::from_secs(30), "the recipe's check to pass", || {
        if let Ok(Some(status)) = agent.try_wait() {
            panic!("the agent exited: {status}");
        }
        let out = shell(bin, check).stderr(Stdio::null()).output().unwrap();
        out.status.success().then(|| String::from_utf8(out.stdout).unwrap())
    })
}

fn stop(mut agent: Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    assert!(agent.wait().unwrap().success(), "the agent on SIGTERM");
}

fn mode_owner(path: &str) -> (u32, u32, u32) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

fn gid(group: &str) -> u32 {
    let out = Command::new("getent").args(["group", group]).output().unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    line.split(':').nth(2).and_then(|g| g.parse().ok()).unwrap_or_else(|| panic!("no group {group}: {line:?}"))
}

#[test]
fn the_readmes_tls_recipe_works_as_written() {
    let blocks = recipe();
    let names: Vec<&str> = blocks.keys().map(String::as_str).collect();
    assert_eq!(names, ["by-hand", "check", "files", "prometheus-files", "scrape", "service"]);
    let scratch = std::env::temp_dir().join(format!("pywats-agent-recipe-{}", std::process::id()));
    isolate(&scratch);
    let bin = scratch.join("bin");
    let systemctl_calls = scratch.join("systemctl.calls");
    for (name, script) in [
        ("sudo", "#!/bin/sh\nexec \"$@\"\n".to_string()),
        ("systemctl", format!("#!/bin/sh\necho \"$*\" >> {}\n", systemctl_calls.display())),
    ] {
        std::fs::write(bin.join(name), script).unwrap();
        std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::os::unix::fs::symlink(agent::bin(), bin.join("pywats-agent")).unwrap();
    // As the package installs it (the service block appends to it).
    std::fs::copy(root().join("deploy/debian/pywats-agent.default"), "/etc/default/pywats-agent").unwrap();

    must(shell(&bin, &blocks["files"]).status(), "recipe files");
    assert_eq!(mode_owner("/etc/pywats-agent/prometheus.password"), (0o600, 0, 0));
    assert_eq!(mode_owner("/etc/pywats-agent/web-config.yml"), (0o640, 0, 0));
    assert_eq!(mode_owner("/etc/pywats-agent/tls").0, 0o750);

    // By hand, checked with the recipe's curl; a wrong password is refused.
    let by_hand = format!("exec {}", blocks["by-hand"].trim());
    let mut agent = shell(&bin, &by_hand).stderr(Stdio::null()).spawn().unwrap();
    let details: serde_json::Value = serde_json::from_str(&checked(&bin, &blocks["check"], &mut agent)).unwrap();
    assert!(details["targets"].is_array(), "{details}");
    let wrong = blocks["check"].replace("prometheus:$(", "prometheus:x$(");
    let out = shell(&bin, &wrong).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "a wrong password: {out:?}");
    stop(agent);

    // The service: the variable in /etc/default, the unit started as systemd does.
    must(shell(&bin, &blocks["service"]).stdout(Stdio::null()).status(), "recipe service");
    assert_eq!(std::fs::read_to_string(&systemctl_calls).unwrap(), "restart pywats-agent\n");
    let unit = std::fs::read_to_string(root().join("deploy/systemd/pywats-agent.service")).unwrap();
    assert!(unit.contains("EnvironmentFile=-/etc/default/pywats-agent\n"));
    let defaults = std::fs::read_to_string("/etc/default/pywats-agent").unwrap();
    let assignments = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .chain(defaults.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')));
    let mut service = Command::new(agent::bin());
    service.env_clear().stderr(Stdio::null());
    for a in assignments {
        let (k, v) = a.split_once('=').unwrap();
        service.env(k, v);
    }
    let mut agent = service.spawn().unwrap();
    checked(&bin, &blocks["check"], &mut agent);

    // Prometheus's files, readable by its user only (and root).
    must(shell(&bin, &blocks["prometheus-files"]).status(), "recipe prometheus-files");
    assert_eq!(mode_owner("/etc/prometheus/pywats-agent.password"), (0o640, 0, gid("prometheus")));
    assert_eq!(mode_owner("/etc/prometheus/pywats-agent-ca.crt").0, 0o644);
    for file in ["/etc/prometheus/pywats-agent.password", "/etc/prometheus/pywats-agent-ca.crt"] {
        let read = Command::new("setpriv")
            .args(["--reuid=prometheus", "--regid=prometheus", "--init-groups", "cat", file])
            .output()
            .unwrap();
        assert!(read.status.success(), "the prometheus user cannot read {file}");
    }
    let config = format!("global:\n  scrape_interval: 1s\n{}", blocks["scrape"]);
    let prometheus = Prometheus::start(&config);
    let health = wait_for(Duration::from_secs(30), "Prometheus to scrape the agent", || {
        prometheus.targets().get("pywats-agent").filter(|(health, _)| health != "unknown").cloned()
    });
    assert_eq!(health.0, "up", "Prometheus's scrape: {}", health.1);
    let info = prometheus.query("pywats_agent_build_info");
    assert_eq!(info.len(), 1, "{info:?}");
    println!("Prometheus scraped the agent over TLS with the recipe's job: {}", info[0].0["version"]);
    drop(prometheus);
    stop(agent);
    must(Command::new("umount").arg("/etc").status(), "umount /etc");
    must(Command::new("umount").arg(&scratch).status(), "umount scratch");
    let _ = std::fs::remove_dir(&scratch);
}
