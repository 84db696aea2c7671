//! Which queues and converters to watch: `--queue`/`--converter` flags, a TOML
//! config file, and the pyWATS client's own config JSON.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::fs::{
    converter::ConverterSpec,
    preset::{Preset, State},
};

/// A queue to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: String,
    pub dir: PathBuf,
    pub preset: Preset,
    /// Target whose queue this is (its `target` label); the first target when unset.
    pub target: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub queue: Vec<QueueEntry>,
    #[serde(default)]
    pub converter: Vec<ConverterEntry>,
    /// Extra endpoint templates, like `--route`.
    #[serde(default)]
    pub route: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueEntry {
    pub name: String,
    pub dir: PathBuf,
    /// `service` or `persistent`; or give `states`.
    pub preset: Option<String>,
    /// Custom flavour: file suffix → `queued` | `processing` | `completed` | `failed`.
    pub states: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub ignore: Vec<String>,
    pub item_type: Option<String>,
    pub target: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConverterEntry {
    pub name: String,
    pub watch: PathBuf,
    pub done: Option<PathBuf>,
    pub error: Option<PathBuf>,
    pub archive: Option<PathBuf>,
    pub pending: Option<PathBuf>,
    pub target: Option<String>,
}

impl QueueEntry {
    pub fn spec(self) -> Result<QueueSpec, String> {
        let preset = match (self.preset.as_deref(), self.states) {
            (Some(_), Some(_)) => return Err(format!("queue {}: give `preset` or `states`, not both", self.name)),
            (Some(p), None) => Preset::by_name(p)
                .ok_or_else(|| format!("queue {}: unknown preset {p:?} (service, persistent)", self.name))?,
            (None, Some(states)) => {
                let states = states
                    .into_iter()
                    .map(|(suffix, st)| {
                        State::parse(&st)
                            .map(|st| (suffix, st))
                            .ok_or_else(|| format!("queue {}: unknown state {st:?}", self.name))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Preset {
                    name: "custom".into(),
                    item_type: self.item_type.clone().unwrap_or_else(|| "item".into()),
                    states,
                    ignore: self.ignore,
                }
            }
            (None, None) => Preset::service(),
        };
        if !self.dir.is_absolute() {
            return Err(format!("queue {}: directory {} is not absolute", self.name, self.dir.display()));
        }
        Ok(QueueSpec { name: self.name, dir: self.dir, preset, target: self.target })
    }
}

impl ConverterEntry {
    pub fn spec(self) -> Result<(ConverterSpec, Option<String>), String> {
        for p in
            [Some(&self.watch), self.done.as_ref(), self.error.as_ref(), self.archive.as_ref(), self.pending.as_ref()]
                .into_iter()
                .flatten()
        {
            if !p.is_absolute() {
                return Err(format!("converter {}: folder {} is not absolute", self.name, p.display()));
            }
        }
        let spec = ConverterSpec {
            name: self.name,
            watch: self.watch,
            done: self.done,
            error: self.error,
            archive: self.archive,
            pending: self.pending,
        };
        Ok((spec, self.target))
    }
}

/// `NAME=DIR[:PRESET]`.
pub fn parse_queue_flag(s: &str) -> Result<QueueEntry, String> {
    let (name, rest) = s.split_once('=').ok_or_else(|| format!("--queue {s:?}: expected NAME=DIR[:PRESET]"))?;
    let (dir, preset) = match rest.rsplit_once(':') {
        Some((d, p)) if Preset::by_name(p).is_some() => (d, Some(p.to_string())),
        _ => (rest, None),
    };
    if name.is_empty() || dir.is_empty() {
        return Err(format!("--queue {s:?}: expected NAME=DIR[:PRESET]"));
    }
    Ok(QueueEntry {
        name: name.into(),
        dir: dir.into(),
        preset,
        states: None,
        ignore: Vec::new(),
        item_type: None,
        target: None,
    })
}

/// `NAME=WATCH_DIR[,done=DIR][,error=DIR][,archive=DIR][,pending=DIR]`.
pub fn parse_converter_flag(s: &str) -> Result<ConverterEntry, String> {
    let bad = || format!("--converter {s:?}: expected NAME=WATCH_DIR,done=DIR,error=DIR[,archive=DIR][,pending=DIR]");
    let (name, rest) = s.split_once('=').ok_or_else(bad)?;
    let mut parts = rest.split(',');
    let watch = parts.next().filter(|w| !w.is_empty()).ok_or_else(bad)?;
    let mut c = ConverterEntry {
        name: name.into(),
        watch: watch.into(),
        done: None,
        error: None,
        archive: None,
        pending: None,
        target: None,
    };
    for part in parts {
        let (k, v) = part.split_once('=').ok_or_else(bad)?;
        let v = Some(PathBuf::from(v));
        match k {
            "done" => c.done = v,
            "error" => c.error = v,
            "archive" => c.archive = v,
            "pending" => c.pending = v,
            _ => return Err(bad()),
        }
    }
    Ok(c)
}

pub fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    parse_file(&text).map_err(|e| format!("config {}: {e}", path.display()))
}

/// The TOML text of a `--config` file.
pub fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        let q = parse_queue_flag("reports=/var/lib/pywats/reports:service").unwrap().spec().unwrap();
        assert_eq!(
            (q.name.as_str(), q.dir.as_path(), q.preset.name.as_str()),
            ("reports", Path::new("/var/lib/pywats/reports"), "service")
        );
        let q = parse_queue_flag("pq=/data/q:persistent").unwrap().spec().unwrap();
        assert_eq!(q.preset, Preset::persistent());
        assert!(parse_queue_flag("noequals").is_err());
        assert!(parse_queue_flag("rel=some/dir").unwrap().spec().is_err());
        let (c, _) = parse_converter_flag("csv=/in,done=/done,error=/err").unwrap().spec().unwrap();
        assert_eq!(
            (c.watch.as_path(), c.done.as_deref(), c.archive.as_deref()),
            (Path::new("/in"), Some(Path::new("/done")), None)
        );
        assert!(parse_converter_flag("csv=/in,bogus=/x").is_err());
    }

    #[test]
    fn toml_file() {
        let cfg: FileConfig = toml::from_str(
            r#"
            route = ["/api/Custom/{id}"]
            [[queue]]
            name = "reports"
            dir = "/r"
            preset = "service"
            [[queue]]
            name = "custom"
            dir = "/c"
            states = { ".new" = "queued", ".work" = "processing", ".ok" = "completed", ".bad" = "failed" }
            ignore = [".bad.log"]
            [[converter]]
            name = "csv"
            watch = "/in"
            done = "/done"
            error = "/err"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.route, ["/api/Custom/{id}"]);
        let mut queues = cfg.queue.into_iter().map(|q| q.spec().unwrap());
        assert_eq!(queues.next().unwrap().preset, Preset::service());
        let custom = queues.next().unwrap();
        assert_eq!(custom.preset.classify("x.work"), Some(("x", State::Processing)));
        assert_eq!(custom.preset.classify("x.bad.log"), None);
        assert!(toml::from_str::<FileConfig>("[[queue]]\nname='a'\ndir='/a'\nbogus=1").is_err());
    }
}
