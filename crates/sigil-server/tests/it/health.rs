//! Readiness in process: the check itself, the `[health]` HTTP listener through a real TCP
//! socket (plain HTTP/1.1 written by hand, so no client library decides what is sent), and
//! the gRPC health service of the admin socket.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_server::api::HealthApi;
use sigil_server::api::health::REASON_METADATA;
use sigil_server::ca::{CaSettings, CertificateAuthority, MemoryKeyManager};
use sigil_server::datastore::DataStore;
use sigil_server::health::{self, HealthServer, NotReady};
use sigil_server::state::{ServerState, StateSettings};
use sigil_spiffe::KeyType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_stream::StreamExt;
use tonic::{Code, Request};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::Health;

use crate::support;

#[tokio::test]
async fn a_working_server_is_ready_and_a_closed_datastore_is_not() {
    let fixture = support::state().await;
    health::readiness(&fixture.state).await.unwrap();

    fixture.state.datastore().close().await;
    let reason = health::readiness(&fixture.state).await.unwrap_err();
    assert!(matches!(reason, NotReady::Datastore(_)), "{reason:?}");
    assert!(reason.to_string().starts_with("datastore: "), "{reason}");
    assert!(reason.to_string().contains("closed"), "{reason}");
}

#[tokio::test]
async fn an_expired_ca_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("db.sqlite3").display());
    let store = DataStore::open(&url).await.unwrap();
    // Started two days ago with a one-day lifetime, and never rotated since.
    let (ca, _) = CertificateAuthority::start(
        CaSettings {
            trust_domain: support::trust_domain(),
            key_type: KeyType::EcP256,
            ttl: Duration::from_secs(24 * 3600),
        },
        Arc::new(MemoryKeyManager::new()),
        None,
        None,
        SystemTime::now() - Duration::from_secs(48 * 3600),
    )
    .unwrap();
    let settings = StateSettings {
        trust_domain: support::trust_domain(),
        default_x509_ttl: Duration::from_secs(3600),
        default_jwt_ttl: Duration::from_secs(300),
        jwt_issuer: None,
    };
    let state = ServerState::load(settings, store, ca).await.unwrap();
    let reason = health::readiness(&state).await.unwrap_err();
    assert!(matches!(reason, NotReady::CaExpired(_)), "{reason:?}");
    assert!(reason.to_string().starts_with("ca certificate expired at "));
}

/// Sends one raw HTTP/1.1 request and returns the status code and body.
async fn get(address: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status_line = response.lines().next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{response}");
    let code = status_line[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn the_http_listener_serves_live_and_ready_and_stops() {
    let fixture = support::state().await;
    let listener = HealthServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let server = HealthServer::spawn(listener, Arc::clone(&fixture.state)).unwrap();
    let address = server.local_addr();
    assert_ne!(address.port(), 0);

    assert_eq!(get(address, "GET", "/live").await, (200, "live\n".into()));
    assert_eq!(get(address, "GET", "/ready").await, (200, "ready\n".into()));
    assert_eq!(get(address, "HEAD", "/ready").await.0, 200);
    assert_eq!(get(address, "GET", "/").await, (404, "not found\n".into()));
    assert_eq!(get(address, "GET", "/ready/x").await.0, 404);
    assert_eq!(get(address, "GET", "/metrics").await.0, 404);
    assert_eq!(get(address, "POST", "/ready").await.0, 405);

    // A client that sends garbage gets an error answer, and the listener keeps serving.
    let mut garbage = TcpStream::connect(address).await.unwrap();
    garbage.write_all(b"NOT HTTP AT ALL\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    garbage.read_to_end(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"));
    assert_eq!(get(address, "GET", "/live").await.0, 200);

    // Not ready: 503 with the reason; still live.
    fixture.state.datastore().close().await;
    let (code, body) = get(address, "GET", "/ready").await;
    assert_eq!(code, 503);
    assert!(body.starts_with("not ready: datastore: "), "{body}");
    assert_eq!(get(address, "GET", "/live").await.0, 200);

    // A kept-alive connection must not hold the stop.
    let idle = TcpStream::connect(address).await.unwrap();
    server.stop().await;
    assert!(TcpStream::connect(address).await.is_err());
    drop(idle);
}

fn check_request(service: &str) -> Request<HealthCheckRequest> {
    Request::new(HealthCheckRequest {
        service: service.to_owned(),
    })
}

#[tokio::test]
async fn the_grpc_health_service_runs_the_readiness_check() {
    let fixture = support::state().await;
    let api = HealthApi::new(Arc::clone(&fixture.state));

    let serving = api.check(check_request("")).await.unwrap();
    assert_eq!(serving.get_ref().status, ServingStatus::Serving as i32);
    assert!(serving.metadata().get(REASON_METADATA).is_none());

    let unknown = api.check(check_request("sigil.Nope")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(unknown.message().contains("sigil.Nope"));
    let unknown = api.watch(check_request("x")).await.err().unwrap();
    assert_eq!(unknown.code(), Code::NotFound);

    let mut watch = api.watch(check_request("")).await.unwrap().into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    fixture.state.datastore().close().await;
    let not_serving = api.check(check_request("")).await.unwrap();
    assert_eq!(
        not_serving.get_ref().status,
        ServingStatus::NotServing as i32
    );
    let reason = not_serving.metadata().get(REASON_METADATA).unwrap();
    assert!(
        reason.to_str().unwrap().starts_with("datastore: "),
        "{reason:?}"
    );
    // The watch stream reports the change (it re-checks every few seconds).
    let changed = tokio::time::timeout(Duration::from_secs(60), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(changed.status, ServingStatus::NotServing as i32);
}
