//! `code` and `method` label values, bounded whatever peers send: status
//! codes to the IANA registry, methods to the standard set, anything else
//! to `other` (the request is still counted, under `other`); and the label
//! sets of a target, bounded as a whole ([`LabelSets`]).

use std::collections::{HashMap, HashSet};

use crate::net::conn::Role;

/// The label value for whatever falls outside a bounded set.
pub const OTHER: &str = "other";

/// Every status code in the IANA HTTP Status Code Registry, including those
/// marked unused (306, 418) and obsoleted (510); temporary registrations are
/// left out. Sorted.
const REGISTERED: [u16; 63] = [
    100, 101, 102, 103, //
    200, 201, 202, 203, 204, 205, 206, 207, 208, 226, //
    300, 301, 302, 303, 304, 305, 306, 307, 308, //
    400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, //
    421, 422, 423, 424, 425, 426, 428, 429, 431, 451, //
    500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
];

/// The methods of RFC 9110 and PATCH (RFC 5789).
const METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

/// The `code` label of a registered status code; `None` for any other.
pub fn code(code: u16) -> Option<String> {
    REGISTERED.binary_search(&code).is_ok().then(|| code.to_string())
}

/// The `method` label of a standard method; `None` for any other.
pub fn method(method: &str) -> Option<&'static str> {
    METHODS.iter().find(|m| **m == method).copied()
}

/// The (method, endpoint, code) label sets a target has used in a role, at
/// most `max` of them: each label is bounded on its own, but their product
/// is not (500 endpoints × 10 methods × 64 codes). Past it a new set is
/// recorded as `other` for all three (its status and error type kept).
pub struct LabelSets {
    max: usize,
    seen: HashMap<(String, Role), HashSet<LabelSet>>,
}

/// Method, endpoint and code.
type LabelSet = (String, String, String);

impl LabelSets {
    pub fn new(max: usize) -> LabelSets {
        LabelSets { max, seen: HashMap::new() }
    }

    /// Whether the set may have series of its own (known, or room for it).
    pub fn admit(&mut self, target: &str, role: Role, method: &str, endpoint: &str, code: &str) -> bool {
        let sets = self.seen.entry((target.to_string(), role)).or_default();
        let key = (method.to_string(), endpoint.to_string(), code.to_string());
        if sets.contains(&key) {
            return true;
        }
        if sets.len() >= self.max {
            return false;
        }
        sets.insert(key);
        true
    }

    /// A target that is gone.
    pub fn forget(&mut self, target: &str) {
        self.seen.retain(|(t, _), _| t != target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_targets_label_sets_are_bounded_per_role() {
        let mut sets = LabelSets::new(2);
        assert!(sets.admit("t", Role::Client, "GET", "/a", "200"));
        assert!(sets.admit("t", Role::Client, "GET", "/a", "404"));
        assert!(!sets.admit("t", Role::Client, "POST", "/a", "200"));
        assert!(sets.admit("t", Role::Client, "GET", "/a", "200"), "a known set stays");
        assert!(sets.admit("t", Role::Server, "POST", "/a", "200"), "each role has its own");
        assert!(sets.admit("u", Role::Client, "POST", "/a", "200"), "each target has its own");
        sets.forget("t");
        assert!(sets.admit("t", Role::Client, "POST", "/a", "200"));
    }

    #[test]
    fn registered_codes_only() {
        assert!(REGISTERED.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(code(200).as_deref(), Some("200"));
        assert_eq!(code(451).as_deref(), Some("451"));
        assert_eq!(code(511).as_deref(), Some("511"));
        for unregistered in [0, 99, 199, 209, 299, 419, 499, 509, 599, 600, 999, u16::MAX] {
            assert_eq!(code(unregistered), None, "{unregistered}");
        }
        // 300 distinct codes make at most 64 label values.
        let values: std::collections::HashSet<_> = (200..500).map(|c| code(c).unwrap_or(OTHER.into())).collect();
        assert_eq!(values.len(), 10 + 9 + 29 + 1);
    }

    #[test]
    fn standard_methods_only() {
        assert_eq!(method("PATCH"), Some("PATCH"));
        assert_eq!(method("get"), None);
        assert_eq!(method("PROPFIND"), None);
        assert_eq!(method("BREW"), None);
    }
}
