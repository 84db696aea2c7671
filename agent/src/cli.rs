//! Command line. Every flag can also come from a `PYWATS_AGENT_*` variable.

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(name = "pywats-agent", version, about = "eBPF observability for an unmodified pyWATS client")]
pub struct Args {
    /// Process to watch (repeatable, or comma separated). Its child processes are watched too.
    #[arg(long = "pid", value_name = "PID", env = "PYWATS_AGENT_PID", value_delimiter = ',')]
    pub pids: Vec<u32>,

    /// Address of the metrics and health server.
    #[arg(long, value_name = "ADDR", env = "PYWATS_AGENT_LISTEN", default_value = "0.0.0.0:9090")]
    pub listen: SocketAddr,

    /// Stable name of a target, the `target` label (repeatable: the n-th name goes with the
    /// n-th --pid). Defaults to the process name.
    #[arg(long = "target-name", value_name = "NAME", env = "PYWATS_AGENT_TARGET_NAME", value_delimiter = ',')]
    pub target_names: Vec<String>,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, value_name = "LEVEL", env = "PYWATS_AGENT_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// An extra endpoint template (repeatable), matched before the WATS routes,
    /// e.g. `/api/Custom/{station}/Status`.
    #[arg(long = "route", value_name = "TEMPLATE", env = "PYWATS_AGENT_ROUTE", value_delimiter = ',')]
    pub routes: Vec<String>,

    /// Distinct endpoint label values before new ones become `other`.
    #[arg(long, value_name = "N", env = "PYWATS_AGENT_MAX_ENDPOINTS", default_value_t = 500)]
    pub max_endpoints: usize,

    /// Where procfs is mounted (`/host/proc` in a container watching its host).
    #[arg(long, value_name = "PATH", env = "PYWATS_AGENT_PROC_ROOT", default_value = "/proc")]
    pub proc_root: PathBuf,
}
