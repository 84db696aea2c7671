//! Reads the Prometheus text exposition into (name, labels) → value.

use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
pub struct Samples {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
    /// `# TYPE` lines: name → type.
    pub types: BTreeMap<String, String>,
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    out
}

pub fn parse(text: &str) -> Samples {
    let mut s = Samples::default();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            if let Some((name, ty)) = t.split_once(' ') {
                s.types.insert(name.to_string(), ty.to_string());
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.trim_end_matches('}'))),
            None => (series, BTreeMap::new()),
        };
        s.samples.push((name.to_string(), labels, value));
    }
    s
}

impl Samples {
    /// The value of the one series of `name` whose labels include `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<f64> = self
            .samples
            .iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, _, v)| *v)
            .collect();
        assert!(found.len() <= 1, "{name} {labels:?} matches {} series", found.len());
        found.first().copied()
    }

    /// All series of `name`, with their labels.
    pub fn series(&self, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        self.samples.iter().filter(|(n, _, _)| n == name).map(|(_, l, v)| (l.clone(), *v)).collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_labels_and_escapes() {
        let s = super::parse("# TYPE a counter\na{x=\"1\",y=\"q\\\"z\"} 3\nb 4.5\nc{p=\"/a,b\"} 1e3\n");
        assert_eq!(s.get("a", &[("x", "1"), ("y", "q\"z")]), Some(3.0));
        assert_eq!(s.get("b", &[]), Some(4.5));
        assert_eq!(s.get("c", &[("p", "/a,b")]), Some(1000.0));
        assert_eq!(s.types["a"], "counter");
    }
}
