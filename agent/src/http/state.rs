//! What the HTTP handlers read: the agent's own facts and handles to the
//! pipelines. Shared by the server (routes) and the health pages.

use std::{
    sync::{Arc, Mutex, RwLock},
    time::SystemTime,
};

use crate::{
    fs::FsPipeline,
    metrics::{LostEvents, Metrics},
    net::{dependency::Dependencies, recent::Recent, NetPipeline},
    proc::Targets,
    supervise::{Heartbeats, Stopped},
};

/// Facts about the agent itself, for health.
pub struct AgentStatus {
    pub started: SystemTime,
    pub kernel_release: String,
    /// `--node-name` (`NODE_NAME`), empty when not given.
    pub node: String,
    pub programs_expected: usize,
    /// What works on this kernel, and why what does not is off.
    pub features: crate::ebpf::features::FeatureReport,
    pub programs_attached: RwLock<Vec<&'static str>>,
    /// libssl files the TLS probes are attached to.
    pub tls_libraries: RwLock<Vec<String>>,
    /// Where the TLS programs are attached in them.
    pub tls_probes: RwLock<Vec<crate::ebpf::tls::TlsProbe>>,
    /// A part of the agent that stopped: the agent is about to exit.
    pub stopped: RwLock<Option<Stopped>>,
}

/// What the handlers read. Cloning is cheap.
#[derive(Clone)]
pub struct Shared {
    pub targets: Arc<RwLock<Targets>>,
    pub metrics: Arc<Metrics>,
    pub lost: Arc<LostEvents>,
    pub status: Arc<AgentStatus>,
    pub recent: Arc<Mutex<Recent>>,
    pub net: Arc<Mutex<NetPipeline>>,
    pub fs: Arc<Mutex<FsPipeline>>,
    pub deps: Arc<Mutex<Dependencies>>,
    /// Each part's progress.
    pub heartbeats: Arc<Heartbeats>,
}
