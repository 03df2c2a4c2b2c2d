//! The agent API in process over real TCP and mutual TLS: attestation with join tokens,
//! renewal, the sync stream, SVID signing, and every refusal (bans, evictions, other agents'
//! entries, bad input).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_core::{AttestedNode, EntryId, RegistrationEntry, Selector, SelectorSet};
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::agent_client::AgentClient;
use sigil_proto::server::v1::attest_agent_request::{Params, Step};
use sigil_proto::server::v1::attest_agent_response::Step as ResponseStep;
use sigil_proto::server::v1::entry_client::EntryClient;
use sigil_proto::server::v1::peer_client::PeerClient;
use sigil_proto::server::v1::svid_client::SvidClient;
use sigil_proto::server::v1::sync_authorized_entries_response::Update;
use sigil_proto::server::v1::trust_domain_client::TrustDomainClient;
use sigil_server::agent_api::{self, AgentApiOptions};
use sigil_server::notices::PeerEndpoint;
use sigil_server::state::ServerState;
use sigil_spiffe::tls::TlsMaterial;
use sigil_spiffe::x509::{SvidUsage, X509Svid, create_csr, verify_chain};
use sigil_spiffe::{Bundle, BundleSet, JwtSvid, KeyType, PrivateKey, SpiffeId};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use crate::agent_client::connect;
use crate::support;

/// The instance ID the fixture's server gives in its change notices.
const INSTANCE: &str = "0123456789abcdef0123456789abcdef";

fn now() -> rustls::pki_types::UnixTime {
    rustls::pki_types::UnixTime::now()
}

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

struct Fixture {
    state: Arc<ServerState>,
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<()>,
    _fixture: support::TestState,
}

impl Fixture {
    async fn start() -> Self {
        Self::start_with(AgentApiOptions::default()).await
    }

    async fn start_with(options: AgentApiOptions) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let fixture = support::state().await;
        let state = Arc::clone(&fixture.state);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = Arc::clone(&state);
        // Served as `sigil server run` serves it on MySQL: with the change notices for
        // other servers, which end with the rest.
        let (notices_stop, notices_stopped) = tokio::sync::watch::channel(false);
        let peers = PeerEndpoint::new(
            Arc::clone(&state),
            INSTANCE,
            notices_stopped,
            Arc::new(tokio::sync::Notify::new()),
        );
        let served = tokio::spawn(async move {
            let identity = agent_api::ServerIdentity::start(&serving).unwrap();
            agent_api::serve_as(serving, listener, options, &identity, Some(peers), async {
                let _ = stopped.await;
                let _ = notices_stop.send(true);
            })
            .await
            .unwrap();
        });
        Self {
            state,
            addr,
            stop: Some(stop),
            served,
            _fixture: fixture,
        }
    }

    fn bundles(&self) -> BundleSet {
        [self.state.own_bundle()].into_iter().collect()
    }

    /// A channel presenting no SVID (a node that has not attested).
    async fn anonymous(&self) -> Channel {
        let material = Arc::new(TlsMaterial::without_svid(self.bundles()));
        connect(self.addr, material, self.state.server_id().clone())
            .await
            .unwrap()
    }

    /// A channel presenting `svid`.
    async fn as_agent(&self, svid: &X509Svid) -> Channel {
        let material = Arc::new(TlsMaterial::new(svid, self.bundles()).unwrap());
        connect(self.addr, material, self.state.server_id().clone())
            .await
            .unwrap()
    }

    async fn token(&self, agent: Option<&str>) -> String {
        let token = self
            .state
            .create_join_token(Duration::from_secs(600), agent.map(id), SystemTime::now())
            .await
            .unwrap();
        token.token.to_string()
    }

    /// Attests with a join token; returns the agent's SVID.
    async fn attest(
        &self,
        token: &str,
    ) -> Result<(X509Svid, pb::attest_agent_response::Result), Status> {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let csr = create_csr(&key, &id("spiffe://example.org/ignored")).unwrap();
        let result =
            attest_raw(&self.anonymous().await, "join_token", token.as_bytes(), csr).await?;
        let svid = result.svid.clone().unwrap();
        let svid =
            X509Svid::new(svid.cert_chain.into_iter().map(Into::into).collect(), key).unwrap();
        Ok((svid, result))
    }

    /// Attests a new agent with a fresh token; returns its SVID.
    async fn new_agent(&self) -> X509Svid {
        let token = self.token(None).await;
        self.attest(&token).await.unwrap().0
    }

    async fn stop(mut self) {
        self.state.hub().close();
        let _ = self.stop.take().unwrap().send(());
        self.served.await.unwrap();
    }
}

async fn attest_raw(
    channel: &Channel,
    attestor: &str,
    payload: &[u8],
    csr: Vec<u8>,
) -> Result<pb::attest_agent_response::Result, Status> {
    let request = pb::AttestAgentRequest {
        step: Some(Step::Params(Params {
            data: Some(pb::AttestationData {
                r#type: attestor.to_owned(),
                payload: payload.to_vec(),
            }),
            csr,
        })),
    };
    attest_messages(channel, vec![request]).await
}

async fn attest_messages(
    channel: &Channel,
    messages: Vec<pb::AttestAgentRequest>,
) -> Result<pb::attest_agent_response::Result, Status> {
    let mut responses = AgentClient::new(channel.clone())
        .attest_agent(tokio_stream::iter(messages))
        .await?
        .into_inner();
    match responses.message().await?.and_then(|r| r.step) {
        Some(ResponseStep::Result(result)) => Ok(result),
        other => panic!("unexpected attestation answer {other:?}"),
    }
}

fn csr_for(key: &PrivateKey) -> Vec<u8> {
    create_csr(key, &id("spiffe://example.org/whatever")).unwrap()
}

fn workload_entry(spiffe_id: &str, parent: &SpiffeId) -> RegistrationEntry {
    let mut selectors = SelectorSet::default();
    selectors.insert(Selector::new("unix", "uid:1000").unwrap());
    RegistrationEntry {
        id: EntryId::placeholder(),
        spiffe_id: id(spiffe_id),
        parent_id: parent.clone(),
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
    }
}

async fn create_entry(state: &ServerState, mut entry: RegistrationEntry) -> RegistrationEntry {
    entry.id = sigil_server::datastore::DataStore::generate_entry_id();
    entry.validate(state.trust_domain()).unwrap();
    state.create_entry(&entry).await.unwrap()
}

fn assert_denied<T: std::fmt::Debug>(result: Result<T, Status>) {
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "permission denied");
}

/// Opens a sync stream on `channel`.
async fn sync(channel: Channel) -> Result<Streaming<pb::SyncAuthorizedEntriesResponse>, Status> {
    Ok(EntryClient::new(channel)
        .sync_authorized_entries(pb::SyncAuthorizedEntriesRequest {})
        .await?
        .into_inner())
}

async fn next_update(stream: &mut Streaming<pb::SyncAuthorizedEntriesResponse>) -> Update {
    tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("no sync message within 30s")
        .unwrap()
        .unwrap()
        .update
        .unwrap()
}

#[tokio::test]
async fn a_join_token_attests_once_and_the_svid_chains_to_the_bundle() {
    let f = Fixture::start().await;
    let agent_id = "spiffe://example.org/sigil/agent/join_token/node-1";
    let token = f.token(Some(agent_id)).await;
    let (svid, result) = f.attest(&token).await.unwrap();
    assert_eq!(svid.spiffe_id(), &id(agent_id));
    assert!(!result.reattestable);
    let bundle = result.bundle.unwrap();
    assert_eq!(bundle.trust_domain, "example.org");
    let sent = Bundle::from_document(f.state.trust_domain().clone(), &bundle.document).unwrap();
    assert_eq!(
        sent.to_document().unwrap(),
        f.state.own_bundle().to_document().unwrap()
    );
    verify_chain(
        svid.cert_chain(),
        &f.bundles(),
        now(),
        SvidUsage::ClientAuth,
    )
    .unwrap();
    // The `spiffe` crate (written by others) reads it as an X.509-SVID too.
    let parsed =
        spiffe::X509Svid::parse_from_der(&svid.chain_der(), svid.private_key().pkcs8_der())
            .unwrap();
    assert_eq!(parsed.spiffe_id().to_string(), agent_id);

    // The datastore and the index know the agent.
    let node = f
        .state
        .datastore()
        .node(&id(agent_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(node.attestation_type, "join_token");
    assert_eq!(
        node.cert_serial,
        agent_api::serial_hex(svid.leaf()).unwrap()
    );

    // Single use.
    assert_denied(f.attest(&token).await);
    f.stop().await;
}

#[tokio::test]
async fn bad_attestations_are_refused_and_spend_nothing() {
    let f = Fixture::start().await;
    let token = f.token(None).await;
    let channel = f.anonymous().await;
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let good_csr = csr_for(&key);
    let mut tampered = good_csr.clone();
    let last = tampered.len() - 3;
    tampered[last] ^= 1;

    // Malformed requests: the peer's own bug, named; the token is not spent.
    let cases: Vec<(&str, Vec<pb::AttestAgentRequest>, Code, &str)> = vec![
        (
            "no message",
            vec![],
            Code::InvalidArgument,
            "ended before its parameters",
        ),
        (
            "challenge first",
            vec![pb::AttestAgentRequest {
                step: Some(Step::ChallengeResponse(b"x".to_vec())),
            }],
            Code::InvalidArgument,
            "must carry params",
        ),
        (
            "no data",
            vec![pb::AttestAgentRequest {
                step: Some(Step::Params(Params {
                    data: None,
                    csr: good_csr.clone(),
                })),
            }],
            Code::InvalidArgument,
            "params.data",
        ),
    ];
    for (name, messages, code, message) in cases {
        let status = attest_messages(&channel, messages).await.unwrap_err();
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert!(status.message().contains(message), "{name}: {status:?}");
    }
    for (name, csr) in [("empty csr", Vec::new()), ("tampered csr", tampered)] {
        let status = attest_raw(&channel, "join_token", token.as_bytes(), csr)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(
            status.message().starts_with("params.csr"),
            "{name}: {status:?}"
        );
    }

    // Bad evidence: "permission denied", nothing more.
    assert_denied(attest_raw(&channel, "join_token", b"not-a-token", good_csr.clone()).await);
    assert_denied(attest_raw(&channel, "join_token", &[0xff, 0xfe], good_csr.clone()).await);
    assert_denied(attest_raw(&channel, "tpm", token.as_bytes(), good_csr.clone()).await);
    let expired = f
        .state
        .create_join_token(
            Duration::from_secs(1),
            None,
            SystemTime::now() - Duration::from_secs(3600),
        )
        .await
        .unwrap();
    assert_denied(
        attest_raw(
            &channel,
            "join_token",
            expired.token.as_bytes(),
            good_csr.clone(),
        )
        .await,
    );
    assert!(
        f.state
            .datastore()
            .list_nodes(&sigil_server::datastore::NodeFilter::all())
            .await
            .unwrap()
            .is_empty(),
        "a refused attestation recorded an agent"
    );

    // The token survived every refusal above.
    let result = attest_raw(&channel, "join_token", token.as_bytes(), good_csr).await;
    assert!(result.is_ok(), "{result:?}");
    f.stop().await;
}

#[tokio::test]
async fn attestation_is_rate_limited_per_address() {
    // No refill during the test, so the outcome does not depend on how fast it runs.
    let f = Fixture::start_with(AgentApiOptions {
        attest_burst: 3,
        attest_refill_every: Duration::from_secs(24 * 3600),
    })
    .await;
    let channel = f.anonymous().await;
    let csr = csr_for(&PrivateKey::generate(KeyType::EcP256).unwrap());
    for _ in 0..3 {
        assert_denied(attest_raw(&channel, "join_token", b"wrong", csr.clone()).await);
    }
    let token = f.token(None).await;
    let status = attest_raw(&channel, "join_token", token.as_bytes(), csr)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    f.stop().await;
}

#[tokio::test]
async fn calls_without_an_attested_agent_svid_are_denied() {
    let f = Fixture::start().await;
    let anonymous = f.anonymous().await;
    let csr = csr_for(&PrivateKey::generate(KeyType::EcP256).unwrap());
    assert_denied(
        AgentClient::new(anonymous.clone())
            .renew_agent(pb::RenewAgentRequest { csr: csr.clone() })
            .await,
    );
    assert_denied(sync(anonymous.clone()).await);
    assert_denied(
        SvidClient::new(anonymous.clone())
            .batch_new_x509svid(pb::BatchNewX509svidRequest { params: vec![] })
            .await,
    );

    // An SVID of our trust domain that is not an attested agent's: a workload's, or an
    // agent ID that never attested.
    let ca_signed = |spiffe_id: &str| {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let issued = f
            .state
            .ca()
            .sign_x509_svid(
                &csr_for(&key),
                id(spiffe_id),
                vec![],
                Duration::from_secs(600),
                SystemTime::now(),
            )
            .unwrap();
        X509Svid::new(issued.into_cert_chain(), key).unwrap()
    };
    for spiffe_id in [
        "spiffe://example.org/workload",
        "spiffe://example.org/sigil/agent/join_token/never-attested",
    ] {
        let channel = f.as_agent(&ca_signed(spiffe_id)).await;
        assert_denied(sync(channel).await);
    }

    // Administrative calls are not served here at all.
    let agent = f.new_agent().await;
    let channel = f.as_agent(&agent).await;
    let status = AgentClient::new(channel.clone())
        .create_join_token(pb::CreateJoinTokenRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = EntryClient::new(channel.clone())
        .list_entries(pb::ListEntriesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let mut trust_domain = TrustDomainClient::new(channel);
    let status = trust_domain
        .list_federation_relationships(pb::ListFederationRelationshipsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = trust_domain
        .batch_create_federation_relationship(pb::BatchCreateFederationRelationshipRequest {
            relationships: vec![pb::FederationRelationship {
                trust_domain: "b.test".into(),
                bundle_endpoint_url: "https://b.test/".into(),
                profile: "https_web".into(),
                ..Default::default()
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        f.state
            .datastore()
            .list_federation_relationships()
            .await
            .unwrap()
            .is_empty()
    );
    f.stop().await;
}

#[tokio::test]
async fn sync_sends_a_snapshot_then_only_this_agents_changes() {
    let f = Fixture::start().await;
    let agent = f.new_agent().await;
    let other = f.new_agent().await;
    let mine = create_entry(
        &f.state,
        workload_entry("spiffe://example.org/web", agent.spiffe_id()),
    )
    .await;
    let theirs = create_entry(
        &f.state,
        workload_entry("spiffe://example.org/db", other.spiffe_id()),
    )
    .await;

    let mut stream = sync(f.as_agent(&agent).await).await.unwrap();
    let Update::Snapshot(snapshot) = next_update(&mut stream).await else {
        panic!("the first message is not a snapshot");
    };
    assert!(!snapshot.more);
    let ids: Vec<&str> = snapshot.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [mine.id.as_str()], "only the agent's own entry");
    assert_eq!(snapshot.bundles.len(), 1);
    assert_eq!(snapshot.bundles[0].trust_domain, "example.org");

    // A change for the other agent first, then one for ours: the first message that
    // arrives is ours (the other agent's change never reaches this stream).
    create_entry(
        &f.state,
        workload_entry("spiffe://example.org/db2", other.spiffe_id()),
    )
    .await;
    let added = create_entry(
        &f.state,
        workload_entry("spiffe://example.org/api", agent.spiffe_id()),
    )
    .await;
    let Update::Delta(delta) = next_update(&mut stream).await else {
        panic!("expected a delta");
    };
    let upserted: Vec<&str> = delta.upserted.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(upserted, [added.id.as_str()]);
    assert!(delta.deleted_ids.is_empty());

    // An update and a delete.
    let mut changed = mine.clone();
    changed.hint = "blue".to_owned();
    f.state.update_entry(changed).await.unwrap();
    let Update::Delta(delta) = next_update(&mut stream).await else {
        panic!("expected a delta");
    };
    assert_eq!(delta.upserted.len(), 1);
    assert_eq!(delta.upserted[0].hint, "blue");
    assert_eq!(delta.upserted[0].revision, 2);
    f.state.delete_entry(&added.id).await.unwrap();
    let Update::Delta(delta) = next_update(&mut stream).await else {
        panic!("expected a delta");
    };
    assert_eq!(delta.deleted_ids, [added.id.to_string()]);
    assert!(delta.upserted.is_empty());

    let _ = theirs;
    f.stop().await;
}

#[tokio::test]
async fn a_snapshot_of_many_entries_is_split_into_parts() {
    let f = Fixture::start().await;
    let agent = f.new_agent().await;
    let count = agent_api::ENTRIES_PER_MESSAGE + 7;
    for i in 0..count {
        create_entry(
            &f.state,
            workload_entry(&format!("spiffe://example.org/w{i}"), agent.spiffe_id()),
        )
        .await;
    }
    let mut stream = sync(f.as_agent(&agent).await).await.unwrap();
    let mut received = 0;
    let mut parts = 0;
    loop {
        let Update::Snapshot(part) = next_update(&mut stream).await else {
            panic!("expected snapshot parts");
        };
        parts += 1;
        assert!(part.entries.len() <= agent_api::ENTRIES_PER_MESSAGE);
        assert_eq!(
            part.bundles.is_empty(),
            parts > 1,
            "bundles travel in the first part"
        );
        received += part.entries.len();
        if !part.more {
            break;
        }
    }
    assert_eq!((received, parts), (count, 2));
    f.stop().await;
}

#[tokio::test]
async fn svids_are_signed_for_authorized_entries_only() {
    let f = Fixture::start().await;
    let agent = f.new_agent().await;
    let other = f.new_agent().await;
    let mut web = workload_entry("spiffe://example.org/web", agent.spiffe_id());
    web.dns_names = vec!["web.example.org".to_owned()];
    web.x509_svid_ttl = Some(Duration::from_secs(600));
    web.jwt_svid_ttl = Some(Duration::from_secs(120));
    let web = create_entry(&f.state, web).await;
    let theirs = create_entry(
        &f.state,
        workload_entry("spiffe://example.org/db", other.spiffe_id()),
    )
    .await;
    let mut expired = workload_entry("spiffe://example.org/old", agent.spiffe_id());
    expired.expires_at = Some(1);
    let expired = create_entry(&f.state, expired).await;

    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    // The CSR asks for another ID: only its key counts.
    let csr = create_csr(&key, &id("spiffe://example.org/admin")).unwrap();
    let mut tampered = csr.clone();
    let last = tampered.len() - 3;
    tampered[last] ^= 1;
    let mut svid_client = SvidClient::new(f.as_agent(&agent).await);
    let params = |entry_id: &str, csr: &[u8]| pb::batch_new_x509svid_request::Params {
        entry_id: entry_id.to_owned(),
        csr: csr.to_vec(),
    };
    let results = svid_client
        .batch_new_x509svid(pb::BatchNewX509svidRequest {
            params: vec![
                params(web.id.as_str(), &csr),
                params(theirs.id.as_str(), &csr),
                params("no-such-entry", &csr),
                params(web.id.as_str(), &tampered),
                params(expired.id.as_str(), &csr),
                params("bad id with spaces", &csr),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let codes: Vec<i32> = results
        .iter()
        .map(|r| r.status.as_ref().unwrap().code)
        .collect();
    assert_eq!(
        codes,
        [
            Code::Ok as i32,
            Code::PermissionDenied as i32,
            Code::PermissionDenied as i32,
            Code::InvalidArgument as i32,
            Code::FailedPrecondition as i32,
            Code::InvalidArgument as i32,
        ],
        "{results:?}"
    );
    // Another agent's entry and a missing one read the same.
    for result in &results[1..3] {
        let message = &result.status.as_ref().unwrap().message;
        assert!(
            message.ends_with("is not authorized for this agent"),
            "{message}"
        );
        assert!(result.svid.is_none());
    }

    let issued = results[0].svid.clone().unwrap();
    assert_eq!(issued.spiffe_id, "spiffe://example.org/web");
    let svid = X509Svid::new(issued.cert_chain.into_iter().map(Into::into).collect(), key).unwrap();
    verify_chain(
        svid.cert_chain(),
        &f.bundles(),
        now(),
        SvidUsage::ServerAuth,
    )
    .unwrap();
    let lifetime = svid.not_after().duration_since(SystemTime::now()).unwrap();
    assert!(
        lifetime <= Duration::from_secs(600),
        "entry TTL honoured: {lifetime:?}"
    );
    let parsed =
        spiffe::X509Svid::parse_from_der(&svid.chain_der(), svid.private_key().pkcs8_der())
            .unwrap();
    assert_eq!(parsed.spiffe_id().to_string(), "spiffe://example.org/web");
    let (_, leaf) = x509_parser::parse_x509_certificate(svid.leaf()).unwrap();
    let dns: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(dns, ["web.example.org"]);

    // JWT-SVIDs: the entry's TTL, validated against our bundle.
    let jwt = svid_client
        .new_jwtsvid(pb::NewJwtsvidRequest {
            entry_id: web.id.to_string(),
            audience: vec!["db".to_owned()],
        })
        .await
        .unwrap()
        .into_inner();
    let token =
        JwtSvid::parse_and_validate(&jwt.token, &f.bundles(), &["db"], SystemTime::now()).unwrap();
    assert_eq!(token.spiffe_id(), &id("spiffe://example.org/web"));
    assert!(jwt.expires_at - jwt.issued_at <= 120);
    let status = svid_client
        .new_jwtsvid(pb::NewJwtsvidRequest {
            entry_id: theirs.id.to_string(),
            audience: vec!["db".to_owned()],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = svid_client
        .new_jwtsvid(pb::NewJwtsvidRequest {
            entry_id: web.id.to_string(),
            audience: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // Too large a batch is refused whole.
    let status = svid_client
        .batch_new_x509svid(pb::BatchNewX509svidRequest {
            params: vec![params(web.id.as_str(), &csr); agent_api::MAX_BATCH + 1],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    f.stop().await;
}

#[tokio::test]
async fn renewal_replaces_the_certificate_and_retires_the_old_one_once_used() {
    let f = Fixture::start().await;
    let old = f.new_agent().await;
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let renewed = AgentClient::new(f.as_agent(&old).await)
        .renew_agent(pb::RenewAgentRequest { csr: csr_for(&key) })
        .await
        .unwrap()
        .into_inner()
        .svid
        .unwrap();
    let new = X509Svid::new(
        renewed.cert_chain.into_iter().map(Into::into).collect(),
        key,
    )
    .unwrap();
    assert_eq!(new.spiffe_id(), old.spiffe_id());
    assert_ne!(
        agent_api::serial_hex(new.leaf()),
        agent_api::serial_hex(old.leaf())
    );
    let node = f
        .state
        .datastore()
        .node(old.spiffe_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(node.cert_serial), agent_api::serial_hex(new.leaf()));

    // Until the new certificate is used, the old one still works (the answer may have
    // been lost); once it is, the old one is refused.
    assert!(sync(f.as_agent(&old).await).await.is_ok());
    assert!(sync(f.as_agent(&new).await).await.is_ok());
    assert_denied(sync(f.as_agent(&old).await).await);
    f.stop().await;
}

#[tokio::test]
async fn a_banned_agent_loses_its_stream_and_cannot_renew_or_attest_again() {
    let f = Fixture::start().await;
    let agent_id = "spiffe://example.org/sigil/agent/join_token/banned";
    let token = f.token(Some(agent_id)).await;
    let (agent, _) = f.attest(&token).await.unwrap();
    create_entry(
        &f.state,
        workload_entry("spiffe://example.org/web", agent.spiffe_id()),
    )
    .await;
    let channel = f.as_agent(&agent).await;
    let mut stream = sync(channel.clone()).await.unwrap();
    assert!(matches!(
        next_update(&mut stream).await,
        Update::Snapshot(_)
    ));

    f.state.ban_agent(&id(agent_id)).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .unwrap();
    assert_denied(ended);
    assert_denied(
        AgentClient::new(channel.clone())
            .renew_agent(pb::RenewAgentRequest {
                csr: csr_for(&PrivateKey::generate(KeyType::EcP256).unwrap()),
            })
            .await,
    );
    // A new token for the same ID does not bring it back (and is spent: the ID is only
    // known once the token is taken).
    let again = f.token(Some(agent_id)).await;
    assert_denied(f.attest(&again).await);
    assert!(f.state.is_banned(&id(agent_id)));

    // Evicting clears the ban: a new token attests.
    f.state.evict_agent(&id(agent_id)).await.unwrap();
    let third = f.token(Some(agent_id)).await;
    assert!(f.attest(&third).await.is_ok());
    f.stop().await;
}

#[tokio::test]
async fn an_evicted_agent_must_attest_again() {
    let f = Fixture::start().await;
    let agent = f.new_agent().await;
    let channel = f.as_agent(&agent).await;
    let mut stream = sync(channel.clone()).await.unwrap();
    assert!(matches!(
        next_update(&mut stream).await,
        Update::Snapshot(_)
    ));
    f.state.evict_agent(agent.spiffe_id()).await.unwrap();
    assert_denied(
        tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .unwrap(),
    );
    assert_denied(
        SvidClient::new(channel)
            .batch_new_x509svid(pb::BatchNewX509svidRequest { params: vec![] })
            .await,
    );
    assert!(
        f.state
            .datastore()
            .node(agent.spiffe_id())
            .await
            .unwrap()
            .is_none()
    );
    f.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let f = Fixture::start().await;
    let agent = f.new_agent().await;
    let mut stream = sync(f.as_agent(&agent).await).await.unwrap();
    assert!(matches!(
        next_update(&mut stream).await,
        Update::Snapshot(_)
    ));
    let state = Arc::clone(&f.state);
    // stop() returns only once the server has; with a stream open it would hang otherwise.
    tokio::time::timeout(Duration::from_secs(60), f.stop())
        .await
        .expect("the server did not stop with a sync stream open");
    let ended = stream.message().await.unwrap_err();
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    drop(state);
}

#[tokio::test]
async fn node_alias_entries_reach_agents_by_their_node_selectors() {
    let f = Fixture::start().await;
    // An agent recorded with node selectors (what a selector-producing attestor yields).
    let agent = f.new_agent().await;
    let mut selectors = SelectorSet::default();
    selectors.insert(Selector::new("k8s_psat", "cluster:prod").unwrap());
    let node = f
        .state
        .datastore()
        .node(agent.spiffe_id())
        .await
        .unwrap()
        .unwrap();
    f.state
        .record_attestation(AttestedNode { selectors, ..node })
        .await
        .unwrap();
    let mut alias = workload_entry("spiffe://example.org/cluster/prod", f.state.server_id());
    alias.selectors = SelectorSet::default();
    alias
        .selectors
        .insert(Selector::new("k8s_psat", "cluster:prod").unwrap());
    let alias = create_entry(&f.state, alias).await;
    let child = create_entry(
        &f.state,
        workload_entry("spiffe://example.org/payments", &alias.spiffe_id),
    )
    .await;

    let mut stream = sync(f.as_agent(&agent).await).await.unwrap();
    let Update::Snapshot(snapshot) = next_update(&mut stream).await else {
        panic!("expected a snapshot");
    };
    let ids: Vec<&str> = snapshot.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [child.id.as_str()]);
    f.stop().await;
}

/// The bundle of a fresh CA of another trust domain.
fn foreign_bundle(name: &str) -> Bundle {
    let (ca, _) = sigil_server::ca::CertificateAuthority::start(
        sigil_server::ca::CaSettings {
            trust_domain: sigil_spiffe::TrustDomain::new(name).unwrap(),
            key_type: KeyType::EcP256,
            ttl: Duration::from_secs(3600),
        },
        Arc::new(sigil_server::ca::MemoryKeyManager::new()),
        None,
        None,
        SystemTime::now(),
    )
    .unwrap();
    ca.bundle()
}

#[tokio::test]
async fn federated_bundles_follow_the_entries_that_need_them() {
    let f = Fixture::start().await;
    let agent = f.new_agent().await;
    let other = f.new_agent().await;
    f.state
        .set_federated_bundle(foreign_bundle("partner.org"))
        .await
        .unwrap();
    let mut stream = sync(f.as_agent(&agent).await).await.unwrap();
    let Update::Snapshot(snapshot) = next_update(&mut stream).await else {
        panic!("expected a snapshot");
    };
    let names: Vec<&str> = snapshot
        .bundles
        .iter()
        .map(|b| b.trust_domain.as_str())
        .collect();
    assert_eq!(names, ["example.org"], "no entry needs partner.org yet");

    // An entry federating with partner.org brings its bundle along; another agent's such
    // entry does not reach this stream.
    let mut theirs = workload_entry("spiffe://example.org/db", other.spiffe_id());
    theirs.federates_with = vec!["partner.org".parse().unwrap()];
    create_entry(&f.state, theirs).await;
    let mut mine = workload_entry("spiffe://example.org/web", agent.spiffe_id());
    mine.federates_with = vec!["partner.org".parse().unwrap()];
    let mine = create_entry(&f.state, mine).await;
    let Update::Delta(delta) = next_update(&mut stream).await else {
        panic!("expected a delta");
    };
    assert_eq!(delta.upserted.len(), 1);
    let names: Vec<&str> = delta
        .bundles
        .iter()
        .map(|b| b.trust_domain.as_str())
        .collect();
    assert_eq!(names, ["partner.org"]);

    // A new partner bundle is pushed; deleting the entry drops the trust domain.
    f.state
        .set_federated_bundle(foreign_bundle("partner.org"))
        .await
        .unwrap();
    let Update::Delta(delta) = next_update(&mut stream).await else {
        panic!("expected a delta");
    };
    assert!(delta.upserted.is_empty());
    assert_eq!(delta.bundles.len(), 1);
    assert_eq!(delta.bundles[0].trust_domain, "partner.org");

    // While a second entry still needs partner.org, deleting the first keeps its bundle.
    let mut second = workload_entry("spiffe://example.org/api", agent.spiffe_id());
    second.federates_with = vec!["partner.org".parse().unwrap()];
    let second = create_entry(&f.state, second).await;
    let Update::Delta(delta) = next_update(&mut stream).await else {
        panic!("expected a delta");
    };
    assert_eq!(delta.upserted.len(), 1);
    assert!(delta.bundles.is_empty(), "partner.org was sent already");
    f.state.delete_entry(&mine.id).await.unwrap();
    let Update::Delta(delta) = next_update(&mut stream).await else {
        panic!("expected a delta");
    };
    assert_eq!(delta.deleted_ids, [mine.id.to_string()]);
    assert!(delta.dropped_trust_domains.is_empty());
    f.state.delete_entry(&second.id).await.unwrap();
    let Update::Delta(delta) = next_update(&mut stream).await else {
        panic!("expected a delta");
    };
    assert_eq!(delta.deleted_ids, [second.id.to_string()]);
    assert_eq!(delta.dropped_trust_domains, ["partner.org"]);
    f.stop().await;
}

#[tokio::test]
async fn a_prepared_ca_reaches_every_agent_before_it_signs() {
    let f = Fixture::start().await;
    let agent = f.new_agent().await;
    let mut stream = sync(f.as_agent(&agent).await).await.unwrap();
    let Update::Snapshot(snapshot) = next_update(&mut stream).await else {
        panic!("expected a snapshot");
    };
    let before = Bundle::from_document(
        f.state.trust_domain().clone(),
        &snapshot.bundles[0].document,
    )
    .unwrap();
    // Past half the CA's 24 h life: the next CA is prepared and enters the bundle.
    let rotation = f
        .state
        .rotate_ca(SystemTime::now() + Duration::from_secs(13 * 3600))
        .unwrap();
    assert!(rotation.bundle_changed);
    let Update::Delta(delta) = next_update(&mut stream).await else {
        panic!("expected a delta");
    };
    assert_eq!(delta.bundles.len(), 1);
    let after =
        Bundle::from_document(f.state.trust_domain().clone(), &delta.bundles[0].document).unwrap();
    assert_eq!(
        after.x509().authorities().len(),
        before.x509().authorities().len() + 1
    );
    assert!(after.sequence() > before.sequence());
    f.stop().await;
}

/// An SVID with the server's own SPIFFE ID, as another server of the trust domain has one.
fn server_svid(state: &ServerState) -> X509Svid {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let csr = create_csr(&key, state.server_id()).unwrap();
    let issued = state
        .ca()
        .sign_x509_svid(
            &csr,
            state.server_id().clone(),
            Vec::new(),
            Duration::from_secs(600),
            SystemTime::now(),
        )
        .unwrap();
    X509Svid::new(issued.into_cert_chain(), key).unwrap()
}

async fn watch_changes(channel: Channel) -> Result<Streaming<pb::ChangeNotice>, Status> {
    PeerClient::new(channel)
        .watch_changes(pb::WatchChangesRequest {
            instance_id: "caller".into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The next notice, or a failure after far longer than a notice takes (a hung stream must
/// fail the test, not hang it).
async fn next_notice(stream: &mut Streaming<pb::ChangeNotice>) -> pb::ChangeNotice {
    tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("a notice within 30 s")
        .unwrap()
        .expect("the stream is open")
}

#[tokio::test]
async fn change_notices_go_to_other_servers_only() {
    let f = Fixture::start().await;
    let refused = watch_changes(f.anonymous().await).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let agent = f.new_agent().await;
    let refused = watch_changes(f.as_agent(&agent).await).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(
        refused.message(),
        "permission denied",
        "nothing more is said"
    );
}

#[tokio::test]
async fn another_server_hears_of_each_commit() {
    let f = Fixture::start().await;
    let channel = f.as_agent(&server_svid(&f.state)).await;
    let mut notices = watch_changes(channel).await.unwrap();
    // At once: who answers (the caller checks it reached the instance it meant).
    assert_eq!(next_notice(&mut notices).await.instance_id, INSTANCE);
    // Each commit after it: a notice (a join token is a write like any other).
    for _ in 0..3 {
        f.token(None).await;
        assert_eq!(next_notice(&mut notices).await.instance_id, INSTANCE);
    }
    // The server stopping ends the stream, rather than holding its shutdown.
    tokio::time::timeout(Duration::from_secs(30), f.stop())
        .await
        .expect("the server stops with a notice stream open");
    let ended = tokio::time::timeout(Duration::from_secs(30), notices.message())
        .await
        .expect("the stream ends with the server");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
}
