//! Queue state machines. An item is a set of files in the queue directory
//! named `<id><state suffix>`; renames move it between states, the directory
//! listing (at start and periodically) corrects what events missed.

use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Queued,
    Processing,
    Completed,
    Failed,
}

impl State {
    pub const ALL: [State; 4] = [State::Queued, State::Processing, State::Completed, State::Failed];

    pub fn name(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Processing => "processing",
            State::Completed => "completed",
            State::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.name() == s)
    }
}

/// File naming of a queue flavour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preset {
    pub name: String,
    /// `item_type` label of the processing-duration histogram.
    pub item_type: String,
    /// Suffix → state; the longest matching suffix wins.
    pub states: Vec<(String, State)>,
    /// Companion files that are not items (`.error.info`, `.meta.json`).
    pub ignore: Vec<String>,
}

impl Preset {
    /// The client service's pending queue (`async_pending_queue.py`).
    pub fn service() -> Preset {
        Preset {
            name: "service".into(),
            item_type: "report".into(),
            states: vec![
                (".queued".into(), State::Queued),
                (".processing".into(), State::Processing),
                (".completed".into(), State::Completed),
                (".error".into(), State::Failed),
            ],
            ignore: vec![".error.info".into()],
        }
    }

    /// `pywats_client.queue.PersistentQueue`.
    pub fn persistent() -> Preset {
        Preset {
            name: "persistent".into(),
            item_type: "wsjf".into(),
            states: vec![
                (".pending.wsjf".into(), State::Queued),
                (".processing.wsjf".into(), State::Processing),
                (".completed.wsjf".into(), State::Completed),
                (".failed.wsjf".into(), State::Failed),
            ],
            ignore: vec![".meta.json".into()],
        }
    }

    pub fn by_name(name: &str) -> Option<Preset> {
        match name {
            "service" => Some(Preset::service()),
            "persistent" => Some(Preset::persistent()),
            _ => None,
        }
    }

    /// `(item id, state)` of a file name, if it is an item file.
    pub fn classify<'a>(&self, file: &'a str) -> Option<(&'a str, State)> {
        let longest_ignore = self.ignore.iter().filter(|s| file.ends_with(s.as_str())).map(String::len).max();
        let (suffix, state) =
            self.states.iter().filter(|(s, _)| file.ends_with(s.as_str())).max_by_key(|(s, _)| s.len())?;
        if longest_ignore.is_some_and(|n| n >= suffix.len()) {
            return None;
        }
        let id = &file[..file.len() - suffix.len()];
        (!id.is_empty() && !id.starts_with('.')).then_some((id, *state))
    }
}

/// What a change meant, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Enqueued,
    Started,
    /// Completed or failed; the duration when the processing start was seen.
    Finished {
        state: State,
        duration_ns: Option<u64>,
    },
    /// `processing → queued`: a stuck item put back.
    Recovered,
    /// `failed → queued`.
    Retried,
    Removed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Item {
    state: State,
    /// When the item entered its state (monotonic ns), if known.
    since_ns: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Items {
    items: HashMap<String, Item>,
    /// Disagreements the last listing showed: id → the listing's state.
    suspects: HashMap<String, Option<State>>,
}

impl Items {
    pub fn count(&self, state: State) -> usize {
        self.items.values().filter(|i| i.state == state).count()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Moves `id` to `state` (creating it) at `ts_ns`.
    pub fn set(&mut self, id: &str, state: State, ts_ns: u64) -> Option<Change> {
        let old = self.items.get(id).copied();
        let change = match (old.map(|i| i.state), state) {
            (Some(a), b) if a == b => return None,
            (None | Some(State::Completed), State::Queued) => Change::Enqueued,
            (Some(State::Processing), State::Queued) => Change::Recovered,
            (Some(State::Failed), State::Queued) => Change::Retried,
            (_, State::Processing) => Change::Started,
            (Some(State::Processing), done) => Change::Finished {
                state: done,
                duration_ns: old.and_then(|i| i.since_ns).map(|s| ts_ns.saturating_sub(s)),
            },
            (_, done) => Change::Finished { state: done, duration_ns: None },
        };
        self.items.insert(id.to_string(), Item { state, since_ns: Some(ts_ns) });
        Some(change)
    }

    /// A file of `id` in `state` was deleted. A processing item deleted is done
    /// (the persistent queue deletes on success); a stale name is ignored.
    pub fn delete(&mut self, id: &str, state: State, ts_ns: u64) -> Option<Change> {
        let item = *self.items.get(id)?;
        if item.state != state {
            return None;
        }
        self.items.remove(id);
        Some(match state {
            State::Processing => Change::Finished {
                state: State::Completed,
                duration_ns: item.since_ns.map(|s| ts_ns.saturating_sub(s)),
            },
            _ => Change::Removed,
        })
    }

    /// Forgets `id` if `state` is its current state (it left the queue directory).
    pub fn forget(&mut self, id: &str, state: State) -> bool {
        if self.is_current(id, state) {
            self.items.remove(id);
            true
        } else {
            false
        }
    }

    /// Whether a file name of `id` in `state` is the item's current one.
    pub fn is_current(&self, id: &str, state: State) -> bool {
        self.items.get(id).is_some_and(|i| i.state == state)
    }

    /// Corrects the state from a directory listing (`id → (state, since)`);
    /// returns how many items it corrected. Events may still be in flight when
    /// the directory is read, so a disagreement is only corrected when the
    /// next listing shows it again (`initial` applies the listing at once).
    pub fn reconcile(&mut self, listing: HashMap<String, (State, Option<u64>)>, initial: bool) -> usize {
        let mut seen_now: HashMap<String, Option<State>> = HashMap::new();
        let ids: std::collections::HashSet<String> = self.items.keys().chain(listing.keys()).cloned().collect();
        let mut corrected = 0;
        for id in ids {
            let want = listing.get(&id).copied();
            let have = self.items.get(&id).map(|i| i.state);
            if want.map(|w| w.0) == have {
                continue;
            }
            let confirmed = initial || self.suspects.get(&id) == Some(&want.map(|w| w.0));
            if !confirmed {
                seen_now.insert(id, want.map(|w| w.0));
                continue;
            }
            corrected += 1;
            match want {
                Some((state, since_ns)) => {
                    self.items.insert(id, Item { state, since_ns });
                }
                None => {
                    self.items.remove(&id);
                }
            }
        }
        self.suspects = seen_now;
        if initial {
            0
        } else {
            corrected
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_classify_files() {
        let s = Preset::service();
        assert_eq!(s.classify("r1.queued"), Some(("r1", State::Queued)));
        assert_eq!(s.classify("r1.error"), Some(("r1", State::Failed)));
        assert_eq!(s.classify("r1.error.info"), None);
        assert_eq!(s.classify("r1.json"), None);
        assert_eq!(s.classify(".queued"), None);
        let p = Preset::persistent();
        assert_eq!(p.classify("a-1.pending.wsjf"), Some(("a-1", State::Queued)));
        assert_eq!(p.classify("a-1.processing.wsjf"), Some(("a-1", State::Processing)));
        assert_eq!(p.classify("a-1.meta.json"), None);
        assert_eq!(p.classify("a-1.wsjf"), None);
        assert_eq!(p.classify(".tmp123.pending.wsjf"), None);
    }

    #[test]
    fn lifecycle_with_durations() {
        let mut q = Items::default();
        assert_eq!(q.set("a", State::Queued, 10), Some(Change::Enqueued));
        assert_eq!(q.set("a", State::Queued, 11), None);
        assert_eq!(q.set("a", State::Processing, 20), Some(Change::Started));
        assert_eq!(
            q.set("a", State::Completed, 50),
            Some(Change::Finished { state: State::Completed, duration_ns: Some(30) })
        );
        assert_eq!(q.set("b", State::Queued, 60), Some(Change::Enqueued));
        assert_eq!(q.set("b", State::Processing, 70), Some(Change::Started));
        assert_eq!(q.set("b", State::Queued, 75), Some(Change::Recovered));
        assert_eq!(q.set("b", State::Processing, 80), Some(Change::Started));
        assert_eq!(
            q.set("b", State::Failed, 95),
            Some(Change::Finished { state: State::Failed, duration_ns: Some(15) })
        );
        assert_eq!(q.set("b", State::Queued, 99), Some(Change::Retried));
        assert_eq!(q.count(State::Queued), 1);
        assert_eq!(q.count(State::Completed), 1);
    }

    #[test]
    fn deletes() {
        let mut q = Items::default();
        q.set("a", State::Processing, 10);
        // A stale name of another state is ignored.
        assert_eq!(q.delete("a", State::Queued, 15), None);
        assert_eq!(
            q.delete("a", State::Processing, 40),
            Some(Change::Finished { state: State::Completed, duration_ns: Some(30) })
        );
        q.set("b", State::Completed, 50);
        assert_eq!(q.delete("b", State::Completed, 60), Some(Change::Removed));
        assert!(q.is_empty());
    }

    #[test]
    fn reconcile_corrects_and_keeps_times() {
        let mut q = Items::default();
        q.set("a", State::Processing, 10);
        q.set("gone", State::Queued, 10);
        let listing = HashMap::from([
            ("a".to_string(), (State::Processing, Some(999))),
            ("new".to_string(), (State::Queued, Some(5))),
        ]);
        // A first disagreement may be an event in flight: nothing changes yet.
        assert_eq!(q.reconcile(listing.clone(), false), 0);
        assert_eq!(q.count(State::Queued), 1);
        assert_eq!(q.reconcile(listing, false), 2);
        assert_eq!(
            q.set("a", State::Completed, 30),
            Some(Change::Finished { state: State::Completed, duration_ns: Some(20) })
        );
        assert_eq!(q.count(State::Queued), 1);
        assert!(q.is_current("new", State::Queued));
    }

    #[test]
    fn initial_scan_applies_at_once_and_in_flight_events_win() {
        let mut q = Items::default();
        let listing = HashMap::from([("a".to_string(), (State::Processing, Some(7)))]);
        assert_eq!(q.reconcile(listing, true), 0);
        assert!(q.is_current("a", State::Processing));
        // The listing saw "completed" before its event arrived; the event then counts.
        let listing = HashMap::from([("a".to_string(), (State::Completed, None))]);
        assert_eq!(q.reconcile(listing, false), 0);
        assert_eq!(
            q.set("a", State::Completed, 10),
            Some(Change::Finished { state: State::Completed, duration_ns: Some(3) })
        );
        let listing = HashMap::from([("a".to_string(), (State::Completed, None))]);
        assert_eq!(q.reconcile(listing, false), 0);
    }
}
