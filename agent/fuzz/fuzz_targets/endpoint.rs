//! Endpoint templating of request targets a peer chose: every label is
//! bounded in length and number per target and role, carries no query
//! string or control character, and is the same whether the path was kept
//! cut (as the parsers keep it) or whole.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use pywats_agent::net::{
    conn::Role,
    endpoint::Endpoints,
    limits::{Limit, MAX_ENDPOINT_LABEL},
    report::kept_path,
};

const MAX: usize = 8;

fuzz_target!(|data: &[u8]| {
    let mut endpoints = Endpoints::new(&["/custom/{station}/status".into()], MAX).expect("valid routes");
    let mut seen: [HashSet<String>; 2] = Default::default();
    // Labels that are route templates are not capped: they are few and fixed.
    let templates: HashSet<String> = include_str!("../../src/net/wats_routes.txt")
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/'))
        .chain(["/custom/{station}/status"])
        .map(String::from)
        .collect();
    // Targets separated by 0xff; the low bit of each first byte picks the role.
    for part in data.split(|&b| b == 0xff) {
        let Some((&ctl, raw)) = part.split_first() else { continue };
        let role = if ctl & 1 == 0 { Role::Client } else { Role::Server };
        let target = String::from_utf8_lossy(raw);
        let label = endpoints.label("t", role, &target);
        if target.starts_with('/') {
            let kept = kept_path(raw);
            assert_eq!(endpoints.label("t", role, &kept), label, "{target:?} kept as {kept:?}");
        }
        match label {
            Ok(l) => {
                assert!(l.starts_with('/'), "{l:?}");
                assert!(!l.contains(['?', '#']) && !l.chars().any(char::is_control), "{l:?}");
                // The WATS routes are all shorter than the cap.
                assert!(l.len() <= MAX_ENDPOINT_LABEL, "{l:?}");
                if !templates.contains(&l) {
                    seen[usize::from(role == Role::Server)].insert(l);
                }
            }
            Err(limit) => assert!(matches!(limit, Limit::Endpoints | Limit::EndpointLength)),
        }
        assert!(seen.iter().all(|s| s.len() <= MAX), "{seen:?}");
    }
});
