//! Queue and converter metrics from the file events of targets.

pub mod config;
pub mod converter;
pub mod discover;
pub mod metrics;
pub mod queue;
pub mod resolve;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::SystemTime,
};

use pywats_agent_ebpf::abi::{EventKind, FsEvent};

use crate::{
    clock::monotonic_ns,
    fs::{
        config::QueueSpec,
        converter::{Converter, ConverterSpec, Finished},
        metrics::FsMetrics,
        queue::{Change, Items, State},
    },
};

const O_ACCMODE: u32 = 0o3;
const O_RDONLY: u32 = 0;
const O_CREAT: u32 = 0o100;
const AT_REMOVEDIR: u32 = 0x200;

struct WatchedQueue {
    spec: QueueSpec,
    target: String,
    items: Items,
}

struct WatchedConverter {
    conv: Converter,
    target: String,
}

pub struct FsPipeline {
    queues: Vec<WatchedQueue>,
    converters: Vec<WatchedConverter>,
    metrics: FsMetrics,
    proc_root: PathBuf,
}

/// Summary for `/health/details`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WatchSummary {
    pub kind: &'static str,
    pub name: String,
    pub target: String,
    pub dir: String,
    pub exists: bool,
    pub items: usize,
}

impl WatchedQueue {
    fn classify<'a>(&self, path: &'a Path) -> Option<(&'a str, State)> {
        if path.parent()? != self.spec.dir {
            return None;
        }
        self.spec.preset.classify(path.file_name()?.to_str()?)
    }
}

/// When a file entered its current name, on the monotonic clock: its ctime
/// (a rename updates it), shifted by how long ago that was.
fn since_monotonic(meta: &std::fs::Metadata, now_mono: u64, now_wall: SystemTime) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let ctime = SystemTime::UNIX_EPOCH + std::time::Duration::new(meta.ctime() as u64, meta.ctime_nsec() as u32);
    let ago = now_wall.duration_since(ctime).unwrap_or_default().as_nanos() as u64;
    now_mono.checked_sub(ago)
}

impl FsPipeline {
    pub fn new(
        queues: Vec<(QueueSpec, String)>,
        converters: Vec<(ConverterSpec, String)>,
        metrics: FsMetrics,
        proc_root: PathBuf,
    ) -> FsPipeline {
        let mut p = FsPipeline { queues: Vec::new(), converters: Vec::new(), metrics, proc_root };
        p.extend(queues, converters);
        p
    }

    /// Adds watches (a target found later brings its client's queues); one
    /// already watched (same name and directory) is not added twice. New
    /// queues are read from their directories at once.
    pub fn extend(&mut self, queues: Vec<(QueueSpec, String)>, converters: Vec<(ConverterSpec, String)>) {
        for (spec, target) in queues {
            if self.queues.iter().any(|q| q.spec.name == spec.name && q.spec.dir == spec.dir) {
                continue;
            }
            if !spec.dir.is_dir() {
                tracing::warn!(queue = %spec.name, "queue directory {} does not exist (yet): watching it anyway", spec.dir.display());
            }
            self.queues.push(WatchedQueue { spec, target, items: Items::default() });
            self.reconcile_queue(self.queues.len() - 1, true);
        }
        for (spec, target) in converters {
            if self.converters.iter().any(|c| c.conv.spec.name == spec.name && c.conv.spec.watch == spec.watch) {
                continue;
            }
            if !spec.watch.is_dir() {
                tracing::warn!(converter = %spec.name, "watch folder {} does not exist (yet): watching it anyway", spec.watch.display());
            }
            self.metrics.in_progress.with_label_values(&[&target, &spec.name]).set(0.0);
            self.converters.push(WatchedConverter { conv: Converter::new(spec), target });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty() && self.converters.is_empty()
    }

    pub fn watches(&self) -> Vec<WatchSummary> {
        let queues = self.queues.iter().map(|q| WatchSummary {
            kind: "queue",
            name: q.spec.name.clone(),
            target: q.target.clone(),
            dir: q.spec.dir.display().to_string(),
            exists: q.spec.dir.is_dir(),
            items: q.items.len(),
        });
        let converters = self.converters.iter().map(|c| WatchSummary {
            kind: "converter",
            name: c.conv.spec.name.clone(),
            target: c.target.clone(),
            dir: c.conv.spec.watch.display().to_string(),
            exists: c.conv.spec.watch.is_dir(),
            items: c.conv.in_progress(),
        });
        queues.chain(converters).collect()
    }

    fn gauges(&self, i: usize) {
        let q = &self.queues[i];
        let l = [q.target.as_str(), q.spec.name.as_str()];
        self.metrics.depth.with_label_values(&l).set(q.items.count(State::Queued) as i64);
        for st in State::ALL {
            self.metrics.items.with_label_values(&[l[0], l[1], st.name()]).set(q.items.count(st) as i64);
        }
    }

    fn apply(&self, i: usize, change: Option<Change>) {
        let q = &self.queues[i];
        let l = [q.target.as_str(), q.spec.name.as_str()];
        match change {
            Some(Change::Finished { state, duration_ns }) => {
                self.metrics.outcomes.with_label_values(&[l[0], l[1], state.name()]).inc();
                if let Some(ns) = duration_ns {
                    self.metrics
                        .processing
                        .with_label_values(&[l[0], l[1], q.spec.preset.item_type.as_str()])
                        .observe(ns as f64 / 1e9);
                }
            }
            Some(Change::Recovered) => self.metrics.transitions.with_label_values(&[l[0], l[1], "recovered"]).inc(),
            Some(Change::Retried) => self.metrics.transitions.with_label_values(&[l[0], l[1], "retried"]).inc(),
            Some(Change::Enqueued | Change::Started | Change::Removed) | None => {}
        }
        self.gauges(i);
    }

    fn converter_done(&self, j: usize, f: Option<Finished>) {
        let c = &self.converters[j];
        let l = [c.target.as_str(), c.conv.spec.name.as_str()];
        if let Some(f) = f {
            self.metrics.executions.with_label_values(&[l[0], l[1], f.status.name()]).inc();
            self.metrics.converter_duration.with_label_values(&l).observe(f.duration_ns as f64 / 1e9);
        }
        self.metrics.in_progress.with_label_values(&l).set(c.conv.in_progress() as f64);
    }

    fn path(&self, tgid: u32, dirfd: i32, bytes: &[u8]) -> Option<PathBuf> {
        let p = resolve::resolve(&self.proc_root, tgid, dirfd, bytes);
        if p.is_none() {
            self.metrics.path_errors.with_label_values(&["unresolved"]).inc();
        }
        p
    }

    pub fn on_event(&mut self, kind: EventKind, ev: &FsEvent, path1: &[u8], path2: &[u8]) {
        if self.is_empty() {
            return;
        }
        if ev.truncated != 0 {
            self.metrics.path_errors.with_label_values(&["truncated"]).inc();
            return;
        }
        let (tgid, ts) = (ev.header.tgid, ev.header.ts_ns);
        let Some(p1) = self.path(tgid, ev.header.fd, path1) else { return };
        match kind {
            EventKind::FsOpen => self.opened(&p1, ev.flags, ts),
            EventKind::FsRename => {
                if let Some(p2) = self.path(tgid, ev.dirfd2, path2) {
                    self.renamed(&p1, &p2, ts);
                }
            }
            EventKind::FsUnlink if ev.flags & AT_REMOVEDIR == 0 => self.deleted(&p1, ts),
            _ => {}
        }
    }

    fn opened(&mut self, path: &Path, flags: u32, ts: u64) {
        if flags & O_ACCMODE == O_RDONLY && flags & O_CREAT == 0 {
            for j in 0..self.converters.len() {
                let before = self.converters[j].conv.in_progress();
                self.converters[j].conv.opened(path, ts);
                if self.converters[j].conv.in_progress() != before {
                    self.converter_done(j, None);
                }
            }
        } else if flags & O_CREAT != 0 {
            for i in 0..self.queues.len() {
                if let Some((id, st)) = self.queues[i].classify(path) {
                    let id = id.to_string();
                    let change = self.queues[i].items.set(&id, st, ts);
                    self.apply(i, change);
                }
            }
        }
    }

    fn renamed(&mut self, from: &Path, to: &Path, ts: u64) {
        for i in 0..self.queues.len() {
            let f = self.queues[i].classify(from).map(|(id, st)| (id.to_string(), st));
            let t = self.queues[i].classify(to).map(|(id, st)| (id.to_string(), st));
            let q = &mut self.queues[i].items;
            let change = match (&f, &t) {
                (_, Some((id, st))) => {
                    if let Some((fid, fst)) = &f {
                        if fid != id {
                            q.forget(fid, *fst);
                        }
                    }
                    q.set(id, *st, ts)
                }
                (Some((fid, fst)), None) => {
                    q.forget(fid, *fst);
                    None
                }
                (None, None) => continue,
            };
            self.apply(i, change);
        }
        for j in 0..self.converters.len() {
            let f = self.converters[j].conv.renamed(from, to, ts);
            self.converter_done(j, f);
        }
    }

    fn deleted(&mut self, path: &Path, ts: u64) {
        for i in 0..self.queues.len() {
            if let Some((id, st)) = self.queues[i].classify(path) {
                let id = id.to_string();
                let change = self.queues[i].items.delete(&id, st, ts);
                self.apply(i, change);
            }
        }
        for j in 0..self.converters.len() {
            let f = self.converters[j].conv.deleted(path, ts);
            if f.is_some() {
                self.converter_done(j, f);
            }
        }
    }

    /// Re-reads every queue directory and corrects the state: `initial` at
    /// start (an agent started mid-run), later for missed events.
    pub fn reconcile(&mut self, initial: bool) {
        for i in 0..self.queues.len() {
            self.reconcile_queue(i, initial);
        }
    }

    fn reconcile_queue(&mut self, i: usize, initial: bool) {
        let (now_mono, now_wall) = (monotonic_ns(), SystemTime::now());
        let Ok(dir) = std::fs::read_dir(&self.queues[i].spec.dir) else {
            return self.gauges(i);
        };
        let mut listing: HashMap<String, (State, Option<u64>)> = HashMap::new();
        for entry in dir.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
            let Some((id, st)) = self.queues[i].spec.preset.classify(&name) else { continue };
            let since = entry.metadata().ok().and_then(|m| since_monotonic(&m, now_mono, now_wall));
            // While a rename is in flight two names may exist: the later state wins.
            let slot = listing.entry(id.to_string()).or_insert((st, since));
            if st > slot.0 {
                *slot = (st, since);
            }
        }
        let corrected = self.queues[i].items.reconcile(listing, initial);
        if corrected > 0 {
            let q = &self.queues[i];
            self.metrics.corrections.with_label_values(&[&q.target, &q.spec.name]).inc_by(corrected as u64);
        }
        self.gauges(i);
    }
}
