//! The agent's HTTP server: `/metrics` and the health endpoints, with TLS,
//! credentials and limits.

pub mod access;
mod activity;
mod admission;
mod auth;
mod budget;
mod deadlines;
mod health;
pub mod limits;
mod listener;
mod negotiate;
mod peer;
mod render;
mod requests;
mod server;
mod state;
mod tls;
pub mod web_config;

pub use server::{serve, RouteOptions, ServerConfig};
pub use state::{AgentStatus, Shared};
