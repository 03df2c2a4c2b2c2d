//! The gRPC channel to the servers: HTTP/2 over rustls on TCP, the agent's SVID presented as
//! a client certificate, the server authenticated as `spiffe://<td>/sigil/server`.
//!
//! Each new connection goes to the first server, in the agent's order of preference
//! ([`super::addresses`]), that completes a TLS handshake: a dead server is skipped within
//! [`CONNECT_TIMEOUT`] and the next one tried, so failing over is what reconnecting does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sigil_spiffe::tls::{TlsError, TlsMaterial, client_config};
use sigil_spiffe::{Authorizer, SpiffeId};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

use super::addresses::ServerAddresses;

/// How long one server gets to accept the TCP connection and complete the TLS handshake
/// before the next one is tried. A server that is starting has its port bound but does not
/// answer the handshake yet, which this also covers.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings on an idle connection: a server whose host vanished (no FIN, no RST) is
/// noticed within interval + timeout, and the next call connects to another.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A channel to the servers at `addresses`, presenting `material`'s SVID (if it has one) and
/// accepting only `server_id` under `material`'s bundles. The channel connects lazily and
/// reconnects by itself after a failure, so it lives as long as the agent. Before the agent
/// has an identity there is no key to order the servers by: a random one spreads first
/// contacts.
pub fn connect(
    addresses: &ServerAddresses,
    material: Arc<TlsMaterial>,
    server_id: SpiffeId,
) -> Result<Channel, TlsError> {
    let config = client_config(material, Authorizer::exact(server_id))?;
    Ok(channel(Connector::new(addresses, &random_key(), config)))
}

/// The agent's way to the servers: a channel that is replaced by a fresh one after each
/// renewal of the agent's SVID, and when a server the agent prefers is back.
///
/// A TLS client certificate belongs to the connection, not to the call: calls on a connection
/// opened before a renewal would still present the old SVID, which the server stops accepting
/// once the new one is in use. So every caller takes [`ServerChannel::get`] per operation, and
/// the renewal calls [`ServerChannel::reconnect`]. Streams already open keep their connection
/// until they end, then reconnect on the new channel; a move to a preferred server
/// ([`ServerChannel::move_to_preferred`]) also tells the long-lived streams to reopen, through
/// [`ServerChannel::moves`].
#[derive(Debug)]
pub struct ServerChannel {
    addresses: ServerAddresses,
    key: String,
    material: Arc<TlsMaterial>,
    server_id: SpiffeId,
    current: ArcSwap<Channel>,
    connected: Arc<Mutex<Option<SocketAddr>>>,
    moves: watch::Sender<u64>,
}

impl ServerChannel {
    /// A channel to the servers at `addresses` with `material` (see [`connect`]), ordered by
    /// `key`, the agent's SPIFFE ID.
    pub fn new(
        addresses: ServerAddresses,
        key: &str,
        material: Arc<TlsMaterial>,
        server_id: SpiffeId,
    ) -> Result<Self, TlsError> {
        let connected = Arc::new(Mutex::new(None));
        let config = client_config(material.clone(), Authorizer::exact(server_id.clone()))?;
        let connector =
            Connector::new(&addresses, key, config).reporting_to(Arc::clone(&connected));
        Ok(Self {
            addresses,
            key: key.to_owned(),
            material,
            server_id,
            current: ArcSwap::from_pointee(channel(connector)),
            connected,
            moves: watch::Sender::new(0),
        })
    }

    /// The channel to use now.
    pub fn get(&self) -> Channel {
        Channel::clone(&self.current.load())
    }

    /// Replaces the channel with a new one, whose connections present the material's current
    /// SVID and go to the first server in order of preference that answers.
    pub fn reconnect(&self) -> Result<(), TlsError> {
        let connector = self.connector()?.reporting_to(Arc::clone(&self.connected));
        self.current.store(Arc::new(channel(connector)));
        Ok(())
    }

    /// [`ServerChannel::reconnect`], and every long-lived stream is told to reopen on the new
    /// channel (it would otherwise stay on the old server until it breaks).
    pub fn move_to_preferred(&self) -> Result<(), TlsError> {
        self.reconnect()?;
        self.moves.send_modify(|moves| *moves += 1);
        Ok(())
    }

    /// Changes when the agent moved to a preferred server: a stream that watches it reopens.
    pub fn moves(&self) -> watch::Receiver<u64> {
        self.moves.subscribe()
    }

    /// The server the latest connection went to, if any connection was made.
    pub fn connected(&self) -> Option<SocketAddr> {
        *self
            .connected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The configured addresses, resolved now, in this agent's order of preference.
    pub async fn candidates(&self) -> Vec<SocketAddr> {
        self.addresses.candidates(&self.key).await
    }

    /// Whether the server at `address` completes a TLS handshake as the server, within
    /// [`CONNECT_TIMEOUT`]. The connection is closed at once.
    pub async fn probe(&self, address: SocketAddr) -> Result<(), std::io::Error> {
        let connector = self
            .connector()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        connector.open(address).await.map(drop)
    }

    /// The TLS material (the agent's SVID and the bundles trusted for the server).
    pub fn material(&self) -> &Arc<TlsMaterial> {
        &self.material
    }

    fn connector(&self) -> Result<Connector, TlsError> {
        let config = client_config(
            self.material.clone(),
            Authorizer::exact(self.server_id.clone()),
        )?;
        Ok(Connector::new(&self.addresses, &self.key, config))
    }
}

/// A channel that accepts whatever certificate the server presents: for
/// `insecure_bootstrap` only, to attest once and learn the bundle from the answer.
pub fn connect_insecure(addresses: &ServerAddresses) -> Channel {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
        .with_no_client_auth();
    channel(Connector::new(addresses, &random_key(), config))
}

/// Opens connections for a channel: to the first server, in order of preference, that
/// completes the handshake.
#[derive(Clone)]
struct Connector {
    addresses: ServerAddresses,
    key: Arc<str>,
    tls: TlsConnector,
    /// Where the latest connection went, shared by the channels of one [`ServerChannel`].
    connected: Option<Arc<Mutex<Option<SocketAddr>>>>,
}

impl Connector {
    fn new(addresses: &ServerAddresses, key: &str, mut config: ClientConfig) -> Self {
        config.alpn_protocols = vec![b"h2".to_vec()];
        Self {
            addresses: addresses.clone(),
            key: key.into(),
            tls: TlsConnector::from(Arc::new(config)),
            connected: None,
        }
    }

    fn reporting_to(mut self, connected: Arc<Mutex<Option<SocketAddr>>>) -> Self {
        self.connected = Some(connected);
        self
    }

    /// A connection to the first server that answers; the last failure when none does.
    async fn connect_first(&self) -> Result<TlsStream<TcpStream>, std::io::Error> {
        let candidates = self.addresses.candidates(&self.key).await;
        let mut failures = Vec::new();
        for address in candidates {
            match self.open(address).await {
                Ok(stream) => {
                    self.report(address);
                    return Ok(stream);
                }
                Err(error) => {
                    tracing::debug!(%address, "server not reachable: {error}");
                    failures.push(format!("{address}: {error}"));
                }
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            if failures.is_empty() {
                format!("no address found for {}", self.addresses.describe())
            } else {
                format!("no server answered ({})", failures.join("; "))
            },
        ))
    }

    /// TCP and the TLS handshake to one server, within [`CONNECT_TIMEOUT`].
    async fn open(&self, address: SocketAddr) -> Result<TlsStream<TcpStream>, std::io::Error> {
        let handshake = async {
            let tcp = TcpStream::connect(address).await?;
            // Without it, Nagle's algorithm holds HTTP/2 window updates behind delayed
            // ACKs and large answers stall for tens of milliseconds (BENCHMARKS.md).
            tcp.set_nodelay(true)?;
            // SPIFFE authenticates the server by its ID; the name is never checked.
            let name = ServerName::try_from("sigil-server").expect("a valid DNS name");
            self.tls.connect(name, tcp).await
        };
        tokio::time::timeout(CONNECT_TIMEOUT, handshake)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no handshake within {CONNECT_TIMEOUT:?}"),
                ))
            })
    }

    fn report(&self, address: SocketAddr) {
        let Some(connected) = &self.connected else {
            return;
        };
        let previous = connected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(address);
        if previous != Some(address) {
            tracing::info!(server = %address, "connected to server");
        }
    }
}

fn channel(connector: Connector) -> Channel {
    // The URI is only a label: the connector decides where to connect.
    Endpoint::from_static("https://sigil-server")
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect_with_connector_lazy(service_fn(move |_: Uri| {
            let connector = connector.clone();
            async move { connector.connect_first().await.map(TokioIo::new) }
        }))
}

/// A key for the order of servers when the agent has no SPIFFE ID yet.
fn random_key() -> String {
    let mut bytes = [0u8; 16];
    // The system RNG does not fail on Linux; a fixed key only loses the spread.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
