//! Queue bookkeeping. An item is a set of files in the queue directory named
//! `<id><state suffix>`; renames move it between states, directory listings
//! (at start and periodically) correct what events missed.
//!
//! Cost: a count per state is kept as items move, so an event costs O(1)
//! whatever the queue holds, and a listing is applied in one O(n) pass.

use std::{
    collections::{HashMap, HashSet},
    num::NonZeroU64,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use crate::fs::{preset::State, worker_status::Ages};

/// Items tracked per queue. An item costs about 100 bytes (its id, state,
/// time and hash-table slot), so the cap bounds a queue at about 100 MiB.
/// Past it, new items are refused and counted
/// (`pywats_agent_queue_items_untracked_total`); the depth is then a lower bound.
pub const MAX_ITEMS: usize = 1_000_000;

/// Items tracked in all queues together: every target's client config adds
/// queues, so the per-queue cap alone bounds nothing. Past it, new items are
/// refused and counted as above.
pub const MAX_ITEMS_TOTAL: usize = 2_000_000;

/// The items all queues may hold together: each queue's [`Items`] takes from
/// it and gives back (all of its items when it is dropped).
#[derive(Clone, Debug)]
pub struct ItemBudget {
    used: Arc<AtomicUsize>,
    max: usize,
}

impl ItemBudget {
    pub fn new(max: usize) -> ItemBudget {
        ItemBudget { used: Arc::default(), max }
    }

    fn take(&self) -> bool {
        self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < self.max).then_some(n + 1)).is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }
}

impl Default for ItemBudget {
    fn default() -> ItemBudget {
        ItemBudget::new(MAX_ITEMS_TOTAL)
    }
}

/// How a processed item ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
        }
    }
}

/// What a change meant, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Enqueued,
    Started,
    /// The duration when the processing start was seen.
    Finished {
        outcome: Outcome,
        duration_ns: Option<u64>,
    },
    /// `processing → queued`: a stuck item put back.
    Recovered,
    /// `failed → queued`.
    Retried,
    Removed,
    /// A new item the cap refused.
    Untracked,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Item {
    state: State,
    /// When the item entered its state (monotonic ns), if known. Never 0 on
    /// the kernel's clock; the niche keeps an item at 16 bytes.
    since_ns: Option<NonZeroU64>,
}
const _: () = assert!(std::mem::size_of::<Item>() == 16);

/// A directory listing: item id → (state, since). `complete` unless item files
/// past the cap were left out, in which case absence proves nothing.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub items: HashMap<Box<str>, (State, Option<u64>)>,
    pub complete: bool,
}

/// Ids that events changed while a listing was being read: the listing is
/// older than those events, so it says nothing about these ids.
#[derive(Debug, Default)]
enum Touched {
    #[default]
    Idle,
    Since(HashSet<Box<str>>),
    /// More ids changed during the read than the cap allows to remember: the
    /// listing is not used.
    Overflowed,
}

/// What applying a listing did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Items whose state the listing corrected (not counted for the first listing).
    pub corrected: usize,
    /// Item files the cap refused to track.
    pub untracked: usize,
    /// Too many ids changed while the listing was read: it was not used.
    pub dropped: bool,
}

#[derive(Debug)]
pub struct Items {
    items: HashMap<Box<str>, Item>,
    counts: [usize; 4],
    cap: usize,
    budget: ItemBudget,
    /// Disagreements the last listing showed: id → the listing's state.
    suspects: HashMap<Box<str>, Option<State>>,
    touched: Touched,
    /// Entry times of the queued and processing items (worker status).
    ages: Ages,
}

impl Default for Items {
    fn default() -> Items {
        Items::new(MAX_ITEMS, ItemBudget::default())
    }
}

impl Drop for Items {
    fn drop(&mut self) {
        self.budget.give(self.items.len());
    }
}

impl Items {
    /// At most `cap` items, each also taken from `budget`.
    pub fn new(cap: usize, budget: ItemBudget) -> Items {
        Items {
            items: HashMap::new(),
            counts: [0; 4],
            cap,
            budget,
            suspects: HashMap::new(),
            touched: Touched::Idle,
            ages: Ages::default(),
        }
    }

    pub fn count(&self, state: State) -> usize {
        self.counts[state.index()]
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The state of every item, for checking the counts against a recount.
    pub fn states(&self) -> impl Iterator<Item = State> + '_ {
        self.items.values().map(|i| i.state)
    }

    /// When the item longest in `state` (queued or processing) entered it.
    pub fn oldest(&self, state: State) -> Option<u64> {
        self.ages.oldest(state)
    }

    /// Stores `item` under `id`; false when `id` is new and the cap is reached.
    fn put(&mut self, id: &str, item: Item) -> bool {
        if let Some(slot) = self.items.get_mut(id) {
            self.counts[slot.state.index()] -= 1;
            self.ages.remove(slot.state, slot.since_ns);
            *slot = item;
        } else if self.items.len() >= self.cap || !self.budget.take() {
            return false;
        } else {
            self.items.insert(id.into(), item);
        }
        self.counts[item.state.index()] += 1;
        self.ages.add(item.state, item.since_ns);
        true
    }

    fn take(&mut self, id: &str) -> Option<Item> {
        let item = self.items.remove(id)?;
        self.budget.give(1);
        self.counts[item.state.index()] -= 1;
        self.ages.remove(item.state, item.since_ns);
        Some(item)
    }

    fn touch(&mut self, id: &str) {
        if let Touched::Since(ids) = &mut self.touched {
            if ids.len() >= self.cap {
                self.touched = Touched::Overflowed;
            } else if !ids.contains(id) {
                ids.insert(id.into());
            }
        }
    }

    /// Moves `id` to `state` (creating it) at `ts_ns`.
    pub fn set(&mut self, id: &str, state: State, ts_ns: u64) -> Option<Change> {
        self.touch(id);
        let old = self.items.get(id).copied();
        let duration_ns = old
            .filter(|i| i.state == State::Processing)
            .and_then(|i| i.since_ns)
            .map(|s| ts_ns.saturating_sub(s.get()));
        let change = match (old.map(|i| i.state), state) {
            (Some(a), b) if a == b => return None,
            (Some(State::Processing), State::Queued) => Change::Recovered,
            (Some(State::Failed), State::Queued) => Change::Retried,
            (_, State::Queued) => Change::Enqueued,
            (_, State::Processing) => Change::Started,
            (_, State::Completed) => Change::Finished { outcome: Outcome::Completed, duration_ns },
            (_, State::Failed) => Change::Finished { outcome: Outcome::Failed, duration_ns },
        };
        if !self.put(id, Item { state, since_ns: NonZeroU64::new(ts_ns) }) {
            return Some(Change::Untracked);
        }
        Some(change)
    }

    /// A file of `id` in `state` was deleted. A processing item deleted is done
    /// (the persistent queue deletes on success); a stale name is ignored.
    pub fn delete(&mut self, id: &str, state: State, ts_ns: u64) -> Option<Change> {
        self.touch(id);
        if !self.is_current(id, state) {
            return None;
        }
        let item = self.take(id)?;
        Some(match state {
            State::Processing => Change::Finished {
                outcome: Outcome::Completed,
                duration_ns: item.since_ns.map(|s| ts_ns.saturating_sub(s.get())),
            },
            _ => Change::Removed,
        })
    }

    /// Forgets `id` if `state` is its current state (it left the queue directory).
    pub fn forget(&mut self, id: &str, state: State) -> bool {
        self.touch(id);
        self.is_current(id, state) && self.take(id).is_some()
    }

    /// Whether a file name of `id` in `state` is the item's current one.
    pub fn is_current(&self, id: &str, state: State) -> bool {
        self.items.get(id).is_some_and(|i| i.state == state)
    }

    /// A listing is about to be read: from now on, events note the ids they
    /// change, and [`Items::reconcile`] leaves those alone.
    pub fn begin_scan(&mut self) {
        self.touched = Touched::Since(HashSet::new());
    }

    /// Corrects the state from a listing (`None`: the directory could not be
    /// read, nothing is corrected). Events may still be in flight when the
    /// directory is read, so a disagreement is only corrected when the next
    /// listing shows it again; `initial` (the first listing of a queue)
    /// applies it at once. One pass over the items and one over the listing.
    pub fn reconcile(&mut self, listing: Option<Listing>, initial: bool) -> Reconciled {
        let (touched, listing) = match (std::mem::take(&mut self.touched), listing) {
            (Touched::Overflowed, _) => return Reconciled { dropped: true, ..Reconciled::default() },
            (_, None) => return Reconciled::default(),
            (Touched::Idle, Some(l)) => (HashSet::new(), l),
            (Touched::Since(ids), Some(l)) => (ids, l),
        };
        let confirmed = |suspects: &HashMap<Box<str>, Option<State>>, id: &str, want: Option<State>| {
            initial || suspects.get(id) == Some(&want)
        };
        let mut suspects = HashMap::new();
        let mut out = Reconciled::default();
        if listing.complete {
            let gone: Vec<Box<str>> = self
                .items
                .keys()
                .filter(|id| !listing.items.contains_key(*id) && !touched.contains(*id))
                .cloned()
                .collect();
            for id in gone {
                if confirmed(&self.suspects, &id, None) {
                    self.take(&id);
                    out.corrected += 1;
                } else {
                    suspects.insert(id, None);
                }
            }
        }
        for (id, (state, since_ns)) in listing.items {
            if touched.contains(&id) || self.is_current(&id, state) {
                continue;
            }
            if !confirmed(&self.suspects, &id, Some(state)) {
                suspects.insert(id, Some(state));
            } else if self.put(&id, Item { state, since_ns: since_ns.and_then(NonZeroU64::new) }) {
                out.corrected += 1;
            } else {
                out.untracked += 1;
            }
        }
        self.suspects = suspects;
        if initial {
            out.corrected = 0;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(entries: &[(&str, State, Option<u64>)]) -> Option<Listing> {
        let items = entries.iter().map(|&(id, st, since)| (id.into(), (st, since))).collect();
        Some(Listing { items, complete: true })
    }

    #[test]
    fn lifecycle_with_durations() {
        let mut q = Items::default();
        assert_eq!(q.set("a", State::Queued, 10), Some(Change::Enqueued));
        assert_eq!(q.set("a", State::Queued, 11), None);
        assert_eq!(q.set("a", State::Processing, 20), Some(Change::Started));
        assert_eq!(
            q.set("a", State::Completed, 50),
            Some(Change::Finished { outcome: Outcome::Completed, duration_ns: Some(30) })
        );
        assert_eq!(q.set("b", State::Queued, 60), Some(Change::Enqueued));
        assert_eq!(q.set("b", State::Processing, 70), Some(Change::Started));
        assert_eq!(q.set("b", State::Queued, 75), Some(Change::Recovered));
        assert_eq!(q.set("b", State::Processing, 80), Some(Change::Started));
        assert_eq!(
            q.set("b", State::Failed, 95),
            Some(Change::Finished { outcome: Outcome::Failed, duration_ns: Some(15) })
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
            Some(Change::Finished { outcome: Outcome::Completed, duration_ns: Some(30) })
        );
        q.set("b", State::Completed, 50);
        assert_eq!(q.delete("b", State::Completed, 60), Some(Change::Removed));
        assert!(q.is_empty());
        assert_eq!(q.count(State::Completed), 0);
    }

    #[test]
    fn reconcile_corrects_and_keeps_times() {
        let mut q = Items::default();
        q.set("a", State::Processing, 10);
        q.set("gone", State::Queued, 10);
        let l = listing(&[("a", State::Processing, Some(999)), ("new", State::Queued, Some(5))]);
        // A first disagreement may be an event in flight: nothing changes yet.
        assert_eq!(q.reconcile(l.clone(), false).corrected, 0);
        assert_eq!(q.count(State::Queued), 1);
        assert_eq!(q.reconcile(l, false).corrected, 2);
        assert_eq!(
            q.set("a", State::Completed, 30),
            Some(Change::Finished { outcome: Outcome::Completed, duration_ns: Some(20) })
        );
        assert_eq!(q.count(State::Queued), 1);
        assert!(q.is_current("new", State::Queued));
    }

    #[test]
    fn initial_scan_applies_at_once_and_in_flight_events_win() {
        let mut q = Items::default();
        assert_eq!(q.reconcile(listing(&[("a", State::Processing, Some(7))]), true).corrected, 0);
        assert!(q.is_current("a", State::Processing));
        // The listing saw "completed" before its event arrived; the event then counts.
        assert_eq!(q.reconcile(listing(&[("a", State::Completed, None)]), false).corrected, 0);
        assert_eq!(
            q.set("a", State::Completed, 10),
            Some(Change::Finished { outcome: Outcome::Completed, duration_ns: Some(3) })
        );
        assert_eq!(q.reconcile(listing(&[("a", State::Completed, None)]), false).corrected, 0);
    }

    #[test]
    fn events_during_a_read_win_over_the_listing() {
        let mut q = Items::default();
        q.set("a", State::Queued, 1);
        // Read while "a" moved on and "b" came and went: the listing is older.
        for initial in [true, false, false] {
            q.begin_scan();
            q.set("a", State::Processing, 2);
            q.set("b", State::Queued, 3);
            q.delete("b", State::Queued, 4);
            let r = q.reconcile(listing(&[("a", State::Queued, None), ("b", State::Queued, None)]), initial);
            assert_eq!(r, Reconciled::default());
            assert!(q.is_current("a", State::Processing));
            assert_eq!(q.len(), 1);
        }
        // Too many changes to remember during one read: the listing is dropped.
        let mut q = Items::new(2, ItemBudget::default());
        q.begin_scan();
        for id in ["x", "y", "z"] {
            q.forget(id, State::Queued);
        }
        let r = q.reconcile(listing(&[("x", State::Queued, None)]), true);
        assert_eq!(r, Reconciled { dropped: true, ..Reconciled::default() });
        assert!(q.is_empty());
    }

    #[test]
    fn the_cap_refuses_new_items_and_counts_them() {
        let mut q = Items::new(2, ItemBudget::default());
        assert_eq!(q.set("a", State::Queued, 1), Some(Change::Enqueued));
        assert_eq!(q.set("b", State::Queued, 1), Some(Change::Enqueued));
        assert_eq!(q.set("c", State::Queued, 1), Some(Change::Untracked));
        // Known items still move.
        assert_eq!(q.set("a", State::Processing, 2), Some(Change::Started));
        let l = listing(&[("a", State::Processing, None), ("b", State::Queued, None), ("c", State::Queued, None)]);
        assert_eq!(q.reconcile(l, true), Reconciled { untracked: 1, ..Reconciled::default() });
        assert_eq!((q.len(), q.count(State::Queued)), (2, 1));
        // An incomplete listing (items past the cap left out) removes nothing.
        let partial = Listing { complete: false, ..listing(&[("b", State::Queued, None)]).unwrap() };
        for _ in 0..2 {
            assert_eq!(q.reconcile(Some(partial.clone()), false), Reconciled::default());
        }
        assert_eq!(q.len(), 2);
    }

    /// A small deterministic generator (xorshift), so failures replay.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn recount(q: &Items) -> [usize; 4] {
        let mut counts = [0; 4];
        for st in q.states() {
            counts[st.index()] += 1;
        }
        counts
    }

    #[test]
    fn counts_equal_a_recount_after_random_events_and_listings() {
        for seed in 1..=200u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let cap = 1 + rng.below(40) as usize;
            let mut q = Items::new(cap, ItemBudget::default());
            let ids: Vec<String> = (0..50).map(|i| format!("id{i}")).collect();
            for step in 0..2000u64 {
                let id = &ids[rng.below(ids.len() as u64) as usize];
                let st = State::ALL[rng.below(4) as usize];
                match rng.below(20) {
                    0..=9 => {
                        q.set(id, st, step);
                    }
                    10..=13 => {
                        q.delete(id, st, step);
                    }
                    14..=15 => {
                        q.forget(id, st);
                    }
                    16 => q.begin_scan(),
                    _ => {
                        let n = rng.below(60);
                        let entries: HashMap<Box<str>, (State, Option<u64>)> = (0..n)
                            .map(|_| {
                                let id = ids[rng.below(ids.len() as u64) as usize].as_str().into();
                                (id, (State::ALL[rng.below(4) as usize], Some(step)))
                            })
                            .collect();
                        let complete = rng.below(4) != 0;
                        q.reconcile(Some(Listing { items: entries, complete }), rng.below(5) == 0);
                    }
                }
                assert!(q.len() <= cap, "seed {seed} step {step}: {} items over the cap {cap}", q.len());
                let counts = State::ALL.map(|st| q.count(st));
                assert_eq!(counts, recount(&q), "seed {seed} step {step}");
                for st in [State::Queued, State::Processing] {
                    let times = q.items.values().filter(|i| i.state == st).filter_map(|i| i.since_ns);
                    assert_eq!(q.oldest(st), times.map(NonZeroU64::get).min(), "seed {seed} step {step} {st:?}");
                }
            }
        }
    }

    #[test]
    fn a_hundred_thousand_items_cost_linear_time() {
        let mut q = Items::default();
        let start = std::time::Instant::now();
        for i in 0..100_000u64 {
            let id = format!("r{i}");
            q.set(&id, State::Queued, i);
            if i % 10 == 0 {
                q.set(&id, State::Processing, i + 1);
                q.set(&id, State::Completed, i + 2);
            }
        }
        let full: HashMap<Box<str>, (State, Option<u64>)> =
            (0..100_000u64).map(|i| (format!("r{i}").into(), (State::Queued, None))).collect();
        q.begin_scan();
        q.reconcile(Some(Listing { items: full.clone(), complete: true }), false);
        q.reconcile(Some(Listing { items: full, complete: true }), false);
        assert_eq!(q.count(State::Queued), 100_000);
        // Quadratic bookkeeping took minutes here; linear takes well under a second.
        assert!(start.elapsed() < std::time::Duration::from_secs(5), "{:?}", start.elapsed());
    }

    #[test]
    fn all_queues_share_one_budget() {
        let budget = ItemBudget::new(3);
        let (mut a, mut b) = (Items::new(10, budget.clone()), Items::new(10, budget.clone()));
        let item = Item { state: State::Queued, since_ns: None };
        assert!(a.put("1", item) && a.put("2", item) && b.put("1", item));
        assert!(!b.put("2", item), "the budget is spent");
        assert!(a.put("1", item), "an item known already moves freely");
        a.take("1");
        assert!(b.put("2", item));
        drop(a);
        assert!(b.put("3", item), "a queue dropped gives its items back");
        assert!(!b.put("4", item));
    }
}
