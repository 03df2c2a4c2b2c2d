//! The agent API of the real `sigil server run`, driven like an operator and an agent would:
//! `sigil token generate` and `sigil bundle show` give the agent its token and bootstrap
//! bundle, the token survives a server restart, the agent attests over TCP with mutual TLS,
//! syncs the entry `sigil entry create` registered for it, and `sigil agent ban` cuts it off,
//! also after another restart.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::agent_client::AgentClient;
use sigil_proto::server::v1::attest_agent_request::{Params, Step};
use sigil_proto::server::v1::attest_agent_response::Step as ResponseStep;
use sigil_proto::server::v1::entry_client::EntryClient;
use sigil_proto::server::v1::sync_authorized_entries_response::Update;
use sigil_spiffe::tls::TlsMaterial;
use sigil_spiffe::x509::{X509Svid, create_csr};
use sigil_spiffe::{Bundle, BundleSet, KeyType, PrivateKey, SpiffeId, TrustDomain};
use tonic::Code;

use crate::harness::{Server, json};

#[path = "../../../sigil-server/tests/it/agent_client.rs"]
mod agent_client;

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

fn server_id() -> SpiffeId {
    id("spiffe://example.org/sigil/server")
}

pub(crate) fn write_config(dir: &Path) -> SocketAddr {
    let port = crate::free_port();
    fs::write(
        dir.join("server.toml"),
        format!(
            "trust_domain = \"example.org\"\ndata_dir = \"data\"\n\
             bind_address = \"127.0.0.1:{port}\"\nadmin_socket = \"{}\"\n",
            dir.join("run/admin.sock").display()
        ),
    )
    .unwrap();
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Waits until the agent port accepts (the admin socket comes up after it).
async fn wait_for(addr: SocketAddr) {
    for _ in 0..crate::harness::POLLS {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(crate::harness::POLL_PAUSE).await;
    }
    panic!("agent port {addr} never accepted");
}

async fn attest(
    addr: SocketAddr,
    bundles: BundleSet,
    token: &str,
) -> Result<X509Svid, tonic::Status> {
    let channel = agent_client::connect(
        addr,
        Arc::new(TlsMaterial::without_svid(bundles)),
        server_id(),
    )
    .await
    .unwrap();
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let request = pb::AttestAgentRequest {
        step: Some(Step::Params(Params {
            data: Some(pb::AttestationData {
                r#type: "join_token".to_owned(),
                payload: token.as_bytes().to_vec(),
            }),
            csr: create_csr(&key, &id("spiffe://example.org/x")).unwrap(),
        })),
    };
    let mut responses = AgentClient::new(channel)
        .attest_agent(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let Some(ResponseStep::Result(result)) = responses.message().await?.unwrap().step else {
        panic!("no attestation result");
    };
    let chain = result.svid.unwrap().cert_chain;
    Ok(X509Svid::new(chain.into_iter().map(Into::into).collect(), key).unwrap())
}

async fn synced_ids(
    addr: SocketAddr,
    svid: &X509Svid,
    bundles: &BundleSet,
) -> Result<Vec<String>, tonic::Status> {
    let material = Arc::new(TlsMaterial::new(svid, bundles.clone()).unwrap());
    let channel = agent_client::connect(addr, material, server_id())
        .await
        .unwrap();
    let mut stream = EntryClient::new(channel)
        .sync_authorized_entries(pb::SyncAuthorizedEntriesRequest {})
        .await?
        .into_inner();
    let Some(Update::Snapshot(snapshot)) = stream.message().await?.unwrap().update else {
        panic!("no snapshot");
    };
    Ok(snapshot.entries.into_iter().map(|e| e.spiffe_id).collect())
}

#[test]
fn an_agent_attests_syncs_and_is_banned_through_the_real_server() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr = write_config(dir.path());
    let server = Server::start(dir.path());

    let token = json(&server.cli(&["token", "generate", "--output", "json"]));
    let agent_id = token["spiffe_id"].as_str().unwrap().to_owned();
    let token = token["token"].as_str().unwrap().to_owned();
    let document = server.cli(&["bundle", "show", "--format", "spiffe"]);
    assert_eq!(document.status.code(), Some(0));
    let bundle =
        Bundle::from_document(TrustDomain::new("example.org").unwrap(), &document.stdout).unwrap();
    let bundles: BundleSet = [bundle].into_iter().collect();

    // The token outlives a restart.
    assert!(server.terminate().success());
    let server = Server::start(dir.path());
    runtime.block_on(wait_for(addr));
    let agent = runtime
        .block_on(attest(addr, bundles.clone(), &token))
        .unwrap();
    assert_eq!(agent.spiffe_id().to_string(), agent_id);
    // Used once, it is gone.
    let again = runtime
        .block_on(attest(addr, bundles.clone(), &token))
        .unwrap_err();
    assert_eq!(
        (again.code(), again.message()),
        (Code::PermissionDenied, "permission denied")
    );

    let listed = json(&server.cli(&["agent", "list", "--output", "json"]));
    assert_eq!(
        listed["agents"][0]["spiffe_id"],
        agent_id.as_str(),
        "{listed}"
    );
    let created = server.entry(&[
        "create",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--parent-id",
        &agent_id,
        "--selector",
        "unix:uid:1000",
    ]);
    assert_eq!(
        created.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert_eq!(
        runtime
            .block_on(synced_ids(addr, &agent, &bundles))
            .unwrap(),
        ["spiffe://example.org/web"]
    );

    let banned = server.cli(&["agent", "ban", "--spiffe-id", &agent_id]);
    assert_eq!(banned.status.code(), Some(0));
    let refused = runtime
        .block_on(synced_ids(addr, &agent, &bundles))
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    // Still banned after a restart.
    assert!(
        !server.log().contains(&token),
        "the token appears in the server log"
    );
    assert!(server.terminate().success());
    let server = Server::start(dir.path());
    runtime.block_on(wait_for(addr));
    let refused = runtime
        .block_on(synced_ids(addr, &agent, &bundles))
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(server.terminate().success());
}
