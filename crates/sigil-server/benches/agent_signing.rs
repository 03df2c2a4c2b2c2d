//! X.509-SVID signing throughput through the real agent API (gRPC over mutual TLS on
//! loopback, batched CSRs, two client tasks), beside the raw cost of one ECDSA P-256 verify
//! plus one sign measured in the same run on the same two cores. Goal (issue 3): the API
//! reaches at least 60% of the raw rate.
//!
//! Run: `cargo bench -p sigil-server --bench agent_signing`. Without `--bench` (as
//! `cargo test --all-targets` runs it) it signs a few SVIDs only, to prove it works.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "../tests/it/agent_client.rs"]
mod agent_client;
// The tests' fixture builds the server state (SQLite datastore, in-memory P-256 CA).
#[allow(dead_code, unreachable_pub, clippy::unwrap_used)]
#[path = "../tests/it/support.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use sigil_core::{EntryId, RegistrationEntry, Selector, SelectorSet};
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::agent_client::AgentClient;
use sigil_proto::server::v1::attest_agent_request::{Params, Step};
use sigil_proto::server::v1::attest_agent_response::Step as ResponseStep;
use sigil_proto::server::v1::svid_client::SvidClient;
use sigil_server::agent_api;
use sigil_server::state::ServerState;
use sigil_spiffe::tls::TlsMaterial;
use sigil_spiffe::x509::{X509Svid, create_csr};
use sigil_spiffe::{BundleSet, KeyType, PrivateKey, SpiffeId};
use tokio::time::Instant;

const CLIENTS: usize = 2;
const BATCH: usize = 100;

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

/// CPU time this process has used (user + system), from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Verify + sign pairs per second on `threads` threads for `duration`.
fn raw_rate(threads: usize, duration: Duration) -> f64 {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let pkcs8 = pkcs8.as_ref().to_vec();
    // About the size of a certificate's to-be-signed part.
    let message = vec![0x5a_u8; 450];
    let started = Instant::now();
    let counts: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let pkcs8 = pkcs8.clone();
                let message = message.clone();
                scope.spawn(move || {
                    let rng = SystemRandom::new();
                    let key =
                        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8).unwrap();
                    let public = key.public_key().as_ref().to_vec();
                    let signature = key.sign(&rng, &message).unwrap();
                    let mut n = 0u64;
                    while started.elapsed() < duration {
                        // The verify a CSR check costs (key parsed per call, as for a CSR)
                        // and the sign a certificate costs.
                        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &public)
                            .verify(&message, signature.as_ref())
                            .unwrap();
                        std::hint::black_box(key.sign(&rng, &message).unwrap());
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    counts.iter().sum::<u64>() as f64 / started.elapsed().as_secs_f64()
}

/// Attests an agent with a join token; returns its SVID.
async fn attest(state: &ServerState, addr: std::net::SocketAddr, bundles: &BundleSet) -> X509Svid {
    let token = state
        .create_join_token(Duration::from_secs(600), None, SystemTime::now())
        .await
        .unwrap();
    let channel = agent_client::connect(
        addr,
        Arc::new(TlsMaterial::without_svid(bundles.clone())),
        state.server_id().clone(),
    )
    .await
    .unwrap();
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let request = pb::AttestAgentRequest {
        step: Some(Step::Params(Params {
            data: Some(pb::AttestationData {
                r#type: "join_token".to_owned(),
                payload: token.token.as_bytes().to_vec(),
            }),
            csr: create_csr(&key, &id("spiffe://example.org/agent")).unwrap(),
        })),
    };
    let mut responses = AgentClient::new(channel)
        .attest_agent(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(ResponseStep::Result(result)) = responses.message().await.unwrap().unwrap().step
    else {
        panic!("no attestation result");
    };
    let chain = result.svid.unwrap().cert_chain;
    X509Svid::new(chain.into_iter().map(Into::into).collect(), key).unwrap()
}

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let full = std::env::args().any(|a| a == "--bench");
    let (per_client, raw_duration) = if full {
        (10_000, Duration::from_secs(5))
    } else {
        (BATCH, Duration::from_millis(100))
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // Holds the temporary directory of the datastore until the end.
    let fixture = runtime.block_on(support::state());
    let (state, addr, entry, agent) = runtime.block_on(async {
        let state = Arc::clone(&fixture.state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(agent_api::serve(
            Arc::clone(&state),
            listener,
            std::future::pending(),
        ));
        let bundles: BundleSet = [state.own_bundle()].into_iter().collect();
        let agent = attest(&state, addr, &bundles).await;
        let mut selectors = SelectorSet::default();
        selectors.insert(Selector::new("unix", "uid:1000").unwrap());
        let entry = RegistrationEntry {
            id: "bench-entry".parse::<EntryId>().unwrap(),
            spiffe_id: id("spiffe://example.org/web"),
            parent_id: agent.spiffe_id().clone(),
            selectors,
            x509_svid_ttl: None,
            jwt_svid_ttl: None,
            dns_names: Vec::new(),
            federates_with: Vec::new(),
            admin: false,
            downstream: false,
            hint: String::new(),
            expires_at: None,
            revision: 0,
            created_at: 0,
        };
        state.create_entry(&entry).await.unwrap();
        (state, addr, entry.id, agent)
    });

    // CSRs are made before the clock starts: an agent makes them, not the server.
    let csrs: Vec<Vec<Vec<u8>>> = (0..CLIENTS)
        .map(|_| {
            (0..per_client)
                .map(|_| {
                    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
                    create_csr(&key, &id("spiffe://example.org/web")).unwrap()
                })
                .collect()
        })
        .collect();

    // Signing in process, without the API: the CA's own cost per SVID.
    let direct_n = per_client.min(1000);
    let started = Instant::now();
    for csr in &csrs[0][..direct_n] {
        state
            .ca()
            .sign_x509_svid(
                csr,
                id("spiffe://example.org/web"),
                Vec::new(),
                Duration::from_secs(3600),
                SystemTime::now(),
            )
            .unwrap();
    }
    let direct_one_core = direct_n as f64 / started.elapsed().as_secs_f64();

    let raw_two = raw_rate(2, raw_duration);
    let raw_one = raw_rate(1, raw_duration);

    let cpu_before = cpu_seconds();
    let api_started = Instant::now();
    let api_rate = runtime.block_on(async {
        let bundles: BundleSet = [state.own_bundle()].into_iter().collect();
        let material = Arc::new(TlsMaterial::new(&agent, bundles).unwrap());
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let channel = agent_client::connect(addr, material.clone(), state.server_id().clone())
                .await
                .unwrap();
            clients.push(SvidClient::new(channel));
        }
        let started = Instant::now();
        let tasks: Vec<_> = clients
            .into_iter()
            .zip(csrs)
            .map(|(mut client, csrs)| {
                let entry = entry.to_string();
                tokio::spawn(async move {
                    let mut signed = 0usize;
                    for batch in csrs.chunks(BATCH) {
                        let params = batch
                            .iter()
                            .map(|csr| pb::batch_new_x509svid_request::Params {
                                entry_id: entry.clone(),
                                csr: csr.clone(),
                            })
                            .collect();
                        let results = client
                            .batch_new_x509svid(pb::BatchNewX509svidRequest { params })
                            .await
                            .unwrap()
                            .into_inner()
                            .results;
                        for result in &results {
                            assert_eq!(result.status.as_ref().unwrap().code, 0, "{result:?}");
                        }
                        signed += results.len();
                    }
                    signed
                })
            })
            .collect();
        let mut signed = 0;
        for task in tasks {
            signed += task.await.unwrap();
        }
        signed as f64 / started.elapsed().as_secs_f64()
    });
    let api_cpu = cpu_seconds() - cpu_before;
    let api_wall = api_started.elapsed().as_secs_f64();

    println!(
        "agent_signing ({} mode)",
        if full { "bench" } else { "test" }
    );
    println!("raw verify+sign, 1 thread : {raw_one:>8.0} /s");
    println!("raw verify+sign, 2 threads: {raw_two:>8.0} /s");
    println!("CA sign_x509_svid, 1 core : {direct_one_core:>8.0} /s");
    println!(
        "agent API, {CLIENTS} clients x batches of {BATCH}: {api_rate:>8.0} SVIDs/s = {:.0}% of raw (2 threads)",
        100.0 * api_rate / raw_two
    );
    println!(
        "  CPU used by client and server together: {:.2} cores busy on average ({api_cpu:.1} s of CPU in {api_wall:.1} s)",
        api_cpu / api_wall
    );
}
