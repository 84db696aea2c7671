//! The agent's HTTP server: `/metrics` and the health endpoints.

mod health;
mod server;

pub use server::{router, serve, AgentStatus, Shared};
