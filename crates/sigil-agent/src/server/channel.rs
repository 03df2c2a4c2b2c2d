//! The gRPC channel to the server: HTTP/2 over rustls on TCP, the agent's SVID presented as a
//! client certificate, the server authenticated as `spiffe://<td>/sigil/server`.

use std::sync::Arc;

use arc_swap::ArcSwap;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sigil_spiffe::tls::{TlsError, TlsMaterial, client_config};
use sigil_spiffe::{Authorizer, SpiffeId};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

/// A channel to the server at `address` (`HOST:PORT`), presenting `material`'s SVID (if it
/// has one) and accepting only `server_id` under `material`'s bundles. The channel connects
/// lazily and reconnects by itself after a failure, so it lives as long as the agent.
pub fn connect(
    address: &str,
    material: Arc<TlsMaterial>,
    server_id: SpiffeId,
) -> Result<Channel, TlsError> {
    let config = client_config(material, Authorizer::exact(server_id))?;
    Ok(channel(address, config))
}

/// The agent's way to the server: a channel that is replaced by a fresh one after each
/// renewal of the agent's SVID.
///
/// A TLS client certificate belongs to the connection, not to the call: calls on a connection
/// opened before a renewal would still present the old SVID, which the server stops accepting
/// once the new one is in use. So every caller takes [`ServerChannel::get`] per operation, and
/// the renewal calls [`ServerChannel::reconnect`]. Streams already open keep their connection
/// until they end, then reconnect on the new channel.
#[derive(Debug)]
pub struct ServerChannel {
    address: String,
    material: Arc<TlsMaterial>,
    server_id: SpiffeId,
    current: ArcSwap<Channel>,
}

impl ServerChannel {
    /// A channel to `address` with `material` (see [`connect`]).
    pub fn new(
        address: &str,
        material: Arc<TlsMaterial>,
        server_id: SpiffeId,
    ) -> Result<Self, TlsError> {
        let channel = connect(address, material.clone(), server_id.clone())?;
        Ok(Self {
            address: address.to_owned(),
            material,
            server_id,
            current: ArcSwap::from_pointee(channel),
        })
    }

    /// The channel to use now.
    pub fn get(&self) -> Channel {
        Channel::clone(&self.current.load())
    }

    /// Replaces the channel with a new one, whose connections present the material's current
    /// SVID.
    pub fn reconnect(&self) -> Result<(), TlsError> {
        let channel = connect(&self.address, self.material.clone(), self.server_id.clone())?;
        self.current.store(Arc::new(channel));
        Ok(())
    }

    /// The TLS material (the agent's SVID and the bundles trusted for the server).
    pub fn material(&self) -> &Arc<TlsMaterial> {
        &self.material
    }
}

/// A channel that accepts whatever certificate the server presents: for
/// `insecure_bootstrap` only, to attest once and learn the bundle from the answer.
pub fn connect_insecure(address: &str) -> Channel {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
        .with_no_client_auth();
    channel(address, config)
}

fn channel(address: &str, mut config: ClientConfig) -> Channel {
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let address = address.to_owned();
    // The URI is only a label: the connector below decides where to connect.
    Endpoint::from_static("https://sigil-server").connect_with_connector_lazy(service_fn(
        move |_: Uri| {
            let connector = connector.clone();
            let address = address.clone();
            async move {
                let tcp = TcpStream::connect(&address).await?;
                // Without it, Nagle's algorithm holds HTTP/2 window updates behind delayed
                // ACKs and large answers stall for tens of milliseconds (BENCHMARKS.md).
                tcp.set_nodelay(true)?;
                // SPIFFE authenticates the server by its ID; the name is never checked.
                let name = ServerName::try_from("sigil-server").expect("a valid DNS name");
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        },
    ))
}

/// Accepts any server certificate, still checking that the server holds its key.
#[derive(Debug)]
struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
