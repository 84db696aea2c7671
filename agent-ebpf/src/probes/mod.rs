//! One module per probe family.

mod net;
mod sched;
