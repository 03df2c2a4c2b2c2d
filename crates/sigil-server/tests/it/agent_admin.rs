//! The admin side of the `Agent` service in process, over a real SQLite datastore: listing
//! with filters and pages, show, ban and evict as the rest of the server sees them, join
//! tokens, and bad inputs that change nothing.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sigil_core::{AttestedNode, RegistrationEntry, SelectorSet};
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::agent_client::AgentClient;
use sigil_proto::server::v1::agent_server::Agent;
use sigil_server::agent_api;
use sigil_server::api::{AgentAdminApi, admin_routes};
use sigil_server::datastore::{DataStore, DataStoreError, NodeFilter};
use sigil_server::state::{AgentAuthError, AttestError, ServerState};
use sigil_spiffe::tls::TlsMaterial;
use sigil_spiffe::x509::{X509Svid, create_csr};
use sigil_spiffe::{BundleSet, KeyType, PrivateKey, SpiffeId};
use sqlx::Connection;
use tonic::{Code, Request, Status};

use crate::agent_client::connect;
use crate::support;

const ALICE: &str = "spiffe://example.org/sigil/agent/join_token/alice";
const BOB: &str = "spiffe://example.org/sigil/agent/join_token/bob";
const CAROL: &str = "spiffe://example.org/sigil/agent/x509pop/carol";
const DAVE: &str = "spiffe://example.org/sigil/agent/join_token/dave";
const ERIN: &str = "spiffe://example.org/sigil/agent/x509pop/erin";

struct Fixture {
    api: AgentAdminApi,
    state: Arc<ServerState>,
    fixture: support::TestState,
}

async fn fixture() -> Fixture {
    let fixture = support::state().await;
    Fixture {
        api: AgentAdminApi::new(Arc::clone(&fixture.state)),
        state: Arc::clone(&fixture.state),
        fixture,
    }
}

fn id(value: &str) -> SpiffeId {
    value.parse().unwrap()
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// An attested node as the agent API will record it.
fn node(spiffe_id: &str, attestation_type: &str, serial: &str) -> AttestedNode {
    AttestedNode {
        spiffe_id: id(spiffe_id),
        attestation_type: attestation_type.to_owned(),
        cert_serial: serial.to_owned(),
        cert_not_after: now() + 3600,
        banned: false,
        can_reattest: attestation_type != "join_token",
        selectors: ["region:eu", "host:h1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect::<SelectorSet>(),
        created_at: now(),
    }
}

async fn attest(state: &ServerState, spiffe_id: &str, attestation_type: &str) {
    state
        .record_attestation(node(spiffe_id, attestation_type, "01"))
        .await
        .unwrap();
}

/// A workload entry parented to `agent`.
async fn workload_of(state: &ServerState, agent: &str) {
    let entry = RegistrationEntry {
        id: DataStore::generate_entry_id(),
        spiffe_id: id("spiffe://example.org/web"),
        parent_id: id(agent),
        selectors: ["unix:uid:1000".parse().unwrap()].into_iter().collect(),
        x509_svid_ttl: None,
        jwt_svid_ttl: None,
        dns_names: Vec::new(),
        federates_with: Vec::new(),
        admin: false,
        downstream: false,
        hint: String::new(),
        expires_at: None,
        revision: 0,
        created_at: now(),
    };
    state.create_entry(&entry).await.unwrap();
}

async fn list(api: &AgentAdminApi, request: pb::ListAgentsRequest) -> pb::ListAgentsResponse {
    api.list_agents(Request::new(request))
        .await
        .unwrap()
        .into_inner()
}

fn ids(agents: &[pb::AttestedAgent]) -> Vec<&str> {
    agents.iter().map(|a| a.spiffe_id.as_str()).collect()
}

async fn get(api: &AgentAdminApi, spiffe_id: &str) -> Result<pb::AttestedAgent, Status> {
    api.get_agent(Request::new(pb::GetAgentRequest {
        spiffe_id: spiffe_id.to_owned(),
    }))
    .await
    .map(tonic::Response::into_inner)
}

async fn ban(api: &AgentAdminApi, spiffe_id: &str) -> Result<(), Status> {
    api.ban_agent(Request::new(pb::BanAgentRequest {
        spiffe_id: spiffe_id.to_owned(),
    }))
    .await
    .map(|_| ())
}

async fn evict(api: &AgentAdminApi, spiffe_id: &str) -> Result<(), Status> {
    api.delete_agent(Request::new(pb::DeleteAgentRequest {
        spiffe_id: spiffe_id.to_owned(),
    }))
    .await
    .map(|_| ())
}

async fn token(api: &AgentAdminApi, ttl: i64, agent_id: &str) -> Result<pb::JoinToken, Status> {
    api.create_join_token(Request::new(pb::CreateJoinTokenRequest {
        ttl,
        agent_id: agent_id.to_owned(),
    }))
    .await
    .map(tonic::Response::into_inner)
}

/// How many join tokens the datastore holds, read with a connection of its own.
async fn token_count(f: &Fixture) -> i64 {
    sqlx::any::install_default_drivers();
    let url = format!(
        "sqlite://{}",
        f.fixture.dir.path().join("db.sqlite3").display()
    );
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM join_tokens")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    count
}

#[tokio::test]
async fn list_filters_by_ban_and_attestor_and_pages_in_id_order() {
    let f = fixture().await;
    for (agent, kind) in [
        (DAVE, "join_token"),
        (ALICE, "join_token"),
        (ERIN, "x509pop"),
        (BOB, "join_token"),
        (CAROL, "x509pop"),
    ] {
        attest(&f.state, agent, kind).await;
    }
    ban(&f.api, BOB).await.unwrap();

    let all = list(&f.api, pb::ListAgentsRequest::default()).await;
    assert_eq!(ids(&all.agents), [ALICE, BOB, DAVE, CAROL, ERIN]);
    assert!(all.next_page_token.is_empty());
    let alice = &all.agents[0];
    assert_eq!(alice.attestation_type, "join_token");
    assert_eq!(alice.selectors.len(), 2);

    let banned = list(
        &f.api,
        pb::ListAgentsRequest {
            banned: Some(true),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&banned.agents), [BOB]);
    assert!(banned.agents[0].banned);
    let not_banned = list(
        &f.api,
        pb::ListAgentsRequest {
            banned: Some(false),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&not_banned.agents), [ALICE, DAVE, CAROL, ERIN]);
    let x509pop = list(
        &f.api,
        pb::ListAgentsRequest {
            attestation_type: "x509pop".to_owned(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&x509pop.agents), [CAROL, ERIN]);
    let both = list(
        &f.api,
        pb::ListAgentsRequest {
            banned: Some(false),
            attestation_type: "join_token".to_owned(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&both.agents), [ALICE, DAVE]);
    let none = list(
        &f.api,
        pb::ListAgentsRequest {
            attestation_type: "tpm".to_owned(),
            ..Default::default()
        },
    )
    .await;
    assert!(none.agents.is_empty());
    assert!(none.next_page_token.is_empty());

    // Pages of two: every agent once, in order, and no token after the last page.
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut page_token = String::new();
    loop {
        let page = list(
            &f.api,
            pb::ListAgentsRequest {
                page_size: 2,
                page_token,
                ..Default::default()
            },
        )
        .await;
        pages += 1;
        assert!(page.agents.len() <= 2);
        seen.extend(page.agents.into_iter().map(|a| a.spiffe_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, [ALICE, BOB, DAVE, CAROL, ERIN]);

    // Paging applies after the filter; a page exactly as large as what is left ends the list.
    let first = list(
        &f.api,
        pb::ListAgentsRequest {
            banned: Some(false),
            page_size: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&first.agents), [ALICE, DAVE]);
    assert_eq!(first.next_page_token, DAVE);
    let second = list(
        &f.api,
        pb::ListAgentsRequest {
            banned: Some(false),
            page_size: 2,
            page_token: first.next_page_token,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&second.agents), [CAROL, ERIN]);
    assert!(second.next_page_token.is_empty());
}

#[tokio::test]
async fn a_fresh_server_lists_no_agents() {
    let f = fixture().await;
    let all = list(&f.api, pb::ListAgentsRequest::default()).await;
    assert!(all.agents.is_empty());
    assert!(all.next_page_token.is_empty());
}

#[tokio::test]
async fn show_returns_what_the_attestation_recorded() {
    let f = fixture().await;
    let recorded = node(CAROL, "x509pop", "7f3a");
    f.state.record_attestation(recorded.clone()).await.unwrap();
    let shown = get(&f.api, CAROL).await.unwrap();
    assert_eq!(shown.spiffe_id, CAROL);
    assert_eq!(shown.attestation_type, "x509pop");
    assert_eq!(shown.x509_svid_serial, "7f3a");
    assert_eq!(shown.x509_svid_expires_at, recorded.cert_not_after);
    assert_eq!(shown.created_at, recorded.created_at);
    assert!(shown.can_reattest);
    assert!(!shown.banned);
    let mut selectors: Vec<String> = shown
        .selectors
        .iter()
        .map(|s| format!("{}:{}", s.r#type, s.value))
        .collect();
    selectors.sort();
    assert_eq!(selectors, ["host:h1", "region:eu"]);
}

#[tokio::test]
async fn a_banned_agent_is_refused_everywhere_and_others_are_untouched() {
    let f = fixture().await;
    attest(&f.state, ALICE, "join_token").await;
    attest(&f.state, BOB, "join_token").await;
    workload_of(&f.state, ALICE).await;
    workload_of(&f.state, BOB).await;
    assert_eq!(f.state.authorized_entries(&id(ALICE)).len(), 1);
    f.state.authenticate_agent(&id(ALICE), "01").unwrap();

    ban(&f.api, ALICE).await.unwrap();

    assert_eq!(
        f.state.authenticate_agent(&id(ALICE), "01"),
        Err(AgentAuthError::Banned(id(ALICE)))
    );
    assert!(f.state.is_banned(&id(ALICE)));
    assert!(f.state.authorized_entries(&id(ALICE)).is_empty());
    assert!(get(&f.api, ALICE).await.unwrap().banned);
    let again = f
        .state
        .record_attestation(node(ALICE, "join_token", "02"))
        .await;
    assert!(
        matches!(again, Err(AttestError::Banned(ref who)) if who == &id(ALICE)),
        "{again:?}"
    );
    // The refused attestation changed nothing.
    assert_eq!(get(&f.api, ALICE).await.unwrap().x509_svid_serial, "01");
    // Banning twice is no error; the other agent keeps everything.
    ban(&f.api, ALICE).await.unwrap();
    f.state.authenticate_agent(&id(BOB), "01").unwrap();
    assert_eq!(f.state.authorized_entries(&id(BOB)).len(), 1);
    assert!(!get(&f.api, BOB).await.unwrap().banned);
}

#[tokio::test]
async fn an_evicted_agent_is_forgotten_and_may_attest_again() {
    let f = fixture().await;
    attest(&f.state, ALICE, "join_token").await;
    attest(&f.state, BOB, "join_token").await;
    workload_of(&f.state, ALICE).await;

    evict(&f.api, ALICE).await.unwrap();

    let status = get(&f.api, ALICE).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        f.state.authenticate_agent(&id(ALICE), "01"),
        Err(AgentAuthError::Unknown(id(ALICE)))
    );
    assert!(f.state.authorized_entries(&id(ALICE)).is_empty());
    let left = list(&f.api, pb::ListAgentsRequest::default()).await;
    assert_eq!(ids(&left.agents), [BOB]);

    // A new attestation works, with the new certificate only.
    f.state
        .record_attestation(node(ALICE, "join_token", "02"))
        .await
        .unwrap();
    f.state.authenticate_agent(&id(ALICE), "02").unwrap();
    assert!(f.state.authenticate_agent(&id(ALICE), "01").is_err());
    assert_eq!(f.state.authorized_entries(&id(ALICE)).len(), 1);

    // Eviction clears a ban.
    ban(&f.api, ALICE).await.unwrap();
    evict(&f.api, ALICE).await.unwrap();
    assert!(!f.state.is_banned(&id(ALICE)));
    f.state
        .record_attestation(node(ALICE, "join_token", "03"))
        .await
        .unwrap();
    f.state.authenticate_agent(&id(ALICE), "03").unwrap();
}

#[tokio::test]
async fn a_join_token_is_stored_once_with_its_agent_id_and_ttl() {
    let f = fixture().await;

    // No TTL: the default ten minutes; no agent ID: the server picks one under join_token.
    let before = now();
    let default = token(&f.api, 0, "").await.unwrap();
    let after = now();
    assert!(
        (before + 600..=after + 600).contains(&default.expires_at),
        "{}",
        default.expires_at
    );
    let picked = default
        .agent_id
        .strip_prefix("spiffe://example.org/sigil/agent/join_token/")
        .unwrap();
    assert!(!picked.is_empty());
    assert_eq!(default.value.len(), 32);
    assert!(default.value.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!default.agent_id.contains(&default.value));

    // A fixed agent ID and TTL.
    let fixed = token(&f.api, 3600, ALICE).await.unwrap();
    assert_eq!(fixed.agent_id, ALICE);
    assert!((before + 3600..=now() + 3600).contains(&fixed.expires_at));
    assert_ne!(fixed.value, default.value);
    assert_eq!(token_count(&f).await, 2);

    // The datastore gives each token back once, with the agent ID.
    let store = f.state.datastore();
    let taken = store.take_join_token(&fixed.value).await.unwrap();
    assert_eq!(taken.spiffe_id, Some(id(ALICE)));
    assert_eq!(taken.expires_at, fixed.expires_at);
    assert!(matches!(
        store.take_join_token(&fixed.value).await,
        Err(DataStoreError::NotFound { .. })
    ));
    let taken = store.take_join_token(&default.value).await.unwrap();
    assert_eq!(taken.spiffe_id, Some(id(&default.agent_id)));
    assert_eq!(token_count(&f).await, 0);

    // Making a token attests nothing.
    assert!(
        store
            .list_nodes(&NodeFilter::all())
            .await
            .unwrap()
            .is_empty()
    );
}

/// One bad call of the table.
enum Call {
    Get(&'static str),
    Ban(&'static str),
    Evict(&'static str),
    Token(i64, &'static str),
    List(i32, &'static str),
}

#[tokio::test]
async fn bad_inputs_get_a_clear_error_and_change_nothing() {
    let f = fixture().await;
    attest(&f.state, ALICE, "join_token").await;
    workload_of(&f.state, ALICE).await;
    let unknown = "spiffe://example.org/sigil/agent/join_token/nobody";
    let cases = [
        (Call::Get("not an id"), Code::InvalidArgument, "spiffe_id"),
        (Call::Get(""), Code::InvalidArgument, "spiffe_id"),
        (
            Call::Get("spiffe://other.org/sigil/agent/join_token/alice"),
            Code::InvalidArgument,
            "is not an agent ID of trust domain example.org",
        ),
        (
            Call::Get("spiffe://example.org/web"),
            Code::InvalidArgument,
            "spiffe_id: spiffe://example.org/web is not an agent ID",
        ),
        (
            Call::Get(unknown),
            Code::NotFound,
            "agent spiffe://example.org/sigil/agent/join_token/nobody not found",
        ),
        (Call::Ban("spiffe://"), Code::InvalidArgument, "spiffe_id"),
        (
            Call::Ban("spiffe://other.org/sigil/agent/join_token/alice"),
            Code::InvalidArgument,
            "not an agent ID",
        ),
        (Call::Ban(unknown), Code::NotFound, "nobody not found"),
        (
            Call::Evict("spiffe://example.org/sigil/server"),
            Code::InvalidArgument,
            "not an agent ID",
        ),
        (
            Call::Evict("spiffe://example.org/sigil/agent"),
            Code::InvalidArgument,
            "not an agent ID",
        ),
        (Call::Evict(unknown), Code::NotFound, "nobody not found"),
        (
            Call::Token(-1, ""),
            Code::InvalidArgument,
            "ttl cannot be negative",
        ),
        (
            Call::Token(i64::MAX, ""),
            Code::InvalidArgument,
            "ttl must be between 1s and 10 years",
        ),
        (Call::Token(0, "agent"), Code::InvalidArgument, "agent_id"),
        (
            Call::Token(0, "spiffe://other.org/sigil/agent/join_token/x"),
            Code::InvalidArgument,
            "must be an agent ID of this trust domain",
        ),
        (
            Call::Token(0, "spiffe://example.org/web"),
            Code::InvalidArgument,
            "must be an agent ID of this trust domain",
        ),
        (
            Call::List(-1, ""),
            Code::InvalidArgument,
            "page_size cannot be negative",
        ),
        (
            Call::List(0, "not an id"),
            Code::InvalidArgument,
            "page_token",
        ),
    ];
    let nodes_before = f
        .state
        .datastore()
        .list_nodes(&NodeFilter::all())
        .await
        .unwrap();
    for (call, code, message) in cases {
        let (what, status) = match call {
            Call::Get(spiffe_id) => (
                format!("get {spiffe_id:?}"),
                get(&f.api, spiffe_id).await.err(),
            ),
            Call::Ban(spiffe_id) => (
                format!("ban {spiffe_id:?}"),
                ban(&f.api, spiffe_id).await.err(),
            ),
            Call::Evict(spiffe_id) => (
                format!("evict {spiffe_id:?}"),
                evict(&f.api, spiffe_id).await.err(),
            ),
            Call::Token(ttl, agent_id) => (
                format!("token {ttl} {agent_id:?}"),
                token(&f.api, ttl, agent_id).await.err(),
            ),
            Call::List(page_size, page_token) => (
                format!("list {page_size} {page_token:?}"),
                f.api
                    .list_agents(Request::new(pb::ListAgentsRequest {
                        page_size,
                        page_token: page_token.to_owned(),
                        ..Default::default()
                    }))
                    .await
                    .err(),
            ),
        };
        let status = status.unwrap_or_else(|| panic!("{what} succeeded"));
        assert_eq!(status.code(), code, "{what}: {}", status.message());
        assert!(
            status.message().contains(message),
            "{what}: {:?} does not say {message:?}",
            status.message()
        );
        // Nothing changed: the same agents, no token, the agent still served.
        assert_eq!(
            f.state
                .datastore()
                .list_nodes(&NodeFilter::all())
                .await
                .unwrap(),
            nodes_before,
            "{what}"
        );
        assert_eq!(token_count(&f).await, 0, "{what}");
        f.state.authenticate_agent(&id(ALICE), "01").unwrap();
        assert_eq!(f.state.authorized_entries(&id(ALICE)).len(), 1, "{what}");
    }
}

/// Serves `admin_routes` on a loopback TCP port (the same routes the admin socket serves) and
/// returns a client of the `Agent` service.
async fn served_client(state: &Arc<ServerState>) -> AgentClient<tonic::transport::Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let routes = admin_routes(state);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    AgentClient::connect(format!("http://{address}"))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_admin_routes_serve_the_agent_service_without_its_agent_only_calls() {
    let f = fixture().await;
    attest(&f.state, ALICE, "join_token").await;
    let mut client = served_client(&f.state).await;

    let listed = client
        .list_agents(pb::ListAgentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&listed.agents), [ALICE]);

    let request = pb::AttestAgentRequest {
        step: Some(pb::attest_agent_request::Step::Params(
            pb::attest_agent_request::Params {
                data: Some(pb::AttestationData {
                    r#type: "join_token".to_owned(),
                    payload: b"secret".to_vec(),
                }),
                csr: vec![0x30],
            },
        )),
    };
    let status = client
        .attest_agent(tokio_stream::iter([request]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(
        status
            .message()
            .contains("AttestAgent is served on the agent API"),
        "{}",
        status.message()
    );
    let status = client
        .renew_agent(pb::RenewAgentRequest { csr: vec![0x30] })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(
        status
            .message()
            .contains("RenewAgent is served on the agent API"),
        "{}",
        status.message()
    );
    // Neither call recorded anything.
    assert_eq!(
        ids(&client
            .list_agents(pb::ListAgentsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .agents),
        [ALICE]
    );
}

/// Attests over the real agent API (TCP, TLS without a client SVID) with `token`.
async fn attest_over_tls(
    state: &ServerState,
    addr: std::net::SocketAddr,
    token: &str,
) -> Result<X509Svid, Status> {
    let bundles: BundleSet = [state.own_bundle()].into_iter().collect();
    let material = Arc::new(TlsMaterial::without_svid(bundles));
    let channel = connect(addr, material, state.server_id().clone())
        .await
        .unwrap();
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let request = pb::AttestAgentRequest {
        step: Some(pb::attest_agent_request::Step::Params(
            pb::attest_agent_request::Params {
                data: Some(pb::AttestationData {
                    r#type: "join_token".to_owned(),
                    payload: token.as_bytes().to_vec(),
                }),
                csr: create_csr(&key, &id("spiffe://example.org/ignored")).unwrap(),
            },
        )),
    };
    let mut responses = AgentClient::new(channel)
        .attest_agent(tokio_stream::iter([request]))
        .await?
        .into_inner();
    match responses.message().await?.and_then(|r| r.step) {
        Some(pb::attest_agent_response::Step::Result(result)) => {
            let chain = result.svid.unwrap().cert_chain;
            Ok(X509Svid::new(chain.into_iter().map(Into::into).collect(), key).unwrap())
        }
        other => panic!("unexpected attestation answer {other:?}"),
    }
}

#[tokio::test]
async fn admin_tokens_attest_on_the_agent_api_and_admin_bans_cut_the_agent_off() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let f = fixture().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = Arc::clone(&f.state);
    let served = tokio::spawn(async move {
        agent_api::serve(serving, listener, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });

    // A token made by the admin API attests once, as the agent ID it names.
    let made = token(&f.api, 0, ALICE).await.unwrap();
    let svid = attest_over_tls(&f.state, addr, &made.value).await.unwrap();
    assert_eq!(svid.spiffe_id(), &id(ALICE));
    let spent = attest_over_tls(&f.state, addr, &made.value)
        .await
        .unwrap_err();
    assert_eq!(spent.code(), Code::PermissionDenied);

    // The admin API shows the agent with the certificate it got.
    let shown = get(&f.api, ALICE).await.unwrap();
    assert_eq!(shown.attestation_type, "join_token");
    assert_eq!(
        Some(shown.x509_svid_serial.clone()),
        agent_api::serial_hex(svid.leaf())
    );
    assert!(!shown.can_reattest);

    // Banned through the admin API: renewal is refused; evicted: a new token attests again.
    ban(&f.api, ALICE).await.unwrap();
    let bundles: BundleSet = [f.state.own_bundle()].into_iter().collect();
    let material = Arc::new(TlsMaterial::new(&svid, bundles).unwrap());
    let channel = connect(addr, material, f.state.server_id().clone())
        .await
        .unwrap();
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let refused = AgentClient::new(channel)
        .renew_agent(pb::RenewAgentRequest {
            csr: create_csr(&key, &id(ALICE)).unwrap(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    evict(&f.api, ALICE).await.unwrap();
    let again = token(&f.api, 0, ALICE).await.unwrap();
    let svid = attest_over_tls(&f.state, addr, &again.value).await.unwrap();
    assert_eq!(svid.spiffe_id(), &id(ALICE));
    assert!(!get(&f.api, ALICE).await.unwrap().banned);

    f.state.hub().close();
    let _ = stop.send(());
    served.await.unwrap();
}
