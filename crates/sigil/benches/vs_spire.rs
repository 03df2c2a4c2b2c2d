//! Sigil and SPIRE v1.13.3 side by side: the same work against both, in one run, real server
//! and agent processes of each on SQLite, the same raw Workload API client (the generated
//! tonic client) as the workload, this process's uid as the selector. SPIRE runs at its
//! defaults and, for the rows its settings change, at its fastest settings
//! (`spire_process::FAST_SERVER` / `FAST_AGENT`: events-based entry cache polled every 100 ms,
//! agent sync every 200 ms). Both agents get an X.509-SVID cache of 20,000 (SPIRE's
//! `x509_svid_cache_max_size`, Sigil's `x509_cache_size`), so neither leaves SVIDs unsigned.
//!
//! Rows:
//! 1. start to first SVID: server started, ready, a join token and an entry made with the
//!    system's own CLI, agent started, until a workload's `FetchX509SVID` returns its SVID;
//! 2. `FetchX509SVID` first message, a new connection per call, 1 client and 100 concurrent;
//! 3. cached `FetchJWTSVID` on one connection;
//! 4. an entry created (the system's CLI returned) to its SVID on an open stream;
//! 5. an agent's first sync of 10,000 entries until the workload's stream holds every SVID;
//! 6. agent RSS per cached SVID with 1,000 and 10,000 SVIDs;
//! 7. CPU seconds (server and agent) per 1,000 rotations of 30 s SVIDs;
//! 8. server start time and RSS with 100,000 entries.
//!
//! Run: `cargo bench -p sigil --bench vs_spire` (about 30 minutes on 2 cores). Without
//! `--bench` (as `cargo test --all-targets` runs it) every row runs at a tiny size, to prove
//! it works. It never asserts on timing. To run a part: `VS_SPIRE_ROWS=4,7` (row 1 always
//! runs: it starts the deployment) and `VS_SPIRE_SYSTEMS=sigil,spire-default,spire-fast`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

#[path = "../tests/it/spire_process.rs"]
#[allow(dead_code)]
mod spire_process;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{
    HANG_GUARD, cached_jwt_latency, cpu_time, fetch_first, free_port, load_average, report,
    status_kib, wait_for_id, wait_for_socket, workload_client, workload_request,
};
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::entry_client::EntryClient;
use sigil_proto::workload::{X509svidRequest, X509svidResponse};
use spire_process::{FAST_AGENT, FAST_SERVER, Process, SpireAgent, SpireServer};
use tokio::time::Instant;

/// How big each row is: full under `cargo bench`, tiny as a check.
struct Sizes {
    start_runs: usize,
    sequential: usize,
    concurrent_clients: usize,
    calls_per_client: usize,
    jwt: usize,
    entry_to_stream: usize,
    entry_to_stream_spire_default: usize,
    memory: Vec<usize>,
    rotating: usize,
    rotation_window: Duration,
    server_entries: usize,
    /// The rows to run besides row 1 (`VS_SPIRE_ROWS`; all when unset).
    rows: Option<Vec<u8>>,
}

impl Sizes {
    fn new(full: bool) -> Self {
        let rows = std::env::var("VS_SPIRE_ROWS").ok().map(|list| {
            list.split(',')
                .map(|row| {
                    row.trim()
                        .parse()
                        .expect("VS_SPIRE_ROWS: row numbers, 1 to 8")
                })
                .collect()
        });
        Self {
            rows,
            ..Self::sized(full)
        }
    }

    fn runs(&self, row: u8) -> bool {
        self.rows.as_ref().is_none_or(|rows| rows.contains(&row))
    }

    fn sized(full: bool) -> Self {
        if full {
            Self {
                start_runs: 3,
                sequential: 1_000,
                concurrent_clients: 100,
                calls_per_client: 20,
                jwt: 2_000,
                entry_to_stream: 50,
                // Each takes about SPIRE's 5 s cache reload plus its 5 s sync at defaults.
                entry_to_stream_spire_default: 20,
                memory: vec![1_000, 10_000],
                rotating: 1_000,
                rotation_window: Duration::from_secs(90),
                server_entries: 100_000,
                rows: None,
            }
        } else {
            Self {
                start_runs: 1,
                sequential: 5,
                concurrent_clients: 3,
                calls_per_client: 2,
                jwt: 5,
                entry_to_stream: 2,
                entry_to_stream_spire_default: 1,
                memory: vec![10],
                rotating: 5,
                rotation_window: Duration::from_secs(5),
                server_entries: 50,
                rows: None,
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Sigil,
    SpireDefault,
    SpireFast,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Sigil => "Sigil",
            Self::SpireDefault => "SPIRE 1.13.3 defaults",
            Self::SpireFast => "SPIRE 1.13.3 fastest",
        }
    }

    /// Its name in `VS_SPIRE_SYSTEMS`.
    fn key(self) -> &'static str {
        match self {
            Self::Sigil => "sigil",
            Self::SpireDefault => "spire-default",
            Self::SpireFast => "spire-fast",
        }
    }

    fn trust_domain(self) -> &'static str {
        match self {
            Self::Sigil => "example.org",
            _ => "spire.test",
        }
    }

    /// The ID an agent called `name` will have (SPIRE: the join token's alias).
    fn agent_id(self, name: &str) -> String {
        match self {
            Self::Sigil => format!("spiffe://example.org/sigil/agent/{name}"),
            _ => format!("spiffe://spire.test/agent/{name}"),
        }
    }
}

/// The figures of one system, by row name.
#[derive(Default)]
struct Figures(Vec<(String, f64, &'static str)>);

impl Figures {
    fn put(&mut self, row: &str, value: f64, unit: &'static str) {
        self.0.push((row.to_owned(), value, unit));
    }

    fn get(&self, row: &str) -> Option<(f64, &'static str)> {
        self.0
            .iter()
            .find(|(r, _, _)| r == row)
            .map(|(_, v, u)| (*v, *u))
    }
}

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = Sizes::new(full);
    println!(
        "Sigil vs SPIRE ({} mode), load average at start: {}",
        if full { "bench" } else { "test" },
        load_average()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let systems = std::env::var("VS_SPIRE_SYSTEMS")
        .unwrap_or_else(|_| "sigil,spire-default,spire-fast".to_owned());
    let mut results: Vec<(Kind, Figures)> = Vec::new();
    for kind in [Kind::Sigil, Kind::SpireDefault, Kind::SpireFast] {
        let figures = if systems.split(',').any(|s| s.trim() == kind.key()) {
            println!("\n== {}", kind.name());
            runtime.block_on(measure(kind, &sizes))
        } else {
            Figures::default()
        };
        results.push((kind, figures));
    }
    print_table(&results);
    println!("load average at end: {}", load_average());
}

/// Every row for one system. SPIRE's fastest settings change only how fast entries travel,
/// so it runs only the rows about that.
async fn measure(kind: Kind, sizes: &Sizes) -> Figures {
    let mut figures = Figures::default();
    let uid = own_uid();
    let mut starts = Vec::new();
    let mut deployment = None;
    for _ in 0..sizes.start_runs {
        let started = Instant::now();
        let d = tokio::task::block_in_place(|| {
            let d = Deployment::start(kind);
            let agent_id = kind.agent_id("first");
            d.create_entry_cli(&agent_id, &format!("{}/workload", d.td_id()), uid);
            d
        });
        let agent = d.start_agent("first").await;
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            if let Ok(response) = fetch_first(&agent.socket).await
                && !response.svids.is_empty()
            {
                break;
            }
            assert!(Instant::now() < deadline, "no first SVID");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        starts.push(started.elapsed());
        deployment = Some((d, agent));
    }
    starts.sort();
    let start = starts[starts.len() / 2];
    println!(
        "start to first SVID: median {:.0} ms of {:?}",
        start.as_secs_f64() * 1e3,
        starts.iter().map(|s| s.as_millis()).collect::<Vec<_>>()
    );
    figures.put("start to first SVID", start.as_secs_f64() * 1e3, "ms");
    let (mut deployment, agent) = deployment.unwrap();

    if kind != Kind::SpireFast {
        if sizes.runs(2) {
            x509_latency(sizes, &agent.socket, &mut figures).await;
        }
        if sizes.runs(3) {
            jwt_latency(sizes, &agent.socket, &mut figures).await;
        }
    }
    let samples = if kind == Kind::SpireDefault {
        sizes.entry_to_stream_spire_default
    } else {
        sizes.entry_to_stream
    };
    if sizes.runs(4) {
        entry_to_stream(&deployment, &agent, samples, uid, &mut figures).await;
    }
    if kind == Kind::SpireFast {
        return figures;
    }
    drop(agent);
    if sizes.runs(5) || sizes.runs(6) {
        let baseline = one_svid_rss(&deployment, uid).await;
        for &n in &sizes.memory {
            first_sync(&deployment, n, baseline, uid, &mut figures).await;
        }
    }
    if sizes.runs(7) {
        rotations(&deployment, sizes, uid, &mut figures).await;
    }
    if sizes.runs(8) {
        server_at_scale(&mut deployment, sizes.server_entries, &mut figures);
    }
    figures
}

/// A server of one system in a temporary directory.
struct Deployment {
    kind: Kind,
    dir: tempfile::TempDir,
    port: u16,
    server: Server,
}

enum Server {
    Sigil(SigilServer),
    Spire(SpireServer),
}

/// A running `sigil server run`.
struct SigilServer {
    process: Process,
    config: PathBuf,
    admin_socket: PathBuf,
}

impl SigilServer {
    fn start(dir: &Path, port: u16) -> Self {
        let config = dir.join("server.toml");
        let admin_socket = dir.join("run/admin.sock");
        fs::write(
            &config,
            format!(
                "trust_domain = \"example.org\"\ndata_dir = \"data\"\n\
                 bind_address = \"127.0.0.1:{port}\"\nadmin_socket = \"{}\"\n",
                admin_socket.display()
            ),
        )
        .unwrap();
        let mut server = Self {
            process: Self::spawn(&config, dir),
            config,
            admin_socket,
        };
        server.wait_ready();
        server
    }

    fn spawn(config: &Path, dir: &Path) -> Process {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sigil"));
        command
            .args(["server", "run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn");
        Process::spawn(command, dir.join("server.log"))
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + HANG_GUARD;
        while !self.cli(&["healthcheck"]).status.success() {
            self.process.check_running("sigil server");
            assert!(Instant::now() < deadline, "sigil server not ready");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(args)
            .arg("--server-socket")
            .arg(&self.admin_socket)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "sigil {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// A running agent of either system.
struct Agent {
    process: Process,
    socket: PathBuf,
}

impl Deployment {
    fn start(kind: Kind) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let server = match kind {
            Kind::Sigil => Server::Sigil(SigilServer::start(dir.path(), port)),
            Kind::SpireDefault => {
                Server::Spire(SpireServer::start(dir.path(), "spire.test", port, ""))
            }
            Kind::SpireFast => Server::Spire(SpireServer::start(
                dir.path(),
                "spire.test",
                port,
                FAST_SERVER,
            )),
        };
        Self {
            kind,
            dir,
            port,
            server,
        }
    }

    fn td_id(&self) -> String {
        format!("spiffe://{}", self.kind.trust_domain())
    }

    fn server_pid(&self) -> u32 {
        match &self.server {
            Server::Sigil(s) => s.process.pid(),
            Server::Spire(s) => s.process.pid(),
        }
    }

    /// One entry through the system's own CLI, as an operator registers one.
    fn create_entry_cli(&self, parent: &str, spiffe_id: &str, uid: u32) {
        let selector = format!("unix:uid:{uid}");
        match &self.server {
            Server::Sigil(s) => {
                s.ok(&[
                    "entry",
                    "create",
                    "--spiffe-id",
                    spiffe_id,
                    "--parent-id",
                    parent,
                    "--selector",
                    &selector,
                ]);
            }
            Server::Spire(s) => {
                s.ok(&[
                    "entry",
                    "create",
                    "-parentID",
                    parent,
                    "-spiffeID",
                    spiffe_id,
                    "-selector",
                    &selector,
                ]);
            }
        }
    }

    /// Many entries `(spiffe_id, unix uid, x509 TTL seconds or 0 for the default)` in batches:
    /// Sigil's admin `BatchCreateEntry`, SPIRE's `entry create -data` (its `BatchCreateEntry`).
    async fn create_entries(&self, parent: &str, entries: &[(String, u32, u32)]) {
        match &self.server {
            Server::Sigil(s) => {
                let channel = common::unix_channel(s.admin_socket.clone()).await.unwrap();
                for chunk in entries.chunks(1_000) {
                    let batch = chunk
                        .iter()
                        .map(|(spiffe_id, uid, ttl)| pb::RegistrationEntry {
                            spiffe_id: spiffe_id.clone(),
                            parent_id: parent.to_owned(),
                            selectors: vec![pb::Selector {
                                r#type: "unix".to_owned(),
                                value: format!("uid:{uid}"),
                            }],
                            x509_svid_ttl: i64::from(*ttl),
                            ..Default::default()
                        })
                        .collect();
                    let created = EntryClient::new(channel.clone())
                        .batch_create_entry(pb::BatchCreateEntryRequest { entries: batch })
                        .await
                        .unwrap()
                        .into_inner();
                    for result in created.results {
                        let code = result.status.as_ref().map_or(0, |s| s.code);
                        assert_eq!(code, 0, "{result:?}");
                    }
                }
            }
            Server::Spire(s) => {
                let list: Vec<(String, String, u32)> = entries
                    .iter()
                    .map(|(id, uid, ttl)| (id.clone(), format!("unix:uid:{uid}"), *ttl))
                    .collect();
                s.create_entries(self.dir.path(), parent, &list);
            }
        }
    }

    /// Starts an agent called `name` (its own directory, a new join token) and waits for its
    /// Workload API socket.
    async fn start_agent(&self, name: &str) -> Agent {
        let dir = self.dir.path().join(format!("agent-{name}"));
        fs::create_dir_all(&dir).unwrap();
        let agent_id = self.kind.agent_id(name);
        match &self.server {
            Server::Sigil(s) => {
                let token: serde_json::Value = serde_json::from_str(&s.ok(&[
                    "token",
                    "generate",
                    "--spiffe-id",
                    &agent_id,
                    "--output",
                    "json",
                ]))
                .unwrap();
                fs::write(
                    dir.join("bootstrap.pem"),
                    s.ok(&["bundle", "show", "--format", "pem"]),
                )
                .unwrap();
                let config = dir.join("agent.toml");
                fs::write(
                    &config,
                    format!(
                        "trust_domain = \"example.org\"\nserver_address = \"127.0.0.1:{}\"\n\
                         data_dir = \"data\"\nsocket_path = \"api.sock\"\n\
                         trust_bundle_path = \"bootstrap.pem\"\n\
                         [node_attestor]\ntype = \"join_token\"\ntoken = \"{}\"\n\
                         [svid]\nx509_cache_size = 20000\n",
                        self.port,
                        token["token"].as_str().unwrap()
                    ),
                )
                .unwrap();
                let mut command = Command::new(env!("CARGO_BIN_EXE_sigil"));
                command
                    .args(["agent", "run", "--config"])
                    .arg(&config)
                    .env("RUST_LOG", "warn");
                let agent = Agent {
                    process: Process::spawn(command, dir.join("agent.log")),
                    socket: dir.join("api.sock"),
                };
                wait_for_socket(&agent.socket).await;
                agent
            }
            Server::Spire(s) => {
                let extra = format!(
                    "x509_svid_cache_max_size = 20000\n{}",
                    if self.kind == Kind::SpireFast {
                        FAST_AGENT
                    } else {
                        ""
                    }
                );
                let spire =
                    tokio::task::block_in_place(|| SpireAgent::start(&dir, s, &agent_id, &extra));
                Agent {
                    process: spire.process,
                    socket: spire.socket,
                }
            }
        }
    }
}

/// Row 2: `FetchX509SVID` first message with a new connection per call, 1 client, then
/// `concurrent_clients` at once.
async fn x509_latency(sizes: &Sizes, socket: &Path, figures: &mut Figures) {
    for _ in 0..20 {
        fetch_first(socket).await.unwrap();
    }
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(sizes.sequential);
    for _ in 0..sizes.sequential {
        let call = Instant::now();
        let response = fetch_first(socket).await.unwrap();
        latencies.push(call.elapsed());
        assert_eq!(response.svids.len(), 1);
    }
    let p = report(
        "FetchX509SVID, 1 client, new connection per call",
        &mut latencies,
        started.elapsed(),
    );
    figures.put("FetchX509SVID p50, 1 client", p.p50, "µs");
    figures.put("FetchX509SVID p99, 1 client", p.p99, "µs");

    let clients = sizes.concurrent_clients;
    let calls = sizes.calls_per_client;
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let socket = socket.to_owned();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(calls);
                for _ in 0..calls {
                    let call = Instant::now();
                    let response = fetch_first(&socket).await.unwrap();
                    latencies.push(call.elapsed());
                    assert_eq!(response.svids.len(), 1);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(clients * calls);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let p = report(
        &format!("FetchX509SVID, {clients} concurrent clients, new connection per call"),
        &mut latencies,
        started.elapsed(),
    );
    figures.put(
        &format!("FetchX509SVID p50, {clients} clients"),
        p.p50,
        "µs",
    );
    figures.put(
        &format!("FetchX509SVID p99, {clients} clients"),
        p.p99,
        "µs",
    );
}

/// Row 3: `FetchJWTSVID` for one audience, again and again, on one connection.
async fn jwt_latency(sizes: &Sizes, socket: &Path, figures: &mut Figures) {
    let p = cached_jwt_latency(socket, sizes.jwt).await;
    figures.put("cached FetchJWTSVID p50", p.p50, "µs");
}

/// Row 4: an entry made with the system's CLI (timed from the CLI's exit) until its SVID is on
/// an open `FetchX509SVID` stream.
async fn entry_to_stream(
    deployment: &Deployment,
    agent: &Agent,
    samples: usize,
    uid: u32,
    figures: &mut Figures,
) {
    let mut client = workload_client(&agent.socket).await.unwrap();
    let mut stream = client
        .fetch_x509svid(workload_request(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    let parent = deployment.kind.agent_id("first");
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let spiffe_id = format!("{}/new/{i}", deployment.td_id());
        tokio::task::block_in_place(|| deployment.create_entry_cli(&parent, &spiffe_id, uid));
        let created = Instant::now();
        wait_for_id(&mut stream, &spiffe_id).await;
        latencies.push(created.elapsed());
    }
    let p = report(
        "entry created (CLI returned) -> SVID on an open stream",
        &mut latencies,
        started.elapsed(),
    );
    figures.put("entry -> open stream p50", p.p50 / 1e3, "ms");
    figures.put("entry -> open stream p99", p.p99 / 1e3, "ms");
}

/// The RSS of a new agent serving one SVID, settled: the base of the per-SVID figure.
async fn one_svid_rss(deployment: &Deployment, uid: u32) -> u64 {
    let parent = deployment.kind.agent_id("one");
    let id = format!("{}/one", deployment.td_id());
    deployment.create_entries(&parent, &[(id, uid, 0)]).await;
    let agent = deployment.start_agent("one").await;
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        if let Ok(response) = fetch_first(&agent.socket).await
            && !response.svids.is_empty()
        {
            break;
        }
        assert!(Instant::now() < deadline, "no SVID");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    status_kib(agent.process.pid()).rss
}

/// Rows 5 and 6: `n` entries registered for a new agent before it starts; from its start
/// until the workload's stream holds all `n` SVIDs, then its RSS against the first agent's
/// (one SVID).
async fn first_sync(
    deployment: &Deployment,
    n: usize,
    baseline: u64,
    uid: u32,
    figures: &mut Figures,
) {
    let name = format!("sync-{n}");
    let parent = deployment.kind.agent_id(&name);
    let entries: Vec<(String, u32, u32)> = (0..n)
        .map(|i| (format!("{}/{name}/{i}", deployment.td_id()), uid, 0))
        .collect();
    deployment.create_entries(&parent, &entries).await;
    // The clock starts with the agent: entries are all stored by now.
    let started = Instant::now();
    let agent = deployment.start_agent(&name).await;
    let deadline = Instant::now() + HANG_GUARD;
    let mut client = loop {
        if let Ok(client) = workload_client(&agent.socket).await {
            break client;
        }
        assert!(Instant::now() < deadline, "no connection");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // The first answer may come before every entry is synced and signed: read the stream
    // until a message holds all of them (the first SVID of the first agent is not here).
    let mut stream = loop {
        match client
            .fetch_x509svid(workload_request(X509svidRequest {}))
            .await
        {
            Ok(stream) => break stream.into_inner(),
            Err(_) => {
                assert!(Instant::now() < deadline, "no stream");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    loop {
        match tokio::time::timeout(HANG_GUARD, stream.message()).await {
            Ok(Ok(Some(message))) if message.svids.len() >= n => break,
            Ok(Ok(Some(_))) => {}
            // SPIRE ends a stream with PermissionDenied while it has no SVID for the caller.
            Ok(Ok(None) | Err(_)) => {
                assert!(Instant::now() < deadline, "never all {n} SVIDs");
                tokio::time::sleep(Duration::from_millis(5)).await;
                stream = client
                    .fetch_x509svid(workload_request(X509svidRequest {}))
                    .await
                    .map_or_else(|_| stream, tonic::Response::into_inner);
            }
            Err(_) => panic!("never all {n} SVIDs"),
        }
    }
    let synced = started.elapsed();
    drop(stream);
    drop(client);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let memory = status_kib(agent.process.pid());
    let per_svid = (memory.rss as f64 - baseline as f64) * 1024.0 / (n - 1).max(1) as f64;
    println!(
        "agent start with {n} entries -> all {n} SVIDs on the stream: {:.2} s; VmRSS {} KiB (one SVID: {baseline} KiB), {per_svid:.0} bytes per SVID, peak {} KiB",
        synced.as_secs_f64(),
        memory.rss,
        memory.hwm
    );
    figures.put(
        &format!("first sync of {n} entries, all signed"),
        synced.as_secs_f64(),
        "s",
    );
    figures.put(
        &format!("agent RSS per SVID at {n}"),
        per_svid / 1024.0,
        "KiB",
    );
}

/// Row 7: `rotating` entries with 30 s SVIDs on a new agent, watched on one stream; CPU time
/// of the server and the agent over the window, per 1,000 SVIDs that changed on the stream.
async fn rotations(deployment: &Deployment, sizes: &Sizes, uid: u32, figures: &mut Figures) {
    let name = "rotating";
    let parent = deployment.kind.agent_id(name);
    let n = sizes.rotating;
    let entries: Vec<(String, u32, u32)> = (0..n)
        .map(|i| (format!("{}/{name}/{i}", deployment.td_id()), uid, 30))
        .collect();
    deployment.create_entries(&parent, &entries).await;
    let agent = deployment.start_agent(name).await;
    let mut client = workload_client(&agent.socket).await.unwrap();
    // Wait until every SVID is there before the window opens.
    let deadline = Instant::now() + HANG_GUARD;
    let mut stream;
    let mut current: HashMap<String, Vec<u8>> = HashMap::new();
    loop {
        stream = match client
            .fetch_x509svid(workload_request(X509svidRequest {}))
            .await
        {
            Ok(s) => s.into_inner(),
            Err(_) => {
                assert!(Instant::now() < deadline);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let mut complete = false;
        while let Ok(Some(message)) = stream.message().await {
            // The other agents' workloads are the same uid: count only this agent's entries.
            current = rotating_svids(&message, name);
            if current.len() >= n {
                complete = true;
                break;
            }
        }
        if complete {
            break;
        }
        assert!(Instant::now() < deadline, "never all rotating SVIDs");
    }
    let (server_pid, agent_pid) = (deployment.server_pid(), agent.process.pid());
    let (server_before, agent_before) = (cpu_time(server_pid), cpu_time(agent_pid));
    let window_end = Instant::now() + sizes.rotation_window;
    let mut rotated = 0usize;
    let mut messages = 0usize;
    while let Ok(Ok(Some(message))) = tokio::time::timeout_at(window_end, stream.message()).await {
        messages += 1;
        for (id, svid) in rotating_svids(&message, name) {
            if current.get(&id) != Some(&svid) {
                rotated += 1;
                current.insert(id, svid);
            }
        }
    }
    let server_cpu = cpu_time(server_pid) - server_before;
    let agent_cpu = cpu_time(agent_pid) - agent_before;
    let cpu_used = server_cpu + agent_cpu;
    let per_thousand = cpu_used.as_secs_f64() * 1_000.0 / rotated.max(1) as f64;
    println!(
        "{n} SVIDs of 30 s for {:.0} s: {rotated} rotations seen in {messages} stream messages, \
         {:.2} CPU s (server {:.2}, agent {:.2}), {per_thousand:.3} CPU s per 1,000 rotations",
        sizes.rotation_window.as_secs_f64(),
        cpu_used.as_secs_f64(),
        server_cpu.as_secs_f64(),
        agent_cpu.as_secs_f64(),
    );
    figures.put("CPU seconds per 1,000 rotations", per_thousand, "s");
}

/// This agent's rotating SVIDs in a message: SPIFFE ID to certificate bytes.
fn rotating_svids(message: &X509svidResponse, name: &str) -> HashMap<String, Vec<u8>> {
    let marker = format!("/{name}/");
    message
        .svids
        .iter()
        .filter(|svid| svid.spiffe_id.contains(&marker))
        .map(|svid| (svid.spiffe_id.clone(), svid.x509_svid.clone()))
        .collect()
}

/// Row 8: the server restarted with `total` entries stored: time to ready, and RSS.
fn server_at_scale(deployment: &mut Deployment, total: usize, figures: &mut Figures) {
    let runtime = tokio::runtime::Handle::current();
    let parent = deployment.kind.agent_id("nobody");
    // Other uids: no agent runs for them, and the entries already stored count too.
    let entries: Vec<(String, u32, u32)> = (0..total)
        .map(|i| (format!("{}/scale/{i}", deployment.td_id()), 50_000, 0))
        .collect();
    let filled = Instant::now();
    tokio::task::block_in_place(|| runtime.block_on(deployment.create_entries(&parent, &entries)));
    println!(
        "{total} more entries registered in {:.1} s",
        filled.elapsed().as_secs_f64()
    );
    let start = tokio::task::block_in_place(|| match &mut deployment.server {
        Server::Sigil(s) => {
            s.process.terminate();
            let started = Instant::now();
            s.process = SigilServer::spawn(&s.config, deployment.dir.path());
            s.wait_ready();
            started.elapsed()
        }
        Server::Spire(s) => s.restart(),
    });
    std::thread::sleep(Duration::from_secs(2));
    let memory = status_kib(deployment.server_pid());
    println!(
        "server restart with {total}+ entries: ready in {:.2} s, VmRSS {} KiB, peak {} KiB",
        start.as_secs_f64(),
        memory.rss,
        memory.hwm
    );
    figures.put(
        &format!("server start with {total}+ entries"),
        start.as_secs_f64(),
        "s",
    );
    figures.put(
        &format!("server RSS with {total}+ entries"),
        memory.rss as f64 / 1024.0,
        "MiB",
    );
}

/// The side-by-side table: each row's figures and SPIRE's figure over Sigil's.
fn print_table(results: &[(Kind, Figures)]) {
    let sigil = &results[0].1;
    println!(
        "\n| row | Sigil | SPIRE defaults | SPIRE / Sigil | SPIRE fastest | SPIRE fastest / Sigil |"
    );
    println!("|---|---|---|---|---|---|");
    for (row, value, unit) in &sigil.0 {
        let cell = |figures: &Figures| match figures.get(row) {
            Some((v, u)) => (format!("{v:.3} {u}"), format!("{:.1}×", v / value)),
            None => ("—".to_owned(), "—".to_owned()),
        };
        let (default, default_ratio) = cell(&results[1].1);
        let (fast, fast_ratio) = cell(&results[2].1);
        println!(
            "| {row} | {value:.3} {unit} | {default} | {default_ratio} | {fast} | {fast_ratio} |"
        );
    }
}

fn own_uid() -> u32 {
    fs::metadata("/proc/self").unwrap().uid()
}
