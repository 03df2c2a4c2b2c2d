//! The agent-facing half of the `Agent` service: node attestation and agent SVID renewal.
//! The administrative half (list, ban, evict, join tokens) is served on the admin socket.
//!
//! Attestation checks everything that costs nothing single-use first (rate limit, message
//! shape, the CSR's signature), then the evidence (a join token is consumed), then signs.
//! Whatever fails in the evidence, the peer hears "permission denied" and the log says why.

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use sigil_core::{AttestedNode, SelectorSet, agent_spiffe_id};
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::agent_server::Agent;
use sigil_proto::server::v1::attest_agent_request::Step as RequestStep;
use sigil_proto::server::v1::attest_agent_response::{
    Result as AttestResult, Step as ResponseStep,
};
use sigil_spiffe::SpiffeId;
use sigil_spiffe::x509::{IssuedX509Svid, csr_public_key};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::peer::{authenticate, peer, permission_denied, serial_hex};
use super::ratelimit::RateLimiter;
use super::{bundle_message, svid_message};
use crate::datastore::DataStoreError;
use crate::state::{AttestError, ServerState, unix};

/// The node attestor of join tokens.
pub const JOIN_TOKEN: &str = "join_token";

/// Why attestation evidence was refused (for the log only).
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("unknown node attestor {0:?}")]
    UnknownAttestor(String),
    #[error("join token is not valid UTF-8")]
    TokenNotUtf8,
    #[error("join token unknown or already used")]
    TokenUnknown,
    #[error("join token expired")]
    TokenExpired,
    #[error("agent {0} is banned")]
    Banned(SpiffeId),
}

/// What an attestor vouched for.
struct Attested {
    agent: SpiffeId,
    attestation_type: &'static str,
    selectors: SelectorSet,
    can_reattest: bool,
}

/// The agent-facing `Agent` service.
#[derive(Debug)]
pub struct AgentEndpoint {
    state: Arc<ServerState>,
    limiter: RateLimiter,
}

impl AgentEndpoint {
    /// The service over `state`.
    pub fn new(state: Arc<ServerState>, options: &super::AgentApiOptions) -> Self {
        Self {
            state,
            limiter: RateLimiter::new(options.attest_burst, options.attest_refill_every),
        }
    }

    async fn join_token(&self, payload: &[u8]) -> Result<Result<Attested, Refusal>, Status> {
        let Ok(token) = std::str::from_utf8(payload) else {
            return Ok(Err(Refusal::TokenNotUtf8));
        };
        let taken = match self.state.datastore().take_join_token(token.trim()).await {
            Ok(taken) => taken,
            Err(DataStoreError::NotFound { .. }) => return Ok(Err(Refusal::TokenUnknown)),
            Err(DataStoreError::TokenExpired) => return Ok(Err(Refusal::TokenExpired)),
            Err(error) => {
                tracing::error!(%error, "attestation: cannot read join tokens");
                return Err(Status::unavailable("the server cannot attest right now"));
            }
        };
        let agent = match taken.spiffe_id {
            Some(agent) => agent,
            // Tokens made by `create_join_token` always carry the agent ID; one stored
            // without it gets a fresh random node ID.
            None => agent_spiffe_id(
                self.state.trust_domain(),
                JOIN_TOKEN,
                &crate::state::random_hex(16),
            )
            .map_err(|e| Status::internal(e.to_string()))?,
        };
        Ok(Ok(Attested {
            agent,
            attestation_type: JOIN_TOKEN,
            selectors: SelectorSet::default(),
            can_reattest: false,
        }))
    }

    /// Signs an agent SVID for `csr` off the async workers.
    async fn sign_agent_svid(
        &self,
        csr: Vec<u8>,
        agent: SpiffeId,
    ) -> Result<IssuedX509Svid, Status> {
        let state = Arc::clone(&self.state);
        let issued = tokio::task::spawn_blocking(move || {
            state.ca().sign_x509_svid(
                &csr,
                agent,
                Vec::new(),
                state.default_x509_ttl(),
                SystemTime::now(),
            )
        })
        .await
        .map_err(|e| Status::internal(format!("signing task failed: {e}")))?;
        let issued = issued.map_err(|error| {
            tracing::error!(%error, "cannot sign an agent svid");
            Status::internal("cannot sign the agent svid")
        })?;
        if issued.capped() {
            tracing::info!(spiffe_id = %issued.spiffe_id(), "agent svid ttl capped to the ca's lifetime");
        }
        Ok(issued)
    }
}

type AttestStream = Pin<Box<dyn Stream<Item = Result<pb::AttestAgentResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for AgentEndpoint {
    type AttestAgentStream = AttestStream;

    async fn attest_agent(
        &self,
        request: Request<Streaming<pb::AttestAgentRequest>>,
    ) -> Result<Response<AttestStream>, Status> {
        let addr = peer(&request)?.addr;
        if !self.limiter.allow(addr.ip(), tokio::time::Instant::now()) {
            tracing::warn!(%addr, "attestation: rate limit exceeded");
            return Err(Status::resource_exhausted(
                "too many attestation attempts from this address; retry later",
            ));
        }
        let mut stream = request.into_inner();
        let first = stream.message().await?.ok_or_else(|| {
            Status::invalid_argument("the attestation stream ended before its parameters")
        })?;
        let Some(RequestStep::Params(params)) = first.step else {
            return Err(Status::invalid_argument(
                "the first attestation message must carry params",
            ));
        };
        let data = params
            .data
            .ok_or_else(|| Status::invalid_argument("params.data is missing"))?;
        // Before any evidence is spent: a bad CSR must not burn a join token.
        csr_public_key(&params.csr)
            .map_err(|e| Status::invalid_argument(format!("params.csr: {e}")))?;

        let outcome = match data.r#type.as_str() {
            JOIN_TOKEN => self.join_token(&data.payload).await?,
            other => Err(Refusal::UnknownAttestor(other.to_owned())),
        };
        let attested = outcome
            .and_then(|attested| {
                if self.state.is_banned(&attested.agent) {
                    Err(Refusal::Banned(attested.agent))
                } else {
                    Ok(attested)
                }
            })
            .map_err(|reason| {
                tracing::info!(%addr, attestor = %data.r#type, %reason, "attestation refused");
                permission_denied()
            })?;

        let issued = self
            .sign_agent_svid(params.csr, attested.agent.clone())
            .await?;
        let serial = serial_hex(issued.leaf())
            .ok_or_else(|| Status::internal("issued certificate has no readable serial"))?;
        let node = AttestedNode {
            spiffe_id: attested.agent.clone(),
            attestation_type: attested.attestation_type.to_owned(),
            cert_serial: serial,
            cert_not_after: unix(issued.not_after()),
            banned: false,
            can_reattest: attested.can_reattest,
            selectors: attested.selectors,
            created_at: unix(SystemTime::now()),
        };
        match self.state.record_attestation(node).await {
            Ok(()) => {}
            Err(AttestError::Banned(agent)) => {
                tracing::info!(%addr, %agent, "attestation refused: agent is banned");
                return Err(permission_denied());
            }
            Err(error) => {
                tracing::error!(%error, "attestation: cannot record the agent");
                return Err(Status::unavailable("the server cannot attest right now"));
            }
        }
        tracing::info!(%addr, agent = %attested.agent, attestor = attested.attestation_type, "agent attested");
        let response = pb::AttestAgentResponse {
            step: Some(ResponseStep::Result(AttestResult {
                svid: Some(svid_message(&issued)),
                reattestable: attested.can_reattest,
                bundle: Some(bundle_message(&self.state.own_bundle())?),
            })),
        };
        Ok(Response::new(Box::pin(tokio_stream::once(Ok(response)))))
    }

    async fn renew_agent(
        &self,
        request: Request<pb::RenewAgentRequest>,
    ) -> Result<Response<pb::RenewAgentResponse>, Status> {
        let agent = authenticate(&self.state, &request)?;
        let presented = peer(&request)?
            .svid
            .as_ref()
            .map(|(_, serial)| serial.clone())
            .unwrap_or_default();
        let csr = request.into_inner().csr;
        csr_public_key(&csr).map_err(|e| Status::invalid_argument(format!("csr: {e}")))?;
        let issued = self.sign_agent_svid(csr, agent.clone()).await?;
        let serial = serial_hex(issued.leaf())
            .ok_or_else(|| Status::internal("issued certificate has no readable serial"))?;
        match self
            .state
            .record_renewal(&agent, &presented, serial, unix(issued.not_after()))
            .await
        {
            Ok(()) => {}
            Err(AttestError::Auth(error)) => {
                tracing::info!(%error, "renewal refused");
                return Err(permission_denied());
            }
            Err(error) => {
                tracing::error!(%error, "renewal: cannot record the new certificate");
                return Err(Status::unavailable("the server cannot renew right now"));
            }
        }
        tracing::info!(%agent, "agent svid renewed");
        Ok(Response::new(pb::RenewAgentResponse {
            svid: Some(svid_message(&issued)),
        }))
    }

    async fn list_agents(
        &self,
        _request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        Err(admin_only())
    }

    async fn get_agent(
        &self,
        _request: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::AttestedAgent>, Status> {
        Err(admin_only())
    }

    async fn ban_agent(
        &self,
        _request: Request<pb::BanAgentRequest>,
    ) -> Result<Response<pb::BanAgentResponse>, Status> {
        Err(admin_only())
    }

    async fn delete_agent(
        &self,
        _request: Request<pb::DeleteAgentRequest>,
    ) -> Result<Response<pb::DeleteAgentResponse>, Status> {
        Err(admin_only())
    }

    async fn create_join_token(
        &self,
        _request: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::JoinToken>, Status> {
        Err(admin_only())
    }
}

/// Administrative calls are served on the admin socket only.
pub(super) fn admin_only() -> Status {
    Status::permission_denied("administrative calls are served on the admin socket only")
}
