//! Applies decoded kernel events to the agent's state.

use std::{path::Path, sync::RwLock};

use pywats_agent_ebpf::abi::{DecodeError, Event, EventKind};

use crate::{
    metrics::Metrics,
    proc::{targets::Change, tree, Targets},
};

/// Handles one ring-buffer record.
pub fn handle(record: &[u8], targets: &RwLock<Targets>, metrics: &Metrics, proc_root: &Path) {
    let event = match Event::decode(record) {
        Ok(e) => e,
        Err(e) => {
            let reason = match e {
                DecodeError::Short { .. } => "short",
                DecodeError::UnknownKind(_) => "unknown_kind",
            };
            metrics.decode_errors.with_label_values(&[reason]).inc();
            tracing::debug!("undecodable event: {e:?}");
            return;
        }
    };
    match event {
        Event::Proc(kind, ev) => {
            metrics.events.with_label_values(&[kind.name()]).inc();
            let mut targets = targets.write().expect("targets lock");
            let change = match kind {
                EventKind::ProcFork => targets.add_child(ev.root_tgid, ev.child_tgid),
                EventKind::ProcExit => targets.exited(ev.root_tgid, ev.header.tgid),
                EventKind::ProcExec => {
                    targets.exec(ev.root_tgid, ev.header.tgid, tree::exe_of(proc_root, ev.header.tgid))
                }
            };
            log(&change);
        }
    }
}

pub fn log(change: &Change) {
    match change {
        Change::ChildJoined { target, child } => tracing::debug!(target_name = %target, "child process {child} joined"),
        Change::ChildLeft { target, child } => tracing::debug!(target_name = %target, "child process {child} exited"),
        Change::TargetExited { target, pid } => tracing::warn!(target_name = %target, "target process {pid} exited"),
        Change::Exec { target, pid } => tracing::debug!(target_name = %target, "process {pid} called exec"),
        Change::Unknown => {}
    }
}
