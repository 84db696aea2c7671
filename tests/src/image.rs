//! The agent from the container image (`cargo xtask image`), run by
//! `buildah run --isolation chroot`: the host's PID view, as a `hostPID` pod
//! has, with the capabilities and mounts of the DaemonSet.

use std::{process::Command, time::Duration};

use crate::{agent::Agent, wait_for};

/// The image `cargo xtask test` built.
pub fn tag() -> String {
    std::env::var("PYWATS_AGENT_IMAGE")
        .unwrap_or_else(|_| panic!("no PYWATS_AGENT_IMAGE: run the tests through `cargo xtask test`, which builds it"))
}

const STORAGE: [&str; 2] = ["--storage-driver", "vfs"];

/// What buildah grants by default (containers.conf `default_capabilities`).
/// All are dropped but CAP_SETPCAP: buildah 1.28 cannot drop that one from
/// the container it runs (it needs it to set the others); the agent drops it
/// itself after start.
const BUILDAH_DEFAULT_CAPS: [&str; 10] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

pub struct ImageAgent {
    agent: Option<Agent>,
    container: String,
}

impl ImageAgent {
    /// Runs the image's agent with only `caps` (Kubernetes names, e.g. `BPF`),
    /// the host paths `mounts` (path, read-only), the runtime's default
    /// seccomp profile unless `seccomp_unconfined`, and the agent flags `args`.
    pub fn start(caps: &[String], mounts: &[(String, bool)], seccomp_unconfined: bool, args: &[&str]) -> ImageAgent {
        let container = format!("pywats-agent-test-{}", std::process::id());
        let _ = Command::new("buildah").args(STORAGE).args(["rm", &container]).output();
        let mut from = Command::new("buildah");
        from.args(STORAGE).args(["from", "--name", &container, "--pull=never"]);
        if seccomp_unconfined {
            from.args(["--security-opt", "seccomp=unconfined"]);
        }
        let out = from.arg(tag()).output().expect("run buildah from");
        assert!(out.status.success(), "buildah from: {}", String::from_utf8_lossy(&out.stderr));
        let mut cmd = Command::new("buildah");
        cmd.args(STORAGE).args(["run", "--isolation", "chroot"]);
        for cap in BUILDAH_DEFAULT_CAPS {
            cmd.args(["--cap-drop", cap]);
        }
        for cap in caps {
            cmd.args(["--cap-add", &format!("CAP_{cap}")]);
        }
        for (path, ro) in mounts {
            cmd.args(["--mount", &format!("type=bind,src={path},dst={path}{}", if *ro { ",ro" } else { "" })]);
        }
        cmd.args([container.as_str(), "--", "/usr/bin/pywats-agent"]);
        let agent = Agent::start_with(cmd, args);
        ImageAgent { agent: Some(agent), container }
    }

    pub fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("agent running")
    }

    /// The agent process itself (buildah's descendant).
    pub fn pid(&self) -> u32 {
        let root = self.agent().pid();
        wait_for(Duration::from_secs(10), "the agent process under buildah", || {
            descendants(root)
                .into_iter()
                .find(|&p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "pywats-agent"))
        })
    }

    /// SIGTERM to the agent (a SIGKILL to buildah would orphan it).
    pub fn stop(&mut self) {
        if self.agent.is_none() {
            return;
        }
        let pid = self.pid();
        // SAFETY: signalling a process this test started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let gone = || !std::path::Path::new(&format!("/proc/{pid}")).exists();
        wait_for(Duration::from_secs(15), "the agent to exit after SIGTERM", || gone().then_some(()));
        drop(self.agent.take());
    }
}

impl Drop for ImageAgent {
    fn drop(&mut self) {
        if self.agent.is_some() && !std::thread::panicking() {
            self.stop();
        } else if let Some(agent) = &self.agent {
            for pid in descendants(agent.pid()) {
                // SAFETY: signalling processes this test started.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        drop(self.agent.take());
        let _ = Command::new("buildah").args(STORAGE).args(["rm", &self.container]).output();
    }
}

/// Every live descendant of `root`.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let ppid = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid));
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        for &(child, _) in parents.iter().filter(|(_, pp)| *pp == p) {
            out.push(child);
            stack.push(child);
        }
    }
    out
}
