//! Cost of the `:authority` shim per gRPC call (issue 4): a tonic `grpc.health.v1` server on
//! a Unix socket, served with and without `AuthorityRewrite`, and a tonic client on one
//! connection calling `Check`, first one call at a time, then from 16 tasks at once (16
//! streams in flight on the one connection).
//!
//! Run: `cargo bench -p sigil-agent --bench authority` (10,000 calls per run, 7 runs of each
//! mode alternating, the median reported). Under `cargo test --benches` (no `--bench`
//! argument) it runs 200 calls once, as a check.

#[allow(dead_code, unreachable_pub)]
#[path = "../tests/it/health_socket.rs"]
mod health_socket;

use std::time::Duration;
use tokio::time::Instant;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

const BENCH_CALLS: usize = 10_000;
const BENCH_ROUNDS: usize = 7;
const TEST_CALLS: usize = 200;
const CONCURRENCY: usize = 16;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (calls, rounds) = if full {
        (BENCH_CALLS, BENCH_ROUNDS)
    } else {
        (TEST_CALLS, 1)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        println!("{calls} Check calls per run, one connection, median of {rounds} runs");
        for concurrency in [1, CONCURRENCY] {
            let mut plain = Vec::new();
            let mut shim = Vec::new();
            // Alternating the two modes spreads the shared machine's noise over both.
            for _ in 0..rounds {
                plain.push(run(false, calls, concurrency).await);
                shim.push(run(true, calls, concurrency).await);
            }
            let (plain, shim) = (median(plain), median(shim));
            let per_call = |d: Duration| d.as_secs_f64() * 1e6 / calls as f64;
            println!(
                "concurrency {concurrency:>2}: without shim {:.1} µs/call, with shim {:.1} µs/call, \
                 difference {:+.1} µs/call ({:+.1}%)",
                per_call(plain),
                per_call(shim),
                per_call(shim) - per_call(plain),
                (shim.as_secs_f64() / plain.as_secs_f64() - 1.0) * 100.0,
            );
        }
    });
}

/// The time for `calls` Check calls on a fresh server and connection, after 100 warm-up calls.
async fn run(shim: bool, calls: usize, concurrency: usize) -> Duration {
    let server = health_socket::serve(shim).await;
    let client = health_socket::tonic_client(&server.path).await;
    let check = |mut client: health_socket::HealthClientChannel, n: usize| async move {
        for _ in 0..n {
            let reply = client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .expect("Check");
            assert_eq!(reply.into_inner().status(), ServingStatus::Serving);
        }
    };
    check(client.clone(), 100).await;
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(check(client.clone(), calls / concurrency)))
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    start.elapsed()
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}
