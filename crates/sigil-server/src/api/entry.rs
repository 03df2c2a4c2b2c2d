//! The admin `Entry` service: list, get, and batch create/update/delete of registration
//! entries. Writes go through [`ServerState`], which orders them and wakes the sync streams
//! of the agents they affect.
//! `SyncAuthorizedEntries` belongs to the agent API and is not served here.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sigil_core::wire;
use sigil_core::{EntryId, RegistrationEntry};
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::entry_server::Entry;
use tonic::{Request, Response, Status};

use super::status;
use crate::datastore::{DataStore, EntryFilter};
use crate::state::ServerState;

/// The admin `Entry` service over the running server's state.
#[derive(Debug, Clone)]
pub struct EntryApi {
    state: Arc<ServerState>,
}

impl EntryApi {
    /// The service over `state`.
    pub fn new(state: Arc<ServerState>) -> Self {
        Self { state }
    }

    /// A new entry from its message, validated, with its ID and creation time.
    fn prepare(&self, message: &pb::RegistrationEntry) -> Result<RegistrationEntry, Status> {
        let (id, mut entry) = wire::entry(message, true).map_err(|e| status::wire(&e))?;
        entry.id = id.unwrap_or_else(DataStore::generate_entry_id);
        entry.created_at = unix_now();
        entry.revision = 0;
        entry
            .validate(self.state.trust_domain())
            .map_err(|e| status::invalid_entry(&e))?;
        Ok(entry)
    }

    async fn update_one(
        &self,
        message: &pb::RegistrationEntry,
    ) -> Result<RegistrationEntry, Status> {
        let (_, entry) = wire::entry(message, false).map_err(|e| status::wire(&e))?;
        entry
            .validate(self.state.trust_domain())
            .map_err(|e| status::invalid_entry(&e))?;
        self.state
            .update_entry(entry)
            .await
            .map_err(|e| status::datastore(&e))
    }

    async fn delete_one(&self, id: &str) -> Result<(), Status> {
        let id = parse_id(id)?;
        self.state
            .delete_entry(&id)
            .await
            .map_err(|e| status::datastore(&e))
    }
}

#[tonic::async_trait]
impl Entry for EntryApi {
    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let request = request.into_inner();
        let mut filter = EntryFilter::all();
        if let Some(by) = &request.filter {
            if !by.by_spiffe_id.is_empty() {
                filter = filter.spiffe_id(
                    wire::spiffe_id("filter.by_spiffe_id", &by.by_spiffe_id)
                        .map_err(|e| status::wire(&e))?,
                );
            }
            if !by.by_parent_id.is_empty() {
                filter = filter.parent_id(
                    wire::spiffe_id("filter.by_parent_id", &by.by_parent_id)
                        .map_err(|e| status::wire(&e))?,
                );
            }
            for selector in wire::selectors(&by.by_selectors)
                .map_err(|e| status::wire(&e))?
                .iter()
            {
                filter = filter.selector(selector.clone());
            }
        }
        let page_size = u32::try_from(request.page_size)
            .map_err(|_| Status::invalid_argument("page_size cannot be negative"))?;
        let after = if request.page_token.is_empty() {
            None
        } else {
            Some(
                request
                    .page_token
                    .parse::<EntryId>()
                    .map_err(|e| Status::invalid_argument(format!("page_token: {e}")))?,
            )
        };
        let page = self
            .state
            .datastore()
            .list_entries(&filter, after.as_ref(), page_size)
            .await
            .map_err(|e| status::datastore(&e))?;
        Ok(Response::new(pb::ListEntriesResponse {
            entries: page.entries.iter().map(wire::entry_to_wire).collect(),
            next_page_token: page.next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn get_entry(
        &self,
        request: Request<pb::GetEntryRequest>,
    ) -> Result<Response<pb::RegistrationEntry>, Status> {
        let id = parse_id(&request.into_inner().id)?;
        match self
            .state
            .datastore()
            .entry(&id)
            .await
            .map_err(|e| status::datastore(&e))?
        {
            Some(entry) => Ok(Response::new(wire::entry_to_wire(&entry))),
            None => Err(Status::not_found(format!("entry {id} not found"))),
        }
    }

    async fn batch_create_entry(
        &self,
        request: Request<pb::BatchCreateEntryRequest>,
    ) -> Result<Response<pb::BatchCreateEntryResponse>, Status> {
        let messages = &request.get_ref().entries;
        let prepared: Vec<Result<RegistrationEntry, Status>> =
            messages.iter().map(|m| self.prepare(m)).collect();
        let valid: Vec<RegistrationEntry> = prepared.iter().flatten().cloned().collect();
        // The valid ones in one transaction; a bad one is answered without touching it.
        let mut created = self
            .state
            .create_entries(&valid)
            .await
            .map_err(|e| status::datastore(&e))?
            .into_iter();
        let results = messages
            .iter()
            .zip(prepared)
            .map(|(message, prepared)| {
                let outcome = prepared.and_then(|_| {
                    created
                        .next()
                        .unwrap_or_else(|| {
                            Err(crate::datastore::DataStoreError::Backend(
                                "the datastore answered fewer entries than sent".into(),
                            ))
                        })
                        .map_err(|e| status::datastore(&e))
                });
                match outcome {
                    Ok(entry) => {
                        tracing::info!(id = %entry.id, spiffe_id = %entry.spiffe_id, "entry created");
                        pb::batch_create_entry_response::Result {
                            status: Some(status::ok()),
                            entry: Some(wire::entry_to_wire(&entry)),
                        }
                    }
                    Err(error) => pb::batch_create_entry_response::Result {
                        status: Some(status::to_proto(&error)),
                        entry: Some(message.clone()),
                    },
                }
            })
            .collect();
        Ok(Response::new(pb::BatchCreateEntryResponse { results }))
    }

    async fn batch_update_entry(
        &self,
        request: Request<pb::BatchUpdateEntryRequest>,
    ) -> Result<Response<pb::BatchUpdateEntryResponse>, Status> {
        let mut results = Vec::new();
        for message in &request.get_ref().entries {
            let result = match self.update_one(message).await {
                Ok(entry) => {
                    tracing::info!(id = %entry.id, revision = entry.revision, "entry updated");
                    pb::batch_update_entry_response::Result {
                        status: Some(status::ok()),
                        entry: Some(wire::entry_to_wire(&entry)),
                    }
                }
                Err(error) => pb::batch_update_entry_response::Result {
                    status: Some(status::to_proto(&error)),
                    entry: Some(message.clone()),
                },
            };
            results.push(result);
        }
        Ok(Response::new(pb::BatchUpdateEntryResponse { results }))
    }

    async fn batch_delete_entry(
        &self,
        request: Request<pb::BatchDeleteEntryRequest>,
    ) -> Result<Response<pb::BatchDeleteEntryResponse>, Status> {
        let mut results = Vec::new();
        for id in &request.get_ref().ids {
            let status = match self.delete_one(id).await {
                Ok(()) => {
                    tracing::info!(%id, "entry deleted");
                    status::ok()
                }
                Err(error) => status::to_proto(&error),
            };
            results.push(pb::batch_delete_entry_response::Result {
                status: Some(status),
                id: id.clone(),
            });
        }
        Ok(Response::new(pb::BatchDeleteEntryResponse { results }))
    }

    type SyncAuthorizedEntriesStream =
        tokio_stream::Empty<Result<pb::SyncAuthorizedEntriesResponse, Status>>;

    async fn sync_authorized_entries(
        &self,
        _request: Request<pb::SyncAuthorizedEntriesRequest>,
    ) -> Result<Response<Self::SyncAuthorizedEntriesStream>, Status> {
        // An agent-only call (mTLS); the admin socket has no agent to sync.
        Err(Status::unimplemented(
            "SyncAuthorizedEntries is served on the agent API, not the admin socket",
        ))
    }
}

fn parse_id(id: &str) -> Result<EntryId, Status> {
    id.parse::<EntryId>()
        .map_err(|e| Status::invalid_argument(format!("id: {e}")))
}

/// Seconds since the Unix epoch, for `created_at`.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
