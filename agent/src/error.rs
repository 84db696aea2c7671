//! Errors the agent reports to its operator. Messages say what to do.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum AgentError {
    #[error(
        "no target: give --match PATTERN to watch every process whose command line contains it \
         (e.g. --match pywats_client), or --pid PID (or PYWATS_AGENT_MATCH, PYWATS_AGENT_PID)"
    )]
    NoTarget,

    #[error("pid {0} does not exist")]
    NoSuchPid(u32),

    #[error("{names} --target-name values for {pids} --pid values: give at most one name per pid")]
    TooManyNames { names: usize, pids: usize },

    #[error("{0}")]
    InvalidRoute(String),

    #[error("{0}")]
    Config(String),

    /// `--web-config` or `--auth-token-file` (the message names the file and the key).
    #[error("{0}")]
    WebConfig(String),

    /// `hash-password`: what is wrong with the input (never the input itself).
    #[error("{0}")]
    Password(String),

    #[error("target name {0:?} is used twice: target names must be unique")]
    DuplicateName(String),

    #[error(
        "insufficient privileges: pywats-agent must run as root or with CAP_BPF and CAP_PERFMON \
         (and CAP_SYS_ADMIN for the libssl uprobes, i.e. HTTPS, and to mount tracefs){0}"
    )]
    Privileges(String),

    #[error("cannot drop the capabilities no later step needs ({0}): --keep-capabilities skips the drop")]
    Capabilities(String),

    #[error("tracefs is not mounted and mounting it failed ({0}): run `mount -t tracefs nodev /sys/kernel/tracing`")]
    Tracefs(std::io::Error),

    #[error("cannot read tracepoint format {path}: {source}")]
    TracepointFormat { path: PathBuf, source: std::io::Error },

    #[error("tracepoint {tracepoint} has no field {field} on this kernel")]
    TracepointField { tracepoint: &'static str, field: &'static str },

    #[error("the kernel refused the eBPF object: {}", chain(.0))]
    Load(#[from] aya::EbpfError),

    #[error("the kernel refused program {program}: {reason}")]
    Program { program: &'static str, reason: String },

    #[error("--require {feature}: {feature} is off: the kernel refused program {program}: {reason}")]
    FeatureOff { feature: &'static str, program: &'static str, reason: String },

    #[error("eBPF program {0} is missing from the object")]
    MissingProgram(&'static str),

    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),

    #[error("eBPF map {name}: {}", chain(.source))]
    Map { name: &'static str, source: aya::maps::MapError },

    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },

    #[error("{0}")]
    Io(#[from] std::io::Error),

    #[error("{part} stopped: {reason}")]
    PartStopped { part: &'static str, reason: String },
}

impl AgentError {
    /// Exit code: 2 for what the operator asked wrongly, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            AgentError::NoTarget
            | AgentError::NoSuchPid(_)
            | AgentError::TooManyNames { .. }
            | AgentError::DuplicateName(_)
            | AgentError::InvalidRoute(_)
            | AgentError::Config(_)
            | AgentError::WebConfig(_)
            | AgentError::Password(_) => 2,
            // A part of the running agent died: restart it (systemd, Kubernetes).
            AgentError::PartStopped { .. } => 3,
            _ => 1,
        }
    }
}

/// An error and its sources on one line, `a: b: c`.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = e.source();
    }
    out
}
