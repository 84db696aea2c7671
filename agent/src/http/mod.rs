//! The agent's HTTP server: `/metrics` and the health endpoints.

mod health;
mod server;
mod state;

pub use server::{router, serve};
pub use state::{AgentStatus, Shared};
