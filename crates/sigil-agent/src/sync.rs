//! The sync stream: the entries the server authorizes for this agent, and the bundles they
//! need, kept current by one long-lived `SyncAuthorizedEntries` stream.
//!
//! The server sends a snapshot (possibly in parts) and then deltas; this module applies them
//! to an [`Authorized`] value and publishes every new state on a `watch` channel. When the
//! stream breaks it reconnects with backoff and takes the new snapshot as the truth, so
//! nothing is replayed and nothing is lost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sigil_core::RegistrationEntry;
use sigil_core::wire;
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::entry_client::EntryClient;
use sigil_proto::server::v1::sync_authorized_entries_response::Update;
use sigil_spiffe::{Bundle, TrustDomain};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::backoff::{Backoff, unit_random};
use crate::server::ServerChannel;

/// What the server authorizes this agent for, as last synced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Authorized {
    /// Entries by ID, in a persistent map: a delta shares everything it leaves alone with
    /// the state before (O(log n) per changed entry), and the SVID cache diffs the two by
    /// skipping what they share.
    pub entries: imbl::OrdMap<String, Arc<RegistrationEntry>>,
    /// Bundles by trust domain name: ours and the federated ones the entries name.
    pub bundles: BTreeMap<String, Bundle>,
    /// Whether a full snapshot has arrived since the agent started.
    pub synced: bool,
}

/// Runs the sync stream until `shutdown` fires; every applied change is published on `state`.
pub async fn run(
    server: Arc<ServerChannel>,
    trust_domain: TrustDomain,
    state: watch::Sender<Arc<Authorized>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let mut moves = server.moves();
    loop {
        moves.mark_unchanged();
        let mut synced = false;
        let opened = tokio::time::Instant::now();
        let outcome = tokio::select! {
            outcome = follow(server.get(), &trust_domain, &state, &mut backoff, &mut synced) => outcome,
            // The agent moved to a server it prefers: reopen there at once. The snapshot the
            // new server sends is the truth, as after any reconnection.
            Ok(()) = moves.changed() => {
                tracing::info!("sync stream moving to the preferred server");
                continue;
            }
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let delay = reconnect_delay(synced.then(|| opened.elapsed()), &mut backoff);
        match outcome {
            Ok(()) => tracing::info!("the server closed the sync stream; reconnecting"),
            Err(status) if status.code() == tonic::Code::PermissionDenied => tracing::error!(
                "the server refused the sync stream (permission denied): this agent may have \
                 been banned or evicted; retrying in {delay:?}"
            ),
            Err(status) => tracing::warn!(
                "sync stream failed: {}: {}; retrying in {delay:?}",
                status.code(),
                status.message()
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// How long to wait before opening the stream again, given how long the one that ended had
/// been synced (`None`: it never was). After a stream that worked for a while (its server went
/// away: the next connection tries the next server), a short random wait, so that a dead
/// server's agents reach the others within tens of milliseconds yet not in the same instant;
/// after a failed attempt, or a stream that ends as soon as it synced, the growing backoff.
fn reconnect_delay(synced_for: Option<Duration>, backoff: &mut Backoff) -> Duration {
    if synced_for.is_some_and(|lived| lived >= HEALTHY_AFTER) {
        FAILOVER_SPREAD.mul_f64(unit_random())
    } else {
        backoff.next_delay()
    }
}

/// The longest wait before reopening a stream that had worked.
const FAILOVER_SPREAD: Duration = Duration::from_millis(50);
/// A stream this old had worked: its end is the server's, not a refusal repeated at once.
const HEALTHY_AFTER: Duration = Duration::from_secs(1);

/// Follows one stream until it ends; `synced` turns true once a whole snapshot arrived.
async fn follow(
    channel: Channel,
    trust_domain: &TrustDomain,
    state: &watch::Sender<Arc<Authorized>>,
    backoff: &mut Backoff,
    synced: &mut bool,
) -> Result<(), tonic::Status> {
    let mut stream = EntryClient::new(channel)
        .sync_authorized_entries(pb::SyncAuthorizedEntriesRequest {})
        .await?
        .into_inner();
    let mut parts: Option<Authorized> = None;
    while let Some(message) = stream.message().await? {
        match message.update {
            Some(Update::Snapshot(snapshot)) => {
                let building = parts.get_or_insert_with(Authorized::default);
                for entry in &snapshot.entries {
                    insert_entry(building, entry, trust_domain);
                }
                for bundle in &snapshot.bundles {
                    insert_bundle(building, bundle);
                }
                if !snapshot.more {
                    let mut complete = parts.take().unwrap_or_default();
                    complete.synced = true;
                    // A snapshot without our own bundle would leave workloads nothing to
                    // verify with: keep the one we had.
                    if !complete.bundles.contains_key(trust_domain.as_str())
                        && let Some(own) = state.borrow().bundles.get(trust_domain.as_str())
                    {
                        complete
                            .bundles
                            .insert(trust_domain.to_string(), own.clone());
                    }
                    tracing::debug!(entries = complete.entries.len(), "sync snapshot applied");
                    state.send_replace(Arc::new(complete));
                    backoff.reset();
                    *synced = true;
                }
            }
            Some(Update::Delta(delta)) => {
                let mut next = Authorized::clone(&state.borrow());
                for entry in &delta.upserted {
                    insert_entry(&mut next, entry, trust_domain);
                }
                for id in &delta.deleted_ids {
                    next.entries.remove(id);
                }
                for bundle in &delta.bundles {
                    insert_bundle(&mut next, bundle);
                }
                for dropped in &delta.dropped_trust_domains {
                    if dropped != trust_domain.as_str() {
                        next.bundles.remove(dropped);
                    }
                }
                state.send_replace(Arc::new(next));
            }
            None => tracing::warn!("sync message without an update; ignored"),
        }
    }
    Ok(())
}

fn insert_entry(
    state: &mut Authorized,
    message: &pb::RegistrationEntry,
    trust_domain: &TrustDomain,
) {
    match wire::entry(message, false) {
        Ok((_, entry)) if entry.spiffe_id.trust_domain_name() == trust_domain.as_str() => {
            state
                .entries
                .insert(entry.id.as_str().to_owned(), Arc::new(entry));
        }
        Ok((_, entry)) => tracing::warn!(
            id = entry.id.as_str(),
            "synced entry names another trust domain ({}); ignored",
            entry.spiffe_id
        ),
        Err(error) => tracing::warn!(id = message.id, "malformed synced entry ignored: {error}"),
    }
}

fn insert_bundle(state: &mut Authorized, message: &pb::TrustBundle) {
    let bundle = TrustDomain::new(&message.trust_domain)
        .map_err(|e| e.to_string())
        .and_then(|td| Bundle::from_document(td, &message.document).map_err(|e| e.to_string()));
    match bundle {
        Ok(bundle) => {
            state.bundles.insert(message.trust_domain.clone(), bundle);
        }
        Err(error) => tracing::warn!(
            trust_domain = message.trust_domain,
            "malformed synced bundle ignored: {error}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_that_had_synced_reopens_at_once_and_a_failed_attempt_backs_off() {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let worked = Some(Duration::from_secs(5));
        for _ in 0..100 {
            assert!(reconnect_delay(worked, &mut backoff) <= FAILOVER_SPREAD);
        }
        // Failed attempts, or a stream that ended at once: 200 ms less jitter, then 400 ms.
        let first = reconnect_delay(None, &mut backoff);
        let second = reconnect_delay(Some(Duration::from_millis(10)), &mut backoff);
        assert!(first >= Duration::from_millis(160), "{first:?}");
        assert!(second >= Duration::from_millis(320), "{second:?}");
    }
}
