//! Soak: three `sigil server run` processes on one PostgreSQL database, three `sigil agent run`
//! processes each given all three addresses, entries with 30 s X.509-SVIDs, and 1,000 open
//! `FetchX509SVID` streams (the raw tonic client, a third on each agent's socket) for an hour.
//!
//! Every message of every stream is read. A rotation is missed when a stream has not received
//! the new SVID for a SPIFFE ID by 60% of the old one's lifetime (checked every second, and
//! when the new one arrives). Every minute it prints the rotations seen, the misses, and each
//! process's RSS and open file descriptors; at the end it judges: zero missed rotations, every
//! process's RSS over the last 10 minutes within 5% of its RSS at minute 10, no more file
//! descriptors at the end than at most in the first half of the run (see `fds_flat`), no
//! stream ended.
//!
//! Run: `scripts/soak` (`cargo bench -p sigil --bench soak` with `SIGIL_TEST_POSTGRES_URL`;
//! `SOAK_MINUTES`, default 60, and `SOAK_STREAMS`, default 1,000); it exits 1 when a check
//! fails. Not in CI: `cargo test --all-targets` runs it for 45 seconds with 12 streams, to prove
//! it works (rotations must arrive and no stream may end; misses are printed, not asserted,
//! since a loaded CI machine is not what the soak measures).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

#[path = "common/cluster.rs"]
mod cluster;

#[path = "../tests/it/spire_process.rs"]
#[allow(dead_code)]
mod spire_process;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cluster::{exec, start_agent_named, start_servers, with_database};
use common::{
    free_port, load_average, status_kib, unix_channel, workload_client, workload_request,
};
use sigil_proto::server::v1 as pb;
use sigil_proto::workload::X509svidRequest;
use spire_process::Process;
use tokio::time::Instant;
use x509_parser::prelude::FromDer;

const SERVERS: usize = 3;
const AGENTS: usize = 3;
const ENTRIES_PER_AGENT: usize = 5;
const TTL_SECONDS: i64 = 30;
/// A new SVID must have reached the stream by this fraction of the old one's lifetime.
const DEADLINE: f64 = 0.6;

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let full = std::env::args().any(|a| a == "--bench");
    let minutes: f64 = std::env::var("SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 60.0 } else { 0.75 });
    let streams: usize = std::env::var("SOAK_STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1000 } else { 12 });
    let Some(admin) = std::env::var("SIGIL_TEST_POSTGRES_URL")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        println!("soak skipped: SIGIL_TEST_POSTGRES_URL not set");
        return;
    };
    println!(
        "soak: {minutes} minutes, {streams} streams, {TTL_SECONDS} s SVIDs, load average at start: {}",
        load_average()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime.block_on(run(&admin, minutes, streams));
    println!("load average at end: {}", load_average());
    if full {
        if !outcome.passed() {
            std::process::exit(1);
        }
    } else {
        assert!(outcome.rotations > 0, "no rotation reached any stream");
        assert_eq!(outcome.ended, 0, "a stream ended");
    }
}

/// The current SVID of one SPIFFE ID on one stream.
struct Current {
    serial: Vec<u8>,
    deadline: SystemTime,
    late: bool,
}

#[derive(Default)]
struct Tracker {
    current: HashMap<(usize, String), Current>,
    rotations: u64,
    missed: u64,
    ended: u64,
}

impl Tracker {
    fn message(&mut self, stream: usize, svids: &[sigil_proto::workload::X509svid]) {
        let now = SystemTime::now();
        for svid in svids {
            let (serial, deadline) = leaf_times(&svid.x509_svid);
            let key = (stream, svid.spiffe_id.clone());
            match self.current.get(&key) {
                Some(old) if old.serial == serial => continue,
                Some(old) => {
                    self.rotations += 1;
                    if now > old.deadline && !old.late {
                        self.missed += 1;
                    }
                }
                None => {}
            }
            self.current.insert(
                key,
                Current {
                    serial,
                    deadline,
                    late: false,
                },
            );
        }
    }

    /// Counts every SVID whose replacement is overdue (once per SVID).
    fn check(&mut self) {
        let now = SystemTime::now();
        for current in self.current.values_mut() {
            if now > current.deadline && !current.late {
                current.late = true;
                self.missed += 1;
            }
        }
    }
}

/// The leaf's serial number and the instant by which its successor must have arrived.
fn leaf_times(chain: &[u8]) -> (Vec<u8>, SystemTime) {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(chain).unwrap();
    let validity = cert.validity();
    let at = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap());
    let not_before = at(validity.not_before.timestamp());
    let not_after = at(validity.not_after.timestamp());
    let life = not_after.duration_since(not_before).unwrap();
    (
        cert.raw_serial().to_vec(),
        not_before + life.mul_f64(DEADLINE),
    )
}

struct Outcome {
    rotations: u64,
    missed: u64,
    ended: u64,
    rss_flat: Option<bool>,
    fds_flat: Option<bool>,
}

impl Outcome {
    fn passed(&self) -> bool {
        self.missed == 0
            && self.ended == 0
            && self.rss_flat != Some(false)
            && self.fds_flat != Some(false)
    }
}

/// One minute's readings of every process: (RSS KiB, open fds).
type Sample = Vec<(u64, usize)>;

async fn run(admin: &str, minutes: f64, streams: usize) -> Outcome {
    let name = format!("sigil_soak_{}", std::process::id());
    exec(admin, &format!("CREATE DATABASE {name}")).await;
    let url = with_database(admin, &name);
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..SERVERS).map(|_| free_port()).collect();
    let servers = start_servers(dir.path(), &url, &ports).await;
    let mut agents: Vec<(Process, PathBuf)> = Vec::new();
    let admin_channel = unix_channel(servers[0].admin_socket.clone()).await.unwrap();
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    for a in 0..AGENTS {
        let (agent, agent_id) = start_agent_named(
            dir.path(),
            &format!("agent-{a}"),
            &servers[a % SERVERS],
            &ports,
            "warn",
        )
        .await;
        let entries = (0..ENTRIES_PER_AGENT)
            .map(|e| pb::RegistrationEntry {
                spiffe_id: format!("spiffe://example.org/soak/agent-{a}/{e}"),
                parent_id: agent_id.clone(),
                selectors: vec![pb::Selector {
                    r#type: "unix".to_owned(),
                    value: format!("uid:{uid}"),
                }],
                x509_svid_ttl: TTL_SECONDS,
                ..Default::default()
            })
            .collect();
        pb::entry_client::EntryClient::new(admin_channel.clone())
            .batch_create_entry(pb::BatchCreateEntryRequest { entries })
            .await
            .unwrap();
        agents.push(agent);
    }

    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let mut tasks = tokio::task::JoinSet::new();
    for stream in 0..streams {
        let socket = agents[stream % AGENTS].1.clone();
        let tracker = Arc::clone(&tracker);
        tasks.spawn(async move {
            let mut messages = open_stream(&socket).await;
            loop {
                match messages.message().await {
                    Ok(Some(message)) => lock(&tracker).message(stream, &message.svids),
                    _ => {
                        lock(&tracker).ended += 1;
                        return;
                    }
                }
            }
        });
    }

    let pids: Vec<(String, u32)> = servers
        .iter()
        .enumerate()
        .map(|(n, s)| (format!("server-{n}"), s.process.pid()))
        .chain(
            agents
                .iter()
                .enumerate()
                .map(|(n, (p, _))| (format!("agent-{n}"), p.pid())),
        )
        .collect();
    let names: Vec<&str> = pids.iter().map(|(name, _)| name.as_str()).collect();
    println!(
        "minute | rotations | missed | RSS MiB ({}) | fds",
        names.join(", ")
    );
    let begun = Instant::now();
    let end = begun + Duration::from_secs_f64(minutes * 60.0);
    let mut samples: Vec<Sample> = Vec::new();
    let mut next_sample = begun + Duration::from_secs(60);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        lock(&tracker).check();
        if Instant::now() >= next_sample || Instant::now() >= end {
            next_sample += Duration::from_secs(60);
            let sample: Sample = pids
                .iter()
                .map(|(_, pid)| (status_kib(*pid).rss, open_fds(*pid)))
                .collect();
            let (rotations, missed) = {
                let t = lock(&tracker);
                (t.rotations, t.missed)
            };
            println!(
                "{:6.1} | {:9} | {:6} | {} | {}",
                begun.elapsed().as_secs_f64() / 60.0,
                rotations,
                missed,
                sample
                    .iter()
                    .map(|(rss, _)| format!("{:.1}", *rss as f64 / 1024.0))
                    .collect::<Vec<_>>()
                    .join(" "),
                sample
                    .iter()
                    .map(|(_, fds)| fds.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            samples.push(sample);
        }
    }
    tasks.abort_all();
    let (rotations, missed, ended) = {
        let t = lock(&tracker);
        (t.rotations, t.missed, t.ended)
    };
    let outcome = Outcome {
        rotations,
        missed,
        ended,
        rss_flat: rss_flat(&samples),
        fds_flat: fds_flat(&samples),
    };
    println!(
        "soak: {} rotations over {} streams, {} missed, {} streams ended; RSS flat: {}; fds flat: {}; {}",
        outcome.rotations,
        streams,
        outcome.missed,
        outcome.ended,
        verdict(outcome.rss_flat),
        verdict(outcome.fds_flat),
        if outcome.passed() { "PASSED" } else { "FAILED" }
    );
    drop(agents);
    drop(servers);
    exec(admin, &format!("DROP DATABASE IF EXISTS {name}")).await;
    outcome
}

/// Whether every process's RSS over the last 10 samples stays within 5% of its RSS at sample
/// 10; `None` when the run is too short to tell.
fn rss_flat(samples: &[Sample]) -> Option<bool> {
    if samples.len() < 20 {
        return None;
    }
    let base = &samples[9];
    Some(samples[samples.len() - 10..].iter().all(|sample| {
        sample
            .iter()
            .zip(base)
            .all(|((now, _), (then, _))| (*now as f64 - *then as f64).abs() <= *then as f64 * 0.05)
    }))
}

/// Whether no process ends with more open file descriptors than it ever had in the first half
/// of the run. Not "than at sample 10": an agent renewing its own SVID (at half its life, 30
/// minutes by default) opens a connection on its new channel while its sync stream stays on
/// the old one, one more descriptor that stays one. A leak keeps growing past that. The step
/// comes at about minute 30, so this fits runs of an hour or more: in a shorter one it falls
/// in the second half and is reported as growth.
fn fds_flat(samples: &[Sample]) -> Option<bool> {
    if samples.len() < 20 {
        return None;
    }
    let first_half = &samples[..samples.len() / 2];
    let last = &samples[samples.len() - 1];
    Some(last.iter().enumerate().all(|(process, (_, fds))| {
        let most = first_half.iter().map(|s| s[process].1).max().unwrap_or(0);
        *fds <= most.max(samples[9][process].1)
    }))
}

fn verdict(flat: Option<bool>) -> &'static str {
    match flat {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "run too short to judge (20 minutes at least)",
    }
}

async fn open_stream(socket: &Path) -> tonic::Streaming<sigil_proto::workload::X509svidResponse> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(mut client) = workload_client(socket).await
            && let Ok(stream) = client
                .fetch_x509svid(workload_request(X509svidRequest {}))
                .await
        {
            return stream.into_inner();
        }
        assert!(
            Instant::now() < deadline,
            "no X.509 stream on {}",
            socket.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

fn lock(tracker: &Mutex<Tracker>) -> std::sync::MutexGuard<'_, Tracker> {
    tracker.lock().unwrap()
}
