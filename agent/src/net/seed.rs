//! TCP sockets a target already had when the agent attached, from procfs, so
//! their next requests are measured too.

use std::{collections::HashMap, collections::HashSet, net::SocketAddr, path::Path};

use procfs::{
    net::TcpState,
    process::{FDTarget, Process},
};

use crate::net::conn::Role;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Existing {
    /// An established connection.
    Connected { fd: u32, remote: SocketAddr, role: Role },
    /// A listening socket: connections it accepts are tracked.
    Listening { fd: u32 },
}

pub fn existing_tcp(proc_root: &Path, pid: u32) -> Vec<Existing> {
    let Ok(process) = Process::new_with_root(proc_root.join(pid.to_string())) else {
        return Vec::new();
    };
    let mut by_inode: HashMap<u64, u32> = HashMap::new();
    if let Ok(fds) = process.fd() {
        for fd in fds.flatten() {
            if let FDTarget::Socket(inode) = fd.target {
                by_inode.insert(inode, fd.fd as u32);
            }
        }
    }
    // The TCP tables list every socket of the network namespace: not read
    // for a process that holds none (most execs, e.g. a converter's child).
    if by_inode.is_empty() {
        return Vec::new();
    }
    let entries: Vec<_> =
        process.tcp().unwrap_or_default().into_iter().chain(process.tcp6().unwrap_or_default()).collect();
    let listening: HashSet<u16> =
        entries.iter().filter(|e| e.state == TcpState::Listen).map(|e| e.local_address.port()).collect();
    entries
        .iter()
        .filter_map(|e| {
            let fd = *by_inode.get(&e.inode)?;
            match e.state {
                TcpState::Listen => Some(Existing::Listening { fd }),
                TcpState::Established => {
                    let role = if listening.contains(&e.local_address.port()) { Role::Server } else { Role::Client };
                    Some(Existing::Connected { fd, remote: e.remote_address, role })
                }
                _ => None,
            }
        })
        .collect()
}
