//! Wire types shared by the kernel programs and the agent.
//!
//! Every struct is `#[repr(C)]` with explicit padding and a compile-time size
//! check; kinds travel as plain `u32` and are converted with `TryFrom` on the
//! user side, never transmuted.

mod cpu;
mod event;
mod fs;
mod maps;
mod net;
mod offsets;
mod programs;
mod tls;

#[cfg(feature = "user")]
mod user;

pub use cpu::*;
pub use event::*;
pub use fs::*;
pub use maps::*;
pub use net::*;
pub use offsets::*;
pub use programs::*;
pub use tls::*;

#[cfg(feature = "user")]
pub use user::*;

/// Fails the build when a wire struct's size drifts from what both sides expect.
macro_rules! assert_size {
    ($t:ty, $n:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $n);
    };
}
pub(crate) use assert_size;
