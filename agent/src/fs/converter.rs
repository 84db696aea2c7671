//! Converter executions: a file in the watch folder opened for reading starts
//! one; renaming it into done/archive or deleting it ends it with success,
//! renaming it into the error folder ends it with an error. A rename anywhere
//! else (a pending or work folder) carries the execution along.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

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
    pub duration_ns: u64,
}

pub struct Converter {
    pub spec: ConverterSpec,
    /// Files being converted → start time.
    running: HashMap<PathBuf, u64>,
}

fn is_in(dir: &Option<PathBuf>, path: &Path) -> bool {
    dir.as_deref().is_some_and(|d| path.parent() == Some(d))
}

impl Converter {
    pub fn new(spec: ConverterSpec) -> Converter {
        Converter { spec, running: HashMap::new() }
    }

    pub fn in_progress(&self) -> usize {
        self.running.len()
    }

    /// A target opened `path` for reading.
    pub fn opened(&mut self, path: &Path, ts_ns: u64) {
        let watched = path.parent() == Some(self.spec.watch.as_path()) || is_in(&self.spec.pending, path);
        if watched && !self.running.contains_key(path) {
            self.running.insert(path.to_path_buf(), ts_ns);
        }
    }

    pub fn renamed(&mut self, from: &Path, to: &Path, ts_ns: u64) -> Option<Finished> {
        let start = self.running.remove(from)?;
        let status = if is_in(&self.spec.error, to) {
            Status::Error
        } else if is_in(&self.spec.done, to) || is_in(&self.spec.archive, to) {
            Status::Success
        } else {
            self.running.insert(to.to_path_buf(), start);
            return None;
        };
        Some(Finished { status, duration_ns: ts_ns.saturating_sub(start) })
    }

    pub fn deleted(&mut self, path: &Path, ts_ns: u64) -> Option<Finished> {
        let start = self.running.remove(path)?;
        Some(Finished { status: Status::Success, duration_ns: ts_ns.saturating_sub(start) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv() -> Converter {
        Converter::new(ConverterSpec {
            name: "csv".into(),
            watch: "/in".into(),
            done: Some("/done".into()),
            error: Some("/err".into()),
            archive: Some("/arch".into()),
            pending: Some("/work".into()),
        })
    }

    #[test]
    fn success_by_move_delete_and_archive() {
        let mut c = conv();
        c.opened(Path::new("/in/a.csv"), 10);
        c.opened(Path::new("/in/a.csv"), 12);
        assert_eq!(c.in_progress(), 1);
        assert_eq!(
            c.renamed(Path::new("/in/a.csv"), Path::new("/done/a.csv"), 30),
            Some(Finished { status: Status::Success, duration_ns: 20 })
        );
        c.opened(Path::new("/in/b.csv"), 40);
        assert_eq!(c.deleted(Path::new("/in/b.csv"), 45), Some(Finished { status: Status::Success, duration_ns: 5 }));
        c.opened(Path::new("/in/c.csv"), 50);
        assert_eq!(c.renamed(Path::new("/in/c.csv"), Path::new("/arch/c.csv"), 51).unwrap().status, Status::Success);
        assert_eq!(c.in_progress(), 0);
    }

    #[test]
    fn error_and_moves_through_a_work_folder() {
        let mut c = conv();
        c.opened(Path::new("/in/x.csv"), 100);
        assert_eq!(c.renamed(Path::new("/in/x.csv"), Path::new("/work/x.csv"), 110), None);
        assert_eq!(c.in_progress(), 1);
        assert_eq!(
            c.renamed(Path::new("/work/x.csv"), Path::new("/err/x.csv"), 160),
            Some(Finished { status: Status::Error, duration_ns: 60 })
        );
    }

    #[test]
    fn other_files_are_ignored() {
        let mut c = conv();
        c.opened(Path::new("/in/sub/deep.csv"), 1);
        c.opened(Path::new("/elsewhere/a.csv"), 1);
        assert_eq!(c.in_progress(), 0);
        assert_eq!(c.deleted(Path::new("/in/never-opened.csv"), 2), None);
    }
}
