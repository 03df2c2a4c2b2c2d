//! A Workload API server for tests: a real tonic `SpiffeWorkloadAPI` on a Unix socket, serving
//! X.509-SVIDs and JWT-SVIDs minted by this crate's issuance code for a fixed set of
//! identities, with the security-header check and the `grpc.health.v1` service beside it. Not
//! an agent (no attestation): tests switch it to "no identity" and rotate its SVIDs by hand.
//!
//! Shared by the integration tests of sigil-spiffe (the client against it, and the `spiffe`
//! crate against it) and of the `sigil` binary (crates/sigil/tests/it/workload_cli.rs
//! includes this file with `#[path]`).

// Each including crate uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sigil_proto::workload::spiffe_workload_api_server::{
    SpiffeWorkloadApi, SpiffeWorkloadApiServer,
};
use sigil_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse,
    X509svid, X509svidRequest, X509svidResponse,
};
use sigil_spiffe::jwt::{Algorithm, JwtSvidParams, PrivateKeySigner, mint};
use sigil_spiffe::x509::{CaParams, SvidParams, X509Authority};
use sigil_spiffe::{
    Bundle, BundleSet, JwtAuthority, JwtSvid, KeyType, PrivateKey, SpiffeId, TrustDomain,
};
use tokio::sync::watch;
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status};

type ResponseStream<T> =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The trust domain of the served identities.
pub(crate) const TRUST_DOMAIN: &str = "a.test";
/// A federated trust domain whose X.509 bundle comes with every X.509 message.
pub(crate) const FEDERATED: &str = "b.test";
/// The `kid` of the JWT signing key.
pub(crate) const JWT_KEY_ID: &str = "test-jwt-key";

/// One identity the test workload holds, with its Workload API hint ("" for none).
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    pub(crate) spiffe_id: SpiffeId,
    pub(crate) hint: String,
}

impl Identity {
    pub(crate) fn new(spiffe_id: &str, hint: &str) -> Self {
        Self {
            spiffe_id: spiffe_id.parse().unwrap(),
            hint: hint.to_owned(),
        }
    }
}

/// What the server holds; shared by the service and the test's handle.
struct State {
    ca: X509Authority,
    federated_ca: X509Authority,
    jwt_signer: PrivateKeySigner,
    identities: Vec<Identity>,
    /// The current `FetchX509SVID` message; every change is pushed on every open stream.
    x509: watch::Sender<X509svidResponse>,
    /// An error status for every Workload API call, e.g. PermissionDenied "no identity
    /// issued" (as an agent answers an unregistered workload).
    refusal: Mutex<Option<(tonic::Code, String)>>,
    /// Security header values of the last call, to check what clients sent.
    last_header: Mutex<Option<Vec<String>>>,
}

/// A running test Workload API server; it stops with the test's runtime.
pub(crate) struct TestWorkloadApi {
    state: Arc<State>,
    socket: PathBuf,
}

impl TestWorkloadApi {
    /// Serves `identities` (the first is the default) on `dir/api.sock`.
    pub(crate) async fn start(dir: &Path, identities: Vec<Identity>) -> Self {
        let ca = ca_of(TRUST_DOMAIN);
        let federated_ca = ca_of(FEDERATED);
        let jwt_key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let jwt_signer = PrivateKeySigner::new(JWT_KEY_ID, jwt_key, Algorithm::Es256).unwrap();
        let first = x509_message(&ca, &federated_ca, &identities);
        let (x509, _) = watch::channel(first);
        let state = Arc::new(State {
            ca,
            federated_ca,
            jwt_signer,
            identities,
            x509,
            refusal: Mutex::new(None),
            last_header: Mutex::new(None),
        });
        let socket = dir.join("api.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(
            router(&state)
                .await
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
        );
        Self { state, socket }
    }

    /// Serves the same state on a TCP port of 127.0.0.1 as well; returns its address.
    pub(crate) async fn listen_tcp(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(
            router(&self.state)
                .await
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        address
    }

    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// `unix://` + the socket path.
    pub(crate) fn uri(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// From now on every call is answered PermissionDenied "no identity issued" (or not).
    pub(crate) fn set_denied(&self, denied: bool) {
        let refusal = denied.then(|| (tonic::Code::PermissionDenied, "no identity issued".into()));
        *self.state.refusal.lock().unwrap() = refusal;
    }

    /// From now on every Workload API call is answered with this status.
    pub(crate) fn refuse(&self, code: tonic::Code, message: &str) {
        *self.state.refusal.lock().unwrap() = Some((code, message.to_owned()));
    }

    /// Re-signs every SVID (new keys) and pushes the new message on every open stream.
    pub(crate) fn rotate(&self) {
        let state = &self.state;
        state.x509.send_replace(x509_message(
            &state.ca,
            &state.federated_ca,
            &state.identities,
        ));
    }

    /// Pushes any message, well-formed or not, on every open `FetchX509SVID` stream.
    pub(crate) fn send(&self, message: X509svidResponse) {
        self.state.x509.send_replace(message);
    }

    /// The message open streams received last.
    pub(crate) fn current_x509(&self) -> X509svidResponse {
        self.state.x509.borrow().clone()
    }

    /// The own trust domain's CA certificate.
    pub(crate) fn ca_der(&self) -> Vec<u8> {
        self.state.ca.certificate().to_vec()
    }

    /// The federated trust domain's CA certificate.
    pub(crate) fn federated_ca_der(&self) -> Vec<u8> {
        self.state.federated_ca.certificate().to_vec()
    }

    /// The own trust domain's bundle: X.509 CA and JWT key.
    pub(crate) fn bundle(&self) -> Bundle {
        own_bundle(&self.state)
    }

    /// A JWT-SVID signed by this server's key, as FetchJWTSVID hands them out.
    pub(crate) fn jwt(&self, spiffe_id: &str, audience: &[&str]) -> String {
        jwt(&self.state, &spiffe_id.parse().unwrap(), audience)
            .token()
            .to_owned()
    }

    /// The security header values of the last Workload API call (None: no call yet).
    pub(crate) fn last_header(&self) -> Option<Vec<String>> {
        self.state.last_header.lock().unwrap().clone()
    }
}

/// The Workload API (header checked) and `grpc.health.v1` (SERVING) on one server.
async fn router(state: &Arc<State>) -> tonic::transport::server::Router {
    let service = SpiffeWorkloadApiServer::with_interceptor(
        Service {
            state: state.clone(),
        },
        {
            let state = state.clone();
            move |request: Request<()>| check_header(&state, request)
        },
    );
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    tonic::transport::Server::builder()
        .add_service(service)
        .add_service(health_service)
}

fn ca_of(trust_domain: &str) -> X509Authority {
    let now = SystemTime::now();
    let params = CaParams::new(
        TrustDomain::new(trust_domain).unwrap(),
        now - Duration::from_secs(60),
        now + Duration::from_secs(24 * 3600),
    );
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    X509Authority::self_signed(Arc::new(key), &params).unwrap()
}

fn x509_message(
    ca: &X509Authority,
    federated: &X509Authority,
    identities: &[Identity],
) -> X509svidResponse {
    let now = SystemTime::now();
    let svids = identities
        .iter()
        .map(|identity| {
            let key = PrivateKey::generate(KeyType::EcP256).unwrap();
            let params = SvidParams::new(
                identity.spiffe_id.clone(),
                now - Duration::from_secs(60),
                now + Duration::from_secs(3600),
            );
            let issued = ca.sign_public_key(&key.public_key(), &params).unwrap();
            X509svid {
                spiffe_id: identity.spiffe_id.to_string(),
                x509_svid: issued.chain_der(),
                x509_svid_key: key.pkcs8_der().to_vec(),
                bundle: ca.certificate().to_vec(),
                hint: identity.hint.clone(),
            }
        })
        .collect();
    X509svidResponse {
        svids,
        crl: vec![],
        federated_bundles: [(
            format!("spiffe://{FEDERATED}"),
            federated.certificate().to_vec(),
        )]
        .into(),
    }
}

fn own_bundle(state: &State) -> Bundle {
    let mut bundle = Bundle::new(TrustDomain::new(TRUST_DOMAIN).unwrap());
    bundle
        .x509_mut()
        .add_authority(state.ca.certificate().clone());
    let public_key = state.jwt_signer.private_key().public_key();
    bundle
        .jwt_mut()
        .add_authority(JwtAuthority::new(JWT_KEY_ID, public_key).unwrap());
    bundle
}

fn jwt(state: &State, spiffe_id: &SpiffeId, audience: &[&str]) -> JwtSvid {
    let now = SystemTime::now();
    let params = JwtSvidParams::new(
        spiffe_id.clone(),
        audience.iter().copied(),
        now,
        now + Duration::from_secs(300),
    );
    mint(&state.jwt_signer, params).unwrap()
}

/// SPIRE's rule: exactly one value, `true` (checklist item 44).
fn check_header(state: &State, request: Request<()>) -> Result<Request<()>, Status> {
    let values: Vec<String> = request
        .metadata()
        .get_all("workload.spiffe.io")
        .iter()
        .map(|v| v.to_str().unwrap_or("<binary>").to_owned())
        .collect();
    *state.last_header.lock().unwrap() = Some(values.clone());
    if values != ["true"] {
        return Err(Status::invalid_argument(
            "security header missing from request",
        ));
    }
    Ok(request)
}

struct Service {
    state: Arc<State>,
}

impl Service {
    fn allowed(&self) -> Result<(), Status> {
        match &*self.state.refusal.lock().unwrap() {
            Some((code, message)) => Err(Status::new(*code, message.clone())),
            None => Ok(()),
        }
    }
}

fn open_stream<T: Send + 'static>(first: T) -> ResponseStream<T> {
    Box::pin(tokio_stream::iter([Ok(first)]).chain(tokio_stream::pending()))
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for Service {
    type FetchX509SVIDStream = ResponseStream<X509svidResponse>;
    type FetchX509BundlesStream = ResponseStream<X509BundlesResponse>;
    type FetchJWTBundlesStream = ResponseStream<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        _: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        self.allowed()?;
        // The current message first, then every change (checklist item 54).
        let updates = tokio_stream::wrappers::WatchStream::new(self.state.x509.subscribe());
        Ok(Response::new(Box::pin(updates.map(Ok))))
    }

    async fn fetch_x509_bundles(
        &self,
        _: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        self.allowed()?;
        Ok(Response::new(open_stream(X509BundlesResponse {
            crl: vec![],
            bundles: [
                (
                    format!("spiffe://{TRUST_DOMAIN}"),
                    self.state.ca.certificate().to_vec(),
                ),
                (
                    format!("spiffe://{FEDERATED}"),
                    self.state.federated_ca.certificate().to_vec(),
                ),
            ]
            .into(),
        })))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        self.allowed()?;
        let request = request.into_inner();
        if request.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        let audience: Vec<&str> = request.audience.iter().map(String::as_str).collect();
        let wanted: Option<SpiffeId> = if request.spiffe_id.is_empty() {
            None
        } else {
            Some(request.spiffe_id.parse().map_err(|e| {
                Status::invalid_argument(format!("invalid requested SPIFFE ID: {e}"))
            })?)
        };
        let svids: Vec<Jwtsvid> = self
            .state
            .identities
            .iter()
            .filter(|i| wanted.as_ref().is_none_or(|w| *w == i.spiffe_id))
            .map(|i| Jwtsvid {
                spiffe_id: i.spiffe_id.to_string(),
                svid: jwt(&self.state, &i.spiffe_id, &audience).token().to_owned(),
                hint: i.hint.clone(),
            })
            .collect();
        if svids.is_empty() {
            return Err(Status::permission_denied("no identity issued"));
        }
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        _: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        self.allowed()?;
        let jwks = own_bundle(&self.state).jwt().to_jwks();
        Ok(Response::new(open_stream(JwtBundlesResponse {
            bundles: [(format!("spiffe://{TRUST_DOMAIN}"), jwks.into_bytes())].into(),
        })))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        let request = request.into_inner();
        if request.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if request.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let bundles: BundleSet = [own_bundle(&self.state)].into_iter().collect();
        let svid = JwtSvid::parse_and_validate(
            &request.svid,
            &bundles,
            &[&request.audience],
            SystemTime::now(),
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let claims = prost_types::Struct {
            fields: svid
                .claims()
                .iter()
                .map(|(name, value)| (name.clone(), to_proto(value)))
                .collect(),
        };
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id: svid.spiffe_id().to_string(),
            claims: Some(claims),
        }))
    }
}

fn to_proto(value: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_proto).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map
                .iter()
                .map(|(name, value)| (name.clone(), to_proto(value)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}
