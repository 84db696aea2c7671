//! Everything that touches the kernel: privileges, tracefs, loading and
//! attaching the programs, reading their ring buffers.

pub mod format;
pub mod libssl;
pub mod loader;
pub mod privileges;
pub mod reader;
pub mod targets;
pub mod tls;
pub mod tracefs;

pub use loader::Probes;
pub use targets::KernelTargets;
