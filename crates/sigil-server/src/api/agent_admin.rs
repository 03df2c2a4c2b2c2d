//! The admin side of the `Agent` service: list, show, ban and evict attested agents, and make
//! join tokens. Bans and evictions go through [`ServerState`], which drops the agent's entries
//! and ends its streams.
//! `AttestAgent` and `RenewAgent` are the agents' own calls on the mTLS agent API and are not
//! served here.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_core::{AttestedNode, is_agent_id, wire};
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::agent_server::Agent;
use sigil_spiffe::SpiffeId;
use tonic::{Request, Response, Status, Streaming};

use super::status;
use crate::datastore::{MAX_PAGE_SIZE, NodeFilter};
use crate::state::{DEFAULT_JOIN_TOKEN_TTL, ServerState};

/// The admin `Agent` service over the running server's state.
#[derive(Debug, Clone)]
pub struct AgentAdminApi {
    state: Arc<ServerState>,
}

impl AgentAdminApi {
    /// The service over `state`.
    pub fn new(state: Arc<ServerState>) -> Self {
        Self { state }
    }

    /// Reads the `spiffe_id` field of a request and checks that it names an agent of this
    /// trust domain: anything else can never be attested, so asking for it is a mistake.
    fn agent_id(&self, value: &str) -> Result<SpiffeId, Status> {
        let id = wire::spiffe_id("spiffe_id", value).map_err(|e| status::wire(&e))?;
        if is_agent_id(&id, self.state.trust_domain()) {
            Ok(id)
        } else {
            Err(status::not_an_agent(
                "spiffe_id",
                &id,
                self.state.trust_domain(),
            ))
        }
    }
}

#[tonic::async_trait]
impl Agent for AgentAdminApi {
    type AttestAgentStream = tokio_stream::Empty<Result<pb::AttestAgentResponse, Status>>;

    async fn attest_agent(
        &self,
        _request: Request<Streaming<pb::AttestAgentRequest>>,
    ) -> Result<Response<Self::AttestAgentStream>, Status> {
        // An agent-only call: attestation needs the agent API's TLS listener.
        Err(Status::unimplemented(
            "AttestAgent is served on the agent API, not the admin socket",
        ))
    }

    async fn renew_agent(
        &self,
        _request: Request<pb::RenewAgentRequest>,
    ) -> Result<Response<pb::RenewAgentResponse>, Status> {
        // An agent-only call: the caller is known by its mTLS certificate, which a Unix socket
        // does not carry.
        Err(Status::unimplemented(
            "RenewAgent is served on the agent API, not the admin socket",
        ))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let request = request.into_inner();
        let mut filter = NodeFilter::all();
        if let Some(banned) = request.banned {
            filter = filter.banned(banned);
        }
        if !request.attestation_type.is_empty() {
            filter = filter.attestation_type(&request.attestation_type);
        }
        let page_size = match u32::try_from(request.page_size) {
            Ok(0) => MAX_PAGE_SIZE,
            Ok(size) => size.min(MAX_PAGE_SIZE),
            Err(_) => return Err(Status::invalid_argument("page_size cannot be negative")),
        };
        // The token is the last ID of the previous page. Paging runs over the whole list so
        // that the order is the byte order of the IDs whatever the database's collation.
        let after = if request.page_token.is_empty() {
            None
        } else {
            Some(wire::spiffe_id("page_token", &request.page_token).map_err(|e| status::wire(&e))?)
        };
        let mut nodes = self
            .state
            .datastore()
            .list_nodes(&filter)
            .await
            .map_err(|e| status::datastore(&e))?;
        nodes.sort_by(|a, b| a.spiffe_id.as_str().cmp(b.spiffe_id.as_str()));
        let page = page_after(&nodes, after.as_ref(), page_size);
        Ok(Response::new(pb::ListAgentsResponse {
            agents: page.agents.iter().map(wire::agent_to_wire).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn get_agent(
        &self,
        request: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::AttestedAgent>, Status> {
        let id = self.agent_id(&request.into_inner().spiffe_id)?;
        match self
            .state
            .datastore()
            .node(&id)
            .await
            .map_err(|e| status::datastore(&e))?
        {
            Some(node) => Ok(Response::new(wire::agent_to_wire(&node))),
            None => Err(status::agent_not_found(&id)),
        }
    }

    async fn ban_agent(
        &self,
        request: Request<pb::BanAgentRequest>,
    ) -> Result<Response<pb::BanAgentResponse>, Status> {
        let id = self.agent_id(&request.into_inner().spiffe_id)?;
        self.state
            .ban_agent(&id)
            .await
            .map_err(|e| status::agent(&e, &id))?;
        tracing::info!(agent = %id, "agent banned");
        Ok(Response::new(pb::BanAgentResponse {}))
    }

    async fn delete_agent(
        &self,
        request: Request<pb::DeleteAgentRequest>,
    ) -> Result<Response<pb::DeleteAgentResponse>, Status> {
        let id = self.agent_id(&request.into_inner().spiffe_id)?;
        self.state
            .evict_agent(&id)
            .await
            .map_err(|e| status::agent(&e, &id))?;
        tracing::info!(agent = %id, "agent evicted");
        Ok(Response::new(pb::DeleteAgentResponse {}))
    }

    async fn create_join_token(
        &self,
        request: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::JoinToken>, Status> {
        let request = request.into_inner();
        let ttl = match u64::try_from(request.ttl) {
            Ok(0) => DEFAULT_JOIN_TOKEN_TTL,
            Ok(seconds) => Duration::from_secs(seconds),
            Err(_) => return Err(Status::invalid_argument("ttl cannot be negative")),
        };
        let agent_id = if request.agent_id.is_empty() {
            None
        } else {
            Some(wire::spiffe_id("agent_id", &request.agent_id).map_err(|e| status::wire(&e))?)
        };
        let token = self
            .state
            .create_join_token(ttl, agent_id, SystemTime::now())
            .await
            .map_err(|e| status::token(&e))?;
        let agent_id = token
            .spiffe_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        // The token is a secret: the log names what it will make, never the token.
        tracing::info!(agent = %agent_id, expires_at = token.expires_at, "join token created");
        Ok(Response::new(pb::JoinToken {
            value: token.token.as_str().to_owned(),
            expires_at: token.expires_at,
            agent_id,
        }))
    }
}

/// One page of agents and the token of the next one.
struct Page<'a> {
    agents: &'a [AttestedNode],
    next: Option<String>,
}

/// The `size` agents after `after` in `sorted` (sorted by ID), and the next page's token when
/// more follow.
fn page_after<'a>(sorted: &'a [AttestedNode], after: Option<&SpiffeId>, size: u32) -> Page<'a> {
    let start = after.map_or(0, |after| {
        sorted.partition_point(|n| n.spiffe_id.as_str() <= after.as_str())
    });
    let rest = sorted.get(start..).unwrap_or_default();
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if rest.len() > size {
        let agents = rest.get(..size).unwrap_or_default();
        Page {
            agents,
            next: agents.last().map(|n| n.spiffe_id.to_string()),
        }
    } else {
        Page {
            agents: rest,
            next: None,
        }
    }
}
