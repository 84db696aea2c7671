//! One module per probe family.

mod sched;
