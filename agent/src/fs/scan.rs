//! Directory re-reads. A periodic re-read must not hold the pipeline's lock
//! while it reads a directory of 100k files: the plan is taken under the lock
//! (a copy of a few settings, and the converters' files in progress), the
//! folders are read without it, and the result is applied under it again.
//! Events applied in between are newer than the listing and win over it
//! (`Items::begin_scan`). Folders are read inside their target's root.

use std::{
    collections::HashMap,
    io::ErrorKind,
    path::{Path, PathBuf},
    time::SystemTime,
};

use crate::{
    clock::monotonic_ns,
    fs::{
        preset::{Preset, State},
        queue::Listing,
        root::TargetRoot,
    },
};

/// What to read, taken under the lock by `FsPipeline::scan_plan`.
pub struct ScanPlan {
    pub(super) queues: Vec<QueueRead>,
    pub(super) converters: Vec<ConverterRead>,
}

pub(super) struct QueueRead {
    pub index: usize,
    pub root: TargetRoot,
    pub dir: PathBuf,
    pub preset: Preset,
    pub cap: usize,
}

pub(super) struct ConverterRead {
    pub index: usize,
    /// `None`: the target's files are out of reach (a container that
    /// exited): none of its files is known to be gone, but its executions
    /// in progress still end by age (`Converter::reconcile`).
    pub root: Option<TargetRoot>,
    pub running: Vec<PathBuf>,
}

/// What the folders held, for `FsPipeline::apply_scan`.
pub struct Scanned {
    pub(super) queues: Vec<(usize, Option<Listing>)>,
    /// Per converter: its files in progress that no longer exist.
    pub(super) converters: Vec<(usize, Vec<PathBuf>)>,
}

impl ScanPlan {
    /// Reads the folders; call it without holding the pipeline's lock.
    pub fn read(self) -> Scanned {
        let read = |q: QueueRead| (q.index, list_queue(&q.root, &q.dir, &q.preset, q.cap, Since::ReadTime));
        let queues = self.queues.into_iter().map(read).collect();
        let converters = self
            .converters
            .into_iter()
            .map(|c| (c.index, c.root.map(|r| gone(&r, c.running)).unwrap_or_default()))
            .collect();
        Scanned { queues, converters }
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

/// When the queued items of a listing entered their state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// Their files' ctime: a queue's first read, where every item is new to
    /// the agent (one `stat` per queued file, once).
    FileTimes,
    /// The time of the read: a periodic re-read, where a queued item the agent
    /// did not know of had its event missed (a lower bound of its age; the
    /// re-reads stay one `getdents` per batch for queued files).
    ReadTime,
}

/// The items in a queue directory, at most `cap` of them; `None` when the
/// directory cannot be read. Processing files are stat'ed (their ctime is
/// when processing started), queued ones as `queued` says; completed and
/// failed ones cost one `getdents` per batch.
pub fn list_queue(root: &TargetRoot, dir: &Path, preset: &Preset, cap: usize, queued: Since) -> Option<Listing> {
    let (now_mono, now_wall) = (monotonic_ns(), SystemTime::now());
    let entries = root.read_dir(dir).ok()?;
    let mut items: HashMap<Box<str>, (State, Option<u64>)> = HashMap::new();
    let mut complete = true;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((id, st)) = name.to_str().and_then(|n| preset.classify(n)) else { continue };
        let since = || match (st, queued) {
            (State::Processing, _) | (State::Queued, Since::FileTimes) => {
                entry.metadata().ok().and_then(|m| since_monotonic(&m, now_mono, now_wall))
            }
            (State::Queued, Since::ReadTime) => Some(now_mono),
            (State::Completed | State::Failed, _) => None,
        };
        let full = items.len() >= cap;
        match items.get_mut(id) {
            // While a rename is in flight two names may exist: the later state wins.
            Some(slot) if st > slot.0 => *slot = (st, since()),
            Some(_) => {}
            None if full => complete = false,
            None => {
                items.insert(id.into(), (st, since()));
            }
        }
    }
    Some(Listing { items, complete })
}

/// The files of a converter's watch folder (paths as the target sees them),
/// at most `cap` of them, and how many more there were.
pub fn list_files(root: &TargetRoot, dir: &Path, cap: usize) -> (Vec<PathBuf>, usize) {
    let (mut files, mut more) = (Vec::new(), 0);
    let Ok(entries) = root.read_dir(dir) else { return (files, more) };
    for e in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| !t.is_dir())) {
        if files.len() < cap {
            files.push(dir.join(e.file_name()));
        } else {
            more += 1;
        }
    }
    (files, more)
}

/// Which of `files` no longer exist.
fn gone(root: &TargetRoot, files: Vec<PathBuf>) -> Vec<PathBuf> {
    let missing =
        |f: &PathBuf| root.open(f, libc::O_PATH | libc::O_NOFOLLOW).is_err_and(|e| e.kind() == ErrorKind::NotFound);
    files.into_iter().filter(missing).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_items_and_stops_at_the_cap() {
        let dir = std::env::temp_dir().join(format!("pywats-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["a.queued", "a.processing", "b.processing", "b.error.info", "c.completed", "x.tmp"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let root = TargetRoot::own();
        let l = list_queue(&root, &dir, &Preset::service(), 10, Since::FileTimes).unwrap();
        assert!(l.complete);
        assert_eq!(l.items.len(), 3);
        let (a, b) = (l.items["a"], l.items["b"]);
        assert_eq!(a.0, State::Processing);
        assert!(a.1.is_some() && b.1.is_some(), "processing files carry their ctime");
        assert_eq!(l.items["c"], (State::Completed, None));
        let l = list_queue(&root, &dir, &Preset::service(), 2, Since::ReadTime).unwrap();
        assert!(!l.complete);
        assert_eq!(l.items.len(), 2);
        assert!(list_queue(&root, &dir.join("missing"), &Preset::service(), 10, Since::ReadTime).is_none());
        let (all, _) = list_files(&root, &dir, 100);
        assert_eq!(all.len(), 6);
        assert!(all.iter().all(|f| f.parent() == Some(dir.as_path())), "paths in the target's view: {all:?}");
        let (files, more) = list_files(&root, &dir, 4);
        assert_eq!((files.len(), more), (4, 2));
        assert_eq!(gone(&root, vec![dir.join("x.tmp"), dir.join("nope")]), vec![dir.join("nope")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A target in a container: its folders are read inside its root, and its
    /// files are named as it sees them (its events carry those names).
    #[test]
    fn reads_inside_the_targets_root() {
        let proc = std::env::temp_dir().join(format!("pywats-scan-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&proc);
        let inside = proc.join("7/root/q");
        std::fs::create_dir_all(&inside).unwrap();
        for f in ["a.queued", "b.txt"] {
            std::fs::write(inside.join(f), "").unwrap();
        }
        let (root, dir) = (TargetRoot::of(&proc, 7), Path::new("/q"));
        let before = monotonic_ns();
        let l = list_queue(&root, dir, &Preset::service(), 10, Since::ReadTime).unwrap();
        assert_eq!(l.items.len(), 1);
        // A re-read dates a queued item it finds by the read itself.
        let (state, since) = l.items["a"];
        assert_eq!(state, State::Queued);
        assert!(since.is_some_and(|t| (before..=monotonic_ns()).contains(&t)), "{since:?}");
        // A first read dates it by its file.
        let l = list_queue(&root, dir, &Preset::service(), 10, Since::FileTimes).unwrap();
        assert!(l.items["a"].1.is_some_and(|t| t <= before));
        let (mut files, more) = list_files(&root, dir, 10);
        files.sort();
        assert_eq!((files, more), (vec![dir.join("a.queued"), dir.join("b.txt")], 0));
        assert_eq!(gone(&root, vec![dir.join("b.txt"), dir.join("nope")]), vec![dir.join("nope")]);
        std::fs::remove_dir_all(&proc).unwrap();
    }
}
