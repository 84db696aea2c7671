//! What the agent offers, by the programs each part needs. A program the
//! kernel refuses turns off the features that need it, not the agent: it
//! starts, serves what it can, and says what is off and why (the log,
//! `/health/details`, `pywats_agent_feature_enabled`). `--require` makes a
//! feature that is off a failed start instead.

use prometheus::{IntGaugeVec, Opts};
use pywats_agent_ebpf::abi::{FS_PROGRAMS, NET_PROGRAMS, SCHED_PROGRAMS, SYSCALL_DISPATCHERS, TLS_PROGRAMS};
use serde_json::{json, Value};

use crate::error::AgentError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Feature {
    /// Children join the target set as they are created, leave it at exit.
    ProcessTree,
    /// HTTP/1 over plain sockets (the socket syscalls).
    Http,
    /// HTTP/1 over TLS (the libssl probes).
    Https,
    /// HTTP/2 over TLS, as the pyWATS client speaks it (the libssl probes).
    Http2,
    /// The queue state machines (the file syscalls).
    Queues,
    /// Converter executions (the file syscalls).
    Converters,
}

impl Feature {
    pub const ALL: [Feature; 6] =
        [Feature::ProcessTree, Feature::Http, Feature::Https, Feature::Http2, Feature::Queues, Feature::Converters];

    pub fn name(self) -> &'static str {
        match self {
            Feature::ProcessTree => "process_tree",
            Feature::Http => "http",
            Feature::Https => "https",
            Feature::Http2 => "http2",
            Feature::Queues => "queues",
            Feature::Converters => "converters",
        }
    }

    /// Whether this feature needs `program`.
    pub fn needs(self, program: &str) -> bool {
        let dispatch = || SYSCALL_DISPATCHERS.iter().any(|(p, _)| *p == program);
        match self {
            Feature::ProcessTree => SCHED_PROGRAMS.iter().any(|t| t.program == program),
            Feature::Http => dispatch() || NET_PROGRAMS.iter().any(|s| s.program == program),
            Feature::Https | Feature::Http2 => TLS_PROGRAMS.iter().any(|u| u.program == program),
            Feature::Queues | Feature::Converters => dispatch() || FS_PROGRAMS.iter().any(|s| s.program == program),
        }
    }
}

/// `--require`: a feature, or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Require {
    All,
    One(Feature),
}

/// Parses a `--require` value.
pub fn parse_require(s: &str) -> Result<Require, String> {
    if s == "all" {
        return Ok(Require::All);
    }
    Feature::ALL.into_iter().find(|f| f.name() == s).map(Require::One).ok_or_else(|| {
        let names: Vec<&str> = Feature::ALL.iter().map(|f| f.name()).collect();
        format!("unknown feature {s:?}: one of {}, or all", names.join(", "))
    })
}

/// Verifier log lines kept per refusal: its end says why.
pub const LOG_LINES: usize = 12;

/// A program the kernel would not take.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub program: &'static str,
    /// The error, one line (`BPF_PROG_LOAD failed: Permission denied`).
    pub reason: String,
    /// The verifier log's last lines, when the verifier said something.
    pub log: Vec<String>,
}

impl Refusal {
    /// The reason with the log's end, for errors and log lines.
    pub fn describe(&self) -> String {
        if self.log.is_empty() {
            self.reason.clone()
        } else {
            format!("{}\n  verifier log (end):\n  {}", self.reason, self.log.join("\n  "))
        }
    }
}

/// The features and, for each one that is off, the refusal that turned it off.
#[derive(Clone, Debug, Default)]
pub struct FeatureReport {
    refused: Vec<Refusal>,
}

impl FeatureReport {
    pub fn new(refused: Vec<Refusal>) -> FeatureReport {
        FeatureReport { refused }
    }

    /// Why `f` is off (its first refused program), or `None`: it is on.
    pub fn off(&self, f: Feature) -> Option<&Refusal> {
        self.refused.iter().find(|r| f.needs(r.program))
    }

    pub fn on(&self, f: Feature) -> bool {
        self.off(f).is_none()
    }

    pub fn refused(&self) -> &[Refusal] {
        &self.refused
    }

    /// One warning per feature that is off.
    pub fn log(&self) {
        for f in Feature::ALL {
            if let Some(r) = self.off(f) {
                tracing::warn!(
                    feature = f.name(),
                    program = r.program,
                    "feature {} is off: the kernel refused program {}: {}",
                    f.name(),
                    r.program,
                    r.describe()
                );
            }
        }
    }

    /// Fails when a feature `required` names is off.
    pub fn check(&self, required: &[Require]) -> Result<(), AgentError> {
        for f in Feature::ALL {
            let wanted = required.iter().any(|r| *r == Require::All || *r == Require::One(f));
            if let (true, Some(r)) = (wanted, self.off(f)) {
                return Err(AgentError::FeatureOff { feature: f.name(), program: r.program, reason: r.describe() });
            }
        }
        Ok(())
    }

    /// `pywats_agent_feature_enabled{feature}`: 1 on, 0 off.
    pub fn gauge(&self) -> IntGaugeVec {
        let gauge = IntGaugeVec::new(
            Opts::new(
                "pywats_agent_feature_enabled",
                "Whether a feature works on this kernel (0: a program it needs was refused; /health/details says why).",
            ),
            &["feature"],
        )
        .expect("valid metric definition");
        for f in Feature::ALL {
            gauge.with_label_values(&[f.name()]).set(i64::from(self.on(f)));
        }
        gauge
    }

    /// For `/health/details`: each feature, its state, and for one that is
    /// off the program, the reason and the verifier log's end.
    pub fn json(&self) -> Value {
        Feature::ALL
            .iter()
            .map(|f| match self.off(*f) {
                None => json!({ "feature": f.name(), "state": "on" }),
                Some(r) => json!({
                    "feature": f.name(),
                    "state": "off",
                    "program": r.program,
                    "reason": format!("the kernel refused program {}: {}", r.program, r.reason),
                    "verifier_log": r.log,
                }),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_serves_a_feature() {
        let all = SCHED_PROGRAMS
            .iter()
            .map(|t| t.program)
            .chain(SYSCALL_DISPATCHERS.iter().map(|(p, _)| *p))
            .chain(NET_PROGRAMS.iter().chain(&FS_PROGRAMS).map(|s| s.program))
            .chain(TLS_PROGRAMS.iter().map(|u| u.program));
        for program in all {
            assert!(Feature::ALL.iter().any(|f| f.needs(program)), "{program} serves no feature");
        }
    }

    #[test]
    fn a_refused_program_turns_off_exactly_its_features() {
        let refused = |program| {
            let report = FeatureReport::new(vec![Refusal {
                program,
                reason: "refused".into(),
                log: vec!["R2 !read_ok".into()],
            }]);
            Feature::ALL.into_iter().filter(|f| !report.on(*f)).collect::<Vec<_>>()
        };
        assert_eq!(refused("sys_exit_openat"), [Feature::Queues, Feature::Converters]);
        assert_eq!(refused("ssl_write_ret"), [Feature::Https, Feature::Http2]);
        assert_eq!(refused("sys_exit_read"), [Feature::Http]);
        assert_eq!(refused("task_newtask"), [Feature::ProcessTree]);
        assert_eq!(refused("raw_sys_enter"), [Feature::Http, Feature::Queues, Feature::Converters]);
    }

    #[test]
    fn require_names_features_or_all() {
        assert_eq!(parse_require("https"), Ok(Require::One(Feature::Https)));
        assert_eq!(parse_require("all"), Ok(Require::All));
        assert!(parse_require("tls").unwrap_err().contains("process_tree, http, https, http2, queues, converters"));
        let report = FeatureReport::new(vec![Refusal { program: "ssl_free", reason: "no".into(), log: vec![] }]);
        assert!(report.check(&[Require::One(Feature::Queues)]).is_ok());
        let err = report.check(&[Require::All]).unwrap_err().to_string();
        assert!(err.contains("https") && err.contains("ssl_free"), "{err}");
    }
}
