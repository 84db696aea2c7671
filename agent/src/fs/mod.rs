//! Queue and converter metrics from the file events of targets.

pub mod config;
pub mod converter;
pub mod discover;
pub mod metrics;
pub mod preset;
pub mod queue;
pub mod resolve;
pub mod root;
pub mod scan;
pub mod watches;
pub mod worker_status;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use pywats_agent_ebpf::abi::{EventKind, FsEvent};

use crate::sync::ReadWrite;
use crate::{
    clock::monotonic_ns,
    fs::{
        config::QueueSpec,
        converter::{Converter, ConverterSpec, Finished, Pickup, Status},
        metrics::{ConverterSeries, FsMetrics, QueueSeries},
        preset::State,
        queue::{Change, ItemBudget, Items, Reconciled},
        root::TargetRoot,
        scan::{ConverterRead, QueueRead, ScanPlan, Scanned},
        worker_status::QueueAges,
    },
    proc::Targets,
};

const O_ACCMODE: u32 = 0o3;
const O_RDONLY: u32 = 0;
const O_CREAT: u32 = 0o100;
const AT_REMOVEDIR: u32 = 0x200;

struct WatchedQueue {
    spec: QueueSpec,
    target: String,
    items: Items,
    series: QueueSeries,
}

struct WatchedConverter {
    conv: Converter,
    target: String,
    series: ConverterSeries,
}

/// Watches from the flags or the TOML file that wait for `--match` targets:
/// each target found gets its own (`None`: every target; else the one of that name).
#[derive(Default)]
pub struct Templates {
    pub queues: Vec<(QueueSpec, Option<String>)>,
    pub converters: Vec<(ConverterSpec, Option<String>)>,
}

pub struct FsPipeline {
    queues: Vec<WatchedQueue>,
    converters: Vec<WatchedConverter>,
    templates: Templates,
    metrics: FsMetrics,
    proc_root: PathBuf,
    targets: Arc<RwLock<Targets>>,
    /// Per target name: the agent's or pid 1's root when its last live
    /// process shared it (a bare station), so its folders can still be read
    /// after it exited.
    host_roots: HashMap<String, Option<TargetRoot>>,
    /// Items all queues may track together.
    budget: ItemBudget,
}

/// The target whose watches an event may touch; `None`: any.
#[derive(Clone, Copy)]
struct Scope<'a>(Option<&'a str>);

impl Scope<'_> {
    fn covers(self, target: &str) -> bool {
        self.0.is_none_or(|t| t == target)
    }
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

    /// Gauges from the counts kept per state: O(1).
    fn gauges(&self) {
        self.series.depth.set(self.items.count(State::Queued) as i64);
        for st in State::ALL {
            self.series.items[st.index()].set(self.items.count(st) as i64);
        }
    }

    fn apply(&self, change: Option<Change>) {
        let s = &self.series;
        match change {
            Some(Change::Finished { outcome, duration_ns }) => {
                s.outcome(outcome).inc();
                if let Some(ns) = duration_ns {
                    s.processing.observe(ns as f64 / 1e9);
                }
            }
            Some(Change::Recovered) => s.recovered.inc(),
            Some(Change::Retried) => s.retried.inc(),
            Some(Change::Untracked) => s.untracked.inc(),
            Some(Change::Enqueued | Change::Started | Change::Removed) | None => {}
        }
        self.gauges();
    }

    fn reconciled(&self, r: Reconciled) {
        if r.dropped {
            tracing::warn!(queue = %self.spec.name, "more items changed during a re-read of {} than the agent tracks: re-read dropped", self.spec.dir.display());
        }
        self.series.corrections.inc_by(r.corrected as u64);
        self.series.untracked.inc_by(r.untracked as u64);
        self.gauges();
    }
}

impl WatchedConverter {
    fn finished(&self, f: Option<Finished>) {
        let s = &self.series;
        if let Some(f) = f {
            match f.status {
                Status::Success => s.success.inc(),
                Status::Error => s.error.inc(),
            }
            if let Some(ns) = f.duration_ns {
                s.duration.observe(ns as f64 / 1e9);
            }
        }
        s.in_progress.set(self.conv.in_progress() as f64);
    }
}

impl FsPipeline {
    /// Folders are paths as their target sees them, read through its root.
    pub fn new(
        queues: Vec<(QueueSpec, String)>,
        converters: Vec<(ConverterSpec, String)>,
        templates: Templates,
        metrics: FsMetrics,
        proc_root: PathBuf,
        targets: Arc<RwLock<Targets>>,
    ) -> FsPipeline {
        let mut p = FsPipeline {
            queues: Vec::new(),
            converters: Vec::new(),
            templates,
            metrics,
            proc_root,
            targets,
            host_roots: HashMap::new(),
            budget: ItemBudget::default(),
        };
        p.extend(queues, converters);
        p
    }

    /// Adds watches (a target found later brings its client's queues); one
    /// already watched (same target, name and directory) is not added twice.
    /// New folders are read at once (with the lock held: once per watch).
    pub fn extend(&mut self, queues: Vec<(QueueSpec, String)>, converters: Vec<(ConverterSpec, String)>) {
        for (spec, target) in queues {
            if self.queues.iter().any(|q| q.target == target && q.spec.name == spec.name && q.spec.dir == spec.dir) {
                continue;
            }
            let root = self.root_of(&target);
            if !root.as_ref().is_some_and(|r| r.is_dir(&spec.dir)) {
                tracing::warn!(queue = %spec.name, target_name = %target, "queue directory {} does not exist (yet): watching it anyway", spec.dir.display());
            }
            let series = self.metrics.queue(&target, &spec.name, &spec.preset.item_type);
            let items = Items::new(queue::MAX_ITEMS, self.budget.clone());
            let mut q = WatchedQueue { spec, target, items, series };
            q.items.begin_scan();
            let first = scan::Since::FileTimes;
            let listing = root.and_then(|r| scan::list_queue(&r, &q.spec.dir, &q.spec.preset, queue::MAX_ITEMS, first));
            let r = q.items.reconcile(listing, true);
            q.reconciled(r);
            self.queues.push(q);
        }
        for (spec, target) in converters {
            let same = |c: &WatchedConverter| c.conv.spec.name == spec.name && c.conv.spec.watch == spec.watch;
            if self.converters.iter().any(|c| c.target == target && same(c)) {
                continue;
            }
            let root = self.root_of(&target);
            if !root.as_ref().is_some_and(|r| r.is_dir(&spec.watch)) {
                tracing::warn!(converter = %spec.name, target_name = %target, "watch folder {} does not exist (yet): watching it anyway", spec.watch.display());
            }
            let series = self.metrics.converter(&target, &spec.name);
            let (files, more) =
                root.map(|r| scan::list_files(&r, &spec.watch, converter::MAX_FILES)).unwrap_or_default();
            let mut conv = Converter::new(spec);
            series.untracked.inc_by((more + conv.waiting(files)) as u64);
            let c = WatchedConverter { conv, target, series };
            c.finished(None);
            self.converters.push(c);
        }
    }

    /// A `--match` target was found: it gets its own copy of the templates
    /// meant for it, its folders read through its own root.
    pub fn adopt(&mut self, target: &str) {
        let mine = |t: &Option<String>| t.as_deref().is_none_or(|t| t == target);
        let queues = self
            .templates
            .queues
            .iter()
            .filter(|(_, t)| mine(t))
            .map(|(q, _)| (q.clone(), target.to_string()))
            .collect();
        let converters = self
            .templates
            .converters
            .iter()
            .filter(|(_, t)| mine(t))
            .map(|(c, _)| (c.clone(), target.to_string()))
            .collect();
        self.extend(queues, converters);
    }

    /// A target that is gone: its watches go (their series with the target's).
    pub fn forget_target(&mut self, target: &str) {
        self.queues.retain(|q| q.target != target);
        self.converters.retain(|c| c.target != target);
        self.host_roots.remove(target);
    }

    /// Where `target`'s folders are read: through its process's root while
    /// it lives; after it exited, through the agent's or pid 1's root when it
    /// shared that (a bare station: its queue still fills), else nowhere (a
    /// container's files went with it).
    fn root_of(&mut self, target: &str) -> Option<TargetRoot> {
        let live = self.targets.read_locked().iter().find(|t| t.name == target && t.alive).map(|t| t.pid);
        let Some(pid) = live else { return self.host_roots.get(target).cloned().flatten() };
        let root = TargetRoot::of(&self.proc_root, pid);
        let id = root.identity();
        let host = [TargetRoot::own(), TargetRoot::of(&self.proc_root, 1)]
            .into_iter()
            .find(|h| id.is_some() && h.identity() == id);
        self.host_roots.insert(target.to_string(), host);
        Some(root)
    }

    /// The target a process belongs to: itself or an ancestor is one (or a
    /// child of it lately exited). `None` for a process gone before its fork
    /// event was applied.
    fn owner_of(&self, tgid: u32) -> Option<String> {
        let targets = self.targets.read_locked();
        let mut pid = tgid;
        // A child forked moments ago may not have joined its target yet (the
        // fork arrives through another ring): its ancestors tell.
        for _ in 0..16 {
            if let Some(name) = targets.name_of(pid) {
                return Some(name.to_string());
            }
            let stat = std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("stat")).ok()?;
            pid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            if pid <= 1 {
                return None;
            }
        }
        None
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty() && self.converters.is_empty()
    }

    /// Each queue's oldest queued and processing entry times: O(log n) per queue.
    pub fn worker_status(&self) -> Vec<QueueAges> {
        self.queues
            .iter()
            .map(|q| QueueAges {
                target: q.target.clone(),
                queue: q.spec.name.clone(),
                oldest_queued_ns: q.items.oldest(State::Queued),
                oldest_processing_ns: q.items.oldest(State::Processing),
            })
            .collect()
    }

    pub fn watches(&mut self) -> Vec<WatchSummary> {
        let mut out = Vec::new();
        for i in 0..self.queues.len() {
            let (target, dir) = (self.queues[i].target.clone(), self.queues[i].spec.dir.clone());
            let exists = self.root_of(&target).is_some_and(|r| r.is_dir(&dir));
            let q = &self.queues[i];
            out.push(WatchSummary {
                kind: "queue",
                name: q.spec.name.clone(),
                target,
                dir: dir.display().to_string(),
                exists,
                items: q.items.len(),
            });
        }
        for j in 0..self.converters.len() {
            let (target, dir) = (self.converters[j].target.clone(), self.converters[j].conv.spec.watch.clone());
            let exists = self.root_of(&target).is_some_and(|r| r.is_dir(&dir));
            let c = &self.converters[j];
            out.push(WatchSummary {
                kind: "converter",
                name: c.conv.spec.name.clone(),
                target,
                dir: dir.display().to_string(),
                exists,
                items: c.conv.in_progress(),
            });
        }
        out
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
        // Clients in different pods may use the same paths: an event counts
        // for its own target's watches only (for every watch when its process
        // is gone too soon to tell).
        let owner = self.owner_of(tgid);
        let by = Scope(owner.as_deref());
        match kind {
            EventKind::FsOpen => self.opened(by, &p1, ev.flags, ts),
            EventKind::FsRename => {
                if let Some(p2) = self.path(tgid, ev.dirfd2, path2) {
                    self.renamed(by, &p1, &p2, ts);
                }
            }
            EventKind::FsUnlink if ev.flags & AT_REMOVEDIR == 0 => self.deleted(by, &p1, ts),
            _ => {}
        }
    }

    fn opened(&mut self, by: Scope, path: &Path, flags: u32, ts: u64) {
        if flags & O_ACCMODE == O_RDONLY && flags & O_CREAT == 0 {
            for c in self.converters.iter_mut().filter(|c| by.covers(&c.target)) {
                match c.conv.opened(path, ts) {
                    Some(Pickup::Started) => c.finished(None),
                    Some(Pickup::Untracked) => c.series.untracked.inc(),
                    None => {}
                }
            }
        } else if flags & O_CREAT != 0 {
            for q in self.queues.iter_mut().filter(|q| by.covers(&q.target)) {
                if let Some((id, st)) = q.classify(path) {
                    let change = q.items.set(id, st, ts);
                    q.apply(change);
                }
            }
        }
    }

    fn renamed(&mut self, by: Scope, from: &Path, to: &Path, ts: u64) {
        for q in self.queues.iter_mut().filter(|q| by.covers(&q.target)) {
            let change = match (q.classify(from), q.classify(to)) {
                (f, Some((id, st))) => {
                    if let Some((fid, fst)) = f.filter(|(fid, _)| *fid != id) {
                        q.items.forget(fid, fst);
                    }
                    q.items.set(id, st, ts)
                }
                (Some((fid, fst)), None) => {
                    q.items.forget(fid, fst);
                    None
                }
                (None, None) => continue,
            };
            q.apply(change);
        }
        for c in self.converters.iter_mut().filter(|c| by.covers(&c.target)) {
            let f = c.conv.renamed(from, to, ts);
            c.finished(f);
        }
    }

    fn deleted(&mut self, by: Scope, path: &Path, ts: u64) {
        for q in self.queues.iter_mut().filter(|q| by.covers(&q.target)) {
            if let Some((id, st)) = q.classify(path) {
                let change = q.items.delete(id, st, ts);
                q.apply(change);
            }
        }
        for c in self.converters.iter_mut().filter(|c| by.covers(&c.target)) {
            if let Some(f) = c.conv.deleted(path, ts) {
                c.finished(Some(f));
            }
        }
    }

    /// The first half of a periodic re-read, under the lock: what to read,
    /// and through which root (a queue whose target has none now is left
    /// out; a converter is not: its executions still expire). From here on,
    /// events note what they change, so that the listings (older than those
    /// events) do not undo it.
    pub fn scan_plan(&mut self) -> ScanPlan {
        let mut queues = Vec::new();
        for index in 0..self.queues.len() {
            let Some(root) = self.root_of(&self.queues[index].target.clone()) else { continue };
            let q = &mut self.queues[index];
            q.items.begin_scan();
            let (dir, preset) = (q.spec.dir.clone(), q.spec.preset.clone());
            queues.push(QueueRead { index, root, dir, preset, cap: queue::MAX_ITEMS });
        }
        let mut converters = Vec::new();
        for index in 0..self.converters.len() {
            let root = self.root_of(&self.converters[index].target.clone());
            converters.push(ConverterRead { index, root, running: self.converters[index].conv.running_files() });
        }
        ScanPlan { queues, converters }
    }

    /// The second half, under the lock again: corrects what events missed,
    /// ends vanished and expired converter executions.
    pub fn apply_scan(&mut self, scanned: Scanned) {
        for (i, listing) in scanned.queues {
            let q = &mut self.queues[i];
            let r = q.items.reconcile(listing, false);
            q.reconciled(r);
        }
        let now = monotonic_ns();
        for (j, gone) in scanned.converters {
            let c = &mut self.converters[j];
            let fixed = c.conv.reconcile(gone, now);
            c.series.vanished.inc_by(fixed.vanished as u64);
            c.series.expired.inc_by(fixed.expired as u64);
            c.finished(None);
        }
    }
}
