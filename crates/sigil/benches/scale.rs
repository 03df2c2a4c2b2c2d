//! Scale: one `sigil server run` (SQLite) with 1,000,000 entries and 10,000 simulated agents,
//! each attested with its own join token and holding its own open sync stream, as real agents
//! do.
//!
//! The load generator is this process. Each simulated agent attests through the real agent's
//! `attest` (a fresh key, a CSR, `AttestAgent` with a join token) from its own loopback source
//! address (127.1.x.y: the server rate-limits attestation per address, as it would see 10,000
//! nodes), then opens `SyncAuthorizedEntries` over mutual TLS with the SVID it got and keeps
//! reading it. Agent 0 has 10,000 entries; the other entries are spread over the other agents.
//!
//! Figures: `BatchCreateEntry` throughput (500 per call); all agents attested and synced; the
//! server's RSS and open file descriptors with every stream open; the largest sync message; a
//! full sync of the 10,000-entry agent; an entry change → the delta on its agent's stream with
//! every stream open, and how many streams received something (exactly the one affected); the
//! server's CPU per change; a restart with all entries (until the admin API answers), and the
//! resync of every agent after it.
//!
//! Run: `cargo bench -p sigil --bench scale` (about 10 minutes and 3 GB here). Sizes:
//! `SCALE_ENTRIES`, `SCALE_AGENTS`, `SCALE_BIG_AGENT` (entries of agent 0). Without `--bench`
//! (as `cargo test --all-targets` runs it) it uses 2,000 entries and 20 agents, to prove it
//! works. It never asserts on timing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use common::{ChildGuard, cpu_time, free_port, load_average, report, status_kib, unix_channel};
use prost::Message;
use sigil_agent::config::{NodeAttestor, TokenSource};
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::sync_authorized_entries_response::Update;
use sigil_spiffe::tls::{TlsMaterial, client_config};
use sigil_spiffe::{Authorizer, Bundle, BundleSet, KeyType, SpiffeId, TrustDomain, X509Svid};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint, Uri};

/// Entries per `BatchCreateEntry` call.
const BATCH: usize = 500;
/// Changes timed with every stream open.
const CHANGES: usize = 50;

struct Sizes {
    entries: usize,
    agents: usize,
    big: usize,
}

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let full = std::env::args().any(|a| a == "--bench");
    let size = |var: &str, bench: usize, test: usize| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if full { bench } else { test })
    };
    let sizes = Sizes {
        entries: size("SCALE_ENTRIES", 1_000_000, 2_000),
        agents: size("SCALE_AGENTS", 10_000, 20),
        big: size("SCALE_BIG_AGENT", 10_000, 100),
    };
    assert!(sizes.agents >= 2 && sizes.big < sizes.entries);
    println!(
        "scale bench: {} entries, {} agents (agent 0 with {}), load average at start: {}",
        sizes.entries,
        sizes.agents,
        sizes.big,
        load_average()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(&sizes));
    println!("load average at end: {}", load_average());
}

fn agent_id(n: usize) -> String {
    format!("spiffe://example.org/sigil/agent/scale/{n}")
}

/// The loopback address agent `n` connects from: 127.1.0.0 onwards, one per agent.
fn source(n: usize) -> Ipv4Addr {
    let [_, a, b, c] = u32::try_from(n).unwrap().to_be_bytes();
    Ipv4Addr::new(127, 1 + a, b, c)
}

struct Server {
    child: ChildGuard,
    admin_socket: PathBuf,
    address: SocketAddr,
}

fn spawn_server(dir: &Path, port: u16) -> Server {
    let admin_socket = dir.join("run/admin.sock");
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "trust_domain = \"example.org\"\ndata_dir = \"data\"\n\
             bind_address = \"127.0.0.1:{port}\"\nadmin_socket = \"{}\"\n",
            admin_socket.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let child: Child = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["server", "run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Server {
        child: ChildGuard(child),
        admin_socket,
        address: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

/// Waits until the admin API answers; returns how long that took from `since`.
async fn admin_ready(server: &Server, since: Instant) -> (Channel, Duration) {
    let deadline = since + Duration::from_secs(600);
    loop {
        if let Ok(channel) = unix_channel(server.admin_socket.clone()).await
            && pb::bundle_client::BundleClient::new(channel.clone())
                .get_bundle(pb::GetBundleRequest {})
                .await
                .is_ok()
        {
            return (channel, since.elapsed());
        }
        assert!(Instant::now() < deadline, "the server never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run(sizes: &Sizes) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let started = Instant::now();
    let mut server = spawn_server(dir.path(), port);
    let (admin, _) = admin_ready(&server, started).await;
    let trust_domain = TrustDomain::new("example.org").unwrap();

    // Join tokens with fixed agent IDs, so entries can name their parents first.
    let mut tokens = Vec::with_capacity(sizes.agents);
    for n in 0..sizes.agents {
        let token = pb::agent_client::AgentClient::new(admin.clone())
            .create_join_token(pb::CreateJoinTokenRequest {
                ttl: 24 * 3600,
                agent_id: agent_id(n),
            })
            .await
            .unwrap()
            .into_inner();
        tokens.push(token.value);
    }

    // The entries: agent 0 gets `big`, the others the rest in turn.
    let begun = Instant::now();
    let mut created = 0;
    while created < sizes.entries {
        let count = BATCH.min(sizes.entries - created);
        let entries = (created..created + count)
            .map(|k| {
                let parent = if k < sizes.big {
                    0
                } else {
                    1 + k % (sizes.agents - 1)
                };
                workload_entry(k, parent)
            })
            .collect();
        let answer = pb::entry_client::EntryClient::new(admin.clone())
            .batch_create_entry(pb::BatchCreateEntryRequest { entries })
            .await
            .unwrap()
            .into_inner();
        assert!(
            answer
                .results
                .iter()
                .all(|r| r.status.as_ref().is_none_or(|s| s.code == 0))
        );
        created += count;
    }
    let took = begun.elapsed();
    println!(
        "{} entries created in {:.1} s ({:.0} entries/s, {BATCH} per BatchCreateEntry)",
        sizes.entries,
        took.as_secs_f64(),
        sizes.entries as f64 / took.as_secs_f64()
    );

    let document = pb::bundle_client::BundleClient::new(admin.clone())
        .get_bundle(pb::GetBundleRequest {})
        .await
        .unwrap()
        .into_inner()
        .document;
    let bundle = Bundle::from_document(trust_domain.clone(), &document).unwrap();
    let bundles: BundleSet = [bundle].into_iter().collect();

    // Attest every agent (64 at a time), from its own source address.
    let begun = Instant::now();
    let permits = Arc::new(Semaphore::new(64));
    let mut attesting = tokio::task::JoinSet::new();
    for (n, token) in tokens.into_iter().enumerate() {
        let permits = Arc::clone(&permits);
        let bundles = bundles.clone();
        let trust_domain = trust_domain.clone();
        let address = server.address;
        attesting.spawn(async move {
            let _permit = permits.acquire().await.unwrap();
            let material = Arc::new(TlsMaterial::without_svid(bundles));
            let channel = agent_channel(address, source(n), material);
            let attestor =
                NodeAttestor::JoinToken(TokenSource::Inline(zeroize::Zeroizing::new(token)));
            let attested =
                sigil_agent::server::attest(channel, &attestor, &trust_domain, KeyType::EcP256)
                    .await
                    .unwrap();
            assert_eq!(attested.svid.spiffe_id().as_str(), agent_id(n));
            (n, attested.svid)
        });
    }
    let mut svids: Vec<Option<X509Svid>> = (0..sizes.agents).map(|_| None).collect();
    while let Some(done) = attesting.join_next().await {
        let (n, svid) = done.unwrap();
        svids[n] = Some(svid);
    }
    let svids: Vec<X509Svid> = svids.into_iter().map(Option::unwrap).collect();
    println!(
        "{} agents attested in {:.1} s",
        sizes.agents,
        begun.elapsed().as_secs_f64()
    );

    // Every agent's sync stream, held open; each reports its snapshot and every delta.
    let streams = Streams::open(&svids, &bundles, server.address, sizes).await;
    let pid = server.child.0.id();
    let memory = status_kib(pid);
    println!(
        "server with {} entries and {} open sync streams: VmRSS {} MiB (peak {} MiB), {} open file descriptors",
        sizes.entries,
        sizes.agents,
        memory.rss / 1024,
        memory.hwm / 1024,
        open_fds(pid)
    );
    println!(
        "largest sync message: {} bytes (gRPC's default limit: 4,194,304)",
        streams.largest.load(Ordering::Relaxed)
    );

    // Full syncs of the 10,000-entry agent on a second stream of its own.
    let mut full_syncs = Vec::new();
    for _ in 0..5 {
        let channel = agent_channel(
            server.address,
            source(0),
            Arc::new(TlsMaterial::new(&svids[0], bundles.clone()).unwrap()),
        );
        let begun = Instant::now();
        let (entries, _) = snapshot(channel).await;
        full_syncs.push(begun.elapsed());
        assert_eq!(entries, sizes.big);
    }
    let total: Duration = full_syncs.iter().sum();
    report(
        &format!("full sync of the agent with {} entries", sizes.big),
        &mut full_syncs,
        total,
    );

    // Entry changes with every stream open: each reaches its own agent, and only it.
    let cpu_before = cpu_time(pid);
    let mut latencies = Vec::new();
    let wall = Instant::now();
    for i in 0..CHANGES {
        let agent = 1 + (i * 7919) % (sizes.agents - 1);
        let received_before = streams.deltas.load(Ordering::Relaxed);
        let begun = Instant::now();
        pb::entry_client::EntryClient::new(admin.clone())
            .batch_create_entry(pb::BatchCreateEntryRequest {
                entries: vec![workload_entry(sizes.entries + i, agent)],
            })
            .await
            .unwrap();
        let got = streams.wait_for_delta(agent).await;
        latencies.push(got.duration_since(begun));
        // Give any stray delta time to arrive before counting.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            streams.deltas.load(Ordering::Relaxed) - received_before,
            1,
            "a change reached a stream other than its agent's"
        );
    }
    let cpu = cpu_time(pid).saturating_sub(cpu_before);
    report(
        &format!(
            "entry created -> delta on its agent's stream, {} streams open",
            sizes.agents
        ),
        &mut latencies,
        wall.elapsed(),
    );
    println!(
        "  each change reached exactly one stream; server CPU {:.2} ms per change (the sleeps \
         between changes included)",
        cpu.as_secs_f64() * 1000.0 / CHANGES as f64
    );

    // A restart with every entry: until the admin API answers, then every agent back.
    drop(streams);
    nix_kill(pid);
    let _ = server.child.0.wait();
    let restarted = Instant::now();
    server = spawn_server(dir.path(), port);
    let (_, start) = admin_ready(&server, restarted).await;
    let memory = status_kib(server.child.0.id());
    println!(
        "server restart with {} entries: admin API answering after {:.2} s, VmRSS {} MiB",
        sizes.entries + CHANGES,
        start.as_secs_f64(),
        memory.rss / 1024
    );
    let begun = Instant::now();
    let streams = Streams::open(&svids, &bundles, server.address, sizes).await;
    println!(
        "all {} agents synced again after the restart in {:.1} s",
        sizes.agents,
        begun.elapsed().as_secs_f64()
    );
    drop(streams);
}

fn workload_entry(k: usize, agent: usize) -> pb::RegistrationEntry {
    pb::RegistrationEntry {
        spiffe_id: format!("spiffe://example.org/workload/{k}"),
        parent_id: agent_id(agent),
        selectors: vec![pb::Selector {
            r#type: "unix".to_owned(),
            value: format!("uid:{}", 10_000 + k % 1000),
        }],
        ..Default::default()
    }
}

/// A channel to the server from `source`, over TLS with `material` (an agent SVID, or none
/// for attestation), checking the server's SPIFFE ID as the agent does.
fn agent_channel(server: SocketAddr, source: Ipv4Addr, material: Arc<TlsMaterial>) -> Channel {
    let server_id: SpiffeId = "spiffe://example.org/sigil/server".parse().unwrap();
    let mut config = client_config(material, Authorizer::exact(server_id)).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    Endpoint::from_static("http://sigil-server")
        .http2_keep_alive_interval(Duration::from_secs(20))
        .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            async move {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::from((source, 0)))?;
                let tcp = socket.connect(server).await?;
                tcp.set_nodelay(true)?;
                let name = rustls::pki_types::ServerName::try_from("sigil-server").unwrap();
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
}

/// Opens a sync stream and reads its snapshot; returns the entries and the largest message.
async fn snapshot(channel: Channel) -> (usize, usize) {
    let mut stream = pb::entry_client::EntryClient::new(channel)
        .sync_authorized_entries(pb::SyncAuthorizedEntriesRequest {})
        .await
        .unwrap()
        .into_inner();
    let (mut entries, mut largest) = (0, 0);
    while let Some(message) = stream.message().await.unwrap() {
        largest = largest.max(message.encoded_len());
        match message.update {
            Some(Update::Snapshot(part)) => {
                entries += part.entries.len();
                if !part.more {
                    return (entries, largest);
                }
            }
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }
    panic!("the stream ended before its snapshot was complete");
}

/// Every simulated agent's open sync stream.
struct Streams {
    tasks: tokio::task::JoinSet<()>,
    /// Delta messages received on any stream.
    deltas: Arc<AtomicU64>,
    largest: Arc<AtomicUsize>,
    /// Agent number and arrival time of each delta.
    arrivals: tokio::sync::Mutex<mpsc::UnboundedReceiver<(usize, Instant)>>,
}

impl Streams {
    /// Opens a stream per agent (64 at a time) and waits until each has its snapshot.
    async fn open(
        svids: &[X509Svid],
        bundles: &BundleSet,
        server: SocketAddr,
        sizes: &Sizes,
    ) -> Self {
        let deltas = Arc::new(AtomicU64::new(0));
        let largest = Arc::new(AtomicUsize::new(0));
        let (arrived, arrivals) = mpsc::unbounded_channel();
        let (synced, mut synced_rx) = mpsc::unbounded_channel::<(usize, usize)>();
        let permits = Arc::new(Semaphore::new(64));
        let mut tasks = tokio::task::JoinSet::new();
        let begun = Instant::now();
        for (n, svid) in svids.iter().enumerate() {
            let material = Arc::new(TlsMaterial::new(svid, bundles.clone()).unwrap());
            let channel = agent_channel(server, source(n), material);
            let (deltas, largest, arrived, synced) = (
                Arc::clone(&deltas),
                Arc::clone(&largest),
                arrived.clone(),
                synced.clone(),
            );
            let permits = Arc::clone(&permits);
            tasks.spawn(async move {
                let permit = permits.acquire_owned().await.unwrap();
                let mut stream = pb::entry_client::EntryClient::new(channel)
                    .sync_authorized_entries(pb::SyncAuthorizedEntriesRequest {})
                    .await
                    .unwrap()
                    .into_inner();
                let mut entries = 0;
                let mut permit = Some(permit);
                while let Ok(Some(message)) = stream.message().await {
                    largest.fetch_max(message.encoded_len(), Ordering::Relaxed);
                    match message.update {
                        Some(Update::Snapshot(part)) => {
                            entries += part.entries.len();
                            if !part.more {
                                permit.take();
                                let _ = synced.send((n, entries));
                            }
                        }
                        Some(Update::Delta(_)) => {
                            deltas.fetch_add(1, Ordering::Relaxed);
                            let _ = arrived.send((n, Instant::now()));
                        }
                        None => {}
                    }
                }
            });
        }
        drop(synced);
        let expected = sizes.entries - sizes.big;
        let mut total = 0;
        for _ in 0..svids.len() {
            let (n, entries) = synced_rx.recv().await.expect("a stream ended unsynced");
            if n == 0 {
                assert_eq!(entries, sizes.big);
            } else {
                total += entries;
            }
        }
        assert!(total >= expected, "{total} of {expected} entries synced");
        println!(
            "{} sync streams opened and synced in {:.1} s ({} entries)",
            svids.len(),
            begun.elapsed().as_secs_f64(),
            total + sizes.big
        );
        Self {
            tasks,
            deltas,
            largest,
            arrivals: tokio::sync::Mutex::new(arrivals),
        }
    }

    /// Waits for a delta on `agent`'s stream; returns when it arrived.
    async fn wait_for_delta(&self, agent: usize) -> Instant {
        let mut arrivals = self.arrivals.lock().await;
        loop {
            let (n, at) = tokio::time::timeout(Duration::from_secs(60), arrivals.recv())
                .await
                .expect("no delta within a minute")
                .expect("every stream ended");
            if n == agent {
                return at;
            }
        }
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// SIGTERM: the graceful stop.
fn nix_kill(pid: u32) {
    let _ = Command::new("kill").arg(pid.to_string()).status();
}
