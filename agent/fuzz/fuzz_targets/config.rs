//! The agent's configuration parsers on arbitrary text: the TOML `--config`
//! file, `--queue` and `--converter` flags, and the pyWATS client's config
//! JSON. They must never panic, and what they accept is usable: folders are
//! absolute (and, from the client's config, normalised).
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use pywats_agent::fs::{config, discover};

fn normal(p: &Path) -> bool {
    p.is_absolute() && p.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(file) = config::parse_file(text) {
        for q in file.queue {
            if let Ok(spec) = q.spec() {
                assert!(spec.dir.is_absolute());
            }
        }
        for c in file.converter {
            if let Ok((spec, _)) = c.spec() {
                assert!(spec.watch.is_absolute());
            }
        }
    }
    if let Ok(spec) = config::parse_queue_flag(text).and_then(|q| q.spec()) {
        assert!(spec.dir.is_absolute() && !spec.name.is_empty());
    }
    if let Ok((spec, _)) = config::parse_converter_flag(text).and_then(|c| c.spec()) {
        assert!(spec.watch.is_absolute());
    }
    for base in ["/var/lib/pywats/config.json", "relative.json", ""] {
        if let Ok(d) = discover::parse(text, Path::new(base)) {
            for q in &d.queues {
                assert!(normal(&q.dir), "{:?}", q.dir);
            }
            for c in &d.converters {
                assert!(normal(&c.watch), "{:?}", c.watch);
                for p in [&c.done, &c.error, &c.archive, &c.pending].into_iter().flatten() {
                    assert!(normal(p), "{p:?}");
                }
            }
        }
    }
});
