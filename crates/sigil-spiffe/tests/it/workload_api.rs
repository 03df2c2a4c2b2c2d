//! The Workload API client against a real tonic server on a Unix socket (and TCP), and the
//! same server answering the `spiffe` crate's client (written by others), so both clients can
//! be seen to agree.

use std::time::{Duration, SystemTime};

use sigil_proto::workload::X509svidRequest;
use sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use sigil_spiffe::workload_api::{
    Endpoint, HealthStatus, WorkloadApiClient, WorkloadApiError, X509Context,
};
use sigil_spiffe::{JwtSvid, SpiffeId};
use tokio_stream::StreamExt;

use crate::workload_server::{FEDERATED, Identity, JWT_KEY_ID, TRUST_DOMAIN, TestWorkloadApi};

/// A hang guard only: every call here answers at once on a working machine.
const GUARD: Duration = Duration::from_secs(30);

fn identities() -> Vec<Identity> {
    vec![
        Identity::new("spiffe://a.test/web", "web"),
        Identity::new("spiffe://a.test/db", "db"),
        // A duplicate hint: the client keeps the first SVID with it (checklist §2.8).
        Identity::new("spiffe://a.test/dup", "web"),
    ]
}

async fn start() -> (tempfile::TempDir, TestWorkloadApi, WorkloadApiClient) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestWorkloadApi::start(dir.path(), identities()).await;
    let endpoint: Endpoint = server.uri().parse().unwrap();
    let client = WorkloadApiClient::connect(&endpoint).await.unwrap();
    (dir, server, client)
}

fn ids(context: &X509Context) -> Vec<&str> {
    context
        .svids()
        .iter()
        .map(|svid| svid.spiffe_id().as_str())
        .collect()
}

/// The leaf certificates of a server message, in order.
fn leaves(message: &sigil_proto::workload::X509svidResponse) -> Vec<Vec<u8>> {
    message
        .svids
        .iter()
        .map(|svid| {
            sigil_spiffe::X509Svid::parse_from_der(&svid.x509_svid, &svid.x509_svid_key)
                .unwrap()
                .leaf()
                .to_vec()
        })
        .collect()
}

#[tokio::test]
async fn the_x509_context_arrives_parsed_with_hints_and_bundles() {
    let (_dir, server, client) = start().await;
    let context = tokio::time::timeout(GUARD, client.fetch_x509_context())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(server.last_header(), Some(vec!["true".to_owned()]));
    assert_eq!(ids(&context), ["spiffe://a.test/web", "spiffe://a.test/db"]);
    assert_eq!(context.default_svid().hint(), Some("web"));
    assert_eq!(context.svids()[1].hint(), Some("db"));
    let sent = leaves(&server.current_x509());
    assert_eq!(context.svids()[0].leaf().as_ref(), sent[0].as_slice());
    assert_eq!(context.svids()[1].leaf().as_ref(), sent[1].as_slice());

    let own = context.bundles().get(TRUST_DOMAIN).unwrap();
    assert_eq!(
        own.x509().authorities()[0].as_ref(),
        server.ca_der().as_slice()
    );
    let federated = context.bundles().get(FEDERATED).unwrap();
    assert_eq!(
        federated.x509().authorities()[0].as_ref(),
        server.federated_ca_der().as_slice()
    );
    assert_eq!(
        context
            .federated_trust_domains()
            .iter()
            .map(|td| td.as_str())
            .collect::<Vec<_>>(),
        [FEDERATED]
    );
    // What the client hands over verifies against what it fetched.
    sigil_spiffe::verify_chain(
        context.default_svid().cert_chain(),
        context.bundles(),
        rustls_pki_types::UnixTime::now(),
        sigil_spiffe::SvidUsage::ClientAuth,
    )
    .unwrap();
}

#[tokio::test]
async fn the_server_refuses_a_call_without_the_security_header() {
    // The server's check is real: a plain generated client (no header) is refused, so the
    // other tests passing means our client sends it.
    let (_dir, server, _client) = start().await;
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn({
            let path = server.socket().to_owned();
            move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }
        }))
        .await
        .unwrap();
    let status = SpiffeWorkloadApiClient::new(channel)
        .fetch_x509svid(X509svidRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "security header missing from request");
    assert_eq!(server.last_header(), Some(vec![]));
}

#[tokio::test]
async fn the_watch_stream_delivers_every_rotation() {
    let (_dir, server, client) = start().await;
    let mut stream = client.watch_x509_contexts().await.unwrap();
    let first = tokio::time::timeout(GUARD, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    server.rotate();
    let second = tokio::time::timeout(GUARD, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_ne!(
        first.default_svid().leaf(),
        second.default_svid().leaf(),
        "the rotation was not seen"
    );
    assert_eq!(
        second.default_svid().leaf().as_ref(),
        leaves(&server.current_x509())[0].as_slice()
    );
    // The `Stream` face of the same type sees the next one too.
    server.rotate();
    let third = tokio::time::timeout(GUARD, StreamExt::next(&mut stream))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_ne!(third.default_svid().leaf(), second.default_svid().leaf());

    // A message that does not parse is reported, and the stream goes on (checklist §2.8).
    let mut broken = server.current_x509();
    broken.svids.clear();
    server.send(broken);
    let error = tokio::time::timeout(GUARD, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(error, WorkloadApiError::NoSvids), "{error:?}");
    assert!(!error.is_retryable());
    server.rotate();
    let fourth = tokio::time::timeout(GUARD, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        fourth.default_svid().leaf().as_ref(),
        leaves(&server.current_x509())[0].as_slice()
    );
}

#[tokio::test]
async fn jwt_svids_are_fetched_and_validated() {
    let (_dir, server, client) = start().await;
    let svids = client
        .fetch_jwt_svids(&["db", "cache"], None)
        .await
        .unwrap();
    // Three identities, two with the hint "web": the second is dropped.
    assert_eq!(svids.len(), 2);
    assert_eq!(svids[0].spiffe_id().as_str(), "spiffe://a.test/web");
    assert_eq!(svids[0].audience(), ["db", "cache"]);
    assert_eq!(svids[0].hint(), Some("web"));

    let db: SpiffeId = "spiffe://a.test/db".parse().unwrap();
    let only = client.fetch_jwt_svids(&["db"], Some(&db)).await.unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].spiffe_id(), &db);

    // Offline validation with the fetched JWT bundles agrees with the agent's.
    let bundles = client.fetch_jwt_bundles().await.unwrap();
    let own = bundles.get(TRUST_DOMAIN).unwrap();
    assert!(own.jwt().authority(JWT_KEY_ID).is_some());
    JwtSvid::parse_and_validate(only[0].token(), &bundles, &["db"], SystemTime::now()).unwrap();

    let validated = client
        .validate_jwt_svid("db", only[0].token())
        .await
        .unwrap();
    assert_eq!(validated.spiffe_id(), &db);
    assert_eq!(validated.claims()["sub"], "spiffe://a.test/db");
    assert!(
        validated.claims()["exp"].is_u64(),
        "{:?}",
        validated.claims()
    );

    // The agent refuses a token for another audience; the client keeps its reason and code.
    let error = client
        .validate_jwt_svid("other", only[0].token())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::InvalidArgument));
    assert!(error.to_string().contains("audience"), "{error}");

    // A token the agent would never sign (another key) is refused too.
    let forged = {
        let other = TestWorkloadApi::start(tempfile::tempdir().unwrap().path(), vec![]).await;
        other.jwt("spiffe://a.test/db", &["db"])
    };
    let error = client.validate_jwt_svid("db", &forged).await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::InvalidArgument), "{error}");

    // Audience is mandatory (the agent's InvalidArgument comes back as such).
    let error = client.fetch_jwt_svids::<&str>(&[], None).await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::InvalidArgument));
    assert!(server.last_header().is_some());
}

#[tokio::test]
async fn no_identity_is_permission_denied_and_distinguishable() {
    let (_dir, server, client) = start().await;
    server.set_denied(true);
    let error = client.fetch_x509_context().await.unwrap_err();
    assert!(error.is_permission_denied(), "{error:?}");
    assert!(error.is_retryable());
    assert!(
        error
            .to_string()
            .starts_with("no identity issued for this process (PermissionDenied"),
        "{error}"
    );
    let error = client.fetch_jwt_svids(&["db"], None).await.unwrap_err();
    assert!(error.is_permission_denied(), "{error:?}");
    let error = client.fetch_x509_bundles().await.unwrap_err();
    assert!(error.is_permission_denied(), "{error:?}");

    // Identity granted again: the same connection works.
    server.set_denied(false);
    let bundles = client.fetch_x509_bundles().await.unwrap();
    assert_eq!(bundles.len(), 2);
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::Unix(dir.path().join("nobody.sock"));
    let error = WorkloadApiClient::connect(&endpoint).await.unwrap_err();
    assert!(
        matches!(error, WorkloadApiError::Connect { .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    let text = error.to_string();
    assert!(text.contains("nobody.sock"), "{text}");
    assert!(text.contains("No such file or directory"), "{text}");
}

#[tokio::test]
async fn tcp_endpoints_and_the_health_check_work() {
    let (_dir, server, client) = start().await;
    assert_eq!(
        client.health_check("").await.unwrap(),
        HealthStatus::Serving
    );
    let address = server.listen_tcp().await;
    let endpoint: Endpoint = format!("tcp://{address}").parse().unwrap();
    let tcp = WorkloadApiClient::connect(&endpoint).await.unwrap();
    assert_eq!(tcp.endpoint(), &endpoint);
    let context = tcp.fetch_x509_context().await.unwrap();
    assert_eq!(ids(&context), ["spiffe://a.test/web", "spiffe://a.test/db"]);
    assert_eq!(tcp.health_check("").await.unwrap(), HealthStatus::Serving);
}

#[tokio::test]
async fn the_spiffe_crate_reads_the_same_as_our_client() {
    let (_dir, server, ours) = start().await;
    let theirs = spiffe::WorkloadApiClient::connect_to(server.uri())
        .await
        .unwrap();
    let their_context = theirs.fetch_x509_context().await.unwrap();
    let our_context = ours.fetch_x509_context().await.unwrap();

    // Same SVIDs in the same order (the `spiffe` crate also drops the duplicate hint, or
    // keeps it: compare only what both must agree on, the identities both kept first).
    let their_ids: Vec<String> = their_context
        .svids()
        .iter()
        .map(|svid| svid.spiffe_id().to_string())
        .collect();
    assert_eq!(their_ids[..2], ids(&our_context)[..]);
    for (their, our) in their_context.svids().iter().zip(our_context.svids()) {
        assert_eq!(their.hint(), our.hint());
        let their_chain: Vec<&[u8]> = their.cert_chain().iter().map(|c| c.as_bytes()).collect();
        let our_chain: Vec<&[u8]> = our.cert_chain().iter().map(|c| c.as_ref()).collect();
        assert_eq!(their_chain, our_chain);
    }
    let td = spiffe::TrustDomain::new(TRUST_DOMAIN).unwrap();
    let their_bundle = their_context.bundle_set().get(&td).unwrap();
    let our_bundle = our_context.bundles().get(TRUST_DOMAIN).unwrap();
    assert_eq!(
        their_bundle.authorities()[0].as_bytes(),
        our_bundle.x509().authorities()[0].as_ref()
    );

    // And a token from our client passes their agent-side validation call.
    let token = ours.fetch_jwt_svids(&["db"], None).await.unwrap();
    let validated = theirs
        .validate_jwt_token("db", token[0].token())
        .await
        .unwrap();
    assert_eq!(validated.spiffe_id().to_string(), "spiffe://a.test/web");
}
