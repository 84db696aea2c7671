//! Which processes `--match` may adopt: a command line is anyone's to
//! choose, so a process whose command line holds the pattern must also run as
//! an allowed user (its real and effective uid both: a set-uid program run by
//! another user is that user's) and an allowed executable: those
//! `--match-exe` names, by default a Python interpreter (the pyWATS client is
//! Python). Otherwise anyone on the machine could start a process that takes
//! a dead client's name and series, and an operator's own `grep
//! pywats_client`, `journalctl -g pywats_client` or `less` of its log would
//! become a target whose exit reads as a client down.

use std::{
    collections::BTreeSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use glob::{MatchOptions, Pattern};
use prometheus::{IntCounterVec, Opts};

use pywats_agent_ebpf::abi::EXEC_PREFIXES;

use crate::{
    error::AgentError,
    fs::discover::CONFIG_DIR,
    proc::{identity::ProcId, tree::ResolvedPid},
    sync::Locked,
};

/// Why a matching process was not adopted: the `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    User,
    Exe,
    /// `--max-targets` live `--match` targets already.
    Limit,
}

impl Rejected {
    pub fn label(self) -> &'static str {
        match self {
            Rejected::User => "user",
            Rejected::Exe => "exe",
            Rejected::Limit => "limit",
        }
    }
}

/// `*` and `?` stay within one path component; `**` spans directories.
const GLOB: MatchOptions =
    MatchOptions { case_sensitive: true, require_literal_separator: true, require_literal_leading_dot: false };

/// Which executables may be adopted.
enum Exes {
    /// A Python interpreter: its file name starts with `python`
    /// (`python3`, `python3.11`, a venv's copy named `python`).
    Python,
    /// Those `--match-exe` names.
    Named(Vec<Pattern>),
}

impl Exes {
    fn allow(&self, exe: &str) -> bool {
        match self {
            Exes::Python => {
                let name = Path::new(exe).file_name().and_then(|n| n.to_str()).unwrap_or_default();
                exe.starts_with('/') && name.starts_with("python")
            }
            Exes::Named(patterns) => patterns.iter().any(|p| p.matches_with(exe, GLOB)),
        }
    }
}

pub struct Admission {
    users: BTreeSet<u32>,
    exes: Exes,
    /// `pywats_agent_match_rejected_total{reason}`: each rejected process once.
    rejected: IntCounterVec,
    /// Processes rejected at the latest scans, not counted again.
    seen: std::sync::Mutex<BTreeSet<ProcId>>,
}

impl Admission {
    /// From `--match-user` (names or uids) and `--match-exe` (paths or
    /// globs); without `--match-user`, the owners of the client configs
    /// `config_files` finds, else root.
    pub fn new(users: &[String], exes: &[String], config_files: &[PathBuf]) -> Result<Admission, AgentError> {
        let users: BTreeSet<u32> = if users.is_empty() {
            let owners: BTreeSet<u32> =
                config_files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.uid()).collect();
            if owners.is_empty() {
                BTreeSet::from([0])
            } else {
                owners
            }
        } else {
            users.iter().map(|u| uid_of(u)).collect::<Result<_, _>>()?
        };
        let exes = if exes.is_empty() {
            Exes::Python
        } else {
            Exes::Named(exes.iter().map(|e| exe_pattern(e)).collect::<Result<_, _>>()?)
        };
        let rejected = IntCounterVec::new(
            Opts::new(
                "pywats_agent_match_rejected_total",
                "Processes whose command line matched a --match pattern but that were not adopted, by reason: \
                 user (not a --match-user), exe (not a --match-exe; by default, not a Python interpreter) or \
                 limit (--max-targets live targets already). Each process counts once.",
            ),
            &["reason"],
        )
        .expect("valid metric definition");
        for reason in [Rejected::User, Rejected::Exe, Rejected::Limit] {
            rejected.with_label_values(&[reason.label()]);
        }
        Ok(Admission { users, exes, rejected, seen: Default::default() })
    }

    /// What the kernel looks for at exec (`KernelTargets::take_in_at_exec`):
    /// the name a process runs under after exec is the file name it
    /// executed, and each allowed executable's name begins with these letters
    /// (`python`); `""` (every exec) when one begins with a wildcard, or when
    /// there are more than the kernel holds.
    pub fn exec_prefixes(&self) -> Vec<String> {
        let mut out: Vec<String> = match &self.exes {
            Exes::Python => vec!["python".to_string()],
            Exes::Named(patterns) => patterns
                .iter()
                .map(|p| {
                    let name = p.as_str().rsplit('/').next().unwrap_or_default();
                    name.chars().take_while(|c| c.is_ascii_alphabetic()).collect()
                })
                .collect(),
        };
        out.sort();
        out.dedup();
        if out.iter().any(String::is_empty) || out.len() > EXEC_PREFIXES as usize {
            return vec![String::new()];
        }
        out
    }

    /// The users whose processes may be adopted, for the log.
    pub fn users(&self) -> &BTreeSet<u32> {
        &self.users
    }

    /// The counter, for the registry.
    pub fn metric(&self) -> IntCounterVec {
        self.rejected.clone()
    }

    /// Whether a process with real and effective uids `uids` running `exe` may be adopted.
    pub fn judge(&self, uids: (u32, u32), exe: &str) -> Result<(), Rejected> {
        if !self.users.contains(&uids.0) || !self.users.contains(&uids.1) {
            return Err(Rejected::User);
        }
        // A binary replaced on disk (an upgrade) still runs: readlink adds " (deleted)".
        let exe = exe.strip_suffix(" (deleted)").unwrap_or(exe);
        if !self.exes.allow(exe) {
            return Err(Rejected::Exe);
        }
        Ok(())
    }

    /// Judges a matching process; a rejection is counted and logged the
    /// first time this process is seen.
    pub fn admit(&self, p: &ResolvedPid, pattern: &str) -> bool {
        match self.judge(p.uids, &p.exe) {
            Ok(()) => true,
            Err(why) => {
                self.reject(p, pattern, why);
                false
            }
        }
    }

    /// A matching process turned away: counted and logged the first time
    /// this process is seen.
    pub fn reject(&self, p: &ResolvedPid, pattern: &str, why: Rejected) {
        if self.seen.locked().insert(p.id()) {
            self.rejected.with_label_values(&[why.label()]).inc();
            let reason = match why {
                Rejected::User | Rejected::Exe => format!("not an allowed {}", why.label()),
                Rejected::Limit => "--max-targets targets are watched already".to_string(),
            };
            tracing::info!(
                "pid {} ({}, uid {}) matches {pattern:?} but is not adopted: {reason}",
                p.pid,
                p.exe,
                p.uids.1
            );
        }
    }

    /// Forgets rejected processes that no scan finds any more (the set stays
    /// as small as the matching processes).
    pub fn retain(&self, matching: &BTreeSet<u32>) {
        self.seen.locked().retain(|id| matching.contains(&id.pid));
    }
}

/// A `--match-user`: a uid, or a user name (through NSS, as `id` finds it).
fn uid_of(user: &str) -> Result<u32, AgentError> {
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(AgentError::Config(format!("--match-user {user:?}: no such user"))),
        Err(e) => Err(AgentError::Config(format!("--match-user {user:?}: cannot look the user up: {e}"))),
    }
}

/// A `--match-exe`: an absolute path or glob, as `/proc/<pid>/exe` names it.
fn exe_pattern(exe: &str) -> Result<Pattern, AgentError> {
    if !exe.starts_with('/') {
        return Err(AgentError::Config(format!("--match-exe {exe:?}: give an absolute path or glob")));
    }
    Pattern::new(exe).map_err(|e| AgentError::Config(format!("--match-exe {exe:?}: {e}")))
}

/// The client config files the agent sees in its own file system: the one
/// `--pywats-config` names, else those in /var/lib/pywats that discovery reads.
pub fn config_files(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    let Ok(entries) = std::fs::read_dir(CONFIG_DIR) else { return Vec::new() };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("config") && n.ends_with(".json"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(users: &[&str], exes: &[&str]) -> Admission {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        Admission::new(&s(users), &s(exes), &[]).unwrap()
    }

    #[test]
    fn real_and_effective_uid_must_both_be_allowed() {
        let a = admission(&["0", "1000"], &[]);
        assert_eq!(a.judge((0, 0), "/usr/bin/python3"), Ok(()));
        assert_eq!(a.judge((1000, 1000), "/usr/local/bin/python3.11"), Ok(()));
        assert_eq!(a.judge((1000, 0), "/usr/bin/python3"), Ok(()));
        assert_eq!(a.judge((65534, 65534), "/usr/bin/python3"), Err(Rejected::User));
        // Another user running a set-uid-root program.
        assert_eq!(a.judge((65534, 0), "/usr/bin/python3"), Err(Rejected::User));
    }

    #[test]
    fn names_resolve_and_unknown_names_are_a_config_error() {
        assert_eq!(admission(&["root", "nobody"], &[]).users(), &BTreeSet::from([0, 65534]));
        let unknown = Admission::new(&["no-such-user-here".into()], &[], &[]).err().unwrap();
        assert_eq!(unknown.exit_code(), 2);
        assert!(unknown.to_string().contains("no such user"), "{unknown}");
    }

    #[test]
    fn without_match_user_the_config_owners_else_root() {
        assert_eq!(Admission::new(&[], &[], &[]).unwrap().users(), &BTreeSet::from([0]));
        let missing = [PathBuf::from("/nonexistent/config.json")];
        assert_eq!(Admission::new(&[], &[], &missing).unwrap().users(), &BTreeSet::from([0]));
        let file = std::env::temp_dir().join(format!("pywats-admission-{}.json", std::process::id()));
        std::fs::write(&file, "{}").unwrap();
        // As root, a file of another user; otherwise the file is this user's, not root's.
        let _ = std::os::unix::fs::chown(&file, Some(4242), None);
        let owner = std::fs::metadata(&file).unwrap().uid();
        let owners = Admission::new(&[], &[], std::slice::from_ref(&file)).unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_ne!(owner, 0);
        assert_eq!(owners.users(), &BTreeSet::from([owner]));
    }

    #[test]
    fn exe_globs_stay_within_path_components() {
        let a = admission(&["0"], &["/usr/bin/python3*", "/opt/pywats/**/python"]);
        assert_eq!(a.judge((0, 0), "/usr/bin/python3.11"), Ok(()));
        assert_eq!(a.judge((0, 0), "/usr/bin/python3.11 (deleted)"), Ok(()));
        assert_eq!(a.judge((0, 0), "/opt/pywats/venv/bin/python"), Ok(()));
        assert_eq!(a.judge((0, 0), "/usr/bin/python3/../../tmp/x"), Err(Rejected::Exe));
        assert_eq!(a.judge((0, 0), "/tmp/python3"), Err(Rejected::Exe));
        assert_eq!(a.judge((0, 0), ""), Err(Rejected::Exe));
        // The user is checked first.
        assert_eq!(a.judge((5, 5), "/tmp/python3"), Err(Rejected::User));
        for bad in ["python3", "/usr/bin/[python"] {
            let e = Admission::new(&[], &[bad.into()], &[]).err().unwrap();
            assert_eq!(e.exit_code(), 2, "{bad}: {e}");
        }
    }

    /// Without `--match-exe`, only a Python interpreter: never a command an
    /// operator typed with the pattern in it.
    #[test]
    fn by_default_only_a_python_interpreter_is_adopted() {
        let a = admission(&["0"], &[]);
        for exe in ["/usr/bin/python3.11", "/opt/venv/bin/python", "/usr/bin/python3.11 (deleted)"] {
            assert_eq!(a.judge((0, 0), exe), Ok(()), "{exe}");
        }
        for exe in ["/usr/bin/grep", "/usr/bin/journalctl", "/usr/bin/less", "/usr/bin/tail", "", "python3"] {
            assert_eq!(a.judge((0, 0), exe), Err(Rejected::Exe), "{exe}");
        }
    }

    #[test]
    fn the_kernel_looks_for_the_leading_letters_of_each_allowed_name() {
        assert_eq!(admission(&["0"], &[]).exec_prefixes(), ["python"]);
        let named = admission(&["0"], &["/usr/bin/python3.*", "/opt/**/python", "/opt/pywats/pywats-client"]);
        assert_eq!(named.exec_prefixes(), ["python", "pywats"]);
        assert_eq!(admission(&["0"], &["/opt/pywats/*"]).exec_prefixes(), [""]);
    }

    #[test]
    fn a_rejected_process_counts_once() {
        let a = admission(&["0"], &[]);
        let exe = "/usr/bin/python3".to_string();
        let p = ResolvedPid { pid: 7, start: 70, uids: (1000, 1000), comm: "py".into(), exe, pod: None };
        assert!(!a.admit(&p, "pywats_client"));
        assert!(!a.admit(&p, "pywats_client"));
        assert_eq!(a.metric().with_label_values(&["user"]).get(), 1);
        // The same pid as a new process is another rejection.
        a.retain(&BTreeSet::from([7]));
        assert!(!a.admit(&ResolvedPid { start: 71, ..p.clone() }, "pywats_client"));
        assert_eq!(a.metric().with_label_values(&["user"]).get(), 2);
        a.retain(&BTreeSet::new());
        assert!(a.seen.locked().is_empty());
        let root = ResolvedPid { uids: (0, 0), ..p };
        assert!(a.admit(&root, "pywats_client"));
        assert_eq!(a.metric().with_label_values(&["exe"]).get(), 0);
    }
}
