//! The federation fetcher against real HTTPS bundle endpoints on loopback (hyper +
//! tokio-rustls) serving documents the test controls: `https_spiffe` endpoints present
//! X.509-SVIDs issued by a peer CA made with sigil-spiffe, the `https_web` one a certificate
//! made with rcgen.
//!
//! Each test waits on the number of connections the endpoint accepted: the fetcher makes one
//! connection per fetch and fetches one at a time, so once two more connections arrived the
//! first of them has been fully handled (checked and stored or rejected). Timeouts are hang
//! guards only.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sigil_server::config::{FederatesWith, RemoteProfile};
use sigil_server::federation::{BundleFetcher, Federation, FetchError, FetchOutcome};
use sigil_server::state::ServerState;
use sigil_spiffe::tls::{self, TlsMaterial};
use sigil_spiffe::{
    Authorizer, Bundle, BundleSet, CaParams, JwtBundle, KeyType, PrivateKey, SpiffeId, SvidParams,
    TrustDomain, X509Authority, X509Bundle, X509Svid,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::support;

/// Hang guard for every wait.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

pub(crate) fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn peer_td() -> TrustDomain {
    TrustDomain::new("peer.test").unwrap()
}

fn endpoint_id() -> SpiffeId {
    "spiffe://peer.test/bundle-endpoint".parse().unwrap()
}

pub(crate) fn new_ca(trust_domain: &TrustDomain) -> X509Authority {
    let now = SystemTime::now();
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    X509Authority::self_signed(
        Arc::new(key),
        &CaParams::new(
            trust_domain.clone(),
            now - Duration::from_secs(60),
            now + Duration::from_secs(24 * 3600),
        ),
    )
    .unwrap()
}

pub(crate) fn new_svid(ca: &X509Authority, id: &SpiffeId) -> X509Svid {
    let now = SystemTime::now();
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let issued = ca
        .sign_public_key(
            &key.public_key(),
            &SvidParams::new(
                id.clone(),
                now - Duration::from_secs(60),
                now + Duration::from_secs(3600),
            ),
        )
        .unwrap();
    X509Svid::new(issued.into_cert_chain(), key).unwrap()
}

/// A bundle of `trust_domain` holding `cas`, with a sequence and a one-second hint.
pub(crate) fn bundle(trust_domain: &TrustDomain, cas: &[&X509Authority], sequence: u64) -> Bundle {
    let x509 = X509Bundle::from_authorities(
        trust_domain.clone(),
        cas.iter().map(|ca| ca.certificate().clone()),
    );
    let mut bundle = Bundle::from_parts(x509, JwtBundle::new(trust_domain.clone())).unwrap();
    bundle.set_sequence(Some(sequence));
    bundle.set_refresh_hint(Some(Duration::from_secs(1)));
    bundle
}

pub(crate) fn document(bundle: &Bundle) -> Vec<u8> {
    bundle.to_document().unwrap().into_bytes()
}

/// A bundle endpoint on loopback: answers every GET with the current reply.
pub(crate) struct Endpoint {
    address: SocketAddr,
    tls: Arc<ServerConfig>,
    reply: Arc<Mutex<(StatusCode, Vec<u8>)>>,
    connections: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
}

impl Endpoint {
    async fn start(tls: ServerConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut endpoint = Self {
            address: listener.local_addr().unwrap(),
            tls: Arc::new(tls),
            reply: Arc::new(Mutex::new((StatusCode::SERVICE_UNAVAILABLE, Vec::new()))),
            connections: Arc::new(AtomicUsize::new(0)),
            task: None,
        };
        endpoint.serve(listener);
        endpoint
    }

    pub(crate) fn url(&self) -> String {
        format!("https://{}/bundle", self.address)
    }

    fn serve(&mut self, listener: TcpListener) {
        let acceptor = TlsAcceptor::from(Arc::clone(&self.tls));
        let reply = Arc::clone(&self.reply);
        let connections = Arc::clone(&self.connections);
        self.task = Some(tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                connections.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let reply = Arc::clone(&reply);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |_request| {
                        let (status, body) = reply.lock().unwrap().clone();
                        async move {
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            *response.status_mut() = status;
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        }));
    }

    pub(crate) fn reply(&self, status: StatusCode, body: Vec<u8>) {
        *self.reply.lock().unwrap() = (status, body);
    }

    pub(crate) fn serve_document(&self, bundle: &Bundle) {
        self.reply(StatusCode::OK, document(bundle));
    }

    /// Closes the port: connections are refused until [`up`](Self::up).
    pub(crate) async fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    async fn up(&mut self) {
        let listener = TcpListener::bind(self.address).await.unwrap();
        self.serve(listener);
    }

    /// Waits until `count` more connections have been accepted.
    pub(crate) async fn wait_connections(&self, count: usize) {
        let target = self.connections.load(Ordering::SeqCst) + count;
        tokio::time::timeout(PATIENCE, async {
            while self.connections.load(Ordering::SeqCst) < target {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the fetcher kept connecting");
    }
}

/// An `https_spiffe` endpoint presenting `svid`, swappable through the returned material.
pub(crate) async fn spiffe_endpoint(svid: &X509Svid, own: Bundle) -> (Endpoint, Arc<TlsMaterial>) {
    let mut bundles = BundleSet::new();
    bundles.insert(own);
    let material = Arc::new(TlsMaterial::new(svid, bundles).unwrap());
    let config =
        tls::server_config_client_optional(Arc::clone(&material), Authorizer::any()).unwrap();
    (Endpoint::start(config).await, material)
}

pub(crate) async fn wait_for_bundle(
    state: &ServerState,
    trust_domain: &TrustDomain,
    what: &str,
    test: impl Fn(&Bundle) -> bool,
) -> Bundle {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(bundle) = state.federated_bundle(trust_domain)
                && test(&bundle)
            {
                return bundle;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn write_pem(dir: &tempfile::TempDir, name: &str, cas: &[&X509Authority]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    let x509 =
        X509Bundle::from_authorities(peer_td(), cas.iter().map(|ca| ca.certificate().clone()));
    std::fs::write(&path, x509.to_pem()).unwrap();
    path
}

fn spiffe_relationship(url: String, bundle_path: std::path::PathBuf) -> FederatesWith {
    FederatesWith::new(
        peer_td(),
        url,
        RemoteProfile::HttpsSpiffe {
            endpoint_spiffe_id: endpoint_id(),
            bundle_path: Some(bundle_path),
        },
    )
}

#[tokio::test]
async fn https_spiffe_stores_good_documents_and_rejects_every_fault() {
    install_provider();
    let test = support::state().await;
    let state = &test.state;
    let td = peer_td();
    let ca = new_ca(&td);
    let svid = new_svid(&ca, &endpoint_id());
    let (mut endpoint, material) = spiffe_endpoint(&svid, bundle(&td, &[&ca], 0)).await;
    let bundle_path = write_pem(&test.dir, "peer.pem", &[&ca]);

    let federation = Federation::new(Arc::clone(state));
    federation
        .add(spiffe_relationship(endpoint.url(), bundle_path))
        .await
        .unwrap();
    // The initial bundle (PEM, no sequence) is stored before any fetch.
    let initial = state.federated_bundle(&td).unwrap();
    assert_eq!(initial.x509().authorities(), [ca.certificate().clone()]);
    assert_eq!(initial.sequence(), None);

    // A good document is stored, and reaches the datastore too.
    let good = bundle(&td, &[&ca], 5);
    endpoint.serve_document(&good);
    wait_for_bundle(state, &td, "sequence 5", |b| b.sequence() == Some(5)).await;
    assert_eq!(state.federated_bundle(&td).unwrap(), good);
    let stored = state.datastore().bundle(&td).await.unwrap().unwrap();
    assert_eq!(stored, good);

    // Each fault: rejected, nothing stored, the last good bundle kept.
    let other_td = TrustDomain::new("other.test").unwrap();
    let other_ca = new_ca(&other_td);
    let mut wrong_td = bundle(&td, &[&other_ca], 6);
    wrong_td.set_refresh_hint(Some(Duration::from_secs(1)));
    let faults: Vec<(&str, StatusCode, Vec<u8>)> = vec![
        ("wrong trust domain", StatusCode::OK, document(&wrong_td)),
        (
            "older sequence",
            StatusCode::OK,
            document(&bundle(&td, &[&ca], 4)),
        ),
        ("malformed json", StatusCode::OK, b"{\"keys\": [".to_vec()),
        (
            "not a bundle",
            StatusCode::OK,
            b"{\"spiffe_sequence\": 7}".to_vec(),
        ),
        (
            "no x509 authority",
            StatusCode::OK,
            b"{\"keys\": [], \"spiffe_sequence\": 8}".to_vec(),
        ),
        (
            "server error",
            StatusCode::INTERNAL_SERVER_ERROR,
            document(&bundle(&td, &[&ca], 9)),
        ),
        ("too large", StatusCode::OK, vec![b' '; 2 * 1024 * 1024]),
    ];
    for (fault, status, body) in faults {
        endpoint.reply(status, body);
        endpoint.wait_connections(2).await;
        assert_eq!(state.federated_bundle(&td).unwrap(), good, "{fault}");
    }

    // The endpoint's certificate does not chain to the known bundle. The good document is
    // served only once a connection made after the switch arrived, so no fetch still on the
    // old certificate can take it.
    let stranger = new_ca(&td);
    material
        .set_svid(&new_svid(&stranger, &endpoint_id()))
        .unwrap();
    endpoint.wait_connections(1).await;
    endpoint.serve_document(&bundle(&td, &[&ca], 10));
    endpoint.wait_connections(2).await;
    assert_eq!(state.federated_bundle(&td).unwrap(), good, "unknown ca");

    // The right CA, but not the configured endpoint ID.
    let wrong_id: SpiffeId = "spiffe://peer.test/somebody-else".parse().unwrap();
    material.set_svid(&new_svid(&ca, &wrong_id)).unwrap();
    endpoint.wait_connections(2).await;
    assert_eq!(
        state.federated_bundle(&td).unwrap(),
        good,
        "wrong endpoint id"
    );

    // Down for several refresh periods (first failing with 503, then refusing connections),
    // then back with a new document: the last good bundle is kept meanwhile, then replaced.
    endpoint.reply(StatusCode::SERVICE_UNAVAILABLE, Vec::new());
    endpoint.wait_connections(1).await;
    material.set_svid(&svid).unwrap();
    endpoint.wait_connections(3).await;
    endpoint.down().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(state.federated_bundle(&td).unwrap(), good, "endpoint down");
    let next = bundle(&td, &[&ca], 11);
    endpoint.serve_document(&next);
    endpoint.up().await;
    wait_for_bundle(state, &td, "recovery", |b| b.sequence() == Some(11)).await;
    assert_eq!(state.federated_bundle(&td).unwrap(), next);
    federation.stop().await;
    assert!(federation.trust_domains().is_empty());
}

#[tokio::test]
async fn https_spiffe_follows_the_peer_across_a_ca_rotation() {
    install_provider();
    let test = support::state().await;
    let state = &test.state;
    let td = peer_td();
    let old_ca = new_ca(&td);
    let new_ca = new_ca(&td);
    let (endpoint, material) = spiffe_endpoint(
        &new_svid(&old_ca, &endpoint_id()),
        bundle(&td, &[&old_ca], 0),
    )
    .await;
    // The initial bundle in SPIFFE format this time.
    let bundle_path = test.dir.path().join("peer.json");
    std::fs::write(&bundle_path, document(&bundle(&td, &[&old_ca], 1))).unwrap();
    endpoint.serve_document(&bundle(&td, &[&old_ca], 1));

    let federation = Federation::new(Arc::clone(state));
    federation
        .add(spiffe_relationship(endpoint.url(), bundle_path))
        .await
        .unwrap();
    assert_eq!(state.federated_bundle(&td).unwrap().sequence(), Some(1));

    // The peer publishes its next CA, still serving with the old one's SVID.
    endpoint.serve_document(&bundle(&td, &[&old_ca, &new_ca], 2));
    wait_for_bundle(state, &td, "the new ca", |b| b.sequence() == Some(2)).await;
    // Then switches its endpoint to the new CA and drops the old one: the stored bundle
    // already trusts the new CA, so the next fetch succeeds with no manual step.
    material
        .set_svid(&new_svid(&new_ca, &endpoint_id()))
        .unwrap();
    // Served only after a connection made after the switch, so the new CA's SVID fetched it.
    endpoint.wait_connections(1).await;
    let rotated = bundle(&td, &[&new_ca], 3);
    endpoint.serve_document(&rotated);
    wait_for_bundle(state, &td, "the rotated bundle", |b| {
        b.sequence() == Some(3)
    })
    .await;
    assert_eq!(state.federated_bundle(&td).unwrap(), rotated);
    federation.stop().await;
}

#[tokio::test]
async fn a_stored_bundle_wins_over_bundle_path_and_refresh_now_fetches_at_once() {
    install_provider();
    let test = support::state().await;
    let state = &test.state;
    let td = peer_td();
    let ca = new_ca(&td);
    let stored = bundle(&td, &[&ca], 7);
    state.set_federated_bundle(stored.clone()).await.unwrap();
    // A bundle_path that would not even parse: it is not read, since a bundle is stored.
    let bundle_path = test.dir.path().join("garbage.pem");
    std::fs::write(&bundle_path, "not pem").unwrap();
    let (endpoint, _material) =
        spiffe_endpoint(&new_svid(&ca, &endpoint_id()), stored.clone()).await;
    // An hour's hint: after the first fetch, only refresh_now brings the next one soon.
    let mut hourly = bundle(&td, &[&ca], 8);
    hourly.set_refresh_hint(Some(Duration::from_secs(3600)));
    endpoint.serve_document(&hourly);

    let federation = Federation::new(Arc::clone(state));
    federation
        .add(spiffe_relationship(endpoint.url(), bundle_path))
        .await
        .unwrap();
    wait_for_bundle(state, &td, "sequence 8", |b| b.sequence() == Some(8)).await;
    let mut next = bundle(&td, &[&ca], 9);
    next.set_refresh_hint(Some(Duration::from_secs(3600)));
    endpoint.serve_document(&next);
    assert!(federation.refresh_now(&td));
    wait_for_bundle(state, &td, "sequence 9", |b| b.sequence() == Some(9)).await;
    assert!(!federation.refresh_now(&TrustDomain::new("nobody.test").unwrap()));
    assert!(federation.remove(&td).await);
    assert!(!federation.refresh_now(&td));
    // Removing a relationship keeps its bundle.
    assert_eq!(state.federated_bundle(&td).unwrap(), next);
}

#[tokio::test]
async fn a_bad_bundle_path_is_refused_naming_the_file() {
    install_provider();
    let test = support::state().await;
    let other_ca = new_ca(&TrustDomain::new("other.test").unwrap());
    let bundle_path = write_pem(&test.dir, "other.pem", &[&other_ca]);
    let federation = Federation::new(Arc::clone(&test.state));
    let error = federation
        .add(spiffe_relationship(
            "https://127.0.0.1:1/bundle".to_owned(),
            bundle_path.clone(),
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&bundle_path.display().to_string()),
        "{error}"
    );
    assert!(
        error.contains("belongs to trust domain other.test"),
        "{error}"
    );
    assert!(test.state.federated_bundle(&peer_td()).is_none());
}

/// A web PKI CA and a server certificate for 127.0.0.1 made with rcgen.
fn web_pki() -> (String, ServerConfig) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let config = ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(leaf.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    )
    .unwrap();
    (ca_cert.pem(), config)
}

#[tokio::test]
async fn https_web_fetches_with_the_ca_file_and_refuses_other_roots() {
    install_provider();
    let test = support::state().await;
    let state = &test.state;
    let td = peer_td();
    let ca = new_ca(&td);
    let (web_ca_pem, config) = web_pki();
    let endpoint = Endpoint::start(config).await;
    let good = bundle(&td, &[&ca], 1);
    endpoint.serve_document(&good);

    // Roots that did not issue the endpoint's certificate: every fetch fails.
    let (other_ca_pem, _) = web_pki();
    let other_file = test.dir.path().join("other-ca.pem");
    std::fs::write(&other_file, other_ca_pem).unwrap();
    let federation = Federation::new(Arc::clone(state));
    federation
        .add(FederatesWith::new(
            td.clone(),
            endpoint.url(),
            RemoteProfile::HttpsWeb {
                ca_file: Some(other_file),
                ca_roots: None,
            },
        ))
        .await
        .unwrap();
    endpoint.wait_connections(2).await;
    assert!(state.federated_bundle(&td).is_none());

    // The right roots: replacing the relationship makes the next fetch succeed.
    let ca_file = test.dir.path().join("web-ca.pem");
    std::fs::write(&ca_file, web_ca_pem).unwrap();
    federation
        .add(FederatesWith::new(
            td.clone(),
            endpoint.url(),
            RemoteProfile::HttpsWeb {
                ca_file: Some(ca_file),
                ca_roots: None,
            },
        ))
        .await
        .unwrap();
    let stored = wait_for_bundle(state, &td, "the web bundle", |_| true).await;
    assert_eq!(stored, good);
    federation.stop().await;
}

/// Roots given by value (as the admin API stores them) work like a `ca_file`.
#[tokio::test]
async fn https_web_fetches_with_roots_given_by_value() {
    install_provider();
    let test = support::state().await;
    let state = &test.state;
    let td = peer_td();
    let ca = new_ca(&td);
    let (web_ca_pem, config) = web_pki();
    let endpoint = Endpoint::start(config).await;
    let good = bundle(&td, &[&ca], 1);
    endpoint.serve_document(&good);
    let relationship = |roots: Vec<u8>| {
        FederatesWith::new(
            td.clone(),
            endpoint.url(),
            RemoteProfile::HttpsWeb {
                ca_file: None,
                ca_roots: Some(roots),
            },
        )
    };
    let (other_ca_pem, _) = web_pki();
    let wrong =
        BundleFetcher::new(Arc::clone(state), relationship(other_ca_pem.into_bytes())).unwrap();
    assert!(
        wrong.fetch().await.is_err(),
        "roots that did not issue the endpoint's certificate"
    );
    assert!(
        BundleFetcher::new(Arc::clone(state), relationship(b"not pem".to_vec())).is_err(),
        "roots that are not PEM certificates are refused up front"
    );
    let right =
        BundleFetcher::new(Arc::clone(state), relationship(web_ca_pem.into_bytes())).unwrap();
    right.fetch_and_store().await.unwrap();
    assert_eq!(state.federated_bundle(&td).unwrap(), good);
}

/// One fetch at a time through [`BundleFetcher`]: each fault fails for its own reason, and
/// none of them changes the stored bundle.
#[tokio::test]
async fn each_fault_is_rejected_for_its_own_reason() {
    install_provider();
    let test = support::state().await;
    let state = &test.state;
    let td = peer_td();
    let ca = new_ca(&td);
    let svid = new_svid(&ca, &endpoint_id());
    let (mut endpoint, material) = spiffe_endpoint(&svid, bundle(&td, &[&ca], 0)).await;

    // https_spiffe with nothing to trust yet: no fetch can authenticate the endpoint.
    let bare = BundleFetcher::new(
        Arc::clone(state),
        FederatesWith::new(
            td.clone(),
            endpoint.url(),
            RemoteProfile::HttpsSpiffe {
                endpoint_spiffe_id: endpoint_id(),
                bundle_path: None,
            },
        ),
    )
    .unwrap();
    bare.store_initial_bundle().await.unwrap();
    assert!(matches!(
        bare.fetch_and_store().await,
        Err(FetchError::NoTrustBundle(t)) if t == td
    ));

    let bundle_path = write_pem(&test.dir, "peer.pem", &[&ca]);
    let fetcher = BundleFetcher::new(
        Arc::clone(state),
        spiffe_relationship(endpoint.url(), bundle_path),
    )
    .unwrap();
    fetcher.store_initial_bundle().await.unwrap();
    let good = bundle(&td, &[&ca], 5);
    endpoint.serve_document(&good);
    assert_eq!(
        fetcher.fetch_and_store().await.unwrap(),
        FetchOutcome::Stored { sequence: Some(5) }
    );
    assert_eq!(
        fetcher.fetch_and_store().await.unwrap(),
        FetchOutcome::Unchanged
    );
    assert_eq!(fetcher.refresh_interval(), Duration::from_secs(1));

    let unchanged = |what: &str| {
        assert_eq!(state.federated_bundle(&td).unwrap(), good, "{what}");
    };
    let other_ca = new_ca(&TrustDomain::new("other.test").unwrap());
    endpoint.serve_document(&bundle(&td, &[&other_ca], 6));
    let error = fetcher.fetch_and_store().await.unwrap_err();
    assert!(
        matches!(&error, FetchError::WrongTrustDomain { index: 0, found, .. } if found.as_str() == "other.test"),
        "{error}"
    );
    unchanged("wrong trust domain");

    endpoint.serve_document(&bundle(&td, &[&ca], 4));
    let error = fetcher.fetch_and_store().await.unwrap_err();
    assert!(
        matches!(
            error,
            FetchError::OlderSequence {
                fetched: 4,
                stored: 5
            }
        ),
        "{error}"
    );
    unchanged("older sequence");

    // An SVID leaf published as an authority.
    let leaf_as_ca = Bundle::from_parts(
        X509Bundle::from_authorities(td.clone(), [svid.leaf().clone()]),
        JwtBundle::new(td.clone()),
    )
    .unwrap();
    endpoint.serve_document(&leaf_as_ca);
    let error = fetcher.fetch_and_store().await.unwrap_err();
    assert!(
        matches!(error, FetchError::NotCa { index: 0, .. }),
        "{error}"
    );
    unchanged("leaf as authority");

    for (body, what) in [
        (&b"{\"keys\": ["[..], "truncated json"),
        (b"<html>oops</html>", "not json"),
        (b"{\"spiffe_sequence\": 7}", "no keys member"),
    ] {
        endpoint.reply(StatusCode::OK, body.to_vec());
        let error = fetcher.fetch_and_store().await.unwrap_err();
        assert!(matches!(error, FetchError::Malformed(_)), "{what}: {error}");
        unchanged(what);
    }

    endpoint.reply(StatusCode::OK, b"{\"keys\": []}".to_vec());
    let error = fetcher.fetch_and_store().await.unwrap_err();
    assert!(matches!(error, FetchError::NoX509Authority), "{error}");
    unchanged("no x509 authority");

    endpoint.reply(StatusCode::NOT_FOUND, document(&bundle(&td, &[&ca], 9)));
    let error = fetcher.fetch_and_store().await.unwrap_err();
    assert!(matches!(error, FetchError::Status(404)), "{error}");
    unchanged("status 404");

    endpoint.reply(StatusCode::OK, vec![b' '; 1024 * 1024 + 1]);
    let error = fetcher.fetch_and_store().await.unwrap_err();
    assert!(matches!(error, FetchError::TooLarge), "{error}");
    unchanged("too large");

    endpoint.serve_document(&bundle(&td, &[&ca], 10));
    material
        .set_svid(&new_svid(&new_ca(&td), &endpoint_id()))
        .unwrap();
    let error = fetcher.fetch_and_store().await.unwrap_err();
    assert!(
        matches!(&error, FetchError::Request(chain) if chain.contains("UnknownIssuer")),
        "{error}"
    );
    unchanged("unknown ca");

    let wrong_id: SpiffeId = "spiffe://peer.test/somebody-else".parse().unwrap();
    material.set_svid(&new_svid(&ca, &wrong_id)).unwrap();
    let error = fetcher.fetch_and_store().await.unwrap_err();
    assert!(
        matches!(&error, FetchError::Request(chain) if chain.contains("ApplicationVerificationFailure")),
        "{error}"
    );
    unchanged("wrong endpoint id");

    material.set_svid(&svid).unwrap();
    endpoint.down().await;
    let error = fetcher.fetch_and_store().await.unwrap_err();
    assert!(
        matches!(&error, FetchError::Request(chain) if chain.contains("Connection refused")),
        "{error}"
    );
    unchanged("endpoint down");

    endpoint.up().await;
    assert_eq!(
        fetcher.fetch_and_store().await.unwrap(),
        FetchOutcome::Stored { sequence: Some(10) }
    );
}

/// `run` with a `[[federation.federates_with]]`: the initial bundle, then the fetched one,
/// show in the admin API; after a restart with the endpoint gone and the bundle file spoiled,
/// the stored bundle is still served (it wins over the file, which is not read again).
#[tokio::test]
async fn run_fetches_the_configured_relationships_and_keeps_them_across_a_restart() {
    install_provider();
    let dir = tempfile::tempdir().unwrap();
    let td = peer_td();
    let ca = new_ca(&td);
    let (mut endpoint, _material) =
        spiffe_endpoint(&new_svid(&ca, &endpoint_id()), bundle(&td, &[&ca], 0)).await;
    let fetched = bundle(&td, &[&ca], 3);
    endpoint.serve_document(&fetched);
    let bundle_path = write_pem(&dir, "peer.pem", &[&ca]);
    let text = format!(
        "trust_domain = \"example.org\"\ndata_dir = \"data\"\n\
         bind_address = \"127.0.0.1:{}\"\nadmin_socket = \"{}\"\n\
         [[federation.federates_with]]\ntrust_domain = \"peer.test\"\nurl = \"{}\"\n\
         profile = \"https_spiffe\"\nendpoint_spiffe_id = \"{}\"\nbundle_path = \"peer.pem\"\n",
        crate::run::free_port(),
        dir.path().join("run/admin.sock").display(),
        endpoint.url(),
        endpoint_id(),
    );
    let config = sigil_server::config::Config::parse(&text, dir.path()).unwrap();
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());

    let listed = |socket: std::path::PathBuf| async move {
        let channel = crate::run::admin_channel(&socket).await;
        sigil_proto::server::v1::bundle_client::BundleClient::new(channel)
            .list_federated_bundles(sigil_proto::server::v1::ListFederatedBundlesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .bundles
    };
    let server = crate::run::start(&config).await;
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            let bundles = listed(config.admin_socket.clone()).await;
            if let Some(found) = bundles.iter().find(|b| b.sequence == 3) {
                return found.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the fetched bundle never showed in the admin api");
    assert_eq!(found.trust_domain, "peer.test");
    assert_eq!(
        Bundle::from_document(td.clone(), &found.document).unwrap(),
        fetched
    );
    server.stop().await;

    endpoint.down().await;
    std::fs::write(&bundle_path, "spoiled").unwrap();
    let server = crate::run::start(&config).await;
    let bundles = listed(config.admin_socket.clone()).await;
    assert_eq!(bundles.len(), 1);
    assert_eq!(bundles[0].sequence, 3);
    server.stop().await;
}
