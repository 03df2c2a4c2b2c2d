//! Issue 5's figure: the time from a peer trust domain's bundle change to the new bundle on an
//! open Workload API stream of a workload in our domain, with the peer's refresh hint at 1 s.
//!
//! The peer is a bundle endpoint in this process (`https_spiffe`: it presents an SVID of the
//! peer's CA), whose document the bench changes; our side is the real server
//! (`sigil_server::run`, SQLite) fetching it and the real agent (`sigil_agent::run`) serving a
//! workload entry that federates with the peer; the workload is the `spiffe` crate's stream.
//! Each sample toggles the peer bundle between one and two CAs (with a new sequence) and waits
//! for the stream to show it, the changes spread over the fetch cycle. Expect about half the
//! refresh hint plus the propagation on average, the whole hint at worst.
//!
//! Run: `cargo bench -p sigil --bench federation` (20 samples); under `cargo test
//! --all-targets` it takes 2 samples to prove it works. Nothing here asserts on time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::convert::Infallible;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::agent_client::AgentClient;
use sigil_proto::server::v1::bundle_client::BundleClient;
use sigil_spiffe::tls::{TlsMaterial, server_config_no_client_auth};
use sigil_spiffe::{
    Bundle, BundleSet, CaParams, JwtBundle, KeyType, PrivateKey, SpiffeId, SvidParams, TrustDomain,
    X509Authority, X509Bundle, X509Svid,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use common::{HANG_GUARD, create_uid_entry, free_port, unix_channel, wait_for_socket};

const TD: &str = "example.org";
const PEER: &str = "peer.test";

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let samples = if std::env::args().any(|a| a == "--bench") {
        20
    } else {
        2
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(samples));
}

async fn run(samples: usize) {
    let dir = tempfile::tempdir().unwrap();
    let peer_td = TrustDomain::new(PEER).unwrap();
    let (ca1, ca2) = (peer_ca(&peer_td), peer_ca(&peer_td));
    let endpoint_id: SpiffeId = format!("spiffe://{PEER}/bundle-endpoint").parse().unwrap();
    let document = Arc::new(Mutex::new(peer_document(&peer_td, &[&ca1], 1)));
    let endpoint_port = serve_peer_endpoint(&ca1, &endpoint_id, &peer_td, document.clone()).await;
    let first_bundle = X509Bundle::from_authorities(peer_td.clone(), [ca1.certificate().clone()]);
    fs::write(dir.path().join("peer.pem"), first_bundle.to_pem()).unwrap();

    let port = free_port();
    let server_config = sigil_server::config::Config::parse(
        &format!(
            "trust_domain = \"{TD}\"\ndata_dir = \"server\"\n\
             bind_address = \"127.0.0.1:{port}\"\nadmin_socket = \"server/admin.sock\"\n\
             [[federation.federates_with]]\ntrust_domain = \"{PEER}\"\n\
             url = \"https://127.0.0.1:{endpoint_port}/\"\nprofile = \"https_spiffe\"\n\
             endpoint_spiffe_id = \"{endpoint_id}\"\nbundle_path = \"peer.pem\"\n"
        ),
        dir.path(),
    )
    .unwrap();
    let admin_socket = server_config.admin_socket.clone();
    let (stop, stopped) = watch::channel(false);
    let mut server_stop = stopped.clone();
    let server = tokio::spawn(async move {
        sigil_server::run::run(&server_config, async move {
            let _ = server_stop.wait_for(|stop| *stop).await;
        })
        .await
    });
    wait_for_socket(&admin_socket).await;
    let admin = unix_channel(admin_socket.clone()).await.unwrap();
    let agent_id = format!("spiffe://{TD}/sigil/agent/bench");
    let token = prepare(&admin, dir.path(), &agent_id).await;
    let agent_config = sigil_agent::config::Config::parse(
        &format!(
            "trust_domain = \"{TD}\"\nserver_address = \"127.0.0.1:{port}\"\n\
             data_dir = \"agent\"\ntrust_bundle_path = \"bootstrap.json\"\n\
             trust_bundle_format = \"spiffe\"\n\
             [node_attestor]\ntype = \"join_token\"\ntoken = \"{token}\"\n"
        ),
        dir.path(),
    )
    .unwrap();
    let socket = agent_config.socket_path.clone();
    let agent = tokio::spawn(sigil_agent::run::run(agent_config, stopped));
    wait_for_socket(&socket).await;

    let client = spiffe::WorkloadApiClient::connect_to(format!("unix:{}", socket.display()))
        .await
        .unwrap();
    let mut stream = client.stream_x509_contexts().await.unwrap();
    let peer = spiffe::TrustDomain::new(PEER).unwrap();
    let authorities = |context: &spiffe::X509Context| {
        context
            .bundle_set()
            .get(&peer)
            .map_or(0, |bundle| bundle.authorities().len())
    };
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let context = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the peer bundle never reached the workload")
            .unwrap()
            .unwrap();
        if authorities(&context) == 1 {
            break;
        }
    }

    let mut delays = Vec::with_capacity(samples);
    for sample in 0..samples {
        // Changes land at spread-out points of the peer's 1 s fetch cycle (the previous
        // sample ended right after a fetch): 0, 370, 740, 110, ... ms into it.
        tokio::time::sleep(Duration::from_millis((sample as u64 * 370) % 1000)).await;
        let cas: Vec<&X509Authority> = if sample % 2 == 0 {
            vec![&ca1, &ca2]
        } else {
            vec![&ca1]
        };
        let sequence = 2 + sample as u64;
        *document.lock().unwrap() = peer_document(&peer_td, &cas, sequence);
        let changed = Instant::now();
        let deadline = changed + HANG_GUARD;
        loop {
            let context = tokio::time::timeout_at(deadline, stream.next())
                .await
                .expect("the changed peer bundle never reached the workload")
                .unwrap()
                .unwrap();
            if authorities(&context) == cas.len() {
                break;
            }
        }
        delays.push(changed.elapsed());
    }
    delays.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p99 = delays[(delays.len() * 99).div_ceil(100) - 1];
    println!(
        "peer bundle change -> open workload stream in the other domain (refresh hint 1 s): \
         {} samples, p50 {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms",
        delays.len(),
        ms(delays[delays.len() / 2]),
        ms(p99),
        ms(delays[0]),
        ms(delays[delays.len() - 1])
    );
    drop(stream);
    let _ = stop.send(true);
    agent.await.unwrap().unwrap();
    server.await.unwrap().unwrap();
}

fn peer_ca(td: &TrustDomain) -> X509Authority {
    let now = SystemTime::now();
    X509Authority::self_signed(
        Arc::new(PrivateKey::generate(KeyType::EcP256).unwrap()),
        &CaParams::new(
            td.clone(),
            now - Duration::from_secs(60),
            now + Duration::from_secs(86_400),
        ),
    )
    .unwrap()
}

/// The peer's SPIFFE bundle document: these CAs, this sequence, a refresh hint of 1 s.
fn peer_document(td: &TrustDomain, cas: &[&X509Authority], sequence: u64) -> Vec<u8> {
    let x509 =
        X509Bundle::from_authorities(td.clone(), cas.iter().map(|ca| ca.certificate().clone()));
    let mut bundle = Bundle::from_parts(x509, JwtBundle::new(td.clone())).unwrap();
    bundle.set_sequence(Some(sequence));
    bundle.set_refresh_hint(Some(Duration::from_secs(1)));
    bundle.to_document().unwrap().into_bytes()
}

/// The peer's `https_spiffe` bundle endpoint on a free loopback port, serving `document`.
async fn serve_peer_endpoint(
    ca: &X509Authority,
    id: &SpiffeId,
    td: &TrustDomain,
    document: Arc<Mutex<Vec<u8>>>,
) -> u16 {
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
    let svid = X509Svid::new(issued.into_cert_chain(), key).unwrap();
    let bundle = Bundle::from_parts(
        X509Bundle::from_authorities(td.clone(), [ca.certificate().clone()]),
        JwtBundle::new(td.clone()),
    )
    .unwrap();
    let bundles: BundleSet = [bundle].into_iter().collect();
    let material = Arc::new(TlsMaterial::new(&svid, bundles).unwrap());
    let acceptor =
        tokio_rustls::TlsAcceptor::from(Arc::new(server_config_no_client_auth(material).unwrap()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let document = document.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |_request| {
                    let body = document.lock().unwrap().clone();
                    async move {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}

/// The bootstrap bundle file, a join token for `agent_id`, and a workload entry for this
/// process's uid that federates with the peer. Returns the token.
async fn prepare(admin: &Channel, dir: &Path, agent_id: &str) -> String {
    let bundle = BundleClient::new(admin.clone())
        .get_bundle(pb::GetBundleRequest {})
        .await
        .unwrap()
        .into_inner();
    fs::write(dir.join("bootstrap.json"), &bundle.document).unwrap();
    let token = AgentClient::new(admin.clone())
        .create_join_token(pb::CreateJoinTokenRequest {
            ttl: 600,
            agent_id: agent_id.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .value;
    let uid = fs::metadata("/proc/self").unwrap().uid();
    create_uid_entry(
        admin,
        agent_id,
        &format!("spiffe://{TD}/bench/federated"),
        uid,
        &[PEER],
    )
    .await;
    token
}
