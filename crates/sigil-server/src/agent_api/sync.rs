//! `SyncAuthorizedEntries`: one long-lived stream per agent. It sends the agent's whole view
//! (its authorized entries and the bundles they need) first, then, each time the hub wakes
//! it, the difference between the view now and what it sent. The view is always recomputed
//! from the index, so a spurious wake-up costs a comparison and sends nothing.
//!
//! The other `Entry` methods are administrative and served on the admin socket only.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sigil_core::{EntryId, RegistrationEntry, wire};
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::entry_server::Entry;
use sigil_proto::server::v1::sync_authorized_entries_response::{Delta, Snapshot, Update};
use sigil_spiffe::{Bundle, SpiffeId, TrustDomain};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::attest::admin_only;
use super::bundle_message;
use super::peer::{authenticate, permission_denied};
use crate::hub::Subscription;
use crate::state::ServerState;

/// At most this many entries go in one message, so that no message approaches gRPC's 4 MB
/// limit (an entry is well under 2 KB on the wire: IDs are at most 2 KB, and a
/// registration with more than a few selectors is rare).
pub const ENTRIES_PER_MESSAGE: usize = 500;

type SyncItem = Result<pb::SyncAuthorizedEntriesResponse, Status>;

/// The agent-facing `Entry` service: the sync stream.
#[derive(Debug)]
pub struct SyncEndpoint {
    state: Arc<ServerState>,
}

impl SyncEndpoint {
    /// The service over `state`.
    pub fn new(state: Arc<ServerState>) -> Self {
        Self { state }
    }
}

/// What an agent may see at one moment.
#[derive(Default)]
struct View {
    entries: HashMap<EntryId, Arc<RegistrationEntry>>,
    /// Each bundle with its document, which is what changes are judged by.
    bundles: BTreeMap<TrustDomain, (Bundle, String)>,
}

impl View {
    fn compute(state: &ServerState, agent: &SpiffeId) -> Self {
        let entries: HashMap<EntryId, Arc<RegistrationEntry>> = state
            .authorized_entries(agent)
            .into_iter()
            .map(|entry| (entry.id.clone(), entry))
            .collect();
        let mut bundles = BTreeMap::new();
        let own = state.own_bundle();
        if let Ok(document) = own.to_document() {
            bundles.insert(own.trust_domain().clone(), (own, document));
        }
        for trust_domain in entries.values().flat_map(|e| &e.federates_with) {
            if bundles.contains_key(trust_domain) {
                continue;
            }
            // A federated trust domain without a bundle yet is simply not sent; it arrives
            // in a delta when its bundle is set.
            if let Some(bundle) = state.federated_bundle(trust_domain)
                && let Ok(document) = bundle.to_document()
            {
                bundles.insert(trust_domain.clone(), (bundle, document));
            }
        }
        Self { entries, bundles }
    }
}

#[tonic::async_trait]
impl Entry for SyncEndpoint {
    async fn list_entries(
        &self,
        _request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        Err(admin_only())
    }

    async fn get_entry(
        &self,
        _request: Request<pb::GetEntryRequest>,
    ) -> Result<Response<pb::RegistrationEntry>, Status> {
        Err(admin_only())
    }

    async fn batch_create_entry(
        &self,
        _request: Request<pb::BatchCreateEntryRequest>,
    ) -> Result<Response<pb::BatchCreateEntryResponse>, Status> {
        Err(admin_only())
    }

    async fn batch_update_entry(
        &self,
        _request: Request<pb::BatchUpdateEntryRequest>,
    ) -> Result<Response<pb::BatchUpdateEntryResponse>, Status> {
        Err(admin_only())
    }

    async fn batch_delete_entry(
        &self,
        _request: Request<pb::BatchDeleteEntryRequest>,
    ) -> Result<Response<pb::BatchDeleteEntryResponse>, Status> {
        Err(admin_only())
    }

    type SyncAuthorizedEntriesStream = ReceiverStream<SyncItem>;

    async fn sync_authorized_entries(
        &self,
        request: Request<pb::SyncAuthorizedEntriesRequest>,
    ) -> Result<Response<Self::SyncAuthorizedEntriesStream>, Status> {
        let agent = authenticate(&self.state, &request)?;
        // Subscribe before the first view is computed: a change landing in between wakes
        // the stream instead of being missed.
        let subscription = self.state.hub().subscribe(&agent);
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(run_stream(
            Arc::clone(&self.state),
            agent,
            subscription,
            sender,
        ));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

async fn run_stream(
    state: Arc<ServerState>,
    agent: SpiffeId,
    mut subscription: Subscription,
    sender: mpsc::Sender<SyncItem>,
) {
    tracing::debug!(%agent, "sync stream opened");
    let mut sent = View::compute(&state, &agent);
    if !send_all(&sender, snapshot(&sent)).await {
        return;
    }
    loop {
        tokio::select! {
            alive = subscription.changed() => if !alive {
                // Shutting down: the agent reconnects (to this server or another one).
                let _ = sender.send(Err(Status::unavailable("the server is shutting down"))).await;
                return;
            },
            () = sender.closed() => {
                tracing::debug!(%agent, "sync stream closed by the agent");
                return;
            }
        }
        // A banned or evicted agent's stream ends here.
        if let Err(error) = state.agent_standing(&agent) {
            tracing::info!(%error, "sync stream ended");
            let _ = sender.send(Err(permission_denied())).await;
            return;
        }
        let now = View::compute(&state, &agent);
        let messages = changes(&sent, &now);
        if !send_all(&sender, messages).await {
            return;
        }
        sent = now;
    }
}

/// Sends every message; false when the agent is gone.
async fn send_all(
    sender: &mpsc::Sender<SyncItem>,
    messages: Vec<pb::SyncAuthorizedEntriesResponse>,
) -> bool {
    for message in messages {
        if sender.send(Ok(message)).await.is_err() {
            return false;
        }
    }
    true
}

fn bundle_messages<'a>(bundles: impl Iterator<Item = &'a Bundle>) -> Vec<pb::TrustBundle> {
    // Bundles here came out of documents or our CA, so they always write one again.
    bundles.filter_map(|b| bundle_message(b).ok()).collect()
}

/// The whole view, split into messages of at most [`ENTRIES_PER_MESSAGE`] entries.
fn snapshot(view: &View) -> Vec<pb::SyncAuthorizedEntriesResponse> {
    let entries: Vec<pb::RegistrationEntry> = view
        .entries
        .values()
        .map(|e| wire::entry_to_wire(e))
        .collect();
    let mut chunks: Vec<Vec<pb::RegistrationEntry>> = entries
        .chunks(ENTRIES_PER_MESSAGE)
        .map(<[_]>::to_vec)
        .collect();
    if chunks.is_empty() {
        chunks.push(Vec::new());
    }
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, entries)| pb::SyncAuthorizedEntriesResponse {
            update: Some(Update::Snapshot(Snapshot {
                entries,
                // The bundles travel once, in the first part.
                bundles: if i == 0 {
                    bundle_messages(view.bundles.values().map(|(b, _)| b))
                } else {
                    Vec::new()
                },
                more: i != last,
            })),
        })
        .collect()
}

/// What changed from `before` to `now`, as deltas (or a snapshot when that is smaller); no
/// message when nothing did.
fn changes(before: &View, now: &View) -> Vec<pb::SyncAuthorizedEntriesResponse> {
    let upserted: Vec<pb::RegistrationEntry> = now
        .entries
        .values()
        .filter(|e| {
            before
                .entries
                .get(&e.id)
                // The index hands out the same allocation until an entry changes, so the
                // pointer settles almost every entry without comparing its fields.
                .is_none_or(|old| {
                    !Arc::ptr_eq(old, e) && (old.revision != e.revision || **old != ***e)
                })
        })
        .map(|e| wire::entry_to_wire(e))
        .collect();
    let deleted_ids: Vec<String> = before
        .entries
        .keys()
        .filter(|id| !now.entries.contains_key(*id))
        .map(ToString::to_string)
        .collect();
    let bundles = bundle_messages(
        now.bundles
            .iter()
            .filter(|(td, (_, document))| {
                before
                    .bundles
                    .get(*td)
                    .is_none_or(|(_, old)| old != document)
            })
            .map(|(_, (b, _))| b),
    );
    let dropped_trust_domains: Vec<String> = before
        .bundles
        .keys()
        .filter(|td| !now.bundles.contains_key(*td))
        .map(ToString::to_string)
        .collect();
    if upserted.is_empty()
        && deleted_ids.is_empty()
        && bundles.is_empty()
        && dropped_trust_domains.is_empty()
    {
        return Vec::new();
    }
    // A change touching more entries than the agent has is sent as the whole view.
    if upserted.len() + deleted_ids.len() > now.entries.len().max(ENTRIES_PER_MESSAGE) {
        return snapshot(now);
    }
    let mut messages = Vec::new();
    let mut upserted = upserted.into_iter().peekable();
    let mut deleted_ids = deleted_ids.into_iter().peekable();
    let mut first = true;
    while first || upserted.peek().is_some() || deleted_ids.peek().is_some() {
        let part_upserted: Vec<_> = upserted.by_ref().take(ENTRIES_PER_MESSAGE).collect();
        let room = ENTRIES_PER_MESSAGE - part_upserted.len();
        let part_deleted: Vec<_> = deleted_ids.by_ref().take(room.max(1)).collect();
        messages.push(pb::SyncAuthorizedEntriesResponse {
            update: Some(Update::Delta(Delta {
                upserted: part_upserted,
                deleted_ids: part_deleted,
                bundles: if first { bundles.clone() } else { Vec::new() },
                dropped_trust_domains: if first {
                    dropped_trust_domains.clone()
                } else {
                    Vec::new()
                },
            })),
        });
        first = false;
    }
    messages
}
