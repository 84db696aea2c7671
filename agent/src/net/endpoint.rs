//! Turns request paths into bounded `endpoint` label values.
//!
//! Order: drop the query string and fragment; match the WATS API's own route
//! templates (from pyWATS's `routes.py`, plus any configured); otherwise
//! replace id-like segments (numbers, UUIDs, hex, long tokens) with `{id}`;
//! past `max_endpoints` distinct values, new ones become `other`.

use std::collections::HashSet;

/// Route templates of the WATS REST API, from `pywats-api` 0.6.0rc1.
const WATS_ROUTES: &str = include_str!("wats_routes.txt");

/// One segment of a template: literal text, optionally followed by a placeholder.
#[derive(Clone, Debug)]
struct Segment {
    literal: String,
    placeholder: bool,
}

#[derive(Clone, Debug)]
struct Template {
    text: String,
    segments: Vec<Segment>,
    literal_segments: usize,
}

impl Template {
    fn parse(text: &str) -> Option<Template> {
        if !text.starts_with('/') {
            return None;
        }
        let mut segments = Vec::new();
        for seg in text.trim_matches('/').split('/') {
            let (literal, placeholder) = match seg.find('{') {
                Some(i) if seg.ends_with('}') => (seg[..i].to_string(), true),
                Some(_) => return None,
                None => (seg.to_string(), false),
            };
            segments.push(Segment { literal, placeholder });
        }
        let literal_segments = segments.iter().filter(|s| !s.placeholder).count();
        Some(Template { text: text.to_string(), segments, literal_segments })
    }

    fn matches(&self, segs: &[&str]) -> bool {
        segs.len() == self.segments.len()
            && self.segments.iter().zip(segs).all(|(t, s)| {
                if t.placeholder {
                    s.len() > t.literal.len()
                        && s.get(..t.literal.len()).is_some_and(|p| p.eq_ignore_ascii_case(&t.literal))
                } else {
                    t.literal.eq_ignore_ascii_case(s)
                }
            })
    }
}

pub struct Endpoints {
    templates: Vec<Template>,
    max: usize,
    seen: HashSet<String>,
}

fn is_id(seg: &str) -> bool {
    let digits = seg.bytes().filter(u8::is_ascii_digit).count();
    let hex = seg.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    (!seg.is_empty() && digits == seg.len())
        || (hex && seg.len() >= 8 && digits > 0)
        || (seg.len() >= 24)
        || (seg.len() >= 16 && digits >= 4)
}

impl Endpoints {
    /// WATS templates plus `extra` (configured), at most `max` distinct endpoints.
    pub fn new(extra: &[String], max: usize) -> Result<Endpoints, String> {
        let mut templates = Vec::new();
        for line in extra.iter().map(String::as_str).chain(WATS_ROUTES.lines()) {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            templates.push(Template::parse(line).ok_or_else(|| format!("invalid route template {line:?}"))?);
        }
        // More literal segments first: `/a/Query` beats `/a/{id}`; configured first among equals.
        templates.sort_by_key(|t| std::cmp::Reverse(t.literal_segments));
        Ok(Endpoints { templates, max, seen: HashSet::new() })
    }

    /// The label value for a request target (`/path?query`, or an absolute URL).
    pub fn label(&mut self, target: &str) -> String {
        let path = strip(target);
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        if let Some(t) = self.templates.iter().find(|t| t.matches(&segs)) {
            return t.text.clone();
        }
        let templated = if path == "/" {
            "/".to_string()
        } else {
            let mut out = String::with_capacity(path.len());
            for seg in path.trim_start_matches('/').split('/') {
                out.push('/');
                out.push_str(if is_id(seg) { "{id}" } else { seg });
            }
            out
        };
        if self.seen.contains(&templated) {
            return templated;
        }
        if self.seen.len() >= self.max {
            return "other".to_string();
        }
        self.seen.insert(templated.clone());
        templated
    }
}

/// The path alone: no scheme/authority, query or fragment, and no control characters.
fn strip(target: &str) -> &str {
    let mut path = target;
    if let Some(rest) = path.strip_prefix("http://").or_else(|| path.strip_prefix("https://")) {
        path = rest.find('/').map_or("/", |i| &rest[i..]);
    }
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let path = &path[..end];
    if path.is_empty() || path.chars().any(char::is_control) || !path.starts_with('/') {
        return "/";
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e() -> Endpoints {
        Endpoints::new(&[], 1000).unwrap()
    }

    #[test]
    fn wats_routes_and_query_strings() {
        let mut e = e();
        assert_eq!(
            e.label("/api/Production/Unit/SN-0001/PN-42?x=1"),
            "/api/Production/Unit/{serial_number}/{part_number}"
        );
        assert_eq!(e.label("/api/Report/Wsjf/7f3e2a10-aaaa-bbbb-cccc-0123456789ab"), "/api/Report/Wsjf/{report_id}");
        assert_eq!(e.label("/api/report/wsjf/123"), "/api/Report/Wsjf/{report_id}");
        assert_eq!(e.label("/api/Report/WSJF"), "/api/Report/WSJF");
        assert_eq!(e.label("/api/App/Version?token=secret"), "/api/App/Version");
        assert_eq!(e.label("/api/SCIM/v2/Users/userName=alice"), "/api/SCIM/v2/Users/userName={username}");
        assert_eq!(e.label("http://wats.example:8080/api/App/Version?a=b"), "/api/App/Version");
    }

    #[test]
    fn heuristics_for_unknown_paths() {
        let mut e = e();
        assert_eq!(e.label("/orders/12345/items/9"), "/orders/{id}/items/{id}");
        assert_eq!(e.label("/blob/deadbeef00/raw"), "/blob/{id}/raw");
        assert_eq!(e.label("/u/550e8400-e29b-41d4-a716-446655440000"), "/u/{id}");
        assert_eq!(e.label("/t/abcdefghijklmnopqrstuvwxyz"), "/t/{id}");
        assert_eq!(e.label("/health"), "/health");
        assert_eq!(e.label("/"), "/");
        assert_eq!(e.label("*"), "/");
        assert_eq!(e.label("/a\r\nb"), "/");
    }

    #[test]
    fn cap_turns_new_endpoints_into_other() {
        let mut e = Endpoints::new(&[], 2).unwrap();
        assert_eq!(e.label("/a"), "/a");
        assert_eq!(e.label("/b"), "/b");
        assert_eq!(e.label("/c"), "other");
        assert_eq!(e.label("/a"), "/a");
        // Known templates are always themselves.
        assert_eq!(e.label("/api/Report/Wsjf/1"), "/api/Report/Wsjf/{report_id}");
    }

    #[test]
    fn configured_routes_come_first() {
        let mut e = Endpoints::new(&["/custom/{station}/status".into()], 10).unwrap();
        assert_eq!(e.label("/custom/line-7/status"), "/custom/{station}/status");
        assert!(Endpoints::new(&["no-slash".into()], 10).is_err());
    }
}
