//! The agent's Workload API and SVID cache, measured against a real server and real agents
//! (issue 4):
//! 1. `FetchX509SVID` first-response latency: one client, a new connection per call (what a
//!    workload does) and one kept connection; 100 concurrent clients;
//! 2. cached `FetchJWTSVID` latency on one connection;
//! 3. the resident memory of a `sigil agent run` process holding 1,000 and 10,000 SVIDs;
//! 4. the time from starting `sigil dev` to the first SVID served, fresh and reused data dir;
//! 5. the time from a `BatchCreateEntry` call returning to the new SVID on an open stream,
//!    then again with 10,000 more entries authorized for the agent.
//!
//! The server (`sigil_server::run::run`, SQLite in a temp dir) and the agent measured in 1, 2
//! and 5 (`sigil_agent::run::run`) run in this process, as in `sigil dev`; the agents of 3
//! and 4 are the real binary, so their memory and start-up are their own. The workload is this
//! process (entries select `unix:uid:<own uid>`). The Workload API client is the generated
//! tonic client (the agent's cost without certificate parsing on the client side), plus the
//! `spiffe` crate's client for one figure.
//!
//! Run: `cargo bench -p sigil --bench agent`. Without `--bench` (as `cargo test
//! --all-targets` runs it) every step runs at a tiny size, to prove it works. It never asserts
//! on timing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    ChildGuard, HANG_GUARD, cached_jwt_latency, fetch_first, first_message, free_port,
    load_average, report, status_kib, unix_channel, wait_for_socket, workload_client,
    workload_request,
};

use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::agent_client::AgentClient;
use sigil_proto::server::v1::bundle_client::BundleClient;
use sigil_proto::server::v1::entry_client::EntryClient;
use sigil_proto::workload::{X509svidRequest, X509svidResponse};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;

const TD: &str = "example.org";

/// How big each step is: full under `cargo bench`, tiny as a check.
struct Sizes {
    sequential: usize,
    concurrent_clients: usize,
    calls_per_client: usize,
    jwt: usize,
    entry_to_stream: usize,
    other_entries: usize,
    entry_to_stream_at_scale: usize,
    memory: Vec<usize>,
    dev_runs: usize,
}

impl Sizes {
    fn new(full: bool) -> Self {
        if full {
            Self {
                sequential: 2_000,
                concurrent_clients: 100,
                calls_per_client: 30,
                jwt: 5_000,
                entry_to_stream: 200,
                other_entries: 10_000,
                entry_to_stream_at_scale: 50,
                memory: vec![1_000, 10_000],
                dev_runs: 5,
            }
        } else {
            Self {
                sequential: 10,
                concurrent_clients: 4,
                calls_per_client: 2,
                jwt: 10,
                entry_to_stream: 3,
                other_entries: 20,
                entry_to_stream_at_scale: 3,
                memory: vec![20],
                dev_runs: 1,
            }
        }
    }
}

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = Sizes::new(full);
    println!(
        "agent bench ({} mode), load average at start: {}",
        if full { "bench" } else { "test" },
        load_average()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(in_process(&sizes));
    dev_start(&sizes);
    println!("load average at end: {}", load_average());
}

/// Steps 1, 2, 5 (in-process agent) and 3 (agent processes), against one in-process server.
async fn in_process(sizes: &Sizes) {
    let dir = tempfile::tempdir().unwrap();
    let uid = own_uid();
    let (stop, stopped) = watch::channel(false);
    let port = free_port();
    let server_config = sigil_server::config::Config::parse(
        &format!(
            "trust_domain = \"{TD}\"\ndata_dir = \"server\"\n\
             bind_address = \"127.0.0.1:{port}\"\nadmin_socket = \"server/admin.sock\"\n"
        ),
        dir.path(),
    )
    .unwrap();
    let admin_socket = server_config.admin_socket.clone();
    let mut server_stop = stopped.clone();
    let server = tokio::spawn(async move {
        sigil_server::run::run(&server_config, async move {
            let _ = server_stop.wait_for(|stop| *stop).await;
        })
        .await
    });
    wait_for_socket(&admin_socket).await;
    let admin = unix_channel(admin_socket).await.unwrap();
    let bundle = BundleClient::new(admin.clone())
        .get_bundle(pb::GetBundleRequest {})
        .await
        .unwrap()
        .into_inner();
    fs::write(dir.path().join("bootstrap.json"), &bundle.document).unwrap();

    // The in-process agent, with one entry for this process.
    let agent_id = format!("spiffe://{TD}/sigil/agent/bench");
    let token = join_token(&admin, &agent_id).await;
    create_entries(
        &admin,
        &agent_id,
        &[format!("spiffe://{TD}/bench/workload")],
        uid,
    )
    .await;
    let agent_dir = dir.path().join("agent");
    fs::create_dir(&agent_dir).unwrap();
    let agent_config =
        sigil_agent::config::Config::parse(&agent_toml(port, &token, 20_000), &agent_dir).unwrap();
    let socket = agent_config.socket_path.clone();
    let agent = tokio::spawn(sigil_agent::run::run(agent_config, stopped.clone()));
    wait_for_socket(&socket).await;
    let first = fetch_first(&socket).await.unwrap();
    assert_eq!(first.svids.len(), 1, "the workload has its one SVID");

    x509_latency(sizes, &socket).await;
    // Step 2: FetchJWTSVID for one audience, again and again, on one connection.
    cached_jwt_latency(&socket, sizes.jwt).await;
    entry_to_stream(sizes, &admin, &agent_id, &socket, uid).await;
    for &n in &sizes.memory {
        memory(&admin, dir.path(), port, n, uid).await;
    }

    let _ = stop.send(true);
    agent.await.unwrap().unwrap();
    server.await.unwrap().unwrap();
}

/// Step 1: `FetchX509SVID` first message, sequential and concurrent.
async fn x509_latency(sizes: &Sizes, socket: &Path) {
    let n = sizes.sequential;
    // Warm-up: the first calls pay for lazy initialisation on both sides.
    for _ in 0..20 {
        fetch_first(socket).await.unwrap();
    }

    let started = Instant::now();
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let call = Instant::now();
        let response = fetch_first(socket).await.unwrap();
        latencies.push(call.elapsed());
        assert_eq!(response.svids.len(), 1);
    }
    report(
        "FetchX509SVID, 1 client, new connection per call",
        &mut latencies,
        started.elapsed(),
    );

    let mut client = workload_client(socket).await.unwrap();
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let call = Instant::now();
        let response = first_message(&mut client).await.unwrap();
        latencies.push(call.elapsed());
        assert_eq!(response.svids.len(), 1);
    }
    report(
        "FetchX509SVID, 1 client, one kept connection",
        &mut latencies,
        started.elapsed(),
    );

    // The independent client a Rust workload would use: it also parses and checks the
    // certificates and the key.
    let endpoint = format!("unix:{}", socket.display());
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let call = Instant::now();
        let client = spiffe::WorkloadApiClient::connect_to(endpoint.as_str())
            .await
            .unwrap();
        let context = client.fetch_x509_context().await.unwrap();
        latencies.push(call.elapsed());
        assert_eq!(context.svids().len(), 1);
    }
    report(
        "FetchX509SVID through the spiffe crate, new connection per call",
        &mut latencies,
        started.elapsed(),
    );

    for kept in [false, true] {
        let clients = sizes.concurrent_clients;
        let calls = sizes.calls_per_client;
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let socket = socket.to_owned();
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(calls);
                    let mut client = if kept {
                        Some(workload_client(&socket).await.unwrap())
                    } else {
                        None
                    };
                    for _ in 0..calls {
                        let call = Instant::now();
                        let response = match client.as_mut() {
                            Some(client) => first_message(client).await.unwrap(),
                            None => fetch_first(&socket).await.unwrap(),
                        };
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
        let how = if kept {
            "one kept connection each"
        } else {
            "new connection per call"
        };
        report(
            &format!("FetchX509SVID, {clients} concurrent clients, {how}"),
            &mut latencies,
            started.elapsed(),
        );
    }
}

/// Step 5: a `BatchCreateEntry` call returns; how long until the open stream has the SVID.
/// Then again with `other_entries` more entries authorized for the agent (for another uid, so
/// the workload's messages stay small): the agent's work per change grows with what it holds.
async fn entry_to_stream(sizes: &Sizes, admin: &Channel, agent_id: &str, socket: &Path, uid: u32) {
    let mut client = workload_client(socket).await.unwrap();
    let mut stream = client
        .fetch_x509svid(workload_request(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.svids.len(), 1);
    let mut expected = 1;
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(sizes.entry_to_stream);
    for i in 0..sizes.entry_to_stream {
        let spiffe_id = format!("spiffe://{TD}/bench/new/{i}");
        let (latency, svids) =
            new_entry_latency(admin, agent_id, &mut stream, &spiffe_id, uid).await;
        expected += 1;
        assert_eq!(
            svids, expected,
            "the workload sees each of its entries once"
        );
        latencies.push(latency);
    }
    report(
        "BatchCreateEntry returned -> new SVID on an open FetchX509SVID stream",
        &mut latencies,
        started.elapsed(),
    );

    let n = sizes.other_entries;
    let other_uid = uid.wrapping_add(424_242);
    let ids: Vec<String> = (0..n)
        .map(|i| format!("spiffe://{TD}/bench/other/{i}"))
        .collect();
    for chunk in ids.chunks(500) {
        create_entries(admin, agent_id, chunk, other_uid).await;
    }
    // The cache signs every due entry, oldest first, before it publishes a view: once an
    // entry made after all of them is on the stream, all of them are signed.
    let sentinel = format!("spiffe://{TD}/bench/after-others");
    let (filled, svids) = new_entry_latency(admin, agent_id, &mut stream, &sentinel, uid).await;
    expected += 1;
    assert_eq!(
        svids, expected,
        "the other uid's SVIDs are not this workload's"
    );
    println!(
        "  {n} more entries (another uid) for the agent; the next entry's SVID reached the stream {:.1} s after it was registered (everything due is signed first)",
        filled.as_secs_f64()
    );
    let authorized = n + expected;
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(sizes.entry_to_stream_at_scale);
    for i in 0..sizes.entry_to_stream_at_scale {
        let spiffe_id = format!("spiffe://{TD}/bench/new-at-scale/{i}");
        let (latency, svids) =
            new_entry_latency(admin, agent_id, &mut stream, &spiffe_id, uid).await;
        expected += 1;
        assert_eq!(
            svids, expected,
            "the workload sees each of its entries once"
        );
        latencies.push(latency);
    }
    report(
        &format!(
            "BatchCreateEntry returned -> new SVID on an open stream, {authorized}+ entries authorized"
        ),
        &mut latencies,
        started.elapsed(),
    );
}

/// Registers one entry for this process and waits for its SVID on `stream`; returns the
/// time and how many SVIDs that message held.
async fn new_entry_latency(
    admin: &Channel,
    agent_id: &str,
    stream: &mut tonic::Streaming<X509svidResponse>,
    spiffe_id: &str,
    uid: u32,
) -> (Duration, usize) {
    create_entries(admin, agent_id, &[spiffe_id.to_owned()], uid).await;
    let created = Instant::now();
    loop {
        let message = tokio::time::timeout(HANG_GUARD, stream.message())
            .await
            .expect("the new SVID reached the stream")
            .unwrap()
            .unwrap();
        if message.svids.iter().any(|svid| svid.spiffe_id == spiffe_id) {
            return (created.elapsed(), message.svids.len());
        }
    }
}

/// Step 3: a `sigil agent run` process whose cache holds `n` SVIDs.
async fn memory(admin: &Channel, dir: &Path, port: u16, n: usize, uid: u32) {
    let dir = dir.join(format!("memory-{n}"));
    fs::create_dir(&dir).unwrap();
    fs::copy(
        dir.parent().unwrap().join("bootstrap.json"),
        dir.join("bootstrap.json"),
    )
    .unwrap();
    let agent_id = format!("spiffe://{TD}/sigil/agent/memory-{n}");
    let token = join_token(admin, &agent_id).await;
    fs::write(dir.join("agent.toml"), agent_toml(port, &token, n)).unwrap();
    let ids: Vec<String> = (0..n)
        .map(|i| format!("spiffe://{TD}/bench/memory-{n}/{i}"))
        .collect();
    // One entry first: the agent is synced and serving when its SVID arrives.
    create_entries(admin, &agent_id, &ids[..1], uid).await;
    let log = dir.join("agent.log");
    let mut agent = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(["agent", "run", "--config"])
            .arg(dir.join("agent.toml"))
            // One debug line per signed SVID: how this bench knows the cache is full without
            // asking for all of them over the Workload API (which costs memory itself).
            .env("RUST_LOG", "warn,sigil_agent::svids=debug")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let pid = agent.0.id();
    let socket = dir.join("agent/api.sock");
    wait_for_socket(&socket).await;
    let first = fetch_first(&socket).await.unwrap();
    assert_eq!(first.svids.len(), 1);
    let one = status_kib(pid);

    let started = Instant::now();
    for chunk in ids[1..].chunks(500) {
        create_entries(admin, &agent_id, chunk, uid).await;
    }
    let registered = started.elapsed();
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        if let Some(status) = agent.0.try_wait().unwrap() {
            panic!(
                "agent exited ({status}): {}",
                fs::read_to_string(&log).unwrap()
            );
        }
        let signed = fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|line| line.contains("SVID signed"))
            .count();
        if signed >= n {
            break;
        }
        assert!(Instant::now() < deadline, "{signed} of {n} SVIDs signed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let signed_after = started.elapsed();
    // The view is published right after the batch that completes it; give it a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cached = status_kib(pid);

    // Every SVID is there for the workload: one stream message with all of them.
    let mut client = workload_client(&socket).await.unwrap();
    let mut stream = client
        .fetch_x509svid(workload_request(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let mut served = 0;
    let mut message_bytes = 0;
    while served < n {
        let message = tokio::time::timeout(HANG_GUARD, stream.message())
            .await
            .expect("the agent serves every SVID")
            .unwrap()
            .unwrap();
        served = message.svids.len();
        message_bytes = message
            .svids
            .iter()
            .map(|svid| svid.x509_svid.len() + svid.x509_svid_key.len() + svid.bundle.len())
            .sum::<usize>();
    }
    assert_eq!(served, n);
    drop(stream);
    let after_serving = status_kib(pid);
    println!(
        "agent process with {n} SVIDs: entries registered in {:.1} s, all signed after {:.1} s",
        registered.as_secs_f64(),
        signed_after.as_secs_f64()
    );
    println!(
        "  VmRSS with 1 SVID {} KiB; with {n} SVIDs {} KiB: {:.0} bytes per SVID",
        one.rss,
        cached.rss,
        (cached.rss as f64 - one.rss as f64) * 1024.0 / (n - 1).max(1) as f64
    );
    println!(
        "  after serving all {n} in one message ({message_bytes} bytes of certificates, keys and bundles): VmRSS {} KiB, peak (VmHWM) {} KiB",
        after_serving.rss, after_serving.hwm
    );
}

/// Step 4: `sigil dev` from start to the first X.509-SVID served.
fn dev_start(sizes: &Sizes) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut fresh = Vec::new();
    let mut reused = Vec::new();
    for _ in 0..sizes.dev_runs {
        let dir = tempfile::tempdir().unwrap();
        fresh.push(runtime.block_on(dev_once(dir.path())));
        reused.push(runtime.block_on(dev_once(dir.path())));
    }
    for (name, times) in [
        ("fresh data dir", &mut fresh),
        ("reused data dir", &mut reused),
    ] {
        times.sort();
        let list: Vec<String> = times
            .iter()
            .map(|t| format!("{:.0}", t.as_secs_f64() * 1000.0))
            .collect();
        println!(
            "sigil dev start -> first X.509-SVID, {name}: median {:.0} ms (runs, ms: {})",
            times[times.len() / 2].as_secs_f64() * 1000.0,
            list.join(", ")
        );
    }
}

async fn dev_once(dir: &Path) -> Duration {
    let socket = dir.join("agent/api.sock");
    let started = Instant::now();
    let mut dev = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(["dev", "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("dev.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = started + HANG_GUARD;
    let elapsed = loop {
        // The agent answers the first fetch once the caller's SVID is signed.
        if let Ok(response) = fetch_first(&socket).await
            && !response.svids.is_empty()
        {
            break started.elapsed();
        }
        if let Some(status) = dev.0.try_wait().unwrap() {
            panic!(
                "sigil dev exited ({status}): {}",
                fs::read_to_string(dir.join("dev.log")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "sigil dev served no SVID");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let killed = Command::new("kill")
        .args(["-TERM", &dev.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Waited for here without blocking the runtime: the client's connection tasks run on
    // it, and the agent's graceful stop waits for its connections to close.
    let deadline = Instant::now() + HANG_GUARD;
    let status = loop {
        if let Some(status) = dev.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "sigil dev did not stop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(status.success(), "sigil dev stopped with {status}");
    elapsed
}

fn own_uid() -> u32 {
    fs::metadata("/proc/self").unwrap().uid()
}

fn agent_toml(port: u16, token: &str, cache_size: usize) -> String {
    format!(
        "trust_domain = \"{TD}\"\nserver_address = \"127.0.0.1:{port}\"\n\
         data_dir = \"agent\"\ntrust_bundle_path = \"../bootstrap.json\"\n\
         trust_bundle_format = \"spiffe\"\n\
         [node_attestor]\ntype = \"join_token\"\ntoken = \"{token}\"\n\
         [svid]\nx509_cache_size = {cache_size}\n"
    )
}

async fn join_token(admin: &Channel, agent_id: &str) -> String {
    AgentClient::new(admin.clone())
        .create_join_token(pb::CreateJoinTokenRequest {
            ttl: 600,
            agent_id: agent_id.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .value
}

/// Registers one entry per SPIFFE ID, parented to `agent_id`, selecting this process's uid.
async fn create_entries(admin: &Channel, agent_id: &str, spiffe_ids: &[String], uid: u32) {
    let entries = spiffe_ids
        .iter()
        .map(|spiffe_id| pb::RegistrationEntry {
            spiffe_id: spiffe_id.clone(),
            parent_id: agent_id.to_owned(),
            selectors: vec![pb::Selector {
                r#type: "unix".to_owned(),
                value: format!("uid:{uid}"),
            }],
            ..Default::default()
        })
        .collect();
    let created = EntryClient::new(admin.clone())
        .batch_create_entry(pb::BatchCreateEntryRequest { entries })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.results.len(), spiffe_ids.len());
    for result in created.results {
        let code = result.status.as_ref().map_or(0, |s| s.code);
        assert_eq!(code, 0, "{result:?}");
    }
}
