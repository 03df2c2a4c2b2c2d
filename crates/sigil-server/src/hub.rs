//! Wakes the sync streams of the agents a change affects, and no others.
//!
//! A change does not carry its content to the streams: it names what it may have changed for
//! each affected agent (one entry ID, or everything), and each stream looks those entries up
//! in the index and sends the difference from what it sent before. So the work per change is
//! proportional to the change, not to the agent's entries. Changes pending for a stream
//! coalesce (ten changes in a row wake a slow stream once, with ten IDs) and cannot queue
//! without bound: past [`MAX_PENDING_ENTRIES`] the stream recomputes its whole view.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sigil_core::EntryId;
use sigil_spiffe::SpiffeId;
use tokio::sync::{Notify, watch};

use crate::index::{Affected, Scope};

/// Beyond this many changed entries pending for one stream, it recomputes its whole view:
/// that costs the same by then, and the pending set stays bounded.
const MAX_PENDING_ENTRIES: usize = 10_000;

/// The wake-up slots of the open sync streams.
#[derive(Debug)]
pub struct SyncHub {
    /// The slots of each agent with at least one stream open (an agent may reconnect while
    /// its old stream is still draining: each stream has its own slot).
    agents: Arc<Mutex<HashMap<SpiffeId, Vec<Arc<Slot>>>>>,
    /// Bumped when a bundle changes: our own (CA rotation) or a federated one.
    bundles: watch::Sender<u64>,
    /// Set when the server shuts down: every stream ends so that the graceful shutdown,
    /// which waits for calls in flight, does not wait for streams that never end.
    closing: watch::Sender<bool>,
}

/// One stream's changes not yet looked at, and its wake-up.
#[derive(Debug, Default)]
struct Slot {
    pending: Mutex<Changes>,
    wake: Notify,
}

/// What changed for an agent since its stream last looked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The entries to look at again: whether the agent still has each, and which version.
    pub entries: HashSet<EntryId>,
    /// Anything may have changed (the agent's standing, its node aliases, a nesting
    /// parent): the stream recomputes the whole view.
    pub everything: bool,
    /// Some bundle changed.
    pub bundles: bool,
}

impl Changes {
    fn add(&mut self, scope: &Scope) {
        match scope {
            Scope::Entry(_) if self.everything => {}
            Scope::Entry(id) if self.entries.len() < MAX_PENDING_ENTRIES => {
                self.entries.insert(id.clone());
            }
            Scope::Entry(_) | Scope::Everything => {
                self.everything = true;
                self.entries = HashSet::new();
            }
        }
    }
}

/// What a sync stream waits on. Dropping it unregisters the stream.
#[derive(Debug)]
pub struct Subscription {
    agent: SpiffeId,
    slot: Arc<Slot>,
    agents: Arc<Mutex<HashMap<SpiffeId, Vec<Arc<Slot>>>>>,
    bundles: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
}

impl Subscription {
    /// Waits until something changed for this stream and returns what. `None` when the
    /// stream must end: the server is shutting down (or the hub is gone).
    pub async fn changed(&mut self) -> Option<Changes> {
        if *self.closing.borrow() {
            return None;
        }
        let bundles = tokio::select! {
            () = self.slot.wake.notified() => false,
            result = self.bundles.changed() => {
                result.ok()?;
                true
            }
            _ = self.closing.wait_for(|closing| *closing) => return None,
        };
        // Both may have happened; a bump seen here is not seen again.
        let bundles = bundles || self.bundles.has_changed().unwrap_or(false);
        self.bundles.mark_unchanged();
        let mut changes = std::mem::take(&mut *lock(&self.slot.pending));
        changes.bundles = bundles;
        Some(changes)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut agents = lock(&self.agents);
        if let Some(slots) = agents.get_mut(&self.agent) {
            slots.retain(|slot| !Arc::ptr_eq(slot, &self.slot));
            if slots.is_empty() {
                agents.remove(&self.agent);
            }
        }
    }
}

impl Default for SyncHub {
    fn default() -> Self {
        Self::new()
    }
}

impl SyncHub {
    /// A hub with no streams.
    pub fn new() -> Self {
        Self {
            agents: Arc::new(Mutex::new(HashMap::new())),
            bundles: watch::Sender::new(0),
            closing: watch::Sender::new(false),
        }
    }

    /// Ends every stream, now and from now on (server shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Registers a stream of `agent`.
    pub fn subscribe(&self, agent: &SpiffeId) -> Subscription {
        let slot = Arc::new(Slot::default());
        lock(&self.agents)
            .entry(agent.clone())
            .or_default()
            .push(Arc::clone(&slot));
        let mut bundles = self.bundles.subscribe();
        bundles.mark_unchanged();
        Subscription {
            agent: agent.clone(),
            slot,
            agents: Arc::clone(&self.agents),
            bundles,
            closing: self.closing.subscribe(),
        }
    }

    /// A channel bumped whenever a bundle changes, for those that follow bundles only.
    pub fn subscribe_bundles(&self) -> watch::Receiver<u64> {
        self.bundles.subscribe()
    }

    /// Tells the streams of these agents that anything may have changed for them (their
    /// standing or their node selectors); agents without a stream are skipped.
    pub fn notify<'a>(&self, agents: impl IntoIterator<Item = &'a SpiffeId>) {
        let slots = lock(&self.agents);
        for agent in agents {
            wake(&slots, agent, &Scope::Everything);
        }
    }

    /// Tells the streams of each change's affected agents what the change may have changed.
    pub fn notify_changes<'a>(&self, changes: impl IntoIterator<Item = &'a (Affected, Scope)>) {
        let slots = lock(&self.agents);
        for (affected, scope) in changes {
            for agent in affected {
                wake(&slots, agent, scope);
            }
        }
    }

    /// Wakes every stream: a bundle changed.
    pub fn notify_bundles(&self) {
        self.bundles.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The number of agents with an open stream.
    pub fn streaming_agents(&self) -> usize {
        lock(&self.agents).len()
    }
}

fn wake(slots: &HashMap<SpiffeId, Vec<Arc<Slot>>>, agent: &SpiffeId, scope: &Scope) {
    for slot in slots.get(agent).into_iter().flatten() {
        lock(&slot.pending).add(scope);
        // Stored when the stream is busy: it looks again once done.
        slot.wake.notify_one();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Neither the map nor a pending set holds an invariant a panic could break half-way.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(path: &str) -> SpiffeId {
        format!("spiffe://example.org{path}").parse().unwrap()
    }

    fn entry(name: &str) -> EntryId {
        name.parse().unwrap()
    }

    fn change(agents: &[&SpiffeId], scope: Scope) -> (Affected, Scope) {
        (agents.iter().map(|a| (*a).clone()).collect(), scope)
    }

    #[tokio::test]
    async fn each_stream_learns_the_entries_its_agent_was_told_of() {
        let hub = SyncHub::new();
        let mut a = hub.subscribe(&id("/a"));
        let mut a_again = hub.subscribe(&id("/a"));
        let mut b = hub.subscribe(&id("/b"));
        hub.notify_changes(&[
            change(&[&id("/a"), &id("/nobody")], Scope::Entry(entry("e1"))),
            change(&[&id("/a")], Scope::Entry(entry("e2"))),
        ]);
        let expected = Changes {
            entries: HashSet::from([entry("e1"), entry("e2")]),
            everything: false,
            bundles: false,
        };
        assert_eq!(a.changed().await, Some(expected));
        // The other stream of the same agent has its own copy.
        assert_eq!(a_again.changed().await.unwrap().entries.len(), 2);
        hub.notify_bundles();
        let seen = b.changed().await.unwrap();
        assert!(seen.bundles && seen.entries.is_empty() && !seen.everything);
        hub.notify([&id("/b")]);
        hub.notify_changes(&[change(&[&id("/b")], Scope::Entry(entry("e3")))]);
        let seen = b.changed().await.unwrap();
        assert!(seen.everything && seen.entries.is_empty(), "{seen:?}");
        hub.close();
        assert_eq!(b.changed().await, None);
        assert_eq!(hub.subscribe(&id("/c")).changed().await, None);
    }

    #[tokio::test]
    async fn too_many_pending_entries_become_everything() {
        let hub = SyncHub::new();
        let mut a = hub.subscribe(&id("/a"));
        let changes: Vec<_> = (0..=MAX_PENDING_ENTRIES)
            .map(|n| change(&[&id("/a")], Scope::Entry(entry(&format!("e{n}")))))
            .collect();
        hub.notify_changes(&changes);
        let seen = a.changed().await.unwrap();
        assert!(seen.everything && seen.entries.is_empty());
    }

    #[test]
    fn closed_streams_are_forgotten() {
        let hub = SyncHub::new();
        let a = hub.subscribe(&id("/a"));
        let a2 = hub.subscribe(&id("/a"));
        assert_eq!(hub.streaming_agents(), 1);
        drop(a);
        assert_eq!(hub.streaming_agents(), 1);
        drop(a2);
        assert_eq!(hub.streaming_agents(), 0);
        let _b = hub.subscribe(&id("/b"));
        assert_eq!(lock(&hub.agents).len(), 1);
    }
}
