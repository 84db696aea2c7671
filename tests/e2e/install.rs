//! The artifacts of `cargo xtask dist`, as an operator gets them: their sums
//! check out, each CPU's archive holds the files of its .deb (the package
//! and the binary of that CPU), and this CPU's .deb installs
//! into a fresh Debian 12 root (mmdebstrap, from Debian's mirror) with its
//! service enabled, a unit `systemd-analyze verify` accepts there, and its
//! ExecStart, run in that root with the unit's environment and
//! /etc/default/pywats-agent, counting a real client's requests exactly as
//! the server does. Removing keeps the settings, purging drops them.
//!
//! Minutes long, root and the network: ignored by `cargo xtask test`, run
//! by `cargo xtask dist --install-test`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use pywats_agent_tests::{
    free_port, http, prom,
    py::{self, Py},
    wait_for,
};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const UNIT: &str = "/usr/lib/systemd/system/pywats-agent.service";
const DEFAULTS: &str = "/etc/default/pywats-agent";
const ENABLED: &str = "/etc/systemd/system/multi-user.target.wants/pywats-agent.service";

fn dist() -> PathBuf {
    PathBuf::from(
        std::env::var_os("PYWATS_AGENT_DIST").expect("PYWATS_AGENT_DIST: run `cargo xtask dist --install-test`"),
    )
}

fn ok(out: Output, what: &str) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} ({}):\n{text}", out.status);
    text
}

/// A Debian root, removed at the end. Every command in it runs in a mount
/// namespace of its own: its /proc (and /sys) mounts go with that namespace,
/// never left behind on the host, whatever happens to the test.
struct DebianRoot(PathBuf);

impl DebianRoot {
    fn make() -> DebianRoot {
        let dir = std::env::temp_dir().join(format!("pywats-agent-install-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = DebianRoot(dir);
        let out = Command::new("mmdebstrap")
            .args(["--variant=minbase", "--include=systemd,systemd-sysv", "--quiet", "bookworm"])
            .arg(&root.0)
            .output()
            .expect("run mmdebstrap (Debian: apt-get install mmdebstrap)");
        ok(out, "mmdebstrap bookworm");
        root
    }

    fn path(&self, inside: &str) -> PathBuf {
        self.0.join(inside.trim_start_matches('/'))
    }

    /// `sh -c script` in the root, with /proc (and, `with_sys`, the host's
    /// /sys with its tracefs), as the host's root user.
    fn command(&self, script: &str, with_sys: bool) -> Command {
        let sys = if with_sys { " && mount --rbind /sys \"$0/sys\"" } else { "" };
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!("mount -t proc proc \"$0/proc\"{sys} && exec chroot \"$0\" sh -c \"$1\""))
            .arg(&self.0)
            .arg(script);
        c
    }

    fn run(&self, script: &str) -> String {
        ok(self.command(script, false).output().unwrap(), script)
    }
}

impl Drop for DebianRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// The environment systemd gives ExecStart: its PATH, the unit's `Environment=`,
/// then `EnvironmentFile=` (assignments, not comments), later ones winning.
fn service_env(unit: &str, defaults: &str) -> Vec<(String, String)> {
    let assignments = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .chain(defaults.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')));
    // What systemd sets for every service.
    let mut env = vec![("PATH".to_string(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin".to_string())];
    for a in assignments {
        let (k, v) = a.split_once('=').unwrap_or_else(|| panic!("not an assignment: {a}"));
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// The CPUs `cargo xtask dist` builds for: Debian's name, the kernel's
/// (`uname -m`, in the archive's name), and the ELF machine of the binary.
const CPUS: [(&str, &str, u16); 2] = [("amd64", "x86_64", 0x3e), ("arm64", "aarch64", 0xb7)];

fn deb_name(debian: &str) -> String {
    format!("pywats-agent_{VERSION}_{debian}.deb")
}

/// One CPU's archive: its own sums, and the files of its .deb byte for
/// byte; the package says its CPU, and the binary is that CPU's.
fn check_archive_against_deb(dist: &Path, debian: &str, machine: &str, elf: u16) {
    let deb = dist.join(deb_name(debian));
    let archive = format!("pywats-agent-{VERSION}-{machine}-linux");
    let unpacked = std::env::temp_dir().join(format!("pywats-agent-archive-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&unpacked);
    std::fs::create_dir_all(&unpacked).unwrap();
    ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(dist.join(format!("{archive}.tar.gz")))
            .arg("-C")
            .arg(&unpacked)
            .output()
            .unwrap(),
        "tar -x",
    );
    let top = unpacked.join(&archive);
    ok(
        Command::new("sha256sum").args(["-c", "--quiet", "SHA256SUMS"]).current_dir(&top).output().unwrap(),
        "archive sums",
    );
    let extracted = unpacked.join("deb");
    ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&extracted).output().unwrap(), "dpkg-deb -x");
    let in_deb = files(&extracted);
    let in_archive: Vec<PathBuf> = files(&top).into_iter().filter(|p| p != Path::new("SHA256SUMS")).collect();
    assert_eq!(in_archive, in_deb, "{debian}: the archive's files vs the .deb's");
    for f in &in_deb {
        assert_eq!(std::fs::read(top.join(f)).unwrap(), std::fs::read(extracted.join(f)).unwrap(), "{}", f.display());
    }
    let field =
        ok(Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg("Architecture").output().unwrap(), "dpkg-deb -f");
    assert_eq!(field.trim(), debian);
    let binary = std::fs::read(extracted.join("usr/bin/pywats-agent")).unwrap();
    assert_eq!(&binary[..4], b"\x7fELF");
    assert_eq!(u16::from_le_bytes([binary[18], binary[19]]), elf, "{debian}: the binary's ELF machine");
    let _ = std::fs::remove_dir_all(&unpacked);
}

#[test]
#[ignore = "minutes, root and Debian's mirror: cargo xtask dist --install-test"]
fn the_deb_installs_into_a_fresh_debian_and_its_service_counts_a_client() {
    let dist = dist();
    let sums = ok(Command::new("sha256sum").arg("-c").arg("SHA256SUMS").current_dir(&dist).output().unwrap(), "sums");
    let built: Vec<_> = CPUS.iter().filter(|(debian, _, _)| dist.join(deb_name(debian)).is_file()).collect();
    assert!(!built.is_empty(), "no package in {}", dist.display());
    assert_eq!(sums.lines().filter(|l| l.ends_with(": OK")).count(), 2 * built.len(), "{sums}");
    for &&(debian, machine, elf) in &built {
        check_archive_against_deb(&dist, debian, machine, elf);
    }

    // This CPU's package, installed.
    let &(host, _, _) =
        CPUS.iter().find(|(_, machine, _)| *machine == std::env::consts::ARCH).expect("a CPU dist builds for");
    let deb = deb_name(host);
    let started = std::time::Instant::now();
    let root = DebianRoot::make();
    println!("a fresh Debian 12 root in {:.0?}", started.elapsed());
    std::fs::copy(dist.join(&deb), root.path("/tmp/pywats-agent.deb")).unwrap();
    root.run("dpkg -i /tmp/pywats-agent.deb");
    let listed = root.run("dpkg -L pywats-agent");
    for path in ["/usr/bin/pywats-agent", UNIT, DEFAULTS, "/usr/share/pywats-agent/web-config.yml"] {
        assert!(listed.lines().any(|l| l == path), "{path} not in the package:\n{listed}");
        assert!(root.path(path).is_file(), "{path} not installed");
    }
    assert_eq!(root.run("dpkg-query -W -f '${Conffiles}' pywats-agent").split_whitespace().next(), Some(DEFAULTS));
    // Enabled, as a Debian exporter package leaves its service.
    // (bookworm's deb-systemd-helper names /lib/systemd/system: /lib is /usr/lib there.)
    let link = std::fs::read_link(root.path(ENABLED)).expect("the service is enabled");
    let linked = root.path(link.to_str().unwrap()).canonicalize().unwrap();
    assert_eq!(linked, root.path(UNIT).canonicalize().unwrap(), "{ENABLED} -> {}", link.display());
    let version = root.run("pywats-agent --version");
    assert!(version.contains(VERSION), "{version}");
    let verify = root.run(&format!("systemd-analyze verify {UNIT}"));
    assert!(verify.trim().is_empty(), "systemd-analyze verify: {verify}");

    // The unit's ExecStart, with its environment and the defaults file an
    // operator edits: another pattern (this test's clients only) and port.
    let port = free_port();
    let tag = format!("installed-{}", std::process::id());
    let defaults = std::fs::read_to_string(root.path(DEFAULTS)).unwrap()
        + &format!("PYWATS_AGENT_MATCH={tag}\nPYWATS_AGENT_LISTEN=127.0.0.1:{port}\n");
    std::fs::write(root.path(DEFAULTS), &defaults).unwrap();
    let unit = std::fs::read_to_string(root.path(UNIT)).unwrap();
    assert!(unit.contains("EnvironmentFile=-/etc/default/pywats-agent\n"), "{unit}");
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    // exec: the child is the agent itself, for SIGTERM.
    let mut agent = root.command(&format!("exec {exec}"), true);
    // Its log in a file: a pipe nobody reads could stall it.
    let log_path = root.path("/tmp/pywats-agent.log");
    let log = std::fs::File::create(&log_path).unwrap();
    agent.env_clear().envs(service_env(&unit, &defaults)).stdout(Stdio::null()).stderr(log);
    let mut agent = agent.spawn().unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_for(Duration::from_secs(30), "the installed agent to serve", || {
        if let Ok(Some(status)) = agent.try_wait() {
            panic!("the installed agent exited ({status}):\n{}", log());
        }
        http::get(port, "/health/ready").ok().filter(|r| r.status == 200)
    });
    let server_port = free_port();
    let _server = Py::start("http_server.py", &[&server_port.to_string()]);
    const CLIENTS: usize = 10;
    for _ in 0..CLIENTS {
        let status = Command::new(py::python())
            .arg(py::script("quick_request.py"))
            .args([&server_port.to_string(), "/mix/200/10/cl/installed", &tag])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let counts: serde_json::Value = serde_json::from_str(&http::get(server_port, "/__counts").unwrap().body).unwrap();
    let served: f64 = counts["counts"].as_array().unwrap().iter().map(|r| r[3].as_f64().unwrap()).sum();
    assert_eq!(served, CLIENTS as f64);
    let seen = wait_for(Duration::from_secs(20), "the installed agent to count them", || {
        let m = prom::parse(&http::get(port, "/metrics").unwrap().body);
        let seen: f64 = m.series("pywats_http_requests_total").iter().map(|(_, v)| v).sum();
        (seen >= served).then_some(seen)
    });
    assert_eq!(seen, served, "requests: the installed agent vs the server");
    // SAFETY: signalling our own child (unshare execs into the agent).
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().unwrap();
    assert!(status.success(), "the installed agent on SIGTERM: {status}\n{}", log());
    println!("the installed agent counted {seen} requests of {CLIENTS} clients, as the server did");

    // Removed: the binary goes, the settings stay; purged: they go too.
    root.run("dpkg -r pywats-agent");
    assert!(!root.path("/usr/bin/pywats-agent").exists());
    assert_eq!(std::fs::read_to_string(root.path(DEFAULTS)).unwrap(), defaults);
    root.run("dpkg -P pywats-agent");
    assert!(!root.path(DEFAULTS).exists());
    assert!(root.path(ENABLED).symlink_metadata().is_err(), "purge leaves no enable link");
}
