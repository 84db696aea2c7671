//! Converter executions: a file in the watch folder opened for reading starts
//! one; renaming it into done/archive or deleting it ends it with success,
//! renaming it into the error folder ends it with an error. A rename anywhere
//! else (a pending or work folder) carries the execution along.
//!
//! Executions no event ends are ended by the periodic re-read, as corrections
//! (neither success nor error): one whose file is gone from where it was last
//! seen (moved or deleted by a process the agent does not watch, or its event
//! lost), and one older than [`MAX_AGE_NS`] (a converter that leaves its input
//! in place, or a client that died).
//!
//! Files already in the watch folder when the watch begins are *waiting*, not
//! in progress: they start when a target opens them (the client's startup scan
//! opens every file it converts). One that a target moves to done/archive/error
//! or deletes without an open seen was opened before the agent started: its
//! execution is counted, without a duration.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

/// Files tracked per converter (in progress and waiting). Past it, pickups
/// are refused and counted (`pywats_agent_converter_untracked_total`).
pub const MAX_FILES: usize = 100_000;

/// An execution in progress for longer than this is ended (counted as
/// `pywats_agent_converter_corrections_total{reason="expired"}`).
pub const MAX_AGE_NS: u64 = 3600 * 1_000_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConverterSpec {
    pub name: String,
    pub watch: PathBuf,
    pub done: Option<PathBuf>,
    pub error: Option<PathBuf>,
    pub archive: Option<PathBuf>,
    /// Where the converter may move a file while working on it.
    pub pending: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Success,
    Error,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Error => "error",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    pub status: Status,
    /// Unknown for a file opened before the agent started.
    pub duration_ns: Option<u64>,
}

/// What a target opening a file of the converter did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pickup {
    Started,
    /// Not tracked: the converter holds [`MAX_FILES`] already.
    Untracked,
}

/// Executions a re-read ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Corrections {
    pub vanished: usize,
    pub expired: usize,
}

pub struct Converter {
    pub spec: ConverterSpec,
    /// Files being converted → start time (monotonic ns).
    running: HashMap<PathBuf, u64>,
    /// Files in the watch folder when the watch began, not picked up since.
    waiting: HashSet<PathBuf>,
    /// Running files the last re-read found gone → their start time.
    suspects: HashMap<PathBuf, u64>,
    cap: usize,
    max_age_ns: u64,
}

fn is_in(dir: &Option<PathBuf>, path: &Path) -> bool {
    dir.as_deref().is_some_and(|d| path.parent() == Some(d))
}

impl Converter {
    pub fn new(spec: ConverterSpec) -> Converter {
        Converter::with_limits(spec, MAX_FILES, MAX_AGE_NS)
    }

    pub fn with_limits(spec: ConverterSpec, cap: usize, max_age_ns: u64) -> Converter {
        Converter { spec, running: HashMap::new(), waiting: HashSet::new(), suspects: HashMap::new(), cap, max_age_ns }
    }

    pub fn in_progress(&self) -> usize {
        self.running.len()
    }

    fn full(&self) -> bool {
        self.running.len() + self.waiting.len() >= self.cap
    }

    /// Files found in the watch folder when the watch began; returns how many
    /// the cap refused.
    pub fn waiting(&mut self, files: impl IntoIterator<Item = PathBuf>) -> usize {
        let mut refused = 0;
        for f in files {
            if self.full() {
                refused += 1;
            } else {
                self.waiting.insert(f);
            }
        }
        refused
    }

    /// A target opened `path` for reading.
    pub fn opened(&mut self, path: &Path, ts_ns: u64) -> Option<Pickup> {
        let watched = path.parent() == Some(self.spec.watch.as_path()) || is_in(&self.spec.pending, path);
        if !watched || self.running.contains_key(path) {
            return None;
        }
        self.waiting.remove(path);
        if self.full() {
            return Some(Pickup::Untracked);
        }
        self.running.insert(path.to_path_buf(), ts_ns);
        Some(Pickup::Started)
    }

    pub fn renamed(&mut self, from: &Path, to: &Path, ts_ns: u64) -> Option<Finished> {
        let start = match self.running.remove(from) {
            Some(start) => Some(start),
            None if self.waiting.remove(from) => None,
            None => return None,
        };
        let status = if is_in(&self.spec.error, to) {
            Status::Error
        } else if is_in(&self.spec.done, to) || is_in(&self.spec.archive, to) {
            Status::Success
        } else {
            if let Some(start) = start {
                self.running.insert(to.to_path_buf(), start);
            }
            return None;
        };
        Some(Finished { status, duration_ns: start.map(|s| ts_ns.saturating_sub(s)) })
    }

    pub fn deleted(&mut self, path: &Path, ts_ns: u64) -> Option<Finished> {
        let start = match self.running.remove(path) {
            Some(start) => Some(start),
            None if self.waiting.remove(path) => None,
            None => return None,
        };
        Some(Finished { status: Status::Success, duration_ns: start.map(|s| ts_ns.saturating_sub(s)) })
    }

    /// The files in progress, for a re-read to check.
    pub fn running_files(&self) -> Vec<PathBuf> {
        self.running.keys().cloned().collect()
    }

    /// Applies a re-read: `gone` are files in progress that no longer exist.
    /// Their events may still be in flight, so an execution is ended only when
    /// two re-reads in a row find its file gone. Then ends executions older
    /// than the age limit (`now_ns` monotonic).
    pub fn reconcile(&mut self, gone: Vec<PathBuf>, now_ns: u64) -> Corrections {
        let mut c = Corrections::default();
        let mut suspects = HashMap::new();
        for path in gone {
            let Some(&start) = self.running.get(&path) else { continue };
            if self.suspects.get(&path) == Some(&start) {
                self.running.remove(&path);
                c.vanished += 1;
            } else {
                suspects.insert(path, start);
            }
        }
        self.suspects = suspects;
        let before = self.running.len();
        self.running.retain(|_, start| now_ns.saturating_sub(*start) <= self.max_age_ns);
        c.expired = before - self.running.len();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ConverterSpec {
        ConverterSpec {
            name: "csv".into(),
            watch: "/in".into(),
            done: Some("/done".into()),
            error: Some("/err".into()),
            archive: Some("/arch".into()),
            pending: Some("/work".into()),
        }
    }

    fn conv() -> Converter {
        Converter::new(spec())
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn success_by_move_delete_and_archive() {
        let mut c = conv();
        assert_eq!(c.opened(&p("/in/a.csv"), 10), Some(Pickup::Started));
        assert_eq!(c.opened(&p("/in/a.csv"), 12), None);
        assert_eq!(c.in_progress(), 1);
        assert_eq!(
            c.renamed(&p("/in/a.csv"), &p("/done/a.csv"), 30),
            Some(Finished { status: Status::Success, duration_ns: Some(20) })
        );
        c.opened(&p("/in/b.csv"), 40);
        assert_eq!(c.deleted(&p("/in/b.csv"), 45), Some(Finished { status: Status::Success, duration_ns: Some(5) }));
        c.opened(&p("/in/c.csv"), 50);
        assert_eq!(c.renamed(&p("/in/c.csv"), &p("/arch/c.csv"), 51).unwrap().status, Status::Success);
        assert_eq!(c.in_progress(), 0);
    }

    #[test]
    fn error_and_moves_through_a_work_folder() {
        let mut c = conv();
        c.opened(&p("/in/x.csv"), 100);
        assert_eq!(c.renamed(&p("/in/x.csv"), &p("/work/x.csv"), 110), None);
        assert_eq!(c.in_progress(), 1);
        assert_eq!(
            c.renamed(&p("/work/x.csv"), &p("/err/x.csv"), 160),
            Some(Finished { status: Status::Error, duration_ns: Some(60) })
        );
    }

    #[test]
    fn other_files_are_ignored() {
        let mut c = conv();
        assert_eq!(c.opened(&p("/in/sub/deep.csv"), 1), None);
        assert_eq!(c.opened(&p("/elsewhere/a.csv"), 1), None);
        assert_eq!(c.in_progress(), 0);
        assert_eq!(c.deleted(&p("/in/never-opened.csv"), 2), None);
        assert_eq!(c.renamed(&p("/in/never-opened.csv"), &p("/done/x"), 2), None);
    }

    #[test]
    fn files_there_at_start_wait_until_picked_up() {
        let mut c = conv();
        assert_eq!(c.waiting([p("/in/old1.csv"), p("/in/old2.csv"), p("/in/old3.csv")]), 0);
        assert_eq!(c.in_progress(), 0);
        // Picked up after the start: a normal execution.
        c.opened(&p("/in/old1.csv"), 10);
        assert_eq!(c.in_progress(), 1);
        assert_eq!(c.renamed(&p("/in/old1.csv"), &p("/done/old1.csv"), 15).unwrap().duration_ns, Some(5));
        // Opened before the start: counted, with no duration.
        assert_eq!(
            c.renamed(&p("/in/old2.csv"), &p("/err/old2.csv"), 20),
            Some(Finished { status: Status::Error, duration_ns: None })
        );
        assert_eq!(c.deleted(&p("/in/old3.csv"), 20), Some(Finished { status: Status::Success, duration_ns: None }));
        // Each once.
        assert_eq!(c.deleted(&p("/in/old3.csv"), 21), None);
    }

    #[test]
    fn vanished_files_end_on_the_second_reread() {
        let mut c = conv();
        c.opened(&p("/in/a.csv"), 10);
        c.opened(&p("/in/b.csv"), 10);
        assert_eq!(c.reconcile(vec![p("/in/a.csv"), p("/in/b.csv")], 20), Corrections::default());
        // b's event was only late: it ends normally, and is not corrected.
        assert!(c.renamed(&p("/in/b.csv"), &p("/done/b.csv"), 21).is_some());
        // b comes back and is picked up again: a new execution, not a suspect.
        c.opened(&p("/in/b.csv"), 22);
        assert_eq!(c.reconcile(vec![p("/in/a.csv"), p("/in/b.csv")], 30), Corrections { vanished: 1, expired: 0 });
        assert_eq!(c.in_progress(), 1);
        assert_eq!(c.renamed(&p("/in/a.csv"), &p("/done/a.csv"), 31), None);
    }

    #[test]
    fn old_executions_expire() {
        let mut c = Converter::with_limits(spec(), MAX_FILES, 100);
        c.opened(&p("/in/a.csv"), 10);
        c.opened(&p("/in/b.csv"), 60);
        assert_eq!(c.reconcile(Vec::new(), 110), Corrections::default());
        assert_eq!(c.reconcile(Vec::new(), 111), Corrections { vanished: 0, expired: 1 });
        assert_eq!(c.in_progress(), 1);
    }

    #[test]
    fn the_cap_refuses_pickups() {
        let mut c = Converter::with_limits(spec(), 2, MAX_AGE_NS);
        assert_eq!(c.waiting([p("/in/w1"), p("/in/w2"), p("/in/w3")]), 1);
        assert_eq!(c.opened(&p("/in/new"), 1), Some(Pickup::Untracked));
        // A waiting file picked up makes no new entry.
        assert_eq!(c.opened(&p("/in/w1"), 1), Some(Pickup::Started));
        assert_eq!(c.in_progress(), 1);
    }
}
