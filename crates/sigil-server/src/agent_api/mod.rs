//! The agent API: gRPC over TCP with mutual TLS, where agents attest their nodes, renew their
//! SVIDs, follow their authorized entries and have their workloads' SVIDs signed.
//!
//! TLS: the server presents its own SVID (`spiffe://<td>/sigil/server`) and asks for a client
//! certificate without requiring one, since an agent attests before it has an SVID. Any SVID
//! of our trust domain passes the handshake; each call then decides: attestation is open to
//! anonymous peers (rate limited per address), every other call needs the SVID of an
//! attested, unbanned agent, checked against memory on every call. ALPN is h2 only.

mod attest;
mod identity;
mod listener;
mod peer;
mod ratelimit;
mod svid;
mod sync;
mod trustdomain;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::agent_server::AgentServer;
use sigil_proto::server::v1::entry_server::EntryServer;
use sigil_proto::server::v1::peer_server::PeerServer;
use sigil_proto::server::v1::svid_server::SvidServer;
use sigil_proto::server::v1::trust_domain_server::TrustDomainServer;
use sigil_spiffe::tls::{TlsError, server_config_client_optional};
use sigil_spiffe::x509::IssuedX509Svid;
use sigil_spiffe::{Authorizer, Bundle};
use tokio::net::TcpListener;
use tonic::Status;

pub use attest::{AgentEndpoint, JOIN_TOKEN};
pub use identity::{IdentityError, ServerIdentity};
pub use peer::{PeerInfo, serial_hex};
pub use svid::{MAX_BATCH, SvidEndpoint};
pub use sync::{ENTRIES_PER_MESSAGE, SyncEndpoint};

use crate::notices::PeerEndpoint;
use crate::state::{ServerState, unix};

/// Why the agent API could not be served.
#[derive(Debug, thiserror::Error)]
pub enum AgentApiError {
    /// The server's own SVID could not be made.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The TLS configuration could not be built.
    #[error("agent api tls: {0}")]
    Tls(#[from] TlsError),
    /// The gRPC server failed.
    #[error("agent api: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Tunables of the agent API.
#[derive(Clone, Copy, Debug)]
pub struct AgentApiOptions {
    /// Attestation attempts one address may make in a burst.
    pub attest_burst: u32,
    /// One more attempt is allowed per this interval.
    pub attest_refill_every: Duration,
}

impl Default for AgentApiOptions {
    fn default() -> Self {
        Self {
            attest_burst: ratelimit::BURST,
            attest_refill_every: ratelimit::REFILL_EVERY,
        }
    }
}

/// Serves the agent API on `listener` until `shutdown` completes, then lets calls in flight
/// finish. Open sync streams end when the hub is closed ([`crate::hub::SyncHub::close`]),
/// which the caller does as shutdown begins.
pub async fn serve(
    state: Arc<ServerState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentApiError> {
    serve_with(state, listener, AgentApiOptions::default(), shutdown).await
}

/// [`serve`] with explicit options.
pub async fn serve_with(
    state: Arc<ServerState>,
    listener: TcpListener,
    options: AgentApiOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentApiError> {
    let identity = ServerIdentity::start(&state)?;
    serve_as(state, listener, options, &identity, None, shutdown).await
}

/// [`serve_with`], presenting `identity` (which the caller may share with other listeners),
/// and serving `peers`, the change notices other servers follow, when given.
pub async fn serve_as(
    state: Arc<ServerState>,
    listener: TcpListener,
    options: AgentApiOptions,
    identity: &ServerIdentity,
    peers: Option<PeerEndpoint>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentApiError> {
    let mut config = server_config_client_optional(
        Arc::clone(identity.material()),
        Authorizer::member_of([state.trust_domain().clone()]),
    )?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let incoming = listener::incoming(listener, Arc::new(config));
    let served = tonic::transport::Server::builder()
        .add_service(AgentServer::new(AgentEndpoint::new(
            Arc::clone(&state),
            &options,
        )))
        .add_service(EntryServer::new(SyncEndpoint::new(Arc::clone(&state))))
        .add_service(SvidServer::new(SvidEndpoint::new(Arc::clone(&state))))
        .add_service(TrustDomainServer::new(trustdomain::TrustDomainDenied))
        .add_optional_service(peers.map(PeerServer::new))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    Ok(served?)
}

/// An issued SVID as sent to an agent (no key: the agent holds it).
fn svid_message(issued: &IssuedX509Svid) -> pb::X509svid {
    pb::X509svid {
        spiffe_id: issued.spiffe_id().to_string(),
        cert_chain: issued
            .cert_chain()
            .iter()
            .map(|c| c.as_ref().to_vec())
            .collect(),
        expires_at: unix(issued.not_after()),
    }
}

/// A bundle as its SPIFFE bundle document.
fn bundle_message(bundle: &Bundle) -> Result<pb::TrustBundle, Status> {
    let document = bundle
        .to_document()
        .map_err(|e| Status::internal(format!("cannot write the bundle document: {e}")))?;
    Ok(pb::TrustBundle {
        trust_domain: bundle.trust_domain().to_string(),
        document: document.into_bytes(),
        sequence: bundle.sequence().unwrap_or(0),
    })
}
