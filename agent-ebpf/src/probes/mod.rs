//! One module per probe family.

mod fs;
mod net;
mod sched;
mod tls;
