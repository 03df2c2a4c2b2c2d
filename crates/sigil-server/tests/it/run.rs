//! `run` in process, end to end over its real listeners: an agent attests over TCP with a
//! join token, syncs and gets SVIDs signed, the server stops with the agent's stream open,
//! and a restart on the same data directory knows the agent and keeps its CA.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use sigil_core::JoinToken;
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::agent_client::AgentClient;
use sigil_proto::server::v1::attest_agent_request::{Params, Step};
use sigil_proto::server::v1::attest_agent_response::Step as ResponseStep;
use sigil_proto::server::v1::entry_client::EntryClient;
use sigil_proto::server::v1::svid_client::SvidClient;
use sigil_proto::server::v1::sync_authorized_entries_response::Update;
use sigil_server::config::Config;
use sigil_server::datastore::DataStore;
use sigil_spiffe::tls::TlsMaterial;
use sigil_spiffe::x509::{X509Svid, create_csr};
use sigil_spiffe::{Bundle, BundleSet, KeyType, PrivateKey, SpiffeId, TrustDomain};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;
use zeroize::Zeroizing;

use crate::agent_client::connect;

const POLLS: u32 = 1200;
const POLL_PAUSE: Duration = Duration::from_millis(50);

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

/// A port that was free a moment ago (the server binds it right after).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), sigil_server::run::RunError>>,
}

pub(crate) async fn start(config: &Config) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let config = config.clone();
    let socket = config.admin_socket.clone();
    let addr = config.bind_address;
    let task = tokio::spawn(async move {
        sigil_server::run::run(&config, async {
            let _ = stopped.await;
        })
        .await
    });
    for _ in 0..POLLS {
        assert!(
            !task.is_finished(),
            "the server stopped early: {:?}",
            task.await
        );
        if socket.exists() && tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Running { stop, task };
        }
        tokio::time::sleep(POLL_PAUSE).await;
    }
    panic!("the server did not start");
}

impl Running {
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the server did not stop")
            .unwrap()
            .unwrap();
    }
}

pub(crate) async fn admin_channel(socket: &Path) -> Channel {
    let socket = socket.to_owned();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .unwrap()
}

/// The server's own bundle and a new join token, straight from its SQLite datastore (the
/// admin commands for tokens live elsewhere).
async fn bootstrap(dir: &Path, agent: &str) -> (BundleSet, String) {
    let url = format!("sqlite://{}", dir.join("data/datastore.sqlite3").display());
    let store = DataStore::open(&url).await.unwrap();
    let bundle: Bundle = store
        .bundle(&TrustDomain::new("example.org").unwrap())
        .await
        .unwrap()
        .unwrap();
    let token = "a-test-token-0123456789abcdef".to_owned();
    store
        .create_join_token(&JoinToken {
            token: Zeroizing::new(token.clone()),
            expires_at: i64::try_from(
                (SystemTime::now() + Duration::from_secs(600))
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs(),
            )
            .unwrap(),
            spiffe_id: Some(id(agent)),
        })
        .await
        .unwrap();
    store.close().await;
    ([bundle].into_iter().collect(), token)
}

async fn attest(addr: SocketAddr, bundles: BundleSet, token: &str) -> X509Svid {
    let channel = connect(
        addr,
        Arc::new(TlsMaterial::without_svid(bundles)),
        id("spiffe://example.org/sigil/server"),
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

async fn snapshot_ids(channel: Channel) -> Vec<String> {
    let mut stream = EntryClient::new(channel)
        .sync_authorized_entries(pb::SyncAuthorizedEntriesRequest {})
        .await
        .unwrap()
        .into_inner();
    let Some(Update::Snapshot(snapshot)) = stream.message().await.unwrap().unwrap().update else {
        panic!("no snapshot");
    };
    snapshot.entries.into_iter().map(|e| e.spiffe_id).collect()
}

#[tokio::test]
async fn agents_attest_sync_and_sign_through_run_and_survive_a_restart() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = format!(
        "trust_domain = \"example.org\"\ndata_dir = \"data\"\n\
         bind_address = \"127.0.0.1:{port}\"\nadmin_socket = \"{}\"\n",
        dir.path().join("run/admin.sock").display()
    );
    let config = Config::parse(&text, dir.path()).unwrap();
    let server = start(&config).await;

    let agent_id = "spiffe://example.org/sigil/agent/join_token/node-a";
    let (bundles, token) = bootstrap(dir.path(), agent_id).await;
    let agent = attest(config.bind_address, bundles.clone(), &token).await;
    assert_eq!(agent.spiffe_id(), &id(agent_id));

    // An entry through the admin socket reaches the agent's sync stream.
    let created = EntryClient::new(admin_channel(&config.admin_socket).await)
        .batch_create_entry(pb::BatchCreateEntryRequest {
            entries: vec![pb::RegistrationEntry {
                spiffe_id: "spiffe://example.org/web".to_owned(),
                parent_id: agent_id.to_owned(),
                selectors: vec![pb::Selector {
                    r#type: "unix".to_owned(),
                    value: "uid:1000".to_owned(),
                }],
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let entry_id = created[0].entry.as_ref().unwrap().id.clone();
    let material = Arc::new(TlsMaterial::new(&agent, bundles.clone()).unwrap());
    let channel = connect(
        config.bind_address,
        material.clone(),
        id("spiffe://example.org/sigil/server"),
    )
    .await
    .unwrap();
    assert_eq!(
        snapshot_ids(channel.clone()).await,
        ["spiffe://example.org/web"]
    );
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let results = SvidClient::new(channel.clone())
        .batch_new_x509svid(pb::BatchNewX509svidRequest {
            params: vec![pb::batch_new_x509svid_request::Params {
                entry_id: entry_id.clone(),
                csr: create_csr(&key, &id("spiffe://example.org/web")).unwrap(),
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results[0].status.as_ref().unwrap().code, 0, "{results:?}");

    // Stop with a sync stream open: the stream ends and the server returns.
    let mut open = EntryClient::new(channel)
        .sync_authorized_entries(pb::SyncAuthorizedEntriesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(open.message().await.unwrap().is_some());
    server.stop().await;
    assert!(open.message().await.is_err());

    // Restarted on the same data: the CA is the same (the agent's bundle still verifies the
    // server) and the agent is still attested (its SVID is accepted, its entry is there).
    let server = start(&config).await;
    let channel = connect(
        config.bind_address,
        material,
        id("spiffe://example.org/sigil/server"),
    )
    .await
    .unwrap();
    assert_eq!(snapshot_ids(channel).await, ["spiffe://example.org/web"]);
    server.stop().await;
}
