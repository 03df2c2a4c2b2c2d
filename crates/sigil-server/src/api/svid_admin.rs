//! The admin side of the `SVID` service: minting an X.509-SVID (from the caller's CSR) or a
//! JWT-SVID for any workload ID of our trust domain, as `spire-server x509 mint` / `jwt mint`.
//!
//! Only the CSR's public key is used, after its signature verifies; the SPIFFE ID and DNS names
//! come from the request. IDs under `/sigil/` are the server's and the agents' and are never
//! minted here. `BatchNewX509SVID` and `NewJWTSVID` belong to the agent API (mTLS).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_core::entry::{MAX_SVID_TTL, MIN_SVID_TTL, is_dns_name, is_reserved};
use sigil_core::{format_duration, wire};
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::svid_server::Svid;
use sigil_spiffe::SpiffeId;
use tonic::{Request, Response, Status};

use super::status;
use crate::state::{ServerState, unix};

/// The admin `SVID` service over the running server's state.
#[derive(Debug, Clone)]
pub struct SvidAdminApi {
    state: Arc<ServerState>,
}

impl SvidAdminApi {
    /// The service over `state`.
    pub fn new(state: Arc<ServerState>) -> Self {
        Self { state }
    }

    /// The ID to mint: a workload of our trust domain, with a path, outside `/sigil/`.
    fn workload_id(&self, input: &str) -> Result<SpiffeId, Status> {
        let id = wire::spiffe_id("spiffe_id", input).map_err(|e| status::wire(&e))?;
        let trust_domain = self.state.trust_domain();
        if !id.is_member_of(trust_domain) {
            return Err(Status::invalid_argument(format!(
                "spiffe_id {id} is not in trust domain {trust_domain}"
            )));
        }
        if id.is_root() {
            return Err(Status::invalid_argument(format!(
                "spiffe_id {id} has no path: an SVID names a workload, not the trust domain"
            )));
        }
        if is_reserved(&id) {
            return Err(Status::invalid_argument(format!(
                "spiffe_id {id} is reserved: IDs under /sigil/ belong to the server and agents"
            )));
        }
        Ok(id)
    }
}

#[tonic::async_trait]
impl Svid for SvidAdminApi {
    async fn batch_new_x509svid(
        &self,
        _request: Request<pb::BatchNewX509svidRequest>,
    ) -> Result<Response<pb::BatchNewX509svidResponse>, Status> {
        Err(Status::unimplemented(
            "BatchNewX509SVID is for agents and is served on the agent API, not the admin \
             socket; use MintX509SVID",
        ))
    }

    async fn new_jwtsvid(
        &self,
        _request: Request<pb::NewJwtsvidRequest>,
    ) -> Result<Response<pb::Jwtsvid>, Status> {
        Err(Status::unimplemented(
            "NewJWTSVID is for agents and is served on the agent API, not the admin socket; \
             use MintJWTSVID",
        ))
    }

    async fn mint_x509svid(
        &self,
        request: Request<pb::MintX509svidRequest>,
    ) -> Result<Response<pb::MintX509svidResponse>, Status> {
        let request = request.into_inner();
        let spiffe_id = self.workload_id(&request.spiffe_id)?;
        let ttl = ttl(request.ttl, self.state.default_x509_ttl())?;
        if let Some(bad) = request.dns_names.iter().find(|n| !is_dns_name(n)) {
            return Err(Status::invalid_argument(format!(
                "dns_names: {bad:?} is not a valid DNS name"
            )));
        }
        if request.csr.is_empty() {
            return Err(Status::invalid_argument(
                "csr: no certificate signing request",
            ));
        }
        // Verifying the CSR and signing are CPU work: keep them off the async workers.
        let state = Arc::clone(&self.state);
        let id = spiffe_id.clone();
        let dns_names = request.dns_names;
        let csr = request.csr;
        let issued = tokio::task::spawn_blocking(move || {
            state
                .ca()
                .sign_x509_svid(&csr, id, dns_names, ttl, SystemTime::now())
        })
        .await
        .map_err(|error| {
            tracing::error!(%error, "signing task failed");
            Status::internal("signing task failed")
        })?
        .map_err(|e| status::ca(&e))?;
        let expires_at = unix(issued.not_after());
        if issued.capped() {
            tracing::info!(
                spiffe_id = %spiffe_id,
                requested_ttl = %format_duration(ttl),
                expires_at,
                "x509-svid ttl capped to the CA's remaining lifetime"
            );
        }
        tracing::info!(spiffe_id = %spiffe_id, expires_at, "x509-svid minted");
        Ok(Response::new(pb::MintX509svidResponse {
            ttl_capped: issued.capped(),
            svid: Some(pb::X509svid {
                spiffe_id: spiffe_id.to_string(),
                expires_at,
                cert_chain: issued
                    .into_cert_chain()
                    .into_iter()
                    .map(|c| c.as_ref().to_vec())
                    .collect(),
            }),
        }))
    }

    async fn mint_jwtsvid(
        &self,
        request: Request<pb::MintJwtsvidRequest>,
    ) -> Result<Response<pb::Jwtsvid>, Status> {
        let request = request.into_inner();
        let spiffe_id = self.workload_id(&request.spiffe_id)?;
        if request.audience.is_empty() {
            return Err(Status::invalid_argument(
                "audience: a JWT-SVID needs at least one audience",
            ));
        }
        if request.audience.iter().any(String::is_empty) {
            return Err(Status::invalid_argument("audience: values cannot be empty"));
        }
        let ttl = ttl(request.ttl, self.state.default_jwt_ttl())?;
        let now = SystemTime::now();
        let (svid, capped) = self
            .state
            .mint_jwt_svid(spiffe_id.clone(), &request.audience, ttl, now)
            .map_err(|e| status::ca(&e))?;
        let expires_at = unix(svid.expiry());
        if capped {
            tracing::info!(
                spiffe_id = %spiffe_id,
                requested_ttl = %format_duration(ttl),
                expires_at,
                "jwt-svid ttl capped to the signing key's remaining lifetime"
            );
        }
        // The token is a credential: only its subject and expiry are logged.
        tracing::info!(spiffe_id = %spiffe_id, expires_at, "jwt-svid minted");
        Ok(Response::new(pb::Jwtsvid {
            token: svid.token().to_owned(),
            spiffe_id: spiffe_id.to_string(),
            issued_at: unix(svid.issued_at().unwrap_or(now)),
            expires_at,
        }))
    }
}

/// A requested lifetime in seconds: 0 is `default`; otherwise within the bounds entries have.
fn ttl(seconds: i64, default: Duration) -> Result<Duration, Status> {
    if seconds == 0 {
        return Ok(default);
    }
    let ttl = u64::try_from(seconds)
        .map(Duration::from_secs)
        .map_err(|_| Status::invalid_argument(format!("ttl {seconds} cannot be negative")))?;
    if !(MIN_SVID_TTL..=MAX_SVID_TTL).contains(&ttl) {
        return Err(Status::invalid_argument(format!(
            "ttl {} must be between {} and {}",
            format_duration(ttl),
            format_duration(MIN_SVID_TTL),
            format_duration(MAX_SVID_TTL)
        )));
    }
    Ok(ttl)
}
