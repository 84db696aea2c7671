//! Sockets a process already holds when it becomes a target (or that survived
//! its exec): registered in the pipeline and in the kernel's socket map, so
//! their next requests are measured.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

use pywats_agent_ebpf::abi::{role, sock_state, SockInfo, SockKey, MAP_SOCKETS};

use crate::sync::Locked;
use crate::{
    ebpf::loader::SocketMap,
    error::AgentError,
    net::{
        conn::Role,
        seed::{existing_tcp, Existing},
        NetPipeline, SEEDED_CONN,
    },
};

/// Connection ids of sockets found open: above those the kernel hands out.
static NEXT_SEEDED: AtomicU64 = AtomicU64::new(SEEDED_CONN);

/// Registers the TCP sockets processes already hold (under each process's
/// current exec generation, `exec_gen`). The pipeline learns a connection
/// before the kernel reports anything of it; the two locks are taken one
/// after the other, never together.
pub fn seed_sockets(
    sockets: &Mutex<SocketMap>,
    net: &Mutex<NetPipeline>,
    tgids: &[u32],
    proc_root: &Path,
    exec_gen: impl Fn(u32) -> u32,
) -> Result<(), AgentError> {
    for &tgid in tgids {
        net.locked().seeding(tgid);
        let exec_gen = exec_gen(tgid);
        let mut entries = Vec::new();
        for existing in existing_tcp(proc_root, tgid) {
            entries.push(match existing {
                Existing::Listening { fd } => {
                    (fd, SockInfo { conn_id: 0, state: sock_state::CREATED, role: role::UNKNOWN, exec_gen, _pad: 0 })
                }
                Existing::Connected { fd, remote, role: r } => {
                    let id = NEXT_SEEDED.fetch_add(1, Ordering::Relaxed) + 1;
                    net.locked().seed(tgid, id, r, remote);
                    let kernel_role = if r == Role::Server { role::SERVER } else { role::CLIENT };
                    (fd, SockInfo { conn_id: id, state: sock_state::CONNECTED, role: kernel_role, exec_gen, _pad: 0 })
                }
            });
        }
        let mut map = sockets.locked();
        for (fd, info) in entries {
            map.insert(SockKey { tgid, fd }, info, 0)
                .map_err(|source| AgentError::Map { name: MAP_SOCKETS, source })?;
        }
    }
    Ok(())
}
