//! Everything that touches the kernel: privileges, tracefs, loading and
//! attaching the programs, reading their ring buffers.

pub mod features;
pub mod format;
#[cfg(test)]
mod kernel_needs;
pub mod libssl;
pub mod loader;
pub mod privileges;
pub mod reader;
pub mod targets;
mod test_refusal;
pub mod tls;
pub mod tracefs;

pub use loader::Probes;
pub use targets::KernelTargets;
