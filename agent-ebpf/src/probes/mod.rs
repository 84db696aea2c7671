//! One module per probe family.

mod fs;
mod net;
mod sched;
pub mod syscalls;
mod tls;
