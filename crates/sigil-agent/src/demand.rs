//! Which entries workloads want: the X.509-SVID cache signs these first, beyond its size if
//! need be, so a bounded cache never leaves a workload without its identity.
//!
//! An entry is in demand while a Workload API stream that sees it is open (a
//! [`Subscription`]), and for [`RECENT_WINDOW`] after a one-shot request (clients such as
//! py-spiffe read the first message and cancel). Entries in an open stream are never dropped;
//! recently requested ones fill the cache before entries nobody asked for.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a one-shot request keeps an entry's SVID in the cache.
pub const RECENT_WINDOW: Duration = Duration::from_secs(3600);

/// The demand for entries, shared by the Workload API and the SVID cache.
#[derive(Debug, Default)]
pub struct Demand {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Entry ID → open streams that see it.
    subscribed: HashMap<String, usize>,
    /// Entry ID → when it was last asked for.
    recent: HashMap<String, Instant>,
}

/// What the cache reads: entries in open streams, and recently asked ones (newest first).
#[derive(Debug, Default)]
pub struct Wanted {
    /// Entries seen by an open stream.
    pub subscribed: HashSet<String>,
    /// Entries asked for within the window, most recent first.
    pub recent: Vec<String>,
}

impl Demand {
    /// Records a request for `ids`; wakes the cache if one of them was not in demand yet.
    pub fn touch<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let now = Instant::now();
        let mut new = false;
        {
            let mut state = self.lock();
            for id in ids {
                new |= state.recent.insert(id.to_owned(), now).is_none()
                    && !state.subscribed.contains_key(id);
            }
        }
        if new {
            self.changed.notify_one();
        }
    }

    /// Keeps `ids` in demand until the returned subscription is dropped or changed.
    pub fn subscribe(self: &Arc<Self>, ids: Vec<String>) -> Subscription {
        let mut subscription = Subscription {
            demand: Arc::clone(self),
            ids: Vec::new(),
        };
        subscription.set(ids);
        subscription
    }

    /// The current demand; forgets requests older than the window.
    pub fn wanted(&self) -> Wanted {
        let now = Instant::now();
        let mut state = self.lock();
        state
            .recent
            .retain(|_, at| now.saturating_duration_since(*at) < RECENT_WINDOW);
        let mut recent: Vec<(&String, &Instant)> = state.recent.iter().collect();
        recent.sort_by(|a, b| b.1.cmp(a.1));
        Wanted {
            subscribed: state.subscribed.keys().cloned().collect(),
            recent: recent.into_iter().map(|(id, _)| id.clone()).collect(),
        }
    }

    /// Resolves when demand has grown since the last call.
    pub async fn grown(&self) {
        self.changed.notified().await;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The maps stay consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The entries one open stream sees; they stay in demand while it lives.
#[derive(Debug)]
pub struct Subscription {
    demand: Arc<Demand>,
    ids: Vec<String>,
}

impl Subscription {
    /// Replaces the entries this stream sees.
    pub fn set(&mut self, mut ids: Vec<String>) {
        ids.sort();
        ids.dedup();
        if ids == self.ids {
            return;
        }
        let mut new = false;
        {
            let mut state = self.demand.lock();
            for id in &ids {
                let known = state.recent.contains_key(id);
                let count = state.subscribed.entry(id.clone()).or_insert(0);
                new |= *count == 0 && !known;
                *count += 1;
            }
            release(&mut state, &self.ids);
        }
        self.ids = ids;
        if new {
            self.demand.changed.notify_one();
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut state = self.demand.lock();
        release(&mut state, &self.ids);
    }
}

fn release(state: &mut State, ids: &[String]) {
    for id in ids {
        if let Some(count) = state.subscribed.get_mut(id) {
            *count -= 1;
            if *count == 0 {
                state.subscribed.remove(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_count_and_release() {
        let demand = Arc::new(Demand::default());
        let mut first = demand.subscribe(vec!["a".into(), "b".into()]);
        let second = demand.subscribe(vec!["b".into()]);
        assert_eq!(demand.wanted().subscribed.len(), 2);
        first.set(vec!["c".into()]);
        let wanted = demand.wanted().subscribed;
        assert!(wanted.contains("b") && wanted.contains("c") && !wanted.contains("a"));
        drop(second);
        drop(first);
        assert!(demand.wanted().subscribed.is_empty());
    }

    #[test]
    fn recent_requests_are_listed_newest_first() {
        let demand = Demand::default();
        demand.touch(["old"]);
        std::thread::sleep(Duration::from_millis(2));
        demand.touch(["new"]);
        assert_eq!(demand.wanted().recent, ["new", "old"]);
    }
}
