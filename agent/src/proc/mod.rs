//! Targets: which processes are watched, their children, and their procfs gauges.

pub mod admission;
pub mod identity;
pub mod k8s;
pub mod sampler;
pub mod targets;
pub mod tree;

pub use targets::{TargetState, Targets};
