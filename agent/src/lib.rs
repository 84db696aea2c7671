//! pywats-agent: Prometheus metrics of an unmodified pyWATS client, from eBPF
//! probes and procfs. The binary is `main.rs`; tests use this library.

pub mod app;
pub mod capabilities;
pub mod cli;
pub mod clock;
pub mod ebpf;
pub mod error;
pub mod fs;
pub mod hash_password;
pub mod http;
pub mod metrics;
pub mod net;
pub mod proc;
pub mod readers;
pub mod supervise;
pub mod sync;
pub mod target;
