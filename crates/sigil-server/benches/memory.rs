//! Server memory with 100,000 entries and 10,000 attested agents (issue 3): the resident set
//! size of a process before and after `ServerState::load` over a SQLite datastore holding
//! them, the load time, and the memory of the `EntryIndex` alone.
//!
//! The datastore is filled first, through the `DataStore` API (one transaction per row, as
//! the server writes them), and the fill time is reported. Each measurement then runs in a
//! fresh child process (this binary run again with `SIGIL_MEMORY_BENCH_PHASE` set), so that
//! what the fill allocated does not blur the figures.
//!
//! The mix: every agent has 2 or 3 node selectors (cluster, node name, half of them a node
//! pool); one node alias per 100 agents matches a cluster; 90% of the entries are parented to
//! agents, 9.8% to node aliases, 0.1% are nested (parented to another entry's SPIFFE ID).
//!
//! Run: `cargo bench -p sigil-server --bench memory`. Under `cargo test --benches` (no
//! `--bench` argument) it runs with 50 agents and 500 entries, as a check.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

use sigil_core::{AttestedNode, RegistrationEntry, SelectorSet};
use sigil_server::ca::{CaSettings, CertificateAuthority, MemoryKeyManager};
use sigil_server::datastore::DataStore;
use sigil_server::index::EntryIndex;
use sigil_server::state::{ServerState, StateSettings};
use sigil_spiffe::{KeyType, SpiffeId, TrustDomain};

const PHASE: &str = "SIGIL_MEMORY_BENCH_PHASE";
const DB: &str = "SIGIL_MEMORY_BENCH_DB";
const FULL: &str = "SIGIL_MEMORY_BENCH_FULL";

/// The population measured.
#[derive(Clone, Copy, Debug)]
struct Scale {
    agents: usize,
    entries: usize,
}

impl Scale {
    fn new(full: bool) -> Self {
        if full {
            Self {
                agents: 10_000,
                entries: 100_000,
            }
        } else {
            Self {
                agents: 50,
                entries: 500,
            }
        }
    }

    /// One node alias per 100 agents, at least one.
    fn aliases(self) -> usize {
        (self.agents / 100).max(1)
    }

    fn nested(self) -> usize {
        (self.entries / 1000).max(1)
    }

    fn under_aliases(self) -> usize {
        self.entries * 98 / 1000
    }

    fn under_agents(self) -> usize {
        self.entries - self.aliases() - self.nested() - self.under_aliases()
    }
}

fn main() {
    let phase = std::env::var(PHASE).ok();
    let full = match phase {
        None => std::env::args().any(|a| a == "--bench"),
        Some(_) => std::env::var(FULL).is_ok_and(|v| v == "1"),
    };
    let scale = Scale::new(full);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match phase.as_deref() {
        None => runtime.block_on(orchestrate(scale, full)),
        Some("load") => {
            let db = std::env::var(DB).expect("database path");
            runtime.block_on(phase_load(scale, &db));
        }
        Some("index") => phase_index(scale),
        Some(other) => panic!("unknown {PHASE} {other:?}"),
    }
}

/// Fills the datastore, then runs each measurement in a child process and prints them.
async fn orchestrate(scale: Scale, full: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("sigil.sqlite3");
    let db = db.to_str().expect("UTF-8 temp path").to_owned();
    let store = DataStore::open(&format!("sqlite://{db}"))
        .await
        .expect("datastore");
    let started = Instant::now();
    // In one spawned task: the runtime's worker runs the whole fill without hand-offs.
    let filled = tokio::spawn(fill(store.clone(), scale)).await;
    let fill_time = started.elapsed();
    if let Err(error) = filled {
        std::panic::resume_unwind(error.into_panic());
    }
    store.close().await;
    let db_bytes = file_size(&db) + file_size(&format!("{db}-wal"));

    let load = child("load", full, &db);
    let index = child("index", full, &db);
    let kib = |map: &HashMap<String, f64>, key: &str| map.get(key).copied().unwrap_or(f64::NAN);
    let mib = |k: f64| k / 1024.0;
    assert_eq!(load.get("entries").copied(), Some(scale.entries as f64));
    assert_eq!(index.get("entries").copied(), Some(scale.entries as f64));

    let rows = scale.agents + scale.entries;
    println!(
        "server memory: {} attested agents, {} entries ({} node aliases, {} under aliases, \
         {} under agents, {} nested)",
        scale.agents,
        scale.entries,
        scale.aliases(),
        scale.under_aliases(),
        scale.under_agents(),
        scale.nested()
    );
    println!(
        "fill through the DataStore API: {rows} rows in {:.1} s ({:.0} rows/s); SQLite file {:.1} MiB",
        fill_time.as_secs_f64(),
        rows as f64 / fill_time.as_secs_f64(),
        db_bytes as f64 / (1024.0 * 1024.0)
    );
    println!("ServerState::load: {:.2} s", kib(&load, "load_ms") / 1000.0);
    println!("{:<42} {:>10} {:>10}", "process (MiB)", "VmRSS", "VmHWM");
    println!(
        "{:<42} {:>10.1} {:>10.1}",
        "before load (runtime, datastore, CA)",
        mib(kib(&load, "rss_before")),
        mib(kib(&load, "hwm_before"))
    );
    println!(
        "{:<42} {:>10.1} {:>10.1}",
        "after ServerState::load",
        mib(kib(&load, "rss_after")),
        mib(kib(&load, "hwm_after"))
    );
    let state_delta = kib(&load, "rss_after") - kib(&load, "rss_before");
    println!(
        "{:<42} {:>10.1} {:>10.1}",
        "load's growth",
        mib(state_delta),
        mib(kib(&load, "hwm_after") - kib(&load, "hwm_before"))
    );
    let index_delta = kib(&index, "rss_after") - kib(&index, "rss_before");
    println!(
        "{:<42} {:>10.1} {:>10.1}",
        "EntryIndex alone (entries + agents)",
        mib(index_delta),
        mib(kib(&index, "hwm_after") - kib(&index, "hwm_before"))
    );
    println!(
        "per entry: server state {:.0} bytes, index alone {:.0} bytes",
        state_delta * 1024.0 / scale.entries as f64,
        index_delta * 1024.0 / scale.entries as f64
    );
}

/// Runs this binary again for one measurement and returns the figures it printed.
fn child(phase: &str, full: bool, db: &str) -> HashMap<String, f64> {
    let exe = std::env::current_exe().expect("own path");
    let output = Command::new(exe)
        .env(PHASE, phase)
        .env(DB, db)
        .env(FULL, if full { "1" } else { "0" })
        .output()
        .expect("run the measurement process");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{phase} phase failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("{phase} phase printed no result:\n{stdout}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.parse().expect("a number")))
        .collect()
}

/// In a fresh process: opens the datastore and starts a CA, then measures `ServerState::load`.
async fn phase_load(scale: Scale, db: &str) {
    let store = DataStore::open(&format!("sqlite://{db}"))
        .await
        .expect("datastore");
    let trust_domain = trust_domain();
    let (ca, _) = CertificateAuthority::start(
        CaSettings {
            trust_domain: trust_domain.clone(),
            key_type: KeyType::EcP256,
            ttl: Duration::from_secs(24 * 3600),
        },
        Arc::new(MemoryKeyManager::new()),
        None,
        None,
        SystemTime::now(),
    )
    .expect("ca");
    let settings = StateSettings {
        trust_domain,
        default_x509_ttl: Duration::from_secs(3600),
        default_jwt_ttl: Duration::from_secs(300),
        jwt_issuer: None,
    };
    let (rss_before, hwm_before) = memory();
    let started = Instant::now();
    let state = ServerState::load(settings, store, ca)
        .await
        .expect("server state");
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (rss_after, hwm_after) = memory();
    // The loaded state answers as the server would: an agent's entries are there.
    let authorized = state.authorized_entries(&agent_id(0)).len();
    assert!(authorized > 0, "agent 0 has no entries");
    assert_eq!(state.entry_count(), scale.entries);
    println!(
        "RESULT rss_before={rss_before} hwm_before={hwm_before} rss_after={rss_after} \
         hwm_after={hwm_after} load_ms={load_ms:.1} entries={}",
        state.entry_count()
    );
}

/// In a fresh process: builds an `EntryIndex` of the same population, generated in memory
/// one record at a time, so that only the index's own memory grows.
fn phase_index(scale: Scale) {
    let td = trust_domain();
    let (rss_before, hwm_before) = memory();
    let mut index = EntryIndex::new(&td).expect("index");
    for a in 0..scale.agents {
        let node = node(a, scale, 0);
        index.set_agent(node.spiffe_id, node.selectors);
    }
    for i in 0..scale.entries {
        index.upsert_entry(entry(i, scale, 0));
    }
    let (rss_after, hwm_after) = memory();
    println!(
        "RESULT rss_before={rss_before} hwm_before={hwm_before} rss_after={rss_after} \
         hwm_after={hwm_after} entries={}",
        index.entry_count()
    );
}

/// Writes the population through the datastore, one row per call.
async fn fill(store: DataStore, scale: Scale) {
    let now = unix_now();
    for a in 0..scale.agents {
        store.create_node(&node(a, scale, now)).await.expect("node");
    }
    for i in 0..scale.entries {
        store
            .create_entry(&entry(i, scale, now))
            .await
            .expect("entry");
    }
}

fn trust_domain() -> TrustDomain {
    TrustDomain::new("example.org").expect("trust domain")
}

fn id(s: &str) -> SpiffeId {
    s.parse().expect("valid SPIFFE ID")
}

fn selectors<const N: usize>(items: [String; N]) -> SelectorSet {
    items
        .iter()
        .map(|s| s.parse().expect("valid selector"))
        .collect()
}

fn agent_id(a: usize) -> SpiffeId {
    id(&format!(
        "spiffe://example.org/sigil/agent/k8s_psat/node-{a:05}"
    ))
}

fn alias_id(z: usize) -> SpiffeId {
    id(&format!("spiffe://example.org/cluster/cluster-{z}"))
}

/// Agent `a`: in cluster `a % aliases`, with 2 or 3 node selectors.
fn node(a: usize, scale: Scale, now: i64) -> AttestedNode {
    let cluster = format!("k8s_psat:cluster:cluster-{}", a % scale.aliases());
    let name = format!("k8s_psat:agent_node_name:node-{a:05}");
    let selectors = if a.is_multiple_of(2) {
        selectors([
            cluster,
            name,
            "k8s_psat:agent_node_label:pool:general".to_owned(),
        ])
    } else {
        selectors([cluster, name])
    };
    AttestedNode {
        spiffe_id: agent_id(a),
        attestation_type: "k8s_psat".to_owned(),
        cert_serial: format!("{:032x}", (a as u128 + 1) * 0x9e37_79b9_7f4a_7c15),
        cert_not_after: now + 3600,
        banned: false,
        can_reattest: true,
        selectors,
        created_at: now,
    }
}

/// Entry `i`: the node aliases first, then entries under agents, under aliases, nested.
fn entry(i: usize, scale: Scale, now: i64) -> RegistrationEntry {
    let server = id("spiffe://example.org/sigil/server");
    let aliases = scale.aliases();
    let agents_end = aliases + scale.under_agents();
    let alias_end = agents_end + scale.under_aliases();
    let ns = format!("ns-{}", i % 200);
    let workload = |parent: SpiffeId| RegistrationEntry {
        id: DataStore::generate_entry_id(),
        spiffe_id: id(&format!("spiffe://example.org/ns/{ns}/sa/workload-{i}")),
        parent_id: parent,
        selectors: if i.is_multiple_of(4) {
            selectors([
                format!("k8s:ns:{ns}"),
                format!("k8s:sa:workload-{i}"),
                format!("k8s:pod-label:app:web-{}", i % 50),
            ])
        } else {
            selectors([format!("k8s:ns:{ns}"), format!("k8s:sa:workload-{i}")])
        },
        x509_svid_ttl: None,
        jwt_svid_ttl: None,
        dns_names: if i.is_multiple_of(10) {
            vec![format!("workload-{i}.{ns}.svc.cluster.local")]
        } else {
            vec![]
        },
        federates_with: vec![],
        admin: false,
        downstream: false,
        hint: String::new(),
        expires_at: None,
        revision: 1,
        created_at: now,
    };
    if i < aliases {
        let mut alias = workload(server);
        alias.spiffe_id = alias_id(i);
        alias.selectors = selectors([format!("k8s_psat:cluster:cluster-{i}")]);
        alias.dns_names = vec![];
        alias
    } else if i < agents_end {
        workload(agent_id((i - aliases) % scale.agents))
    } else if i < alias_end {
        workload(alias_id(i % aliases))
    } else {
        // Parented to the SPIFFE ID of an entry under agent k (a nested agent's workloads).
        let k = aliases + (i - alias_end);
        let parent_ns = format!("ns-{}", k % 200);
        workload(id(&format!(
            "spiffe://example.org/ns/{parent_ns}/sa/workload-{k}"
        )))
    }
}

/// (VmRSS, VmHWM) of this process in KiB.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn file_size(path: &str) -> u64 {
    Path::new(path).metadata().map_or(0, |m| m.len())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
