//! `SyncAuthorizedEntries`: one long-lived stream per agent. It sends the agent's whole view
//! (its authorized entries and the bundles they need) first, then, each time the hub wakes
//! it, the difference between what the index holds now and what it sent. The hub names the
//! entries a change may have touched, so the stream looks at those only; a change of the
//! agent's standing or node aliases makes it recompute the whole view. Either way the result
//! is compared with what was sent, so a spurious wake-up sends nothing.
//!
//! The other `Entry` methods are administrative and served on the admin socket only.

use std::collections::{BTreeMap, HashMap, HashSet};
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
    /// How many of the entries federate with each trust domain: the bundles they need.
    federates: HashMap<TrustDomain, usize>,
    /// Each bundle with its document, which is what changes are judged by.
    bundles: BTreeMap<TrustDomain, (Bundle, String)>,
}

/// What changed in a view, to be sent.
#[derive(Default)]
struct Diff {
    upserted: Vec<Arc<RegistrationEntry>>,
    deleted: Vec<EntryId>,
    bundles: Vec<Bundle>,
    dropped: Vec<TrustDomain>,
}

impl Diff {
    fn is_empty(&self) -> bool {
        self.upserted.is_empty()
            && self.deleted.is_empty()
            && self.bundles.is_empty()
            && self.dropped.is_empty()
    }
}

impl View {
    /// The whole view, from the index: what the first message sends, and what a change of
    /// the agent's standing or node aliases is judged against.
    fn compute(state: &ServerState, agent: &SpiffeId) -> Self {
        let mut view = Self::default();
        for entry in state.authorized_entries(agent) {
            view.add(entry);
        }
        view.bundles = view.needed_bundles(state);
        view
    }

    /// The bundles the view needs now: ours, and those its entries federate with. A
    /// federated trust domain without a bundle yet is simply not sent; it arrives in a delta
    /// when its bundle is set.
    fn needed_bundles(&self, state: &ServerState) -> BTreeMap<TrustDomain, (Bundle, String)> {
        let mut bundles = BTreeMap::new();
        let own = state.own_bundle();
        if let Ok(document) = own.to_document() {
            bundles.insert(own.trust_domain().clone(), (own, document));
        }
        for trust_domain in self.federates.keys() {
            if bundles.contains_key(trust_domain) {
                continue;
            }
            if let Some(bundle) = state.federated_bundle(trust_domain)
                && let Ok(document) = bundle.to_document()
            {
                bundles.insert(trust_domain.clone(), (bundle, document));
            }
        }
        bundles
    }

    fn add(&mut self, entry: Arc<RegistrationEntry>) {
        for trust_domain in &entry.federates_with {
            *self.federates.entry(trust_domain.clone()).or_default() += 1;
        }
        if let Some(old) = self.entries.insert(entry.id.clone(), entry) {
            self.forget_federates(&old);
        }
    }

    fn remove(&mut self, id: &EntryId) -> bool {
        let Some(old) = self.entries.remove(id) else {
            return false;
        };
        self.forget_federates(&old);
        true
    }

    fn forget_federates(&mut self, old: &RegistrationEntry) {
        for trust_domain in &old.federates_with {
            if let Some(count) = self.federates.get_mut(trust_domain) {
                *count -= 1;
                if *count == 0 {
                    self.federates.remove(trust_domain);
                }
            }
        }
    }

    /// Becomes `now`; returns the difference. Costs the size of both views.
    fn replace(&mut self, now: Self) -> Diff {
        let mut diff = Diff {
            upserted: now
                .entries
                .values()
                .filter(|e| self.entries.get(&e.id).is_none_or(|old| differs(old, e)))
                .cloned()
                .collect(),
            deleted: self
                .entries
                .keys()
                .filter(|id| !now.entries.contains_key(*id))
                .cloned()
                .collect(),
            ..Diff::default()
        };
        let before = std::mem::replace(self, now);
        diff_bundles(&before.bundles, &self.bundles, &mut diff);
        diff
    }

    /// Looks again at the entries `ids` only (and at the bundles when `bundles` changed, or
    /// when the trust domains the entries federate with did); returns the difference. Costs
    /// the number of IDs, not the size of the view.
    fn update(
        &mut self,
        state: &ServerState,
        agent: &SpiffeId,
        ids: &HashSet<EntryId>,
        bundles: bool,
    ) -> Diff {
        let mut diff = Diff::default();
        let mut federation_changed = false;
        for (id, now) in state.authorized_subset(agent, ids) {
            match now {
                Some(entry) if self.entries.get(&id).is_none_or(|old| differs(old, &entry)) => {
                    let federated_before = self.entries.get(&id).map(|old| &old.federates_with[..]);
                    federation_changed |=
                        federated_before.unwrap_or_default() != &entry.federates_with[..];
                    diff.upserted.push(Arc::clone(&entry));
                    self.add(entry);
                }
                Some(_) => {}
                None => {
                    let federated = self
                        .entries
                        .get(&id)
                        .is_some_and(|old| !old.federates_with.is_empty());
                    if self.remove(&id) {
                        federation_changed |= federated;
                        diff.deleted.push(id);
                    }
                }
            }
        }
        if bundles || federation_changed {
            let now = self.needed_bundles(state);
            diff_bundles(&self.bundles, &now, &mut diff);
            self.bundles = now;
        }
        diff
    }
}

/// Whether the index's entry `now` differs from the one sent.
fn differs(sent: &Arc<RegistrationEntry>, now: &Arc<RegistrationEntry>) -> bool {
    // The index hands out the same allocation until an entry changes, so the pointer settles
    // almost every entry without comparing its fields.
    !Arc::ptr_eq(sent, now) && (sent.revision != now.revision || **sent != **now)
}

fn diff_bundles(
    before: &BTreeMap<TrustDomain, (Bundle, String)>,
    now: &BTreeMap<TrustDomain, (Bundle, String)>,
    diff: &mut Diff,
) {
    diff.bundles = now
        .iter()
        .filter(|(td, (_, document))| before.get(*td).is_none_or(|(_, old)| old != document))
        .map(|(_, (bundle, _))| bundle.clone())
        .collect();
    diff.dropped = before
        .keys()
        .filter(|td| !now.contains_key(*td))
        .cloned()
        .collect();
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
    let mut view = View::compute(&state, &agent);
    if !send_all(&sender, snapshot(&view)).await {
        return;
    }
    loop {
        let changes = tokio::select! {
            changes = subscription.changed() => match changes {
                Some(changes) => changes,
                None => {
                    // Shutting down: the agent reconnects (to this server or another one).
                    let _ = sender.send(Err(Status::unavailable("the server is shutting down"))).await;
                    return;
                }
            },
            () = sender.closed() => {
                tracing::debug!(%agent, "sync stream closed by the agent");
                return;
            }
        };
        // A banned or evicted agent's stream ends here.
        if let Err(error) = state.agent_standing(&agent) {
            tracing::info!(%error, "sync stream ended");
            let _ = sender.send(Err(permission_denied())).await;
            return;
        }
        let diff = if changes.everything {
            view.replace(View::compute(&state, &agent))
        } else {
            view.update(&state, &agent, &changes.entries, changes.bundles)
        };
        if !send_all(&sender, messages(diff, &view)).await {
            return;
        }
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

/// The messages that send `diff`, a change to `view` (as it is now): deltas, or a snapshot
/// when that is smaller; no message when nothing changed.
fn messages(diff: Diff, view: &View) -> Vec<pb::SyncAuthorizedEntriesResponse> {
    if diff.is_empty() {
        return Vec::new();
    }
    // A change touching more entries than the agent has is sent as the whole view.
    if diff.upserted.len() + diff.deleted.len() > view.entries.len().max(ENTRIES_PER_MESSAGE) {
        return snapshot(view);
    }
    let bundles = bundle_messages(diff.bundles.iter());
    let dropped: Vec<String> = diff.dropped.iter().map(ToString::to_string).collect();
    let mut upserted = diff
        .upserted
        .iter()
        .map(|e| wire::entry_to_wire(e))
        .peekable();
    let mut deleted = diff.deleted.iter().map(ToString::to_string).peekable();
    let mut messages = Vec::new();
    let mut first = true;
    while first || upserted.peek().is_some() || deleted.peek().is_some() {
        let part_upserted: Vec<_> = upserted.by_ref().take(ENTRIES_PER_MESSAGE).collect();
        let room = ENTRIES_PER_MESSAGE - part_upserted.len();
        let part_deleted: Vec<_> = deleted.by_ref().take(room.max(1)).collect();
        messages.push(pb::SyncAuthorizedEntriesResponse {
            update: Some(Update::Delta(Delta {
                upserted: part_upserted,
                deleted_ids: part_deleted,
                bundles: if first { bundles.clone() } else { Vec::new() },
                dropped_trust_domains: if first { dropped.clone() } else { Vec::new() },
            })),
        });
        first = false;
    }
    messages
}
