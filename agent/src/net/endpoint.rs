//! Turns request paths into bounded `endpoint` label values.
//!
//! Order: drop the query string and fragment; match the WATS API's own route
//! templates (from pyWATS's `routes.py`, plus any configured); otherwise
//! replace id-like segments (numbers, UUIDs, hex, long tokens) with `{id}`;
//! past `max_endpoints` distinct values of one target and role, new ones
//! become `other`, as do paths and labels too long to be useful (each
//! counted by the caller as the [`Limit`] returned).

use std::collections::{HashMap, HashSet};

use crate::net::{
    conn::Role,
    limits::{Limit, MAX_ENDPOINT_LABEL, MAX_PATH},
};

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
    /// Distinct templated values per target and role.
    max: usize,
    /// Values seen, per target: [as client, as server].
    seen: HashMap<String, [HashSet<String>; 2]>,
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
    /// WATS templates plus `extra` (configured), at most `max` distinct
    /// endpoints per target and role beyond the templates.
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
        Ok(Endpoints { templates, max, seen: HashMap::new() })
    }

    /// A target that is gone.
    pub fn forget(&mut self, target_name: &str) {
        self.seen.remove(target_name);
    }

    /// The label value for a request target (`/path?query`, or an absolute
    /// URL) of `target_name` in `role`; `Err` names the cap that made it `other`.
    pub fn label(&mut self, target_name: &str, role: Role, target: &str) -> Result<String, Limit> {
        // Too long is judged before anything else about the path: the
        // parsers keep a path cut after MAX_PATH bytes, and a cut path must
        // get the same label as the whole one (whatever followed the cut).
        let path = path_of(target);
        if path.len() > MAX_PATH {
            return Err(Limit::EndpointLength);
        }
        let path = valid_or_root(path);
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        if let Some(t) = self.templates.iter().find(|t| t.matches(&segs)) {
            return Ok(t.text.clone());
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
        if templated.len() > MAX_ENDPOINT_LABEL {
            return Err(Limit::EndpointLength);
        }
        let seen = match self.seen.get_mut(target_name) {
            Some(s) => s,
            None => self.seen.entry(target_name.to_string()).or_default(),
        };
        let seen = &mut seen[usize::from(role == Role::Server)];
        if seen.contains(&templated) {
            return Ok(templated);
        }
        if seen.len() >= self.max {
            return Err(Limit::Endpoints);
        }
        seen.insert(templated.clone());
        Ok(templated)
    }
}

/// The path alone: no scheme/authority, query or fragment.
fn path_of(target: &str) -> &str {
    let mut path = target;
    if let Some(rest) = path.strip_prefix("http://").or_else(|| path.strip_prefix("https://")) {
        path = rest.find('/').map_or("/", |i| &rest[i..]);
    }
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

/// `/` for what is not a path (empty, relative, control characters).
fn valid_or_root(path: &str) -> &str {
    if path.is_empty() || path.chars().any(char::is_control) || !path.starts_with('/') {
        return "/";
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels as a client of target "t", `other` where a cap refused.
    struct E(Endpoints);

    impl E {
        fn label(&mut self, path: &str) -> String {
            self.0.label("t", Role::Client, path).unwrap_or_else(|_| "other".into())
        }
    }

    fn e() -> E {
        E(Endpoints::new(&[], 1000).unwrap())
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
        let mut e = E(Endpoints::new(&[], 2).unwrap());
        assert_eq!(e.label("/a"), "/a");
        assert_eq!(e.label("/b"), "/b");
        assert_eq!(e.0.label("t", Role::Client, "/c"), Err(Limit::Endpoints));
        assert_eq!(e.label("/a"), "/a");
        // Known templates are always themselves.
        assert_eq!(e.label("/api/Report/Wsjf/1"), "/api/Report/Wsjf/{report_id}");
    }

    #[test]
    fn the_cap_is_per_target_and_role() {
        let mut e = Endpoints::new(&[], 2).unwrap();
        for (target, role) in [("a", Role::Client), ("a", Role::Server), ("b", Role::Client)] {
            assert_eq!(e.label(target, role, "/x"), Ok("/x".into()));
            assert_eq!(e.label(target, role, "/y"), Ok("/y".into()));
            assert_eq!(e.label(target, role, "/z"), Err(Limit::Endpoints));
        }
    }

    #[test]
    fn long_paths_and_labels_are_other() {
        let mut e = e();
        let long_segments = format!("/{}", ["seg"; 40].join("/"));
        assert_eq!(e.0.label("t", Role::Client, &long_segments), Err(Limit::EndpointLength));
        assert_eq!(e.0.label("t", Role::Client, &format!("/{}", "a".repeat(MAX_PATH))), Err(Limit::EndpointLength));
        // A long id templates to a short label.
        assert_eq!(e.label(&format!("/t/{}", "a".repeat(500))), "/t/{id}");
        // Query strings do not count.
        assert_eq!(e.label(&format!("/q?{}", "a".repeat(5000))), "/q");
    }

    #[test]
    fn a_long_path_is_judged_before_what_follows_the_cut() {
        // Found by the `endpoint` fuzz target: a control character past the
        // point where the parsers cut a path made the whole path `/` and
        // the cut one `other`.
        let mut e = e();
        let path = format!("/{}\u{84}/raw", "a".repeat(MAX_PATH + 100));
        let kept = crate::net::report::kept_path(path.as_bytes());
        assert_eq!(e.0.label("t", Role::Client, &path), Err(Limit::EndpointLength));
        assert_eq!(e.0.label("t", Role::Client, &kept), Err(Limit::EndpointLength));
        assert_eq!(e.label("/a\u{84}b"), "/");
    }

    #[test]
    fn configured_routes_come_first() {
        let mut e = E(Endpoints::new(&["/custom/{station}/status".into()], 10).unwrap());
        assert_eq!(e.label("/custom/line-7/status"), "/custom/{station}/status");
        assert!(Endpoints::new(&["no-slash".into()], 10).is_err());
    }
}
