//! Who is calling the agent API: the peer's address and, when it presented one, the agent
//! SVID that TLS verified. Every agent-only call checks the SVID against the attested agents
//! held in memory (never the datastore).

use std::net::SocketAddr;

use rustls::ServerConnection;
use rustls::pki_types::CertificateDer;
use sigil_spiffe::SpiffeId;
use sigil_spiffe::tls::peer_spiffe_id;
use tonic::{Request, Status};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::state::ServerState;

/// What the TLS handshake established about a connection's peer.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The peer's address.
    pub addr: SocketAddr,
    /// The SPIFFE ID and certificate serial (hex) of a peer that presented a verified SVID.
    pub svid: Option<(SpiffeId, String)>,
}

impl PeerInfo {
    /// Reads the peer's verified certificate, if any, from a completed handshake.
    pub fn from_tls(addr: SocketAddr, connection: &ServerConnection) -> Self {
        let certificates = connection.peer_certificates();
        let svid = peer_spiffe_id(certificates).and_then(|id| {
            let leaf = certificates?.first()?;
            Some((id, serial_hex(leaf)?))
        });
        Self { addr, svid }
    }
}

/// The serial number of a certificate as lowercase hex, the form the datastore keeps.
pub fn serial_hex(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = X509Certificate::from_der(certificate).ok()?;
    Some(hex(parsed.raw_serial()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The peer of a request.
pub(super) fn peer<T>(request: &Request<T>) -> Result<&PeerInfo, Status> {
    request
        .extensions()
        .get::<PeerInfo>()
        .ok_or_else(|| Status::internal("connection information missing"))
}

/// The calling agent: the request came with an SVID of an attested, unbanned agent whose
/// current certificate it is. The peer learns only "permission denied"; the log says why.
pub(super) fn authenticate<T>(
    state: &ServerState,
    request: &Request<T>,
) -> Result<SpiffeId, Status> {
    let peer = peer(request)?;
    let Some((agent, serial)) = &peer.svid else {
        tracing::info!(addr = %peer.addr, "agent api: call without an agent svid");
        return Err(permission_denied());
    };
    if let Err(error) = state.authenticate_agent(agent, serial) {
        tracing::info!(addr = %peer.addr, %error, "agent api: agent refused");
        return Err(permission_denied());
    }
    state.confirm_serial(agent, serial);
    Ok(agent.clone())
}

/// The one answer to a peer that may not do what it asked.
pub(super) fn permission_denied() -> Status {
    Status::permission_denied("permission denied")
}
