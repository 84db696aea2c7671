//! File events of arbitrary kinds, flags and paths (queue and converter
//! folders, state suffixes, `..`, raw bytes) through the file pipeline, with
//! periodic re-reads in between; and the queue bookkeeping driven directly
//! with events and listings, its counts per state checked against a recount
//! after every step. It must never panic.
#![no_main]

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, OnceLock, RwLock},
};

use libfuzzer_sys::fuzz_target;
use pywats_agent::{
    fs::{
        config::QueueSpec,
        converter::ConverterSpec,
        metrics::FsMetrics,
        preset::{Preset, State},
        queue::{Items, Listing},
        FsPipeline, Templates,
    },
    metrics::Metrics,
    proc::{tree::ResolvedPid, Targets},
};
use pywats_agent_ebpf::abi::{EventKind, FsEvent, AT_FDCWD};

const DIRS: [&str; 9] = ["/fz/q", "/fz/p", "/fz/in", "/fz/done", "/fz/err", "/fz/arch", "/fz/work", "/fz/q/..", ""];
const SUFFIXES: [&str; 12] = [
    ".queued",
    ".processing",
    ".completed",
    ".error",
    ".error.info",
    ".pending.wsjf",
    ".processing.wsjf",
    ".completed.wsjf",
    ".failed.wsjf",
    ".meta.json",
    ".tmp",
    "",
];
const FLAGS: [u32; 4] = [0, 0o1 | 0o100, 0o2, 0o100];

/// Input bytes, read as choices.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> Option<T> {
        Some(from[self.byte()? as usize % from.len()])
    }

    /// A path from the vocabulary, or (high bit) raw bytes.
    fn path(&mut self) -> Option<Vec<u8>> {
        let b = self.byte()?;
        if b & 0x80 != 0 {
            let n = (b & 0x3f) as usize;
            let take = n.min(self.0.len());
            let (raw, rest) = self.0.split_at(take);
            self.0 = rest;
            return Some(raw.to_vec());
        }
        let dir = DIRS[b as usize % DIRS.len()];
        let id = ["a", "b", "c", ".d", "e.queued"][(b as usize / DIRS.len()) % 5];
        let suffix = self.pick(&SUFFIXES)?;
        Some(if dir.is_empty() { format!("{id}{suffix}") } else { format!("{dir}/{id}{suffix}") }.into_bytes())
    }
}

fn pipeline() -> FsPipeline {
    let q = |name: &str, dir: &str, preset: Preset| {
        (QueueSpec { name: name.into(), dir: dir.into(), preset, target: None }, "t".to_string())
    };
    let conv = ConverterSpec {
        name: "c".into(),
        watch: "/fz/in".into(),
        done: Some("/fz/done".into()),
        error: Some("/fz/err".into()),
        archive: Some("/fz/arch".into()),
        pending: Some("/fz/work".into()),
    };
    // One registry for all runs: building it is most of a run's cost otherwise.
    static METRICS: OnceLock<FsMetrics> = OnceLock::new();
    let metrics = METRICS.get_or_init(|| FsMetrics::new(&Metrics::new(std::time::SystemTime::now())));
    // The events' process (tgid 1) is target "t", owner of every watch.
    let me = ResolvedPid { pid: 1, start: 0, uids: (0, 0), comm: "t".into(), exe: String::new(), pod: None };
    let mut registry = Targets::default();
    registry.add(&me, None, "t");
    let targets = Arc::new(RwLock::new(registry));
    // No such procfs: relative paths are unresolved (and counted), not read from this machine.
    FsPipeline::new(
        vec![q("q", "/fz/q", Preset::service()), q("p", "/fz/p", Preset::persistent())],
        vec![(conv, "t".to_string())],
        Templates::default(),
        metrics.clone(),
        PathBuf::from("/nonexistent-proc"),
        targets,
    )
}

fn events(mut input: Input) {
    let mut fs = pipeline();
    let mut ts = 0u64;
    while let Some(op) = input.byte() {
        ts = ts.wrapping_add(u64::from(op) << (op % 48));
        let mut ev = FsEvent::default();
        ev.header.ts_ns = ts;
        ev.header.tgid = 1;
        ev.header.fd = AT_FDCWD;
        ev.dirfd2 = AT_FDCWD;
        ev.truncated = u32::from(op == 0xff);
        let Some(p1) = input.path() else { return };
        match op % 8 {
            0..=2 => {
                ev.flags = input.pick(&FLAGS).unwrap_or(0);
                fs.on_event(EventKind::FsOpen, &ev, &p1, &[]);
            }
            3..=5 => {
                let Some(p2) = input.path() else { return };
                fs.on_event(EventKind::FsRename, &ev, &p1, &p2);
            }
            6 => {
                ev.flags = if op & 0x10 != 0 { 0x200 } else { 0 };
                fs.on_event(EventKind::FsUnlink, &ev, &p1, &[]);
            }
            _ => {
                let plan = fs.scan_plan();
                fs.apply_scan(plan.read());
            }
        }
    }
}

fn recount(q: &Items) -> [usize; 4] {
    let mut counts = [0; 4];
    for st in q.states() {
        counts[st.index()] += 1;
    }
    counts
}

fn bookkeeping(mut input: Input) {
    let Some(cap) = input.byte() else { return };
    let cap = usize::from(cap % 16) + 1;
    let mut q = Items::with_cap(cap);
    let ids = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let mut ts = 0;
    while let Some(op) = input.byte() {
        ts += 1;
        let (Some(id), Some(st)) = (input.pick(&ids), input.pick(&State::ALL)) else { return };
        match op % 6 {
            0 | 1 => {
                q.set(id, st, ts);
            }
            2 => {
                q.delete(id, st, ts);
            }
            3 => {
                q.forget(id, st);
            }
            4 => q.begin_scan(),
            _ => {
                let Some(n) = input.byte() else { return };
                let mut items = HashMap::new();
                for _ in 0..n % 12 {
                    let (Some(id), Some(st)) = (input.pick(&ids), input.pick(&State::ALL)) else { return };
                    items.insert(Box::from(id), (st, Some(ts)));
                }
                let listing = (op & 0x40 == 0).then_some(Listing { items, complete: op & 0x20 == 0 });
                q.reconcile(listing, op & 0x80 != 0);
            }
        }
        assert!(q.len() <= cap);
        assert_eq!(State::ALL.map(|st| q.count(st)), recount(&q));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        events(Input(rest));
    } else {
        bookkeeping(Input(rest));
    }
});
