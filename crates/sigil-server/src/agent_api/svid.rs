//! The agent-facing `SVID` service: X.509-SVIDs for CSRs in batches, and JWT-SVIDs, for the
//! entries the calling agent is authorized for and no others. The datastore is never
//! touched: entries come from the index, signing is CPU only, on the blocking pool, at most
//! one batch per core at a time.

use std::sync::Arc;
use std::time::SystemTime;

use sigil_core::{EntryId, RegistrationEntry};
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::svid_server::Svid;
use sigil_spiffe::SpiffeId;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use super::attest::admin_only;
use super::peer::authenticate;
use super::svid_message;
use crate::api::status;
use crate::state::{ServerState, unix};

/// The most CSRs one batch may carry.
pub const MAX_BATCH: usize = 1000;

/// The agent-facing `SVID` service.
#[derive(Debug)]
pub struct SvidEndpoint {
    state: Arc<ServerState>,
    /// One permit per core: batches beyond that wait instead of crowding the blocking pool.
    signers: Arc<Semaphore>,
}

impl SvidEndpoint {
    /// The service over `state`.
    pub fn new(state: Arc<ServerState>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self {
            state,
            signers: Arc::new(Semaphore::new(cores)),
        }
    }

    /// The entry `id` if `agent` may have it and it has not expired.
    fn entry_for(&self, agent: &SpiffeId, id: &str) -> Result<Arc<RegistrationEntry>, Status> {
        let id = id
            .parse::<EntryId>()
            .map_err(|e| Status::invalid_argument(format!("entry_id: {e}")))?;
        let entry = self.state.authorized_entry(agent, &id).ok_or_else(|| {
            // The same answer whether the entry exists or not: an agent learns nothing
            // about entries that are not its own.
            Status::permission_denied(format!("entry {id} is not authorized for this agent"))
        })?;
        if entry
            .expires_at
            .is_some_and(|at| at <= unix(SystemTime::now()))
        {
            return Err(Status::failed_precondition(format!(
                "entry {id} has expired"
            )));
        }
        Ok(entry)
    }
}

#[tonic::async_trait]
impl Svid for SvidEndpoint {
    async fn batch_new_x509svid(
        &self,
        request: Request<pb::BatchNewX509svidRequest>,
    ) -> Result<Response<pb::BatchNewX509svidResponse>, Status> {
        let agent = authenticate(&self.state, &request)?;
        let params = request.into_inner().params;
        if params.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "a batch may carry at most {MAX_BATCH} requests, not {}",
                params.len()
            )));
        }
        let jobs: Vec<Result<(Arc<RegistrationEntry>, Vec<u8>), Status>> = params
            .into_iter()
            .map(|p| {
                self.entry_for(&agent, &p.entry_id)
                    .map(|entry| (entry, p.csr))
            })
            .collect();
        let _permit = self
            .signers
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the server is shutting down"))?;
        let state = Arc::clone(&self.state);
        let results = tokio::task::spawn_blocking(move || {
            let now = SystemTime::now();
            let ca = state.ca();
            jobs.into_iter()
                .map(|job| {
                    job.and_then(|(entry, csr)| {
                        let ttl = entry.x509_svid_ttl.unwrap_or(state.default_x509_ttl());
                        ca.sign_x509_svid(
                            &csr,
                            entry.spiffe_id.clone(),
                            entry.dns_names.clone(),
                            ttl,
                            now,
                        )
                        .map_err(|e| status::ca(&e))
                    })
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Status::internal(format!("signing task failed: {e}")))?;
        let results = results
            .into_iter()
            .map(|result| match result {
                Ok(issued) => {
                    if issued.capped() {
                        tracing::info!(spiffe_id = %issued.spiffe_id(), "x509-svid ttl capped to the ca's lifetime");
                    }
                    pb::batch_new_x509svid_response::Result {
                        status: Some(status::ok()),
                        svid: Some(svid_message(&issued)),
                    }
                }
                Err(error) => pb::batch_new_x509svid_response::Result {
                    status: Some(status::to_proto(&error)),
                    svid: None,
                },
            })
            .collect();
        Ok(Response::new(pb::BatchNewX509svidResponse { results }))
    }

    async fn new_jwtsvid(
        &self,
        request: Request<pb::NewJwtsvidRequest>,
    ) -> Result<Response<pb::Jwtsvid>, Status> {
        let agent = authenticate(&self.state, &request)?;
        let request = request.into_inner();
        let entry = self.entry_for(&agent, &request.entry_id)?;
        if request.audience.is_empty() || request.audience.iter().any(String::is_empty) {
            return Err(Status::invalid_argument(
                "audience: at least one, and none empty",
            ));
        }
        let ttl = entry.jwt_svid_ttl.unwrap_or(self.state.default_jwt_ttl());
        let now = SystemTime::now();
        let (svid, capped) = self
            .state
            .mint_jwt_svid(entry.spiffe_id.clone(), &request.audience, ttl, now)
            .map_err(|error| {
                tracing::error!(%error, "cannot mint a jwt-svid");
                Status::internal("cannot mint the jwt-svid")
            })?;
        if capped {
            tracing::info!(spiffe_id = %entry.spiffe_id, "jwt-svid ttl capped to the key's lifetime");
        }
        Ok(Response::new(pb::Jwtsvid {
            token: svid.token().to_owned(),
            spiffe_id: svid.spiffe_id().to_string(),
            issued_at: unix(now),
            expires_at: unix(svid.expiry()),
        }))
    }

    async fn mint_x509svid(
        &self,
        _request: Request<pb::MintX509svidRequest>,
    ) -> Result<Response<pb::MintX509svidResponse>, Status> {
        Err(admin_only())
    }

    async fn mint_jwtsvid(
        &self,
        _request: Request<pb::MintJwtsvidRequest>,
    ) -> Result<Response<pb::Jwtsvid>, Status> {
        Err(admin_only())
    }
}
