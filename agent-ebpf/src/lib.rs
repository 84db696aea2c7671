//! The kernel/user contract of pywats-agent.
//!
//! This library compiles for both `bpfel-unknown-none` (used by the programs in
//! `main.rs`) and the host (used by the agent with the `user` feature), so every
//! wire struct, map name and constant is defined exactly once.
#![cfg_attr(not(test), no_std)]

pub mod abi;
