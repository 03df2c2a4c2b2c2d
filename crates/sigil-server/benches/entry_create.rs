//! Entry creation rate through the admin API (issue 3): the admin gRPC services served in
//! process on a Unix socket, a real gRPC client on the other end, `BatchCreateEntry` called by
//! one sequential client, one entry per call (what `sigil entry create` does), 50 and 500 per
//! call (each batch is one datastore transaction).
//! Each (backend, batch size) starts from an empty database, so the figure covers a database
//! growing from 0 to N entries.
//!
//! Run: `cargo bench -p sigil-server --bench entry_create` (10,000 entries per run, 5 runs of
//! each, the median reported); with
//! `SIGIL_TEST_POSTGRES_URL` set to a PostgreSQL server with admin rights, PostgreSQL is
//! measured too, in a fresh database `sigil_bench_<uuid>` dropped afterwards.
//! Under `cargo test --benches` (no `--bench` argument) it runs with 100 entries, as a check.

// The tests' fixture builds the server state (SQLite datastore, in-memory P-256 CA).
#[allow(dead_code, unreachable_pub, clippy::unwrap_used)]
#[path = "../tests/it/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

use hyper_util::rt::TokioIo;
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::entry_client::EntryClient;
use sigil_server::datastore::DataStore;
use sqlx::{AssertSqlSafe, Connection};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

/// Entries per run in `--bench` mode.
const BENCH_ENTRIES: usize = 10_000;
/// Runs of each (backend, batch size) in `--bench` mode; the median is reported, as the
/// machine is shared and one run can be slowed by others.
const BENCH_ROUNDS: usize = 5;
/// Entries per run under `cargo test`, to keep the check fast.
const TEST_ENTRIES: usize = 100;
/// The call sizes measured.
const BATCH_SIZES: [usize; 3] = [1, 50, 500];
/// Agents the entries are spread over (their parents).
const AGENTS: usize = 100;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n, rounds) = if full {
        (BENCH_ENTRIES, BENCH_ROUNDS)
    } else {
        (TEST_ENTRIES, 1)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let postgres = std::env::var("SIGIL_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty());
        if postgres.is_none() {
            eprintln!("PostgreSQL skipped: SIGIL_TEST_POSTGRES_URL not set");
        }
        println!(
            "entry creation through the admin API, {n} entries per run, sequential client, \
             {rounds} runs each (fresh database per run)"
        );
        println!(
            "{:<10} {:>6} {:>7} {:>14} {:>14} {:>14} {:>14}",
            "backend", "batch", "calls", "median ent/s", "min ent/s", "max ent/s", "median ms/call"
        );
        for batch in BATCH_SIZES {
            let mut times = Vec::new();
            for _ in 0..rounds {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("sigil.sqlite3").display());
                times.push(measure(&url, dir.path(), n, batch).await);
            }
            print_row("sqlite", n, batch, times);
        }
        if let Some(admin) = &postgres {
            for batch in BATCH_SIZES {
                let mut times = Vec::new();
                for _ in 0..rounds {
                    times.push(measure_postgres(admin, n, batch).await);
                }
                print_row("postgres", n, batch, times);
            }
        }
    });
}

/// One run on a fresh PostgreSQL database, dropped afterwards.
async fn measure_postgres(admin: &str, n: usize, batch: usize) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let name = format!("sigil_bench_{}", uuid::Uuid::new_v4().simple());
    admin_exec(admin, &format!("CREATE DATABASE {name}")).await;
    let url = with_database(admin, &name);
    // In its own task so that the database is dropped even when the run panics.
    let run = tokio::spawn({
        let dir = dir.path().to_owned();
        async move { measure(&url, &dir, n, batch).await }
    })
    .await;
    admin_exec(
        admin,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )
    .await;
    match run {
        Ok(elapsed) => elapsed,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

fn print_row(backend: &str, n: usize, batch: usize, mut times: Vec<Duration>) {
    times.sort();
    let calls = n.div_ceil(batch);
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let median = times[times.len() / 2];
    println!(
        "{:<10} {:>6} {:>7} {:>14.0} {:>14.0} {:>14.0} {:>14.2}",
        backend,
        batch,
        calls,
        rate(median),
        rate(times[times.len() - 1]),
        rate(times[0]),
        median.as_secs_f64() * 1000.0 / calls as f64
    );
}

/// Serves the admin API over a datastore at `url` on a socket in `dir`, then creates `n`
/// entries in calls of `batch`; returns the time the calls took (client connected before).
async fn measure(url: &str, dir: &Path, n: usize, batch: usize) -> Duration {
    let store = DataStore::open(url).await.expect("datastore");
    let state = support::state_on(store.clone()).await;
    let socket = dir.join("admin.sock");
    let listener = UnixListener::bind(&socket).expect("bind admin socket");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(sigil_server::api::admin_routes(&state))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );
    let mut client = EntryClient::new(connect(socket).await);

    let entries: Vec<pb::RegistrationEntry> = (0..n).map(entry).collect();
    let started = Instant::now();
    for chunk in entries.chunks(batch) {
        let response = client
            .batch_create_entry(pb::BatchCreateEntryRequest {
                entries: chunk.to_vec(),
            })
            .await
            .expect("BatchCreateEntry")
            .into_inner();
        assert_eq!(response.results.len(), chunk.len());
        for result in &response.results {
            let status = result.status.as_ref().expect("a status per entry");
            assert_eq!(status.code, 0, "entry refused: {}", status.message);
        }
    }
    let elapsed = started.elapsed();

    // Every entry reached both the datastore and the index.
    assert_eq!(state.entry_count(), n);
    assert_eq!(store.all_entries().await.expect("all entries").len(), n);
    drop(client);
    let _ = stop.send(());
    server.await.expect("server task").expect("server");
    store.close().await;
    elapsed
}

/// Entry `i`: a unique SPIFFE ID and selectors, parented to one of [`AGENTS`] agents.
fn entry(i: usize) -> pb::RegistrationEntry {
    let selector = |kind: &str, value: String| pb::Selector {
        r#type: kind.to_owned(),
        value,
    };
    pb::RegistrationEntry {
        spiffe_id: format!("spiffe://example.org/ns/bench/sa/workload-{i}"),
        parent_id: format!(
            "spiffe://example.org/sigil/agent/join_token/node-{}",
            i % AGENTS
        ),
        selectors: vec![
            selector("unix", format!("uid:{}", 10_000 + i)),
            selector("unix", format!("gid:{}", i % 50)),
        ],
        ..Default::default()
    }
}

/// A gRPC channel over the Unix socket (the URI is a placeholder HTTP/2 needs).
async fn connect(socket: PathBuf) -> Channel {
    Endpoint::from_static("http://localhost")
        .connect_with_connector(service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .expect("connect to the admin socket")
}

/// The admin URL with its database name replaced.
fn with_database(admin: &str, name: &str) -> String {
    let (base, query) = admin
        .split_once('?')
        .map_or((admin, None), |(b, q)| (b, Some(q)));
    let (server, _) = base.rsplit_once('/').expect("database URL with a path");
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

async fn admin_exec(admin: &str, statement: &str) {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(admin)
        .await
        .expect("connect to the PostgreSQL admin URL");
    sqlx::query(AssertSqlSafe(statement.to_owned()))
        .execute(&mut conn)
        .await
        .expect("admin statement");
    conn.close().await.expect("close");
}
