//! Wakes the sync streams of the agents a change affects, and no others.
//!
//! A change does not carry its content to the streams: each stream recomputes what its agent
//! may have from the index and sends the difference from what it sent before. So a wake-up
//! is a counter bump on a `watch` channel, which coalesces bursts (ten changes in a row wake a
//! slow stream once) and can never queue without bound.

use std::collections::HashMap;
use std::sync::Mutex;

use sigil_spiffe::SpiffeId;
use tokio::sync::watch;

/// The wake-up channels of the open sync streams.
#[derive(Debug)]
pub struct SyncHub {
    /// One channel per agent with at least one stream open (an agent may reconnect while its
    /// old stream is still draining: both listen on the same channel).
    agents: Mutex<HashMap<SpiffeId, watch::Sender<u64>>>,
    /// Bumped when a bundle changes: our own (CA rotation) or a federated one.
    bundles: watch::Sender<u64>,
    /// Set when the server shuts down: every stream ends so that the graceful shutdown,
    /// which waits for calls in flight, does not wait for streams that never end.
    closing: watch::Sender<bool>,
}

/// What a sync stream waits on.
#[derive(Debug)]
pub struct Subscription {
    /// Bumped when the agent's authorized entries or its standing (banned, evicted) change.
    pub agent: watch::Receiver<u64>,
    /// Bumped when any bundle changes.
    pub bundles: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
}

impl Subscription {
    /// Waits until either channel is bumped. Returns `false` when the stream must end: the
    /// server is shutting down (or the hub is gone).
    pub async fn changed(&mut self) -> bool {
        if *self.closing.borrow() {
            return false;
        }
        tokio::select! {
            result = self.agent.changed() => result.is_ok(),
            result = self.bundles.changed() => result.is_ok(),
            _ = self.closing.wait_for(|closing| *closing) => false,
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
            agents: Mutex::new(HashMap::new()),
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
        let mut agents = self.agents();
        // Forget channels whose streams all ended, so the map holds open streams only.
        agents.retain(|_, sender| sender.receiver_count() > 0);
        let agent = agents
            .entry(agent.clone())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe();
        Subscription {
            agent,
            bundles: self.bundles.subscribe(),
            closing: self.closing.subscribe(),
        }
    }

    /// A channel bumped whenever a bundle changes, for those that follow bundles only.
    pub fn subscribe_bundles(&self) -> watch::Receiver<u64> {
        self.bundles.subscribe()
    }

    /// Wakes the streams of these agents; agents without a stream are skipped.
    pub fn notify<'a>(&self, affected: impl IntoIterator<Item = &'a SpiffeId>) {
        let agents = self.agents();
        for agent in affected {
            if let Some(sender) = agents.get(agent) {
                sender.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// Wakes every stream: a bundle changed.
    pub fn notify_bundles(&self) {
        self.bundles.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The number of agents with an open stream.
    pub fn streaming_agents(&self) -> usize {
        self.agents()
            .values()
            .filter(|sender| sender.receiver_count() > 0)
            .count()
    }

    fn agents(&self) -> std::sync::MutexGuard<'_, HashMap<SpiffeId, watch::Sender<u64>>> {
        // The map holds no invariant a panic could break half-way.
        self.agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(path: &str) -> SpiffeId {
        format!("spiffe://example.org{path}").parse().unwrap()
    }

    #[tokio::test]
    async fn notify_wakes_only_the_named_agents() {
        let hub = SyncHub::new();
        let mut a = hub.subscribe(&id("/a"));
        let mut b = hub.subscribe(&id("/b"));
        hub.notify([&id("/a"), &id("/nobody")]);
        assert!(a.agent.has_changed().unwrap());
        assert!(!b.agent.has_changed().unwrap());
        assert!(a.changed().await);
        assert!(!a.agent.has_changed().unwrap());
        hub.notify_bundles();
        assert!(b.changed().await);
        hub.close();
        assert!(!b.changed().await);
        assert!(!hub.subscribe(&id("/c")).changed().await);
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
        assert_eq!(hub.agents().len(), 1);
    }
}
