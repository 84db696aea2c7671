//! Targets: which processes are watched, their children, and their procfs gauges.

pub mod admission;
pub mod identity;
pub mod k8s;
pub mod sampler;
pub mod targets;
pub mod tree;

pub use targets::{TargetState, Targets};

/// A procfs file of a process, at most `cap` bytes of it: a process chooses
/// how large its command line, environment or map list is.
pub fn read_capped(path: &std::path::Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut data = Vec::new();
    std::fs::File::open(path)?.take(cap).read_to_end(&mut data)?;
    Ok(data)
}
