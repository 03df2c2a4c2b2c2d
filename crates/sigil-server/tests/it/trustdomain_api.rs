//! The admin `TrustDomain` service in process, against real HTTPS bundle endpoints on
//! loopback: a relationship created through it is stored and fetched, refresh answers the
//! fetch's own error, delete stops the fetcher and keeps the bundle, and the config file's
//! relationships cannot be changed through it.

use std::sync::Arc;

use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::trust_domain_server::TrustDomain as _;
use sigil_server::api::TrustDomainApi;
use sigil_server::config::{FederatesWith, RemoteProfile};
use sigil_server::federation::Federation;
use sigil_spiffe::{TrustDomain, X509Bundle};
use tonic::{Code, Request};

use crate::federation_fetcher::{
    bundle, install_provider, new_ca, new_svid, spiffe_endpoint, wait_for_bundle,
};
use crate::support;

fn peer() -> TrustDomain {
    TrustDomain::new("peer.test").unwrap()
}

fn relationship(url: &str, pem: Vec<u8>) -> pb::FederationRelationship {
    pb::FederationRelationship {
        trust_domain: "peer.test".into(),
        bundle_endpoint_url: url.into(),
        profile: "https_spiffe".into(),
        endpoint_spiffe_id: "spiffe://peer.test/bundle-endpoint".into(),
        trust_domain_bundle: pem,
        from_config: false,
        ca_roots: Vec::new(),
    }
}

async fn create(
    api: &TrustDomainApi,
    relationship: pb::FederationRelationship,
) -> pb::FederationRelationshipResult {
    let mut results = api
        .batch_create_federation_relationship(Request::new(
            pb::BatchCreateFederationRelationshipRequest {
                relationships: vec![relationship],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 1);
    results.remove(0)
}

async fn update(
    api: &TrustDomainApi,
    relationship: pb::FederationRelationship,
) -> pb::FederationRelationshipResult {
    api.batch_update_federation_relationship(Request::new(
        pb::BatchUpdateFederationRelationshipRequest {
            relationships: vec![relationship],
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .results
    .remove(0)
}

async fn delete(api: &TrustDomainApi, trust_domain: &str) -> pb::FederationRelationshipResult {
    api.batch_delete_federation_relationship(Request::new(
        pb::BatchDeleteFederationRelationshipRequest {
            trust_domains: vec![trust_domain.into()],
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .results
    .remove(0)
}

fn code(result: &pb::FederationRelationshipResult) -> Code {
    Code::from_i32(result.status.as_ref().unwrap().code)
}

fn message(result: &pb::FederationRelationshipResult) -> &str {
    &result.status.as_ref().unwrap().message
}

async fn refresh(
    api: &TrustDomainApi,
    trust_domain: &str,
) -> Result<pb::RefreshBundleResponse, tonic::Status> {
    api.refresh_bundle(Request::new(pb::RefreshBundleRequest {
        trust_domain: trust_domain.into(),
    }))
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn create_fetches_refresh_reports_the_fetch_error_and_delete_stops_fetching() {
    install_provider();
    let test = support::state().await;
    let state = &test.state;
    let td = peer();
    let ca = new_ca(&td);
    let (endpoint, _material) = spiffe_endpoint(
        &new_svid(&ca, &"spiffe://peer.test/bundle-endpoint".parse().unwrap()),
        bundle(&td, &[&ca], 1),
    )
    .await;
    endpoint.serve_document(&bundle(&td, &[&ca], 2));
    let federation = Arc::new(Federation::new(Arc::clone(state)));
    let api = TrustDomainApi::new(Arc::clone(state), Arc::clone(&federation), Vec::new());
    let pem = X509Bundle::from_authorities(td.clone(), [ca.certificate().clone()])
        .to_pem()
        .into_bytes();

    // Create: the initial bundle authenticates the endpoint, and the fetcher brings sequence 2.
    let created = create(&api, relationship(&endpoint.url(), pem.clone())).await;
    assert_eq!(code(&created), Code::Ok, "{}", message(&created));
    let stored = created.relationship.unwrap();
    assert_eq!(stored.trust_domain, "peer.test");
    assert!(stored.trust_domain_bundle.is_empty());
    wait_for_bundle(state, &td, "the fetched sequence 2", |b| {
        b.sequence() == Some(2)
    })
    .await;
    assert_eq!(federation.trust_domains(), vec![td.clone()]);
    assert!(
        state
            .datastore()
            .federation_relationship(&td)
            .await
            .unwrap()
            .is_some()
    );
    let listed = api
        .list_federation_relationships(Request::new(pb::ListFederationRelationshipsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .relationships;
    assert_eq!(listed, vec![stored.clone()]);
    let got = api
        .get_federation_relationship(Request::new(pb::GetFederationRelationshipRequest {
            trust_domain: "spiffe://peer.test".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, stored);

    let again = create(&api, relationship(&endpoint.url(), Vec::new())).await;
    assert_eq!(code(&again), Code::AlreadyExists, "{}", message(&again));

    // Refresh fetches now and says what it stored.
    let mut next = bundle(&td, &[&ca], 5);
    next.set_refresh_hint(Some(std::time::Duration::from_secs(3600)));
    endpoint.serve_document(&next);
    let refreshed = refresh(&api, "peer.test").await.unwrap();
    assert_eq!(refreshed.sequence, 5);
    assert_eq!(state.federated_bundle(&td).unwrap().sequence(), Some(5));

    // Point it at a port where nothing listens: refresh answers the fetch's own error.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("https://{}/bundle", listener.local_addr().unwrap())
    };
    let updated = update(&api, relationship(&dead, Vec::new())).await;
    assert_eq!(code(&updated), Code::Ok, "{}", message(&updated));
    let err = refresh(&api, "peer.test").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains(&dead) && err.message().contains("request failed"),
        "{}",
        err.message()
    );
    assert_eq!(
        state
            .datastore()
            .federation_relationship(&td)
            .await
            .unwrap()
            .unwrap()
            .url,
        dead
    );

    // Delete: the fetcher is gone, the bundle stays, refresh knows no relationship.
    let deleted = delete(&api, "peer.test").await;
    assert_eq!(code(&deleted), Code::Ok, "{}", message(&deleted));
    assert!(federation.trust_domains().is_empty());
    assert_eq!(state.federated_bundle(&td).unwrap().sequence(), Some(5));
    assert_eq!(
        refresh(&api, "peer.test").await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(code(&delete(&api, "peer.test").await), Code::NotFound);
    assert!(
        state
            .datastore()
            .list_federation_relationships()
            .await
            .unwrap()
            .is_empty()
    );
    federation.stop().await;
}

#[tokio::test]
async fn bad_relationships_are_refused_naming_the_problem_and_store_nothing() {
    install_provider();
    let test = support::state().await;
    let state = &test.state;
    let federation = Arc::new(Federation::new(Arc::clone(state)));
    let api = TrustDomainApi::new(Arc::clone(state), Arc::clone(&federation), Vec::new());
    let good = || relationship("https://peer.test/bundle", Vec::new());
    let other_ca = new_ca(&TrustDomain::new("other.test").unwrap());
    let cases: Vec<(pb::FederationRelationship, &str)> = vec![
        (
            pb::FederationRelationship {
                bundle_endpoint_url: "http://peer.test/".into(),
                ..good()
            },
            "https only",
        ),
        (
            pb::FederationRelationship {
                trust_domain: "example.org".into(),
                ..good()
            },
            "own trust domain",
        ),
        (
            pb::FederationRelationship {
                trust_domain: "spiffe://peer.test/workload".into(),
                ..good()
            },
            "not a trust domain",
        ),
        (
            pb::FederationRelationship {
                profile: "https_other".into(),
                ..good()
            },
            "https_other",
        ),
        (
            pb::FederationRelationship {
                endpoint_spiffe_id: String::new(),
                ..good()
            },
            "endpoint_spiffe_id is required",
        ),
        (
            pb::FederationRelationship {
                endpoint_spiffe_id: "spiffe://other.test/endpoint".into(),
                ..good()
            },
            "not in trust domain",
        ),
        (
            pb::FederationRelationship {
                profile: "https_web".into(),
                ..good()
            },
            "endpoint_spiffe_id is not used",
        ),
        (
            pb::FederationRelationship {
                trust_domain_bundle: b"not a bundle".to_vec(),
                ..good()
            },
            "trust_domain_bundle",
        ),
        (
            pb::FederationRelationship {
                trust_domain_bundle: X509Bundle::from_authorities(
                    peer(),
                    [other_ca.certificate().clone()],
                )
                .to_pem()
                .into_bytes(),
                ..good()
            },
            "belongs to trust domain other.test",
        ),
    ];
    for (relationship, expected) in cases {
        let result = create(&api, relationship.clone()).await;
        assert_eq!(code(&result), Code::InvalidArgument, "{relationship:?}");
        assert!(
            message(&result).contains(expected),
            "{expected:?} not in {:?}",
            message(&result)
        );
    }
    assert!(
        state
            .datastore()
            .list_federation_relationships()
            .await
            .unwrap()
            .is_empty()
    );
    assert!(state.federated_bundle(&peer()).is_none());
    assert!(federation.trust_domains().is_empty());
    let updated = update(&api, good()).await;
    assert_eq!(code(&updated), Code::NotFound, "{}", message(&updated));
}

#[tokio::test]
async fn config_file_relationships_are_listed_but_not_changed() {
    install_provider();
    let test = support::state().await;
    let state = &test.state;
    let configured = FederatesWith::new(
        peer(),
        "https://peer.test/bundle",
        RemoteProfile::HttpsWeb {
            ca_file: None,
            ca_roots: None,
        },
    );
    let federation = Arc::new(Federation::new(Arc::clone(state)));
    let api = TrustDomainApi::new(Arc::clone(state), Arc::clone(&federation), vec![configured]);
    let web = pb::FederationRelationship {
        trust_domain: "peer.test".into(),
        bundle_endpoint_url: "https://elsewhere.test/".into(),
        profile: "https_web".into(),
        ..Default::default()
    };
    assert_eq!(code(&create(&api, web.clone()).await), Code::AlreadyExists);
    let updated = update(&api, web).await;
    assert_eq!(code(&updated), Code::FailedPrecondition);
    assert!(
        message(&updated).contains("config file"),
        "{}",
        message(&updated)
    );
    assert_eq!(
        code(&delete(&api, "peer.test").await),
        Code::FailedPrecondition
    );
    let listed = api
        .list_federation_relationships(Request::new(pb::ListFederationRelationshipsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .relationships;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].from_config);
    assert_eq!(listed[0].bundle_endpoint_url, "https://peer.test/bundle");
    assert!(
        state
            .datastore()
            .list_federation_relationships()
            .await
            .unwrap()
            .is_empty()
    );
}
