//! Queue and converter metrics from the file events of targets.

pub mod config;
pub mod converter;
pub mod discover;
pub mod metrics;
pub mod preset;
pub mod queue;
pub mod resolve;
pub mod scan;

use std::path::{Path, PathBuf};

use pywats_agent_ebpf::abi::{EventKind, FsEvent};

use crate::{
    clock::monotonic_ns,
    fs::{
        config::QueueSpec,
        converter::{Converter, ConverterSpec, Finished, Pickup, Status},
        metrics::{ConverterSeries, FsMetrics, QueueSeries},
        preset::State,
        queue::{Change, Items, Reconciled},
        scan::{ConverterRead, QueueRead, ScanPlan, Scanned},
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
    series: QueueSeries,
}

struct WatchedConverter {
    conv: Converter,
    target: String,
    series: ConverterSeries,
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
    /// folders are read at once (with the lock held: once per watch).
    pub fn extend(&mut self, queues: Vec<(QueueSpec, String)>, converters: Vec<(ConverterSpec, String)>) {
        for (spec, target) in queues {
            if self.queues.iter().any(|q| q.spec.name == spec.name && q.spec.dir == spec.dir) {
                continue;
            }
            if !spec.dir.is_dir() {
                tracing::warn!(queue = %spec.name, "queue directory {} does not exist (yet): watching it anyway", spec.dir.display());
            }
            let series = self.metrics.queue(&target, &spec.name, &spec.preset.item_type);
            let mut q = WatchedQueue { spec, target, items: Items::default(), series };
            q.items.begin_scan();
            let listing = scan::list_queue(&q.spec.dir, &q.spec.preset, queue::MAX_ITEMS);
            let r = q.items.reconcile(listing, true);
            q.reconciled(r);
            self.queues.push(q);
        }
        for (spec, target) in converters {
            if self.converters.iter().any(|c| c.conv.spec.name == spec.name && c.conv.spec.watch == spec.watch) {
                continue;
            }
            if !spec.watch.is_dir() {
                tracing::warn!(converter = %spec.name, "watch folder {} does not exist (yet): watching it anyway", spec.watch.display());
            }
            let series = self.metrics.converter(&target, &spec.name);
            let (files, more) = scan::list_files(&spec.watch, converter::MAX_FILES);
            let mut conv = Converter::new(spec);
            series.untracked.inc_by((more + conv.waiting(files)) as u64);
            let c = WatchedConverter { conv, target, series };
            c.finished(None);
            self.converters.push(c);
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
            for c in &mut self.converters {
                match c.conv.opened(path, ts) {
                    Some(Pickup::Started) => c.finished(None),
                    Some(Pickup::Untracked) => c.series.untracked.inc(),
                    None => {}
                }
            }
        } else if flags & O_CREAT != 0 {
            for q in &mut self.queues {
                if let Some((id, st)) = q.classify(path) {
                    let change = q.items.set(id, st, ts);
                    q.apply(change);
                }
            }
        }
    }

    fn renamed(&mut self, from: &Path, to: &Path, ts: u64) {
        for q in &mut self.queues {
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
        for c in &mut self.converters {
            let f = c.conv.renamed(from, to, ts);
            c.finished(f);
        }
    }

    fn deleted(&mut self, path: &Path, ts: u64) {
        for q in &mut self.queues {
            if let Some((id, st)) = q.classify(path) {
                let change = q.items.delete(id, st, ts);
                q.apply(change);
            }
        }
        for c in &mut self.converters {
            if let Some(f) = c.conv.deleted(path, ts) {
                c.finished(Some(f));
            }
        }
    }

    /// The first half of a periodic re-read, under the lock: what to read.
    /// From here on, events note what they change, so that the listings
    /// (older than those events) do not undo it.
    pub fn scan_plan(&mut self) -> ScanPlan {
        let queues = self
            .queues
            .iter_mut()
            .enumerate()
            .map(|(index, q)| {
                q.items.begin_scan();
                QueueRead { index, dir: q.spec.dir.clone(), preset: q.spec.preset.clone(), cap: queue::MAX_ITEMS }
            })
            .collect();
        let converters = self
            .converters
            .iter()
            .enumerate()
            .map(|(index, c)| ConverterRead { index, running: c.conv.running_files() })
            .collect();
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
