//! The federation bundle endpoint (`[federation.bundle_endpoint]`): our trust bundle as a
//! SPIFFE bundle document over HTTPS, at the root path as SPIRE serves it, with the CA's
//! `spiffe_sequence` and the configured `spiffe_refresh_hint`. Anyone may read it: no client
//! certificate is asked for.
//!
//! The endpoint authenticates itself in one of the two SPIFFE profiles: `https_spiffe`
//! presents the server's own X.509-SVID (the material the agent API keeps current, so it
//! rotates with it); `https_web` presents a certificate and key from files, reloaded when they
//! change ([`FileCertResolver`]).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Response, StatusCode};
use rustls::ServerConfig;
use sigil_spiffe::tls::{TlsError, TlsMaterial, server_config_no_client_auth};
use tokio::net::TcpListener;

use crate::config::{BundleEndpointConfig, EndpointProfile};
use crate::https::{self, FileCertResolver, HttpsServer, ServingCertError};
use crate::state::ServerState;

/// Why the bundle endpoint's TLS could not be set up.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The `https_web` certificate or key could not be loaded.
    #[error("federation.bundle_endpoint: {0}")]
    ServingCert(#[from] ServingCertError),
    /// The `https_spiffe` configuration could not be built.
    #[error("federation.bundle_endpoint: {0}")]
    Tls(#[from] TlsError),
}

/// The TLS configuration of `config`'s profile. `svid` is the server's own, kept current by
/// its owner; only `https_spiffe` uses it.
pub fn tls_config(
    config: &BundleEndpointConfig,
    svid: &Arc<TlsMaterial>,
) -> Result<ServerConfig, EndpointError> {
    let mut tls = match &config.profile {
        EndpointProfile::HttpsSpiffe => server_config_no_client_auth(Arc::clone(svid))?,
        EndpointProfile::HttpsWeb {
            cert_file,
            key_file,
        } => Arc::new(FileCertResolver::load(cert_file, key_file)?).server_config()?,
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// Serves `state`'s bundle on `listener` with `tls` until the returned server is stopped.
pub fn spawn(
    listener: TcpListener,
    tls: ServerConfig,
    state: Arc<ServerState>,
    refresh_hint: Duration,
) -> io::Result<HttpsServer> {
    HttpsServer::spawn(
        listener,
        Arc::new(tls),
        "bundle endpoint",
        Arc::new(move |method: &Method, path: &str| respond(&state, refresh_hint, method, path)),
    )
}

fn respond(
    state: &ServerState,
    refresh_hint: Duration,
    method: &Method,
    path: &str,
) -> Response<Full<Bytes>> {
    if path != "/" {
        return https::text(StatusCode::NOT_FOUND, "not found\n");
    }
    if !https::is_read(method) {
        return https::method_not_allowed();
    }
    match document(state, refresh_hint) {
        Ok(document) => https::json(StatusCode::OK, document),
        Err(error) => {
            tracing::error!(%error, "bundle endpoint: cannot write the bundle document");
            https::text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
    }
}

/// Our bundle as served: the CA's sequence, the configured refresh hint.
pub fn document(
    state: &ServerState,
    refresh_hint: Duration,
) -> Result<String, sigil_spiffe::bundle::BundleDocumentError> {
    let mut bundle = state.own_bundle();
    bundle.set_refresh_hint(Some(refresh_hint));
    bundle.to_document()
}
