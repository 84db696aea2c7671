//! What the documentation tests read out of the code and the Markdown.

use std::{collections::BTreeSet, fs, path::Path};

/// String literals in code that look like metric names but are not: the
/// process-name pattern of the pyWATS client, the name of a feature.
const NOT_METRICS: [&str; 2] = ["pywats_client", "process_tree"];

/// Every metric family the agent can export: each is defined by a string
/// literal `"pywats_…"` (or `"process_…"`) in `agent/src` (the name given to `Opts::new` and the
/// like), so a new metric, whatever component registers it, is found here.
pub fn metric_families(src: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                out.extend(quoted_names(&text));
            }
        }
    }
    out.retain(|n| !NOT_METRICS.contains(&n.as_str()));
    out
}

/// `"pywats_[a-z0-9_]+"` literals, and the agent's own standard
/// `"process_[a-z0-9_]+"` ones. Every piece between two quotes is
/// tried (escaped quotes would break an inside/outside alternation); code
/// between literals never is a bare `pywats_…` name.
fn quoted_names(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split('"').filter_map(|s| {
        let valid = (s.starts_with("pywats_") || s.starts_with("process_"))
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        valid.then(|| s.to_string())
    })
}

/// Relative links of a Markdown text (`](path)` or `](path#anchor)`), not
/// web addresses or anchors within the page.
pub fn relative_links(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|s| s.split_once(')').map(|(link, _)| link))
        .map(|link| link.split('#').next().unwrap_or_default().to_string())
        .filter(|link| !link.is_empty() && !link.contains("://") && !link.starts_with("mailto:"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_metric_literals_and_links() {
        let code =
            r#"counter("pywats_a_total", "help with \"quotes\"", &["x"]); let p = "pywats_client"; "pywats_Bad""#;
        assert_eq!(quoted_names(code).collect::<Vec<_>>(), ["pywats_a_total", "pywats_client"]);
        let md = "see [the guide](../guides/x.md#part), [web](https://x.y/z) and [here](#top)";
        assert_eq!(relative_links(md), ["../guides/x.md"]);
    }
}
