//! How a queue flavour names its files: the state suffixes of an item and the
//! companion files that are not items.

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

    /// Position in [`State::ALL`].
    pub fn index(self) -> usize {
        self as usize
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
    fn indexes_follow_all() {
        for (i, st) in State::ALL.into_iter().enumerate() {
            assert_eq!(st.index(), i);
        }
    }
}
