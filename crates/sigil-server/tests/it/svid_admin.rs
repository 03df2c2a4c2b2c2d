//! The admin side of the `SVID` service in process: minted X.509-SVIDs verify against our own
//! bundle with the SPIFFE library's verifier and carry only what the request asked for;
//! minted JWT-SVIDs validate against it; every bad input is a clear error.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, UnixTime};
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::svid_server::Svid as _;
use sigil_server::api::SvidAdminApi;
use sigil_server::state::ServerState;
use sigil_spiffe::x509::{SvidUsage, create_csr, verify_chain};
use sigil_spiffe::{BundleSet, JwtSvid, KeyType, PrivateKey, SpiffeId, X509Svid};
use tonic::{Code, Request};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::support;

struct Fixture {
    api: SvidAdminApi,
    state: Arc<ServerState>,
    _fixture: support::TestState,
}

async fn fixture() -> Fixture {
    let fixture = support::state().await;
    Fixture {
        api: SvidAdminApi::new(Arc::clone(&fixture.state)),
        state: Arc::clone(&fixture.state),
        _fixture: fixture,
    }
}

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

fn now_unix() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn own_bundles(state: &ServerState) -> BundleSet {
    let mut set = BundleSet::new();
    set.insert(state.own_bundle());
    set
}

/// A key and a valid CSR for it that asks for another ID than the one to mint.
fn key_and_csr() -> (PrivateKey, Vec<u8>) {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let csr = create_csr(&key, &id("spiffe://example.org/asked-by-the-csr")).unwrap();
    (key, csr)
}

fn x509_request(csr: Vec<u8>, spiffe_id: &str, ttl: i64, dns: &[&str]) -> pb::MintX509svidRequest {
    pb::MintX509svidRequest {
        csr,
        spiffe_id: spiffe_id.to_owned(),
        ttl,
        dns_names: dns.iter().map(|s| (*s).to_owned()).collect(),
    }
}

async fn mint_x509(
    api: &SvidAdminApi,
    request: pb::MintX509svidRequest,
) -> Result<pb::MintX509svidResponse, tonic::Status> {
    api.mint_x509svid(Request::new(request))
        .await
        .map(tonic::Response::into_inner)
}

fn jwt_request(spiffe_id: &str, audience: &[&str], ttl: i64) -> pb::MintJwtsvidRequest {
    pb::MintJwtsvidRequest {
        spiffe_id: spiffe_id.to_owned(),
        audience: audience.iter().map(|s| (*s).to_owned()).collect(),
        ttl,
    }
}

async fn mint_jwt(
    api: &SvidAdminApi,
    request: pb::MintJwtsvidRequest,
) -> Result<pb::Jwtsvid, tonic::Status> {
    api.mint_jwtsvid(Request::new(request))
        .await
        .map(tonic::Response::into_inner)
}

/// The URI and DNS names of a certificate's SAN extension.
fn sans(der: &[u8]) -> (Vec<String>, Vec<String>) {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    if let Some(san) = cert.subject_alternative_name().unwrap() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                GeneralName::DNSName(name) => dns.push((*name).to_owned()),
                _ => {}
            }
        }
    }
    (uris, dns)
}

#[tokio::test]
async fn a_minted_x509_svid_verifies_and_carries_only_what_was_asked() {
    let f = fixture().await;
    let (key, csr) = key_and_csr();
    let before = now_unix();
    let response = mint_x509(
        &f.api,
        x509_request(
            csr,
            "spiffe://example.org/web",
            600,
            &["web.example.org", "www.example.org"],
        ),
    )
    .await
    .unwrap();
    assert!(!response.ttl_capped);
    let svid = response.svid.unwrap();
    assert_eq!(svid.spiffe_id, "spiffe://example.org/web");
    assert!(
        (before + 600 - 15..=now_unix() + 600).contains(&svid.expires_at),
        "{}",
        svid.expires_at
    );

    let chain: Vec<CertificateDer<'static>> = svid
        .cert_chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let verified = verify_chain(
        &chain,
        &own_bundles(&f.state),
        UnixTime::now(),
        SvidUsage::ClientAuth,
    )
    .unwrap();
    assert_eq!(verified.spiffe_id(), &id("spiffe://example.org/web"));

    // The ID and DNS names are the request's; the CSR's ID is ignored.
    let (uris, dns) = sans(&svid.cert_chain[0]);
    assert_eq!(uris, ["spiffe://example.org/web"]);
    assert_eq!(dns, ["web.example.org", "www.example.org"]);

    // The certificate is for the CSR's key: with it, it is a whole X.509-SVID.
    let der: Vec<u8> = svid.cert_chain.concat();
    let parsed = X509Svid::parse_from_der(&der, key.pkcs8_der()).unwrap();
    assert_eq!(parsed.spiffe_id(), &id("spiffe://example.org/web"));
}

#[tokio::test]
async fn x509_ttl_defaults_and_is_capped_to_the_ca() {
    let f = fixture().await;
    let before = now_unix();
    let default = mint_x509(
        &f.api,
        x509_request(key_and_csr().1, "spiffe://example.org/web", 0, &[]),
    )
    .await
    .unwrap();
    let expires = default.svid.unwrap().expires_at;
    assert!(
        (before + 3600 - 15..=now_unix() + 3600).contains(&expires),
        "{expires}"
    );
    assert!(!default.ttl_capped);

    // 30 days is allowed, but the CA lives 24 hours: the SVID ends with it, and says so.
    let capped = mint_x509(
        &f.api,
        x509_request(
            key_and_csr().1,
            "spiffe://example.org/web",
            30 * 86_400,
            &[],
        ),
    )
    .await
    .unwrap();
    assert!(capped.ttl_capped);
    assert!(capped.svid.unwrap().expires_at <= now_unix() + 24 * 3600);
}

#[tokio::test]
async fn a_minted_jwt_svid_validates_against_our_bundle() {
    let f = fixture().await;
    let before = now_unix();
    let minted = mint_jwt(
        &f.api,
        jwt_request("spiffe://example.org/web", &["aud-a", "aud-b"], 120),
    )
    .await
    .unwrap();
    assert_eq!(minted.spiffe_id, "spiffe://example.org/web");
    let svid = JwtSvid::parse_and_validate(
        &minted.token,
        &own_bundles(&f.state),
        &["aud-b"],
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(svid.spiffe_id(), &id("spiffe://example.org/web"));
    assert_eq!(svid.audience(), ["aud-a", "aud-b"]);
    assert_eq!(
        minted.expires_at,
        i64::try_from(svid.expiry().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
    );
    assert!((before + 120..=now_unix() + 120).contains(&minted.expires_at));
    assert!((before..=now_unix()).contains(&minted.issued_at));

    // No TTL: the server's default JWT-SVID TTL (5m in the fixture).
    let default = mint_jwt(&f.api, jwt_request("spiffe://example.org/web", &["a"], 0))
        .await
        .unwrap();
    assert!((before + 300..=now_unix() + 300).contains(&default.expires_at));
}

#[tokio::test]
async fn agent_calls_are_not_served_on_the_admin_socket() {
    let f = fixture().await;
    let err = f
        .api
        .batch_new_x509svid(Request::new(pb::BatchNewX509svidRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("agent API"), "{}", err.message());
    let err = f
        .api
        .new_jwtsvid(Request::new(pb::NewJwtsvidRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("agent API"), "{}", err.message());
}

#[tokio::test]
async fn bad_mint_requests_are_refused_with_a_clear_error() {
    let f = fixture().await;
    let (_, csr) = key_and_csr();
    let mut bad_signature = csr.clone();
    // The last byte is the low byte of the ECDSA signature's `s`: the CSR still parses.
    *bad_signature.last_mut().unwrap() ^= 0x01;
    let web = "spiffe://example.org/web";
    let x509_cases: Vec<(&str, pb::MintX509svidRequest, &str)> = vec![
        (
            "no CSR",
            x509_request(Vec::new(), web, 0, &[]),
            "csr: no certificate signing request",
        ),
        (
            "a malformed CSR",
            x509_request(b"not a csr".to_vec(), web, 0, &[]),
            "csr: malformed certificate signing request",
        ),
        (
            "a CSR with trailing bytes",
            x509_request([csr.as_slice(), b"x"].concat(), web, 0, &[]),
            "csr: malformed certificate signing request",
        ),
        (
            "a CSR with a bad signature",
            x509_request(bad_signature, web, 0, &[]),
            "csr: certificate signing request signature does not verify",
        ),
        (
            "a malformed ID",
            x509_request(csr.clone(), "not-an-id", 0, &[]),
            "spiffe_id",
        ),
        (
            "a foreign ID",
            x509_request(csr.clone(), "spiffe://other.org/web", 0, &[]),
            "spiffe_id spiffe://other.org/web is not in trust domain example.org",
        ),
        (
            "the trust domain's own ID",
            x509_request(csr.clone(), "spiffe://example.org", 0, &[]),
            "has no path",
        ),
        (
            "the server's ID",
            x509_request(csr.clone(), "spiffe://example.org/sigil/server", 0, &[]),
            "is reserved",
        ),
        (
            "an agent's ID",
            x509_request(
                csr.clone(),
                "spiffe://example.org/sigil/agent/join_token/x",
                0,
                &[],
            ),
            "is reserved",
        ),
        (
            "a negative TTL",
            x509_request(csr.clone(), web, -1, &[]),
            "ttl -1 cannot be negative",
        ),
        (
            "a TTL below the minimum",
            x509_request(csr.clone(), web, 5, &[]),
            "ttl 5s must be between 10s and 30d",
        ),
        (
            "a TTL above the maximum",
            x509_request(csr.clone(), web, 31 * 86_400, &[]),
            "must be between 10s and 30d",
        ),
        (
            "a DNS name with a space",
            x509_request(csr.clone(), web, 0, &["bad name"]),
            "dns_names: \"bad name\" is not a valid DNS name",
        ),
        (
            "a DNS label starting with a hyphen",
            x509_request(csr.clone(), web, 0, &["ok.example.org", "-x.example.org"]),
            "\"-x.example.org\" is not a valid DNS name",
        ),
        (
            "an empty DNS name",
            x509_request(csr.clone(), web, 0, &[""]),
            "is not a valid DNS name",
        ),
    ];
    let bundle_before = f.state.own_bundle();
    for (what, request, text) in x509_cases {
        let err = mint_x509(&f.api, request).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{what}: {}",
            err.message()
        );
        assert!(err.message().contains(text), "{what}: {}", err.message());
    }

    let jwt_cases: Vec<(&str, pb::MintJwtsvidRequest, &str)> = vec![
        (
            "no audience",
            jwt_request(web, &[], 0),
            "audience: a JWT-SVID needs at least one audience",
        ),
        (
            "an empty audience",
            jwt_request(web, &["a", ""], 0),
            "audience: values cannot be empty",
        ),
        ("a malformed ID", jwt_request("web", &["a"], 0), "spiffe_id"),
        (
            "a foreign ID",
            jwt_request("spiffe://other.org/web", &["a"], 0),
            "is not in trust domain example.org",
        ),
        (
            "a reserved ID",
            jwt_request("spiffe://example.org/sigil/server", &["a"], 0),
            "is reserved",
        ),
        (
            "a negative TTL",
            jwt_request(web, &["a"], -5),
            "cannot be negative",
        ),
        (
            "a TTL below the minimum",
            jwt_request(web, &["a"], 9),
            "must be between 10s and 30d",
        ),
    ];
    for (what, request, text) in jwt_cases {
        let err = mint_jwt(&f.api, request).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{what}: {}",
            err.message()
        );
        assert!(err.message().contains(text), "{what}: {}", err.message());
    }

    // Refusals change nothing: the bundle is as it was and nothing was stored.
    assert_eq!(f.state.own_bundle(), bundle_before);
    assert!(f.state.federated_bundles().is_empty());
    assert_eq!(f.state.entry_count(), 0);
}
