//! Rotation end to end with short injected lifetimes: the agent renews its own SVID and keeps
//! working after the first one expired, and the server's CA rotation reaches an open workload
//! stream with every message's SVID verifiable against that message's bundle (no lost
//! identity).

use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, UnixTime};
use sigil_spiffe::{BundleSet, SvidUsage, X509Bundle, verify_chain};
use spiffe::{TrustDomain, WorkloadApiClient};
use tokio_stream::StreamExt;

use crate::agent_run::{Agent, create_entry, own_uid, server_and_agent_config_with};
use crate::harness::{POLL_PAUSE, POLLS};

/// The leaf's issuer name, DER.
fn issuer(leaf: &[u8]) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf).unwrap();
    cert.issuer().as_raw().to_vec()
}

#[test]
fn the_agent_renews_its_own_svid_and_outlives_the_first_one() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    // Agent SVIDs live 10 s (the server's default X.509 TTL); the CA a day.
    let (server, agent_id) =
        server_and_agent_config_with(dir.path(), "[svid]\ndefault_x509_ttl = \"10s\"\n");
    create_entry(
        &server,
        "spiffe://example.org/renewal",
        &agent_id,
        &format!("unix:uid:{}", own_uid()),
    );
    let agent = Agent::start(dir.path());
    let started = SystemTime::now();
    // Wait for three renewals, and until the first agent SVID (10 s) has certainly expired.
    for _ in 0..POLLS * 2 {
        let renewals = agent.log().matches("agent SVID renewed").count();
        if renewals >= 3 && started.elapsed().unwrap() > Duration::from_secs(12) {
            break;
        }
        std::thread::sleep(POLL_PAUSE);
    }
    assert!(
        agent.log().matches("agent SVID renewed").count() >= 2,
        "{}",
        agent.log()
    );
    // Workload SVIDs (also 10 s) are still being signed, over the renewed agent SVID.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        let svid = client.fetch_x509_svid().await.unwrap();
        assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/renewal");
    });
    // Every call after a renewal presented the new SVID: the server refused none.
    assert!(
        !agent.log().contains("permission denied"),
        "{}",
        agent.log()
    );
    agent.terminate();
    drop(server);
}

#[test]
fn a_ca_rotation_reaches_an_open_stream_with_no_lost_identity() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    // A CA of one minute: the next one is prepared (published in the bundle) after half its
    // life and activated when a sixth is left.
    let (server, agent_id) = server_and_agent_config_with(
        dir.path(),
        "[ca]\nttl = \"1m\"\n[svid]\ndefault_x509_ttl = \"10s\"\ndefault_jwt_ttl = \"10s\"\n",
    );
    create_entry(
        &server,
        "spiffe://example.org/rotating",
        &agent_id,
        &format!("unix:uid:{}", own_uid()),
    );
    let agent = Agent::start(dir.path());
    let td = TrustDomain::new("example.org").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        let mut stream = client.stream_x509_contexts().await.unwrap();
        let mut first_issuer = None;
        let mut messages = 0;
        loop {
            let context = tokio::time::timeout(Duration::from_secs(120), stream.next())
                .await
                .expect("the stream went quiet for two minutes")
                .unwrap()
                .unwrap_or_else(|e| panic!("{e:?}\n{}", agent.log()));
            messages += 1;
            let svid = context.default_svid().unwrap();
            let bundle = context.bundle_set().get(&td).unwrap();
            // Every message's SVID verifies against that same message's bundle.
            let authorities: Vec<CertificateDer<'static>> = bundle
                .authorities()
                .iter()
                .map(|c| CertificateDer::from(c.as_ref().to_vec()))
                .collect();
            let ours = X509Bundle::from_authorities(
                sigil_spiffe::TrustDomain::new("example.org").unwrap(),
                authorities,
            );
            let bundles: BundleSet = [sigil_spiffe::Bundle::from_parts(
                ours,
                sigil_spiffe::JwtBundle::new(
                    sigil_spiffe::TrustDomain::new("example.org").unwrap(),
                ),
            )
            .unwrap()]
            .into_iter()
            .collect();
            let chain: Vec<CertificateDer<'static>> = svid
                .cert_chain()
                .iter()
                .map(|c| CertificateDer::from(c.as_ref().to_vec()))
                .collect();
            verify_chain(&chain, &bundles, UnixTime::now(), SvidUsage::ClientAuth)
                .unwrap_or_else(|e| panic!("message {messages}: the SVID does not verify: {e}"));
            let leaf_issuer = issuer(chain[0].as_ref());
            match &first_issuer {
                None => first_issuer = Some(leaf_issuer),
                Some(first) if *first != leaf_issuer => break,
                Some(_) => {}
            }
        }
        // A JWT-SVID minted after the rotation validates too (through the agent).
        let jwt = client.fetch_jwt_svid(["db"], None).await.unwrap();
        client.validate_jwt_token("db", jwt.token()).await.unwrap();
    });
    agent.terminate();
    drop(server);
}
