//! Mutual TLS on X.509-SVIDs: our rustls configs against each other, and against
//! `spiffe-rustls` (written by others), which gets its SVIDs from the `spiffe` crate's
//! `X509Source` over a real Workload API socket.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_proto::workload::spiffe_workload_api_server::{
    SpiffeWorkloadApi, SpiffeWorkloadApiServer,
};
use sigil_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svid, X509svidRequest,
    X509svidResponse,
};
use sigil_spiffe::tls::{self, TlsMaterial};
use sigil_spiffe::x509::{CaParams, SvidParams, X509Authority, X509Svid};
use sigil_spiffe::{Authorizer, Bundle, BundleSet, KeyType, PrivateKey, SpiffeId, TrustDomain};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

/// A trust domain's CA for the tests, issuing SVIDs valid for an hour.
struct TestDomain {
    ca: X509Authority,
}

impl TestDomain {
    fn new(name: &str) -> Self {
        let now = SystemTime::now();
        let params = CaParams::new(
            TrustDomain::new(name).unwrap(),
            now - Duration::from_secs(60),
            now + Duration::from_secs(24 * 3600),
        );
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        Self {
            ca: X509Authority::self_signed(Arc::new(key), &params).unwrap(),
        }
    }

    fn svid(&self, spiffe_id: &str) -> X509Svid {
        let now = SystemTime::now();
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let params = SvidParams::new(
            id(spiffe_id),
            now - Duration::from_secs(60),
            now + Duration::from_secs(3600),
        );
        let issued = self.ca.sign_public_key(&key.public_key(), &params).unwrap();
        X509Svid::new(issued.into_cert_chain(), key).unwrap()
    }

    fn bundle(&self) -> Bundle {
        let mut bundle = Bundle::new(self.ca.trust_domain().unwrap().clone());
        bundle
            .x509_mut()
            .add_authority(self.ca.certificate().clone());
        bundle
    }

    fn bundle_set(&self) -> BundleSet {
        [self.bundle()].into_iter().collect()
    }

    /// TLS material presenting a new SVID for `spiffe_id` and trusting this domain only.
    fn material(&self, spiffe_id: &str) -> Arc<TlsMaterial> {
        Arc::new(TlsMaterial::new(&self.svid(spiffe_id), self.bundle_set()).unwrap())
    }

    /// An `X509Source` (the `spiffe` crate's) serving a new SVID for `spiffe_id` over a
    /// Workload API socket in `dir`.
    async fn spiffe_source(&self, dir: &tempfile::TempDir, spiffe_id: &str) -> spiffe::X509Source {
        x509_source(dir, &self.svid(spiffe_id), &self.bundle_set()).await
    }
}

/// Accepts one connection with `config`, echoes one line, and returns the client's SPIFFE ID
/// as the server saw it (or the handshake error).
async fn serve_once(
    listener: TcpListener,
    config: rustls::ServerConfig,
) -> Result<Option<SpiffeId>, std::io::Error> {
    let (tcp, _) = listener.accept().await?;
    let mut stream = TlsAcceptor::from(Arc::new(config)).accept(tcp).await?;
    let peer = tls::peer_spiffe_id(stream.get_ref().1.peer_certificates());
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).await?;
    stream.write_all(&buf).await?;
    stream.shutdown().await?;
    Ok(peer)
}

/// Connects with `config`, sends a line, and returns the server's SPIFFE ID.
async fn connect_once(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> Result<Option<SpiffeId>, std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    // The name is not checked by SPIFFE verification; any valid name does.
    let name = rustls::pki_types::ServerName::try_from("sigil.invalid").unwrap();
    let mut stream = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let peer = tls::peer_spiffe_id(stream.get_ref().1.peer_certificates());
    stream.write_all(b"hello").await?;
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"hello");
    Ok(peer)
}

/// Runs one handshake between a server config and a client config on loopback.
async fn handshake(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
) -> (
    Result<Option<SpiffeId>, std::io::Error>,
    Result<Option<SpiffeId>, std::io::Error>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve_once(listener, server));
    let client = connect_once(addr, client).await;
    let server = server.await.unwrap();
    (server, client)
}

#[tokio::test]
async fn our_configs_complete_mutual_tls_and_see_each_others_ids() {
    install_provider();
    let domain = TestDomain::new("a.test");
    let server_material = domain.material("spiffe://a.test/server");
    let client_material = domain.material("spiffe://a.test/client");
    let server = tls::server_config(
        server_material,
        Authorizer::exact(id("spiffe://a.test/client")),
    )
    .unwrap();
    let client = tls::client_config(
        client_material,
        Authorizer::exact(id("spiffe://a.test/server")),
    )
    .unwrap();
    let (server_saw, client_saw) = handshake(server, client).await;
    assert_eq!(server_saw.unwrap(), Some(id("spiffe://a.test/client")));
    assert_eq!(client_saw.unwrap(), Some(id("spiffe://a.test/server")));
}

#[tokio::test]
async fn a_peer_the_authorizer_does_not_allow_is_refused_on_both_sides() {
    install_provider();
    let domain = TestDomain::new("a.test");
    let server_material = domain.material("spiffe://a.test/server");
    let client_material = domain.material("spiffe://a.test/client");

    // The client expects another server.
    let server = tls::server_config(server_material.clone(), Authorizer::any()).unwrap();
    let client = tls::client_config(
        client_material.clone(),
        Authorizer::exact(id("spiffe://a.test/other")),
    )
    .unwrap();
    let (_, client_saw) = handshake(server, client).await;
    let error = client_saw.unwrap_err().to_string();
    assert!(error.contains("ApplicationVerificationFailure"), "{error}");

    // The server expects another client.
    let server = tls::server_config(
        server_material,
        Authorizer::exact(id("spiffe://a.test/other")),
    )
    .unwrap();
    let client = tls::client_config(client_material, Authorizer::any()).unwrap();
    let (server_saw, _) = handshake(server, client).await;
    let error = server_saw.unwrap_err().to_string();
    assert!(error.contains("ApplicationVerificationFailure"), "{error}");
}

#[tokio::test]
async fn a_peer_from_a_trust_domain_without_a_bundle_is_refused() {
    install_provider();
    let a = TestDomain::new("a.test");
    let b = TestDomain::new("b.test");
    let server_material = b.material("spiffe://b.test/server");
    // The client trusts only a.test, and authorizes anyone: verification alone must refuse.
    let client_material = a.material("spiffe://a.test/client");
    let server = tls::server_config(server_material, Authorizer::any()).unwrap();
    let client = tls::client_config(client_material, Authorizer::any()).unwrap();
    let (_, client_saw) = handshake(server, client).await;
    let error = client_saw.unwrap_err().to_string();
    assert!(error.contains("UnknownIssuer"), "{error}");
}

#[tokio::test]
async fn a_forged_svid_claiming_a_trusted_domain_is_refused() {
    install_provider();
    let real = TestDomain::new("a.test");
    let forger = TestDomain::new("a.test"); // same name, different CA
    let server_material = forger.material("spiffe://a.test/server");
    let client_material = real.material("spiffe://a.test/client");
    let server = tls::server_config(server_material, Authorizer::any()).unwrap();
    let client = tls::client_config(client_material, Authorizer::any()).unwrap();
    let (_, client_saw) = handshake(server, client).await;
    assert!(
        client_saw.is_err(),
        "a chain to an untrusted CA was accepted"
    );
}

#[tokio::test]
async fn a_client_without_an_svid_is_anonymous_where_allowed_and_refused_elsewhere() {
    install_provider();
    let domain = TestDomain::new("a.test");
    let server_material = domain.material("spiffe://a.test/server");
    let anonymous = Arc::new(TlsMaterial::without_svid(domain.bundle_set()));
    assert_eq!(anonymous.spiffe_id(), None);

    // Optional client auth: the handshake completes, the server sees no ID, and the client
    // still authenticated the server against its bundle.
    let server =
        tls::server_config_client_optional(server_material.clone(), Authorizer::any()).unwrap();
    let client = tls::client_config(
        anonymous.clone(),
        Authorizer::exact(id("spiffe://a.test/server")),
    )
    .unwrap();
    let (server_saw, client_saw) = handshake(server, client).await;
    assert_eq!(server_saw.unwrap(), None);
    assert_eq!(client_saw.unwrap(), Some(id("spiffe://a.test/server")));

    // A client that does present an SVID is still verified and authorized.
    let server = tls::server_config_client_optional(
        server_material.clone(),
        Authorizer::exact(id("spiffe://a.test/other")),
    )
    .unwrap();
    let client =
        tls::client_config(domain.material("spiffe://a.test/client"), Authorizer::any()).unwrap();
    let (server_saw, _) = handshake(server, client).await;
    let error = server_saw.unwrap_err().to_string();
    assert!(error.contains("ApplicationVerificationFailure"), "{error}");

    // Mandatory client auth refuses the anonymous client.
    let server = tls::server_config(server_material, Authorizer::any()).unwrap();
    let client = tls::client_config(anonymous.clone(), Authorizer::any()).unwrap();
    let (server_saw, _) = handshake(server, client).await;
    assert!(
        server_saw.is_err(),
        "an anonymous client passed mandatory auth"
    );

    // Once given an SVID, the same material presents it.
    anonymous
        .set_svid(&domain.svid("spiffe://a.test/agent"))
        .unwrap();
    let server =
        tls::server_config(domain.material("spiffe://a.test/server"), Authorizer::any()).unwrap();
    let client = tls::client_config(anonymous, Authorizer::any()).unwrap();
    let (server_saw, _) = handshake(server, client).await;
    assert_eq!(server_saw.unwrap(), Some(id("spiffe://a.test/agent")));
}

#[tokio::test]
async fn rotation_takes_effect_without_rebuilding_the_configs() {
    install_provider();
    let a = TestDomain::new("a.test");
    let b = TestDomain::new("b.test");
    let server_material = a.material("spiffe://a.test/server");
    let client_material = a.material("spiffe://a.test/client");
    let server = tls::server_config(server_material.clone(), Authorizer::any()).unwrap();
    let client = tls::client_config(client_material.clone(), Authorizer::any()).unwrap();

    let (server_saw, _) = handshake(server.clone(), client.clone()).await;
    assert_eq!(server_saw.unwrap(), Some(id("spiffe://a.test/client")));

    // The client rotates to an SVID of another trust domain the server does not trust yet.
    client_material
        .set_svid(&b.svid("spiffe://b.test/client"))
        .unwrap();
    client_material.set_bundles([a.bundle(), b.bundle()].into_iter().collect());
    let (server_saw, _) = handshake(server.clone(), client.clone()).await;
    assert!(
        server_saw.is_err(),
        "the server accepted a trust domain it has no bundle for"
    );

    // The server learns the new bundle; the same configs now succeed with the new identity.
    server_material.set_bundles([a.bundle(), b.bundle()].into_iter().collect());
    let (server_saw, client_saw) = handshake(server, client).await;
    assert_eq!(server_saw.unwrap(), Some(id("spiffe://b.test/client")));
    assert_eq!(client_saw.unwrap(), Some(id("spiffe://a.test/server")));
    assert_eq!(
        client_material.spiffe_id(),
        Some(id("spiffe://b.test/client"))
    );
}

// --- spiffe-rustls, fed by the spiffe crate's X509Source over a Workload API socket ----------

type ResponseStream<T> =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

/// The smallest Workload API server that an `X509Source` accepts: it answers FetchX509SVID and
/// FetchX509Bundles with fixed material and keeps the streams open.
struct StaticWorkloadApi {
    svid: X509svidResponse,
    bundles: X509BundlesResponse,
}

impl StaticWorkloadApi {
    fn new(svid: &X509Svid, bundles: &BundleSet) -> Self {
        let own = bundles.get(svid.spiffe_id().trust_domain_name()).unwrap();
        let der = |b: &Bundle| {
            b.x509()
                .authorities()
                .iter()
                .flat_map(|c| c.as_ref().to_vec())
                .collect::<Vec<u8>>()
        };
        let all = bundles
            .iter()
            .map(|b| (b.trust_domain().id().to_string(), der(b)))
            .collect();
        Self {
            svid: X509svidResponse {
                svids: vec![X509svid {
                    spiffe_id: svid.spiffe_id().to_string(),
                    x509_svid: svid.chain_der(),
                    x509_svid_key: svid.private_key().pkcs8_der().to_vec(),
                    bundle: der(own),
                    hint: String::new(),
                }],
                crl: vec![],
                federated_bundles: Default::default(),
            },
            bundles: X509BundlesResponse {
                crl: vec![],
                bundles: all,
            },
        }
    }
}

fn open_stream<T: Send + 'static>(first: T) -> ResponseStream<T> {
    use tokio_stream::StreamExt as _;
    Box::pin(tokio_stream::iter([Ok(first)]).chain(tokio_stream::pending()))
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for StaticWorkloadApi {
    type FetchX509SVIDStream = ResponseStream<X509svidResponse>;
    type FetchX509BundlesStream = ResponseStream<X509BundlesResponse>;
    type FetchJWTBundlesStream = ResponseStream<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        _: tonic::Request<X509svidRequest>,
    ) -> Result<tonic::Response<Self::FetchX509SVIDStream>, tonic::Status> {
        Ok(tonic::Response::new(open_stream(self.svid.clone())))
    }

    async fn fetch_x509_bundles(
        &self,
        _: tonic::Request<X509BundlesRequest>,
    ) -> Result<tonic::Response<Self::FetchX509BundlesStream>, tonic::Status> {
        Ok(tonic::Response::new(open_stream(self.bundles.clone())))
    }

    async fn fetch_jwtsvid(
        &self,
        _: tonic::Request<JwtsvidRequest>,
    ) -> Result<tonic::Response<JwtsvidResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("x509 only"))
    }

    async fn fetch_jwt_bundles(
        &self,
        _: tonic::Request<JwtBundlesRequest>,
    ) -> Result<tonic::Response<Self::FetchJWTBundlesStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("x509 only"))
    }

    async fn validate_jwtsvid(
        &self,
        _: tonic::Request<ValidateJwtsvidRequest>,
    ) -> Result<tonic::Response<ValidateJwtsvidResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("x509 only"))
    }
}

/// Serves `svid` on a Workload API socket in `dir` and returns an `X509Source` reading it.
async fn x509_source(
    dir: &tempfile::TempDir,
    svid: &X509Svid,
    bundles: &BundleSet,
) -> spiffe::X509Source {
    let path = dir.path().join("api.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let service = SpiffeWorkloadApiServer::new(StaticWorkloadApi::new(svid, bundles));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    spiffe::X509Source::builder()
        .endpoint(format!("unix:{}", path.display()))
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn spiffe_rustls_client_and_our_server_authenticate_each_other() {
    install_provider();
    let domain = TestDomain::new("a.test");
    let dir = tempfile::tempdir().unwrap();
    let source = domain.spiffe_source(&dir, "spiffe://a.test/peer").await;

    let our_material = domain.material("spiffe://a.test/ours");
    let server =
        tls::server_config(our_material, Authorizer::exact(id("spiffe://a.test/peer"))).unwrap();
    let client = spiffe_rustls::mtls_client(source)
        .authorize(spiffe_rustls::authorizer::exact(["spiffe://a.test/ours"]).unwrap())
        .build()
        .unwrap();
    let (server_saw, client_saw) = handshake(server, client).await;
    assert_eq!(server_saw.unwrap(), Some(id("spiffe://a.test/peer")));
    assert_eq!(client_saw.unwrap(), Some(id("spiffe://a.test/ours")));
}

#[tokio::test]
async fn our_client_and_a_spiffe_rustls_server_authenticate_each_other() {
    install_provider();
    let domain = TestDomain::new("a.test");
    let dir = tempfile::tempdir().unwrap();
    let source = domain.spiffe_source(&dir, "spiffe://a.test/peer").await;

    let server = spiffe_rustls::mtls_server(source)
        .authorize(spiffe_rustls::authorizer::exact(["spiffe://a.test/ours"]).unwrap())
        .build()
        .unwrap();
    let our_material = domain.material("spiffe://a.test/ours");
    let client =
        tls::client_config(our_material, Authorizer::exact(id("spiffe://a.test/peer"))).unwrap();
    let (server_saw, client_saw) = handshake(server, client).await;
    assert_eq!(server_saw.unwrap(), Some(id("spiffe://a.test/ours")));
    assert_eq!(client_saw.unwrap(), Some(id("spiffe://a.test/peer")));
}

#[tokio::test]
async fn spiffe_rustls_refuses_our_svid_when_it_expects_another_id() {
    install_provider();
    let domain = TestDomain::new("a.test");
    let dir = tempfile::tempdir().unwrap();
    let source = domain.spiffe_source(&dir, "spiffe://a.test/peer").await;
    let our_material = domain.material("spiffe://a.test/ours");
    let server = tls::server_config(our_material, Authorizer::any()).unwrap();
    let client = spiffe_rustls::mtls_client(source)
        .authorize(spiffe_rustls::authorizer::exact(["spiffe://a.test/someone-else"]).unwrap())
        .build()
        .unwrap();
    let (_, client_saw) = handshake(server, client).await;
    assert!(client_saw.is_err());
}
