//! Learns queues and converters from the pyWATS client's own config JSON
//! (`pywats_client/core/config.py`: snake_case keys), read through
//! `/proc/<pid>/root` so a containerised client works too.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::fs::{
    config::QueueSpec,
    converter::ConverterSpec,
    preset::Preset,
    root::{FileKind, TargetRoot},
};

/// Where the client keeps its config on Linux (`get_default_config_path`).
pub const CONFIG_DIR: &str = "/var/lib/pywats";

#[derive(Debug, Deserialize)]
struct ClientConfig {
    instance_id: Option<String>,
    service_address: Option<String>,
    reports_folder: Option<String>,
    #[serde(default)]
    converters: Vec<ClientConverter>,
    converters_enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct ClientConverter {
    name: String,
    #[serde(default)]
    watch_folder: String,
    #[serde(default)]
    done_folder: String,
    #[serde(default)]
    error_folder: String,
    #[serde(default)]
    pending_folder: String,
    #[serde(default)]
    archive_folder: String,
    enabled: Option<bool>,
}

/// What a client config says to watch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Discovered {
    pub config: PathBuf,
    pub instance: Option<String>,
    /// The WATS server's URL (its calls are the `wats` dependency).
    pub service: Option<String>,
    pub queues: Vec<QueueSpec>,
    pub converters: Vec<ConverterSpec>,
}

/// The client's config file: `explicit` if given, else `config_default.json`,
/// `config.json`, or the only `config_*.json` in /var/lib/pywats.
pub fn find(proc_root: &Path, pid: u32, explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    let dir = Path::new(CONFIG_DIR);
    let root = TargetRoot::of(proc_root, pid);
    for name in ["config_default.json", "config.json"] {
        if root.is_file(&dir.join(name)) {
            return Some(dir.join(name));
        }
    }
    let entries = root.read_dir(dir).ok()?;
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with("config_") && n.ends_with(".json"))
        .map(|n| dir.join(n))
        .collect();
    (found.len() == 1).then(|| found.remove(0))
}

/// A folder setting: absolute, or relative to the config file's directory (as the client resolves it).
fn folder(base: &Path, value: &str) -> Option<PathBuf> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    let p = Path::new(v);
    Some(crate::fs::resolve::normalise(&if p.is_absolute() { p.to_path_buf() } else { base.join(p) }))
}

/// Reads the config at `config` (a path in the target's view).
pub fn read(proc_root: &Path, pid: u32, config: &Path) -> Result<Discovered, String> {
    let text = TargetRoot::of(proc_root, pid)
        .read_string(config, FileKind::ClientConfig)
        .map_err(|e| format!("cannot read pyWATS config {}: {e}", config.display()))?;
    parse(&text, config)
}

pub fn parse(text: &str, config: &Path) -> Result<Discovered, String> {
    let c: ClientConfig = serde_json::from_str(text).map_err(|e| format!("pyWATS config {}: {e}", config.display()))?;
    let base = config.parent().unwrap_or(Path::new("/"));
    let reports = folder(base, c.reports_folder.as_deref().unwrap_or("reports"));
    let queues = reports
        .map(|dir| QueueSpec { name: "reports".into(), dir, preset: Preset::service(), target: None })
        .into_iter()
        .collect();
    let converters = if c.converters_enabled == Some(false) {
        Vec::new()
    } else {
        c.converters
            .into_iter()
            .filter(|k| k.enabled != Some(false))
            .filter_map(|k| {
                Some(ConverterSpec {
                    watch: folder(base, &k.watch_folder)?,
                    done: folder(base, &k.done_folder),
                    error: folder(base, &k.error_folder),
                    archive: folder(base, &k.archive_folder),
                    pending: folder(base, &k.pending_folder),
                    name: k.name,
                })
            })
            .collect()
    };
    let service = c.service_address.filter(|s| !s.trim().is_empty());
    Ok(Discovered { config: config.to_path_buf(), instance: c.instance_id, service, queues, converters })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{
      "schema_version": "2.0", "instance_id": "line-7", "service_address": "https://wats.example.com",
      "api_token": "BASE64TOKEN", "reports_folder": "reports", "converters_enabled": true,
      "converters": [
        {"name": "CSV", "module_path": "m.C", "watch_folder": "/srv/in", "done_folder": "/srv/done",
         "error_folder": "/srv/err", "pending_folder": "", "post_action": "move", "archive_folder": "", "enabled": true},
        {"name": "off", "module_path": "m.D", "watch_folder": "/srv/off", "enabled": false},
        {"name": "nowatch", "module_path": "m.E"}
      ]
    }"#;

    #[test]
    fn reads_the_clients_config() {
        let d = parse(EXAMPLE, Path::new("/var/lib/pywats/config_default.json")).unwrap();
        assert_eq!(d.instance.as_deref(), Some("line-7"));
        assert_eq!(d.service.as_deref(), Some("https://wats.example.com"));
        assert_eq!(d.queues.len(), 1);
        assert_eq!(d.queues[0].dir, PathBuf::from("/var/lib/pywats/reports"));
        assert_eq!(d.queues[0].preset, Preset::service());
        assert_eq!(d.converters.len(), 1);
        let c = &d.converters[0];
        assert_eq!((c.name.as_str(), c.watch.as_path()), ("CSV", Path::new("/srv/in")));
        assert_eq!(
            (c.done.as_deref(), c.error.as_deref(), c.archive.as_deref()),
            (Some(Path::new("/srv/done")), Some(Path::new("/srv/err")), None)
        );
        assert!(parse("{not json", Path::new("/x.json")).is_err());
    }

    #[test]
    fn finds_the_config_through_the_process_root() {
        let me = std::process::id();
        let tmp = std::env::temp_dir().join(format!("pywats-discover-{me}"));
        std::fs::create_dir_all(&tmp).unwrap();
        let cfg = tmp.join("config_x.json");
        std::fs::write(&cfg, EXAMPLE).unwrap();
        assert_eq!(find(Path::new("/proc"), me, Some(&cfg)), Some(cfg.clone()));
        let d = read(Path::new("/proc"), me, &cfg).unwrap();
        assert_eq!(d.queues[0].dir, tmp.join("reports"));
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
