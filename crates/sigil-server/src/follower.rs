//! Following what the other servers on the datastore write: the change feed read past a
//! [`FeedCursor`] whenever a notice comes (PostgreSQL `LISTEN`) or [`POLL_INTERVAL`] passes
//! (MySQL/MariaDB, for now), each event applied to memory from the record as stored, so the
//! agents connected here see entries, bans, evictions, bundles written through any server, and
//! a federation relationship made through any server is fetched here too. Old events are
//! pruned on the way.

use std::sync::Arc;
use std::time::Duration;

use sigil_core::EntryId;
use sigil_spiffe::{SpiffeId, TrustDomain};
use tokio::sync::watch;

use crate::datastore::{ChangeNotices, DataStoreError, Event, EventKind, FeedCursor};
use crate::federation::Federation;
use crate::state::ServerState;

/// How long a hole in the feed is waited for: far longer than any write transaction of ours.
pub const GAP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long events are kept. A server cut off from the datastore for longer misses what was
/// pruned meanwhile until its restart (its holes are given up, and the log says so).
pub const EVENT_RETENTION: Duration = Duration::from_secs(3600);

/// How often old events are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// What the follower changes besides the state: the running federation relationships, and
/// the trust domains of the config file's (the config file wins: the API refuses to make one
/// of those, so an event about one comes from a server with another config, and is ignored).
pub struct FederationTarget {
    /// The running relationships.
    pub federation: Arc<Federation>,
    /// The config file's `federates_with` trust domains.
    pub configured: Vec<TrustDomain>,
}

/// Follows the feed from `cursor` until `shutdown`.
pub async fn follow(
    state: Arc<ServerState>,
    federation: FederationTarget,
    mut cursor: FeedCursor,
    mut notices: ChangeNotices,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut pruned_at = tokio::time::Instant::now();
    loop {
        match state.datastore().follow(&mut cursor).await {
            Ok(read) => {
                for event in &read.events {
                    if let Err(error) = apply(&state, &federation, event).await {
                        // The record is read again on its next change; the log says which.
                        tracing::warn!(%error, event = event.id, kind = %event.kind, key = event.key, "cannot apply a change from the datastore");
                    }
                }
                if read.abandoned > 0 {
                    tracing::debug!(
                        holes = read.abandoned,
                        "change feed ids not seen for {}s (most likely rolled back): left to \
                         the slow sweep",
                        GAP_TIMEOUT.as_secs()
                    );
                }
                if read.forgotten > 0 {
                    tracing::warn!(
                        holes = read.forgotten,
                        "change feed ids never appeared (rolled back, or committed more than \
                         an hour late); their changes, if any, reach this server at its next \
                         restart"
                    );
                }
                if read.more {
                    continue;
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the change feed"),
        }
        if pruned_at.elapsed() >= PRUNE_EVERY {
            pruned_at = tokio::time::Instant::now();
            prune(&state).await;
        }
        tokio::select! {
            _ = notices.next() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

async fn apply(
    state: &ServerState,
    target: &FederationTarget,
    event: &Event,
) -> Result<(), DataStoreError> {
    let bad_key = |what: &str| DataStoreError::Corrupt {
        field: "events.event_key",
        reason: format!("{:?} is not {what}", event.key),
    };
    match event.kind {
        EventKind::EntryCreated | EventKind::EntryUpdated | EventKind::EntryDeleted => {
            let id: EntryId = event.key.parse().map_err(|_| bad_key("an entry id"))?;
            state.apply_stored_entry(&id).await
        }
        EventKind::NodeCreated | EventKind::NodeUpdated | EventKind::NodeDeleted => {
            let agent: SpiffeId = event.key.parse().map_err(|_| bad_key("a spiffe id"))?;
            state.apply_stored_node(&agent).await
        }
        EventKind::BundleCreated | EventKind::BundleUpdated | EventKind::BundleDeleted => {
            state.apply_stored_bundle(&event.key).await
        }
        EventKind::FederationRelationshipCreated
        | EventKind::FederationRelationshipUpdated
        | EventKind::FederationRelationshipDeleted => {
            let trust_domain =
                TrustDomain::new(&event.key).map_err(|_| bad_key("a trust domain"))?;
            apply_relationship(state, target, &trust_domain).await
        }
    }
}

/// Starts, replaces or stops the fetcher of `trust_domain` to match the stored relationship.
async fn apply_relationship(
    state: &ServerState,
    target: &FederationTarget,
    trust_domain: &TrustDomain,
) -> Result<(), DataStoreError> {
    if target.configured.contains(trust_domain) {
        return Ok(());
    }
    let stored = state
        .datastore()
        .federation_relationship(trust_domain)
        .await?;
    let running = target.federation.relationship(trust_domain);
    match stored {
        Some(stored) if running.as_ref() == Some(&stored) => {}
        Some(stored) => {
            if let Err(error) = target.federation.add(stored).await {
                tracing::warn!(%trust_domain, %error, "cannot start a federation relationship made through another server");
            } else {
                tracing::info!(%trust_domain, "federation relationship from another server started");
            }
        }
        None => {
            if target.federation.remove(trust_domain).await {
                tracing::info!(%trust_domain, "federation relationship deleted through another server stopped");
            }
        }
    }
    Ok(())
}

async fn prune(state: &ServerState) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let before = i64::try_from(now.saturating_sub(EVENT_RETENTION.as_secs())).unwrap_or(0);
    match state.datastore().prune_events(before).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(events = n, "old change feed events pruned"),
        Err(error) => tracing::warn!(%error, "cannot prune the change feed"),
    }
}
