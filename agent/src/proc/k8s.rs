//! Which container and Kubernetes pod a process runs in, found on the node
//! without the API server. Read, and nothing else:
//!
//! * `/proc/<pid>/cgroup`: the pod UID and the container id in the cgroup path;
//! * `/proc/<pid>/environ`: the value of `HOSTNAME` only (the pod name, which
//!   the runtime sets); every other variable is skipped unread as text and
//!   the buffer dropped at once — environments carry secrets;
//! * `/var/run/secrets/kubernetes.io/serviceaccount/namespace` inside the
//!   process's root: the pod's namespace (present when the pod mounts its
//!   service-account token); `/etc/hostname` inside its root stands in for a
//!   missing `HOSTNAME`.

use std::{collections::HashSet, path::Path};

use crate::{
    fs::root::{FileKind, TargetRoot},
    proc::read_capped,
};

const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
/// `/proc/<pid>/cgroup`: a line per hierarchy.
const CGROUP_CAP: u64 = 64 << 10;
/// A process's environment is what it chose: only this much is looked at.
const ENVIRON_CAP: u64 = 1 << 20;

/// Where a process runs. Empty strings are unknown (Prometheus drops empty labels).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PodIdentity {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    /// The container id (64 hex digits), as `crictl ps` and the pod status
    /// (`containerID`, after the `runtime://` prefix) show it.
    pub container: String,
}

impl PodIdentity {
    /// The identity of `pid`; `None` when it runs in no container.
    pub fn read(proc_root: &Path, pid: u32) -> Option<PodIdentity> {
        let proc = proc_root.join(pid.to_string());
        let cgroup = String::from_utf8(read_capped(&proc.join("cgroup"), CGROUP_CAP).ok()?).ok()?;
        let (pod_uid, container) = parse_cgroup(&cgroup)?;
        let mut id = PodIdentity { pod_uid: pod_uid.unwrap_or_default(), container, ..PodIdentity::default() };
        if id.pod_uid.is_empty() {
            return Some(id);
        }
        let root = TargetRoot::of(proc_root, pid);
        let hostname = read_capped(&proc.join("environ"), ENVIRON_CAP).ok().and_then(|env| hostname_of(&env));
        let hostname = hostname.or_else(|| root.read_string(Path::new("/etc/hostname"), FileKind::PodName).ok());
        id.pod = hostname.map(|h| h.trim().to_string()).filter(|h| is_dns_name(h)).unwrap_or_default();
        let namespace = root.read_string(Path::new(NAMESPACE_FILE), FileKind::PodName).unwrap_or_default();
        id.namespace = Some(namespace.trim()).filter(|n| is_dns_name(n)).unwrap_or_default().to_string();
        Some(id)
    }
}

/// The value of `HOSTNAME` in a NUL-separated environment block.
fn hostname_of(environ: &[u8]) -> Option<String> {
    environ
        .split(|&b| b == 0)
        .find_map(|var| var.strip_prefix(b"HOSTNAME="))
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
}

/// Kubernetes names (pods, namespaces) are DNS subdomains: anything else is
/// not one, and does not become a label.
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// UIDs of the pods that still have a process on this node (their sandbox
/// `pause` process lives as long as the pod does): a target whose pod is not
/// among them left the node (deleted, moved), it is not a client down.
pub fn pods_on_node(proc_root: &Path) -> HashSet<String> {
    let Ok(dir) = std::fs::read_dir(proc_root) else { return HashSet::new() };
    dir.flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter_map(|e| String::from_utf8(read_capped(&e.path().join("cgroup"), CGROUP_CAP).ok()?).ok())
        .filter_map(|text| parse_cgroup(&text)?.0)
        .collect()
}

/// `(pod UID, container id)` from the lines of `/proc/<pid>/cgroup`; `None`
/// outside a container. Known layouts (cgroup v1 and v2, systemd and cgroupfs
/// drivers): `…/kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope`,
/// `…/kubepods/besteffort/pod<uid>/<id>`, `crio-<id>.scope`, `docker-<id>.scope`,
/// `/docker/<id>`. Paths may start with `/..` segments: they are relative to
/// the reader's cgroup namespace, and the agent may have its own.
pub fn parse_cgroup(text: &str) -> Option<(Option<String>, String)> {
    text.lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .filter_map(parse_path)
        .max_by_key(|(uid, _)| uid.is_some())
}

fn parse_path(path: &str) -> Option<(Option<String>, String)> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty() && *s != "..").collect();
    let container = segments.iter().rev().find_map(|s| container_id(s))?;
    let pod = segments.iter().find_map(|s| pod_uid(s));
    Some((pod, container.to_string()))
}

/// `<id>`, `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`
/// (not `crio-conmon-<id>`: CRI-O's monitor process is no container).
fn container_id(segment: &str) -> Option<&str> {
    let s = segment.strip_suffix(".scope").unwrap_or(segment);
    let id = ["cri-containerd-", "crio-", "docker-", "containerd-", "libpod-"]
        .iter()
        .find_map(|p| s.strip_prefix(p))
        .unwrap_or(s);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid with _>.slice` (systemd).
/// UIDs are UUIDs, or 32 hex digits for static pods.
fn pod_uid(segment: &str) -> Option<String> {
    let s = segment.strip_suffix(".slice").unwrap_or(segment);
    let (_, uid) = s.rsplit_once("pod")?;
    if !(segment.starts_with("pod") || s.contains("kubepods")) {
        return None;
    }
    let uid = uid.replace('_', "-");
    let hex = uid.bytes().filter(|b| b.is_ascii_hexdigit()).count();
    let uuid = uid.len() == 36 && hex == 32 && uid.bytes().filter(|&b| b == b'-').count() == 4;
    let bare = uid.len() == 32 && hex == 32;
    (uuid || bare).then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";
    const UID: &str = "0b8e2a8c-1f3d-4e5a-9c1b-2d3e4f5a6b7c";

    fn parsed(text: &str) -> Option<(Option<String>, String)> {
        parse_cgroup(text)
    }

    fn pod(uid: &str) -> Option<(Option<String>, String)> {
        Some((Some(uid.to_string()), ID.to_string()))
    }

    #[test]
    fn cgroup_v2_systemd_driver_containerd_and_crio() {
        let u = UID.replace('-', "_");
        let containerd = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(parsed(&containerd), pod(UID));
        let guaranteed = format!("0::/kubepods.slice/kubepods-pod{u}.slice/crio-{ID}.scope\n");
        assert_eq!(parsed(&guaranteed), pod(UID));
        // CRI-O's conmon runs beside the container, in no container of its own.
        let conmon = format!("0::/kubepods.slice/kubepods-pod{u}.slice/crio-conmon-{ID}.scope\n");
        assert_eq!(parsed(&conmon), None);
    }

    #[test]
    fn cgroup_v2_relative_to_the_readers_namespace() {
        let u = UID.replace('-', "_");
        let relative =
            format!("0::/../../kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-{ID}.scope\n");
        assert_eq!(parsed(&relative), pod(UID));
    }

    #[test]
    fn cgroup_v1_cgroupfs_driver_and_docker() {
        let v1 = format!(
            "12:pids:/kubepods/besteffort/pod{UID}/{ID}\n11:memory:/kubepods/besteffort/pod{UID}/{ID}\n\
             1:name=systemd:/kubepods/besteffort/pod{UID}/{ID}\n0::/\n"
        );
        assert_eq!(parsed(&v1), pod(UID));
        let systemd_docker = format!(
            "5:cpu,cpuacct:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/docker-{ID}.scope\n",
            UID.replace('-', "_")
        );
        assert_eq!(parsed(&systemd_docker), pod(UID));
        // A static pod's UID is a hash of its manifest.
        let static_pod = format!("0::/kubepods/burstable/pod6d3a1b1f7a9e8e4d2c0b1a2f3e4d5c6b/{ID}\n");
        assert_eq!(parsed(&static_pod), pod("6d3a1b1f7a9e8e4d2c0b1a2f3e4d5c6b"));
    }

    #[test]
    fn plain_containers_and_host_processes() {
        assert_eq!(parsed(&format!("4:devices:/docker/{ID}\n")), Some((None, ID.to_string())));
        assert_eq!(parsed(&format!("0::/system.slice/docker-{ID}.scope\n")), Some((None, ID.to_string())));
        assert_eq!(parsed("0::/user.slice/user-0.slice/session-3.scope\n"), None);
        assert_eq!(parsed("0::/system.slice/pywats-client.service\n"), None);
        assert_eq!(parsed("12:memory:/\n0::/\n"), None);
        assert_eq!(parsed("garbage"), None);
        // Not a pod: "pod" inside another word, or a UID of the wrong shape.
        assert_eq!(parsed(&format!("0::/ipods/pod1234/{ID}\n")), Some((None, ID.to_string())));
    }

    #[test]
    fn only_hostname_is_taken_from_the_environment() {
        let env = b"PATH=/usr/bin\0API_TOKEN=secret\0HOSTNAME=client-7d9f-x2x\0HOME=/\0";
        assert_eq!(hostname_of(env).as_deref(), Some("client-7d9f-x2x"));
        assert_eq!(hostname_of(b"PATH=/bin\0MY_HOSTNAME=x\0"), None);
        assert!(is_dns_name("client-7d9f-x2x") && is_dns_name("team.a"));
        assert!(!is_dns_name("") && !is_dns_name("Bad Name") && !is_dns_name("x{y}"));
    }

    /// This test process runs in whatever the machine gives it: reading it
    /// must not fail, and a host process has no pod.
    #[test]
    fn reads_a_live_process() {
        let me = PodIdentity::read(Path::new("/proc"), std::process::id());
        if let Some(id) = me {
            assert_eq!(id.container.len(), 64);
        }
        assert_eq!(PodIdentity::read(Path::new("/proc"), u32::MAX - 1), None);
        // Whatever runs here, reading every process's cgroup does not fail.
        let _ = pods_on_node(Path::new("/proc"));
    }
}
