//! Command line. Every flag can also come from a `PYWATS_AGENT_*` variable.

use std::{net::SocketAddr, path::PathBuf};

use clap::{CommandFactory, Parser, Subcommand};
use pywats_agent_ebpf::abi::{FS_EVENTS_BYTES, NET_EVENTS_BYTES};

use crate::{
    ebpf::features::{parse_require, Require},
    http::web_config::MAX_BCRYPT_COST,
    net::limits::NetLimits,
};

#[derive(Parser, Debug, Clone)]
#[command(name = "pywats-agent", version, about = "eBPF observability for an unmodified pyWATS client")]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Process to watch (repeatable, or comma separated). Its child processes are watched too.
    #[arg(long = "pid", value_name = "PID", env = "PYWATS_AGENT_PID", value_delimiter = ',')]
    pub pids: Vec<u32>,

    /// Watch every process whose command line contains PATTERN (repeatable),
    /// found at start and re-found within 2 s after a restart. Named by the
    /// pyWATS instance id, else the process name; a restarted client keeps its name.
    #[arg(long = "match", value_name = "PATTERN", env = "PYWATS_AGENT_MATCH", value_delimiter = ';')]
    pub matches: Vec<String>,

    /// With --match: adopt only processes of USER (a name or a uid;
    /// repeatable, or comma separated), by real and effective uid. Default:
    /// the owners of the pyWATS client's config files the agent sees
    /// (--pywats-config, else /var/lib/pywats/config*.json), else root.
    #[arg(long = "match-user", value_name = "USER", env = "PYWATS_AGENT_MATCH_USER", value_delimiter = ',')]
    pub match_users: Vec<String>,

    /// With --match: adopt only processes whose executable (/proc/<pid>/exe,
    /// symlinks resolved) matches PATH_OR_GLOB (repeatable, or `;` separated),
    /// e.g. `/usr/bin/python3.*`.
    #[arg(long = "match-exe", value_name = "PATH_OR_GLOB", env = "PYWATS_AGENT_MATCH_EXE", value_delimiter = ';')]
    pub match_exes: Vec<String>,

    /// With --match: at most this many live targets; a process found past it
    /// waits for room (`pywats_agent_match_rejected_total{reason="limit"}`).
    #[arg(long, value_name = "N", env = "PYWATS_AGENT_MAX_TARGETS", default_value_t = 64)]
    pub max_targets: usize,

    /// With --match: a target whose process exited (and whose name no new
    /// process took) is forgotten this many seconds later, with its series.
    #[arg(long, value_name = "SECS", env = "PYWATS_AGENT_FORGET_EXITED_AFTER", default_value_t = 3600)]
    pub forget_exited_after: u64,

    /// Address of the metrics and health server. Loopback by default: a
    /// deployment that is scraped from elsewhere says so (the systemd unit,
    /// the image and the DaemonSet set `0.0.0.0:9090`).
    #[arg(long, value_name = "ADDR", env = "PYWATS_AGENT_LISTEN", default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,

    /// TLS and basic-auth users for the server, in the Prometheus exporter
    /// toolkit's format (`--web.config.file` of node_exporter): `tls_server_config`
    /// and `basic_auth_users` (bcrypt hashes). Re-read on SIGHUP.
    #[arg(long, value_name = "FILE", env = "PYWATS_AGENT_WEB_CONFIG")]
    pub web_config: Option<PathBuf>,

    /// A file holding a bearer token that is accepted besides the basic-auth
    /// users (`Authorization: Bearer TOKEN`). Re-read on SIGHUP.
    #[arg(long, value_name = "FILE", env = "PYWATS_AGENT_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// Require credentials on `/health/live` and `/health/ready` too (by
    /// default they answer without, so that probes need no secret).
    #[arg(long, env = "PYWATS_AGENT_AUTH_PROBES")]
    pub auth_probes: bool,

    /// Serve `/debug/requests` (the last requests: endpoints, peers,
    /// correlation ids). Off by default.
    #[arg(long, env = "PYWATS_AGENT_DEBUG_REQUESTS")]
    pub debug_requests: bool,

    /// Connections the server holds at once; past it a new connection
    /// replaces the connection idle longest, and with none idle it is accepted
    /// and closed at once (`pywats_agent_limit_hits_total{limit="http_connections"}`).
    /// Lowered to a quarter of the open-file limit when that is smaller.
    #[arg(long, value_name = "N", env = "PYWATS_AGENT_WEB_MAX_CONNECTIONS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub web_max_connections: u32,

    /// Connections one peer (an IPv4 address, an IPv6 /64) may hold at once.
    /// Past this, or past --web-max-connections, a new connection replaces
    /// an idle keep-alive one (`limit="http_idle_evicted"`), else it is closed
    /// at once (`limit="http_connections_per_peer"`).
    #[arg(long, value_name = "N", env = "PYWATS_AGENT_WEB_MAX_CONNECTIONS_PER_PEER", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub web_max_connections_per_peer: u32,

    /// Seconds a client has to send a whole request head, from the
    /// connection's start or the head's first byte (`limit="http_header_timeout"`).
    #[arg(long, value_name = "SECS", env = "PYWATS_AGENT_WEB_HEADER_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub web_header_timeout: u64,

    /// Seconds a keep-alive connection may wait for its next request.
    #[arg(long, value_name = "SECS", env = "PYWATS_AGENT_WEB_IDLE_TIMEOUT", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub web_idle_timeout: u64,

    /// The node this agent runs on, shown in `/health/details` (a DaemonSet
    /// passes it from the downward API).
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// Stable name of a target, the `target` label (repeatable: the n-th name goes with the
    /// n-th --pid). Without it: the client's instance id, else the pod's or the process name
    /// (see "Target names" in --help).
    #[arg(long = "target-name", value_name = "NAME", env = "PYWATS_AGENT_TARGET_NAME", value_delimiter = ',')]
    pub target_names: Vec<String>,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, value_name = "LEVEL", env = "PYWATS_AGENT_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// An extra endpoint template (repeatable), matched before the WATS routes,
    /// e.g. `/api/Custom/{station}/Status`.
    #[arg(long = "route", value_name = "TEMPLATE", env = "PYWATS_AGENT_ROUTE", value_delimiter = ',')]
    pub routes: Vec<String>,

    /// Distinct endpoint label values per target and role (client, server)
    /// before new ones become `other`.
    #[arg(long, value_name = "N", env = "PYWATS_AGENT_MAX_ENDPOINTS", default_value_t = 500)]
    pub max_endpoints: usize,

    /// Distinct (method, endpoint, code) label sets per target and role; past
    /// it a new set is recorded as `other` for all three
    /// (`pywats_agent_limit_hits_total{limit="target_series"}`).
    #[arg(long, value_name = "N", env = "PYWATS_AGENT_MAX_SERIES", default_value_t = 1000)]
    pub max_series: usize,

    /// Connections tracked at once; past it the least recently active one is
    /// evicted (counted in `pywats_agent_limit_hits_total{limit="connections"}`).
    #[arg(long, value_name = "N", env = "PYWATS_AGENT_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// A connection without events for this long is evicted: its close
    /// event may have been lost (`limit="connection_idle"`).
    #[arg(long, value_name = "SECS", env = "PYWATS_AGENT_CONNECTION_IDLE_SECS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub connection_idle_secs: u64,

    /// Bytes all connections may hold together (partial heads and frames,
    /// HPACK tables, waiting requests), in MiB; past it the least recently
    /// active are evicted (`limit="buffered_bytes"`).
    #[arg(long, value_name = "MIB", env = "PYWATS_AGENT_MAX_BUFFERED_MIB", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_buffered_mib: u32,

    /// A queue directory to watch: `NAME=DIR[:PRESET]`, preset `service`
    /// (`X.queued → X.processing → X.completed | X.error`, the default) or
    /// `persistent` (`X.pending.wsjf → X.processing.wsjf → …`). Repeatable.
    #[arg(long = "queue", value_name = "NAME=DIR[:PRESET]", env = "PYWATS_AGENT_QUEUE", value_delimiter = ';')]
    pub queues: Vec<String>,

    /// A converter to watch: `NAME=WATCH_DIR,done=DIR,error=DIR[,archive=DIR][,pending=DIR]`. Repeatable.
    #[arg(long = "converter", value_name = "SPEC", env = "PYWATS_AGENT_CONVERTER", value_delimiter = ';')]
    pub converters: Vec<String>,

    /// TOML file with `[[queue]]`, `[[converter]]` and `route` entries.
    #[arg(long, value_name = "PATH", env = "PYWATS_AGENT_CONFIG")]
    pub config: Option<PathBuf>,

    /// The pyWATS client's config JSON (as the client sees the path). Without
    /// it the agent looks for /var/lib/pywats/config_default.json, config.json
    /// or a single config_*.json in each target's root, and watches the
    /// reports queue and the converters it names.
    #[arg(long, value_name = "PATH", env = "PYWATS_AGENT_PYWATS_CONFIG")]
    pub pywats_config: Option<PathBuf>,

    /// Do not look for the pyWATS client's config.
    #[arg(long, env = "PYWATS_AGENT_NO_DISCOVER")]
    pub no_discover: bool,

    /// A dependency (a server the client calls) without a call for this long
    /// is stale (`pywats_dependency_stale`): no longer reported down.
    #[arg(long, value_name = "SECS", env = "PYWATS_AGENT_DEPENDENCY_WINDOW", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub dependency_window: u64,

    /// A queue whose oldest item in processing has been there longer than
    /// this is stalled (`pywats_queue_stalled`).
    #[arg(long, value_name = "SECS", env = "PYWATS_AGENT_QUEUE_STALL_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub queue_stall_secs: u64,

    /// Seconds between re-reads of the queue directories.
    #[arg(long, value_name = "SECS", env = "PYWATS_AGENT_RECONCILE_INTERVAL", default_value_t = 10)]
    pub reconcile_interval: u64,

    /// Keep the kernel's run-time statistics of the agent's programs and export
    /// them (`pywats_agent_program_cpu_seconds_total`, `…_runs_total`). Off by
    /// default: while any process holds them on, every BPF program on the host
    /// (not only the agent's) reads the clock twice per run.
    #[arg(long, env = "PYWATS_AGENT_PROGRAM_STATS")]
    pub program_stats: bool,

    /// Fail the start when FEATURE is off on this kernel (repeatable, or
    /// comma separated): process_tree, http, https, http2, queues,
    /// converters, or all. By default a program the kernel refuses turns off
    /// its feature only, and the agent says so (`/health/details`,
    /// `pywats_agent_feature_enabled`).
    #[arg(long = "require", value_name = "FEATURE", env = "PYWATS_AGENT_REQUIRE", value_delimiter = ',',
          value_parser = parse_require)]
    pub require: Vec<Require>,

    /// Size of the socket-event ring buffer in KiB (a power of two, at least 4).
    /// Resident memory is twice this (the ring is mapped twice).
    #[arg(long, value_name = "KIB", env = "PYWATS_AGENT_NET_RING_KIB", value_parser = ring_kib,
          default_value_t = NET_EVENTS_BYTES / 1024)]
    pub net_ring_kib: u32,

    /// Size of the file-event ring buffer in KiB (a power of two, at least 4).
    #[arg(long, value_name = "KIB", env = "PYWATS_AGENT_FS_RING_KIB", value_parser = ring_kib,
          default_value_t = FS_EVENTS_BYTES / 1024)]
    pub fs_ring_kib: u32,

    /// Keep every capability the agent started with. By default, once the
    /// programs are attached, it keeps only what its later work needs (the
    /// log names them; see docs/guides/operations.md, "Least privilege"): for debugging a kernel that wants more.
    #[arg(long, env = "PYWATS_AGENT_KEEP_CAPABILITIES")]
    pub keep_capabilities: bool,

    /// Where procfs is mounted (`/host/proc` in a container watching its host).
    #[arg(long, value_name = "PATH", env = "PYWATS_AGENT_PROC_ROOT", default_value = "/proc")]
    pub proc_root: PathBuf,
}

/// Tools that run instead of the agent.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Print the bcrypt hash of a password for `basic_auth_users` of --web-config. The
    /// password is read from standard input (asked twice, unechoed, on a terminal), never
    /// from the command line: `pywats-agent hash-password < FILE`.
    HashPassword {
        /// bcrypt cost: each step doubles the CPU of every check the agent makes.
        #[arg(long, value_name = "N", default_value_t = 10,
              value_parser = clap::value_parser!(u32).range(4..=i64::from(MAX_BCRYPT_COST)))]
        cost: u32,
    },
}

/// How targets are named, for `--help`: what the code does in
/// `target::matching` and `proc::targets`.
const TARGET_NAMES: &str = "\
Target names (the `target` label), the first that applies:
  1. --target-name (the n-th name for the n-th --pid)
  2. the instance_id in the pyWATS client's config (read inside the client's root)
  3. the Kubernetes pod's name (from the client's environment)
  4. the process name
  A name a live target already has gets -2, -3... in the order the processes were
  found. A client found by --match after a restart takes the name of the exited
  target it asks for (or of an exited name-2, name-3...), so its series continue.";

/// The full `--help`: every option with its variable, then the variables
/// together and how targets are named.
pub fn command() -> clap::Command {
    let vars: Vec<String> =
        Args::command().get_arguments().filter_map(|a| a.get_env()).map(|v| v.to_string_lossy().into_owned()).collect();
    let mut lines: Vec<String> = Vec::new();
    for var in vars {
        match lines.last_mut() {
            Some(line) if line.len() + var.len() < 88 => {
                line.push_str("  ");
                line.push_str(&var);
            }
            _ => lines.push(format!("  {var}")),
        }
    }
    let after = format!(
        "Environment: every option can be set by its variable (shown with it above); an\n\
         option on the command line wins over its variable. The systemd unit reads them\n\
         from /etc/default/pywats-agent.\n{}\n\n{TARGET_NAMES}",
        lines.join("\n")
    );
    Args::command().after_long_help(after)
}

impl Args {
    /// The caps on tracked connections.
    pub fn net_limits(&self) -> NetLimits {
        NetLimits {
            max_connections: self.max_connections as usize,
            idle_ns: self.connection_idle_secs.saturating_mul(1_000_000_000),
            max_buffered: (self.max_buffered_mib as usize) << 20,
            max_series: self.max_series,
        }
    }
}

/// A ring size: the kernel wants a power-of-two multiple of the page size.
fn ring_kib(s: &str) -> Result<u32, String> {
    let kib: u32 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if kib < 4 || !kib.is_power_of_two() || kib > 1024 * 1024 {
        return Err(format!("{kib} KiB: a ring size is a power of two from 4 KiB to 1 GiB"));
    }
    Ok(kib)
}
