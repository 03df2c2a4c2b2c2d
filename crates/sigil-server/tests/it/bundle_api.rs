//! The admin `Bundle` service in process, over a real SQLite datastore: our own bundle, and
//! federated bundles set, listed, replaced and deleted, with the sequence rule and every bad
//! input refused without a change.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::bundle_server::Bundle as _;
use sigil_server::api::BundleApi;
use sigil_server::ca::{CaSettings, CertificateAuthority, MemoryKeyManager};
use sigil_server::state::ServerState;
use sigil_spiffe::{Bundle, KeyType, TrustDomain};
use tonic::{Code, Request};

use crate::support;

struct Fixture {
    api: BundleApi,
    state: Arc<ServerState>,
    _fixture: support::TestState,
}

async fn fixture() -> Fixture {
    let fixture = support::state().await;
    Fixture {
        api: BundleApi::new(Arc::clone(&fixture.state)),
        state: Arc::clone(&fixture.state),
        _fixture: fixture,
    }
}

fn other() -> TrustDomain {
    TrustDomain::new("other.org").unwrap()
}

/// The bundle of a fresh CA of `trust_domain` (one X.509 and one JWT authority).
fn foreign_bundle(trust_domain: &TrustDomain, sequence: Option<u64>) -> Bundle {
    let (ca, _) = CertificateAuthority::start(
        CaSettings {
            trust_domain: trust_domain.clone(),
            key_type: KeyType::EcP256,
            ttl: Duration::from_secs(3600),
        },
        Arc::new(MemoryKeyManager::new()),
        None,
        None,
        SystemTime::now(),
    )
    .unwrap();
    let mut bundle = ca.bundle();
    bundle.set_sequence(sequence);
    bundle
}

fn message(trust_domain: &str, document: impl Into<Vec<u8>>, sequence: u64) -> pb::TrustBundle {
    pb::TrustBundle {
        trust_domain: trust_domain.to_owned(),
        document: document.into(),
        sequence,
    }
}

fn of(bundle: &Bundle) -> pb::TrustBundle {
    message(
        bundle.trust_domain().as_str(),
        bundle.to_document().unwrap(),
        0,
    )
}

async fn set(api: &BundleApi, message: pb::TrustBundle) -> Result<(), tonic::Status> {
    api.set_federated_bundle(Request::new(message))
        .await
        .map(|_| ())
}

async fn list(api: &BundleApi) -> Vec<pb::TrustBundle> {
    api.list_federated_bundles(Request::new(pb::ListFederatedBundlesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .bundles
}

async fn delete(api: &BundleApi, trust_domain: &str) -> Result<(), tonic::Status> {
    api.delete_federated_bundle(Request::new(pb::DeleteFederatedBundleRequest {
        trust_domain: trust_domain.to_owned(),
    }))
    .await
    .map(|_| ())
}

/// What the service, the state and the datastore hold, to show a refusal changed nothing.
async fn snapshot(f: &Fixture) -> (Vec<pb::TrustBundle>, Vec<Bundle>, Vec<Bundle>) {
    (
        list(&f.api).await,
        f.state.federated_bundles(),
        f.state.datastore().list_bundles().await.unwrap(),
    )
}

#[tokio::test]
async fn get_bundle_is_our_own_bundle_with_its_sequence() {
    let f = fixture().await;
    let got = f
        .api
        .get_bundle(Request::new(pb::GetBundleRequest {}))
        .await
        .unwrap()
        .into_inner();
    let own = f.state.own_bundle();
    assert_eq!(got.trust_domain, "example.org");
    assert_eq!(got.sequence, own.sequence().unwrap());
    assert!(got.sequence > 0);
    let read = Bundle::from_document(support::trust_domain(), &got.document).unwrap();
    assert_eq!(read, own);
    assert_eq!(read.x509().authorities().len(), 1);
    assert_eq!(read.jwt().authorities().len(), 1);
    // Our own bundle is not a federated one.
    assert!(list(&f.api).await.is_empty());
}

#[tokio::test]
async fn federated_bundles_are_set_listed_replaced_and_deleted() {
    let f = fixture().await;
    let first = foreign_bundle(&other(), Some(1));
    set(&f.api, of(&first)).await.unwrap();
    let listed = list(&f.api).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].trust_domain, "other.org");
    assert_eq!(listed[0].sequence, 1);
    assert_eq!(
        Bundle::from_document(other(), &listed[0].document).unwrap(),
        first
    );
    assert_eq!(f.state.federated_bundle(&other()), Some(first.clone()));
    assert_eq!(
        f.state.datastore().bundle(&other()).await.unwrap(),
        Some(first.clone())
    );

    // The same sequence again is accepted (a retry), a higher one replaces the bundle, and the
    // `spiffe://` form of the name is the same trust domain.
    set(&f.api, of(&first)).await.unwrap();
    let second = foreign_bundle(&other(), Some(7));
    let mut by_id = of(&second);
    by_id.trust_domain = "spiffe://other.org".to_owned();
    set(&f.api, by_id).await.unwrap();
    assert_eq!(f.state.federated_bundle(&other()), Some(second.clone()));

    // Going back is refused, naming both sequences, and changes nothing.
    let before = snapshot(&f).await;
    let err = set(&f.api, of(&first)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("sequence 1 is lower"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("sequence 7"), "{}", err.message());
    assert_eq!(snapshot(&f).await, before);

    // A second trust domain; the list is in name order.
    let third = TrustDomain::new("a.test").unwrap();
    set(&f.api, of(&foreign_bundle(&third, Some(1))))
        .await
        .unwrap();
    let names: Vec<String> = list(&f.api)
        .await
        .into_iter()
        .map(|b| b.trust_domain)
        .collect();
    assert_eq!(names, ["a.test", "other.org"]);

    delete(&f.api, "spiffe://other.org").await.unwrap();
    assert_eq!(f.state.federated_bundle(&other()), None);
    assert_eq!(f.state.datastore().bundle(&other()).await.unwrap(), None);
    let err = delete(&f.api, "other.org").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("other.org"), "{}", err.message());
    assert_eq!(list(&f.api).await.len(), 1);
}

#[tokio::test]
async fn the_message_sequence_fills_in_a_document_without_one_and_may_not_contradict_it() {
    let f = fixture().await;
    let unsequenced = foreign_bundle(&other(), None);
    let mut with_sequence = of(&unsequenced);
    with_sequence.sequence = 5;
    set(&f.api, with_sequence).await.unwrap();
    assert_eq!(list(&f.api).await[0].sequence, 5);

    let before = snapshot(&f).await;
    let mut contradicting = of(&foreign_bundle(&other(), Some(8)));
    contradicting.sequence = 9;
    let err = set(&f.api, contradicting).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("sequence 9 differs from the document's spiffe_sequence 8"),
        "{}",
        err.message()
    );
    // A document without a sequence counts as sequence 0: lower than the stored 5.
    let err = set(&f.api, of(&unsequenced)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(snapshot(&f).await, before);
}

#[tokio::test]
async fn bad_bundles_are_refused_with_a_clear_error_and_change_nothing() {
    let f = fixture().await;
    set(&f.api, of(&foreign_bundle(&other(), Some(2))))
        .await
        .unwrap();
    let own_document = f.state.own_bundle().to_document().unwrap();
    let good = foreign_bundle(&other(), Some(3)).to_document().unwrap();
    let x5c_garbage = r#"{"keys":[{"use":"x509-svid","kty":"EC","crv":"P-256","x":"AA","y":"AA","x5c":["bm90IGEgY2VydA=="]}]}"#;

    let cases: Vec<(&str, pb::TrustBundle, Code, &str)> = vec![
        (
            "our own trust domain",
            message("example.org", own_document.clone(), 0),
            Code::InvalidArgument,
            "this server's own trust domain",
        ),
        (
            "our own trust domain as an ID",
            message("spiffe://example.org", own_document, 0),
            Code::InvalidArgument,
            "this server's own trust domain",
        ),
        (
            "an empty trust domain",
            message("", good.clone(), 0),
            Code::InvalidArgument,
            "is not a trust domain",
        ),
        (
            "a malformed trust domain",
            message("Other_Org!", good.clone(), 0),
            Code::InvalidArgument,
            "\"Other_Org!\" is not a trust domain",
        ),
        (
            "a workload ID instead of a trust domain",
            message("spiffe://other.org/web", good.clone(), 0),
            Code::InvalidArgument,
            "a SPIFFE ID with a path names a workload",
        ),
        (
            "a document that is not JSON",
            message("other.org", "not json", 0),
            Code::InvalidArgument,
            "not a SPIFFE bundle document for other.org: unable to parse JSON",
        ),
        (
            "a document without keys",
            message("other.org", "{}", 0),
            Code::InvalidArgument,
            "no keys member",
        ),
        (
            "a document with a broken certificate",
            message("other.org", x5c_garbage, 0),
            Code::InvalidArgument,
            "keys[0]",
        ),
        (
            "an empty bundle",
            message("other.org", r#"{"keys":[],"spiffe_sequence":9}"#, 0),
            Code::InvalidArgument,
            "has no X.509 or JWT authorities",
        ),
        (
            "a sequence lower than the stored one",
            message(
                "other.org",
                foreign_bundle(&other(), Some(1)).to_document().unwrap(),
                0,
            ),
            Code::FailedPrecondition,
            "sequence 1 is lower than the stored bundle's sequence 2",
        ),
    ];
    for (what, request, code, text) in cases {
        let before = snapshot(&f).await;
        let err = set(&f.api, request).await.unwrap_err();
        assert_eq!(err.code(), code, "{what}: {}", err.message());
        assert!(err.message().contains(text), "{what}: {}", err.message());
        assert_eq!(snapshot(&f).await, before, "{what} changed something");
    }

    let deletes = [
        ("example.org", Code::InvalidArgument, "own trust domain"),
        (
            "spiffe://example.org",
            Code::InvalidArgument,
            "own trust domain",
        ),
        (
            "not a domain",
            Code::InvalidArgument,
            "is not a trust domain",
        ),
        (
            "absent.org",
            Code::NotFound,
            "no federated bundle for trust domain absent.org",
        ),
    ];
    for (trust_domain, code, text) in deletes {
        let before = snapshot(&f).await;
        let err = delete(&f.api, trust_domain).await.unwrap_err();
        assert_eq!(err.code(), code, "{trust_domain}: {}", err.message());
        assert!(
            err.message().contains(text),
            "{trust_domain}: {}",
            err.message()
        );
        assert_eq!(snapshot(&f).await, before);
    }
}
