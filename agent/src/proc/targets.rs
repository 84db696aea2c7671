//! The agent's view of its targets: each configured process, the descendants
//! that joined it, and whether it is still alive.

use std::{
    collections::{BTreeMap, VecDeque},
    time::SystemTime,
};

use crate::{
    error::AgentError,
    proc::{identity::ProcId, k8s::PodIdentity, tree::ResolvedPid},
};

#[derive(Clone, Debug, PartialEq)]
pub struct TargetState {
    /// The `target` label.
    pub name: String,
    /// The configured process.
    pub pid: u32,
    /// Its start time (clock ticks after boot): the pid is this process only while it is the same.
    pub start: u64,
    pub exe: String,
    pub alive: bool,
    /// Live descendant processes attributed to this target.
    pub children: Children,
    pub exited_at: Option<SystemTime>,
    /// The `--match` pattern that found it; `None` for a `--pid` target.
    pub pattern: Option<String>,
    /// The container and pod it runs in, if any.
    pub pod: Option<PodIdentity>,
}

/// The descendants of a target: pid → start time, `None` while unknown (the
/// child was reported by its fork event, and reading its start time failed).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Children(BTreeMap<u32, Option<u64>>);

impl Children {
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.keys().copied()
    }

    pub fn with_starts(&self) -> impl Iterator<Item = (u32, Option<u64>)> + '_ {
        self.0.iter().map(|(&pid, &start)| (pid, start))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, pid: u32) -> bool {
        self.0.contains_key(&pid)
    }
}

/// Children that exited, remembered for naming: the agent hears of an exit
/// (drained at once) before the child's last socket events (drained in
/// batches), which must still count for its target.
const DEPARTED: usize = 1024;

/// All targets. Few per agent, so a vector searched linearly.
#[derive(Debug, Default)]
pub struct Targets {
    targets: Vec<TargetState>,
    /// `--match` patterns: targets come and go with the processes.
    patterns: Vec<String>,
    /// (pid, target name) of the latest children to exit, newest last.
    departed: VecDeque<(u32, String)>,
}

/// What an event changed, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    ChildJoined {
        target: String,
        child: u32,
    },
    ChildLeft {
        target: String,
        child: u32,
    },
    TargetExited {
        target: String,
        pid: u32,
    },
    Exec {
        target: String,
        pid: u32,
    },
    /// An event for a process this agent does not know (e.g. already removed).
    Unknown,
}

/// Names targets: the n-th `--target-name` for the n-th pid, else the process
/// name, made unique with `-2`, `-3`… in the order given.
pub fn name_targets(pids: &[ResolvedPid], names: &[String]) -> Result<Vec<String>, AgentError> {
    if names.len() > pids.len() {
        return Err(AgentError::TooManyNames { names: names.len(), pids: pids.len() });
    }
    let mut out: Vec<String> = Vec::with_capacity(pids.len());
    for (i, p) in pids.iter().enumerate() {
        let name = match names.get(i) {
            Some(n) => {
                if out.contains(n) {
                    return Err(AgentError::DuplicateName(n.clone()));
                }
                n.clone()
            }
            None => {
                let base =
                    if p.default_name().is_empty() { "target".to_string() } else { p.default_name().to_string() };
                let mut candidate = base.clone();
                let mut k = 2;
                while out.contains(&candidate) || names.contains(&candidate) {
                    candidate = format!("{base}-{k}");
                    k += 1;
                }
                candidate
            }
        };
        out.push(name);
    }
    Ok(out)
}

impl Targets {
    pub fn set_patterns(&mut self, patterns: Vec<String>) {
        self.patterns = patterns;
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// The name of the target `pid` belongs (or, lately, belonged) to.
    pub fn name_of(&self, pid: u32) -> Option<&str> {
        self.targets
            .iter()
            .find(|t| t.pid == pid || t.children.contains(pid))
            .map(|t| t.name.as_str())
            .or_else(|| self.departed.iter().rev().find(|(p, _)| *p == pid).map(|(_, name)| name.as_str()))
    }

    /// Every process [`Targets::name_of`] names: targets (exited ones too),
    /// their live descendants and the children that lately exited.
    pub fn named_pids(&self) -> std::collections::HashSet<u32> {
        let targets = self.targets.iter().flat_map(|t| std::iter::once(t.pid).chain(t.children.iter()));
        targets.chain(self.departed.iter().map(|(pid, _)| *pid)).collect()
    }

    /// Every live target process and descendant.
    pub fn known_pids(&self) -> std::collections::BTreeSet<u32> {
        self.targets.iter().filter(|t| t.alive).flat_map(|t| std::iter::once(t.pid).chain(t.children.iter())).collect()
    }

    /// The start time of `pid`, a live target or a child of one, when known.
    pub fn start_of(&self, pid: u32) -> Option<u64> {
        self.targets.iter().filter(|t| t.alive).find_map(|t| {
            if t.pid == pid {
                Some(t.start)
            } else {
                t.children.0.get(&pid).copied().flatten()
            }
        })
    }

    /// Every live process of every target whose start time is known: roots and children.
    pub fn live_processes(&self) -> Vec<ProcId> {
        self.targets
            .iter()
            .filter(|t| t.alive)
            .flat_map(|t| {
                let children = t.children.with_starts().filter_map(|(pid, start)| Some(ProcId { pid, start: start? }));
                std::iter::once(ProcId { pid: t.pid, start: t.start }).chain(children)
            })
            .collect()
    }

    /// A child's start time, read after its fork event could not read it.
    pub fn set_child_start(&mut self, root: u32, child: u32, start: u64) {
        if let Some(slot) = self.by_root(root).and_then(|t| t.children.0.get_mut(&child)) {
            *slot = Some(start);
        }
    }

    /// A process joins as a target: given by `--pid` (`pattern` `None`), or
    /// found by `pattern`. A found one takes the place of an exited
    /// `--match` target of the name it asks for (a restarted client keeps
    /// its series), else of the first exited one among `name-2`, `name-3`…
    /// (so that clients coming and going reuse the names of those gone), else
    /// the first free one. Returns the name it got.
    pub fn add(&mut self, p: &ResolvedPid, pattern: Option<&str>, name: &str) -> String {
        let state = |name: String| TargetState {
            name,
            pid: p.pid,
            start: p.start,
            exe: p.exe.clone(),
            alive: true,
            children: Children::default(),
            exited_at: None,
            pattern: pattern.map(str::to_string),
            pod: p.pod.clone(),
        };
        let mut candidate = name.to_string();
        let mut k = 2;
        loop {
            match self.targets.iter_mut().find(|t| t.name == candidate) {
                None => break,
                // The name it asked for, of any exited target (a --pid one
                // too: the operator gave it); a numbered one of a --match target.
                Some(t) if pattern.is_some() && !t.alive && (k == 2 || t.pattern.is_some()) => {
                    let before = t.pid;
                    *t = state(candidate.clone());
                    // Its events still in the rings keep the name.
                    self.depart(before, &candidate);
                    return candidate;
                }
                Some(_) => {}
            }
            candidate = format!("{name}-{k}");
            k += 1;
        }
        self.targets.push(state(candidate.clone()));
        candidate
    }

    /// Takes out the `--match` targets that exited before `before` (and whose
    /// name no new process took since): returns their names.
    pub fn forget_exited(&mut self, before: SystemTime) -> Vec<String> {
        let old = |t: &TargetState| t.pattern.is_some() && !t.alive && t.exited_at.is_some_and(|at| at < before);
        let names = self.targets.iter().filter(|t| old(t)).map(|t| t.name.clone()).collect();
        self.targets.retain(|t| !old(t));
        names
    }

    /// Live `--match` targets.
    pub fn matched_alive(&self) -> usize {
        self.targets.iter().filter(|t| t.alive && t.pattern.is_some()).count()
    }

    pub fn iter(&self) -> impl Iterator<Item = &TargetState> {
        self.targets.iter()
    }

    /// Why the target set is not what was asked for: `--pid` targets that
    /// exited. A `--match` pattern without a live process is not a problem
    /// (a node without a client has nothing to watch): see [`Targets::idle_patterns`].
    pub fn problems(&self) -> Vec<String> {
        self.targets
            .iter()
            .filter(|t| !t.alive && t.pattern.is_none())
            .map(|t| format!("target {} (pid {}) has exited", t.name, t.pid))
            .collect()
    }

    /// `--match` patterns no live process matches now.
    pub fn idle_patterns(&self) -> Vec<&str> {
        self.patterns
            .iter()
            .filter(|p| !self.targets.iter().any(|t| t.alive && t.pattern.as_ref() == Some(*p)))
            .map(String::as_str)
            .collect()
    }

    fn by_root(&mut self, root: u32) -> Option<&mut TargetState> {
        self.targets.iter_mut().find(|t| t.pid == root && t.alive)
    }

    /// A descendant joined `root`'s target; `start` is `None` when it could
    /// not be read. A pid already there with another start time was reused:
    /// the new process takes its place.
    pub fn add_child(&mut self, root: u32, child: u32, start: Option<u64>) -> Change {
        match self.by_root(root) {
            Some(t) => match (t.children.0.get(&child).copied(), start) {
                // Reported twice (the start-up scan and its fork event), or a start time filled in.
                (Some(before), now) if now.is_none() || before.is_none() || before == now => {
                    t.children.0.insert(child, before.or(now));
                    Change::Unknown
                }
                _ => {
                    t.children.0.insert(child, start);
                    Change::ChildJoined { target: t.name.clone(), child }
                }
            },
            None => Change::Unknown,
        }
    }

    /// A process of the target set exited: a child leaves, the root ends its target.
    pub fn exited(&mut self, root: u32, pid: u32) -> Change {
        let Some(t) = self.by_root(root) else {
            return Change::Unknown;
        };
        if pid == root {
            t.alive = false;
            t.exited_at = Some(SystemTime::now());
            // Descendants that outlive it keep its name for their last events.
            let (name, children) = (t.name.clone(), std::mem::take(&mut t.children.0));
            for child in children.into_keys() {
                self.depart(child, &name);
            }
            Change::TargetExited { target: name, pid }
        } else if t.children.0.remove(&pid).is_some() {
            let name = t.name.clone();
            self.depart(pid, &name);
            Change::ChildLeft { target: name, child: pid }
        } else {
            Change::Unknown
        }
    }

    /// A process left `name`'s target: its events still in the rings name it.
    fn depart(&mut self, pid: u32, name: &str) {
        if self.departed.len() == DEPARTED {
            self.departed.pop_front();
        }
        self.departed.push_back((pid, name.to_string()));
    }

    pub fn exec(&mut self, root: u32, pid: u32, exe: String) -> Change {
        let Some(t) = self.by_root(root) else {
            return Change::Unknown;
        };
        if pid == root {
            t.exe = exe;
        }
        Change::Exec { target: t.name.clone(), pid }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(pid: u32, comm: &str) -> ResolvedPid {
        let exe = format!("/usr/bin/{comm}");
        ResolvedPid { pid, start: 1000 + u64::from(pid), uids: (0, 0), comm: comm.into(), exe, pod: None }
    }

    #[test]
    fn names_default_to_comm_and_are_unique() {
        let pids = [pid(1, "python3"), pid(2, "python3"), pid(3, "svc")];
        assert_eq!(name_targets(&pids, &[]).unwrap(), ["python3", "python3-2", "svc"]);
        assert_eq!(name_targets(&pids, &["station".into()]).unwrap(), ["station", "python3", "svc"]);
        assert!(matches!(name_targets(&pids[..1], &["a".into(), "b".into()]), Err(AgentError::TooManyNames { .. })));
        assert!(matches!(name_targets(&pids[..2], &["a".into(), "a".into()]), Err(AgentError::DuplicateName(_))));
    }

    #[test]
    fn a_pods_name_comes_before_the_process_name() {
        let pod = PodIdentity { pod: "client-7d9f-x2x".into(), ..PodIdentity::default() };
        let in_pod = ResolvedPid { pod: Some(pod), ..pid(4, "python3") };
        // A container outside Kubernetes has no pod name.
        let in_container = ResolvedPid { pod: Some(PodIdentity::default()), ..pid(5, "python3") };
        assert_eq!(name_targets(&[in_pod, in_container], &[]).unwrap(), ["client-7d9f-x2x", "python3"]);
    }

    #[test]
    fn children_join_and_leave_and_root_exit_ends_target() {
        let mut t = Targets::default();
        t.add(&pid(10, "py"), None, "py");
        assert_eq!(t.add_child(10, 11, Some(5)), Change::ChildJoined { target: "py".into(), child: 11 });
        assert_eq!(t.add_child(10, 11, Some(5)), Change::Unknown);
        assert_eq!(t.add_child(99, 12, Some(5)), Change::Unknown);
        assert_eq!(t.exited(10, 11), Change::ChildLeft { target: "py".into(), child: 11 });
        assert!(t.problems().is_empty());
        assert_eq!(t.exited(10, 10), Change::TargetExited { target: "py".into(), pid: 10 });
        assert_eq!(t.problems(), ["target py (pid 10) has exited"]);
        assert_eq!(t.add_child(10, 13, None), Change::Unknown);
    }

    #[test]
    fn a_childs_pid_reused_by_a_new_child_takes_its_start_time() {
        let mut t = Targets::default();
        t.add(&pid(10, "py"), None, "py");
        assert_eq!(t.add_child(10, 11, None), Change::ChildJoined { target: "py".into(), child: 11 });
        assert_eq!(t.start_of(11), None);
        assert_eq!(t.live_processes(), [ProcId { pid: 10, start: 1010 }]);
        t.set_child_start(10, 11, 7);
        assert_eq!(t.start_of(11), Some(7));
        // The fork event of the same child after the start-up scan found it.
        assert_eq!(t.add_child(10, 11, Some(7)), Change::Unknown);
        // Its exit event was lost and a new child got the pid.
        assert_eq!(t.add_child(10, 11, Some(9)), Change::ChildJoined { target: "py".into(), child: 11 });
        assert_eq!(t.start_of(11), Some(9));
        assert_eq!(t.live_processes(), [ProcId { pid: 10, start: 1010 }, ProcId { pid: 11, start: 9 }]);
    }

    #[test]
    fn only_matched_targets_that_exited_long_enough_ago_are_forgotten() {
        let mut t = Targets::default();
        t.add(&pid(10, "py"), None, "given");
        t.add(&pid(20, "py"), Some("p"), "old");
        t.add(&pid(30, "py"), Some("p"), "recent");
        t.add(&pid(40, "py"), Some("p"), "alive");
        assert_eq!(t.matched_alive(), 3);
        for pid in [10, 20] {
            t.exited(pid, pid);
        }
        let cut = SystemTime::now() + std::time::Duration::from_millis(1);
        std::thread::sleep(std::time::Duration::from_millis(2));
        t.exited(30, 30);
        assert_eq!(t.forget_exited(cut), ["old"]);
        let left: Vec<_> = t.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(left, ["given", "recent", "alive"]);
        assert_eq!(t.matched_alive(), 1);
    }

    #[test]
    fn a_restarted_match_takes_the_place_of_the_exited_one() {
        let mut t = Targets::default();
        t.set_patterns(vec!["pywats_client".into()]);
        // Nothing to watch is not a problem, but it shows.
        assert!(t.problems().is_empty());
        assert_eq!(t.idle_patterns(), ["pywats_client"]);
        assert_eq!(t.add(&pid(20, "python3"), Some("pywats_client"), "station"), "station");
        assert!(t.idle_patterns().is_empty() && t.known_pids().contains(&20));
        assert_eq!(t.add(&pid(21, "python3"), Some("pywats_client"), "station"), "station-2");
        t.exited(20, 20);
        t.exited(21, 21);
        assert!(t.problems().is_empty());
        assert_eq!(t.idle_patterns(), ["pywats_client"]);
        assert_eq!(t.add(&pid(30, "python3"), Some("pywats_client"), "station"), "station");
        assert_eq!(t.iter().filter(|x| x.alive).count(), 1);
        // With "station" alive, the next one takes the place of the exited "station-2".
        assert_eq!(t.add(&pid(31, "python3"), Some("pywats_client"), "station"), "station-2");
        assert_eq!(t.iter().count(), 2);
        assert_eq!(
            t.iter().filter(|x| x.name == "station").map(|x| (x.pid, x.alive)).collect::<Vec<_>>(),
            [(30, true)]
        );
        assert!(t.problems().is_empty());
    }
}
