//! Several servers on one database: an entry created through one server's admin API until
//! its SVID is on an open Workload API stream of an agent connected to another server. Three
//! `sigil server run` processes on one PostgreSQL (and one MariaDB) database, an agent of the
//! third, entries created through the first and the second in turn; the change travels
//! datastore → change feed (PostgreSQL: NOTIFY; MariaDB: the writing server's notice over the
//! servers' mutual TLS) → the third server's index → its sync stream → the agent → the
//! workload's stream.
//!
//! Then failover: a second agent given all three addresses; the server it is connected to is
//! killed (`kill -9`) and an entry created through another one at once, timed from the kill
//! to its SVID on that agent's workload stream (the broken connection noticed, the next server
//! connected, its snapshot, the signing); the killed server is started again and the agent
//! moves back to it (and stays 1.5 s) before the next round.
//!
//! Run: `cargo bench -p sigil --bench ha` with `SIGIL_TEST_POSTGRES_URL` and/or
//! `SIGIL_TEST_MYSQL_URL` set to an admin URL (`scripts/test-services` starts both). Without
//! `--bench` (as `cargo test --all-targets` runs it) it takes 3 samples, to prove it works.
//! It never asserts on timing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

#[path = "common/cluster.rs"]
mod cluster;

#[path = "../tests/it/spire_process.rs"]
#[allow(dead_code)]
mod spire_process;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cluster::{SigilServer, exec, spawn_server, start_agent_named, start_servers, with_database};
use common::{
    create_uid_entry, free_port, load_average, report, unix_channel, wait_for_id, wait_for_socket,
    workload_client, workload_request,
};
use sigil_proto::workload::X509svidRequest;
use spire_process::Process;
use tokio::time::Instant;

const SERVERS: usize = 3;

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let full = std::env::args().any(|a| a == "--bench");
    let samples = if full { 200 } else { 3 };
    println!("load average at start: {}", load_average());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for (var, name) in [
        ("SIGIL_TEST_POSTGRES_URL", "PostgreSQL"),
        ("SIGIL_TEST_MYSQL_URL", "MariaDB/MySQL"),
    ] {
        match std::env::var(var) {
            Ok(admin) if !admin.is_empty() => {
                println!("\n== {name}");
                runtime.block_on(run(&admin, samples));
            }
            _ => println!("{name} skipped: {var} not set"),
        }
    }
    println!("load average at end: {}", load_average());
}

async fn run(admin: &str, samples: usize) {
    let name = format!("sigil_ha_bench_{}", std::process::id());
    exec(admin, &format!("CREATE DATABASE {name}")).await;
    let url = with_database(admin, &name);
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..SERVERS).map(|_| free_port()).collect();
    let mut servers = start_servers(dir.path(), &url, &ports).await;
    let last = servers.len() - 1;
    let uid = fs::metadata("/proc/self").unwrap().uid();
    let (agent, agent_id) = start_agent(dir.path(), &servers[last], ports[last]).await;
    let channels = {
        let mut channels = Vec::new();
        for server in &servers {
            channels.push(unix_channel(server.admin_socket.clone()).await.unwrap());
        }
        channels
    };
    // A first entry through the agent's own server, so the workload's stream opens.
    create_uid_entry(
        &channels[last],
        &agent_id,
        "spiffe://example.org/ha/first",
        uid,
        &[],
    )
    .await;
    let mut stream = open_x509_stream(&agent.1).await;
    wait_for_id(&mut stream, "spiffe://example.org/ha/first").await;
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        // Through the other servers in turn, never the agent's own.
        let via = i % last;
        let spiffe_id = format!("spiffe://example.org/ha/{i}");
        create_uid_entry(&channels[via], &agent_id, &spiffe_id, uid, &[]).await;
        let created = Instant::now();
        wait_for_id(&mut stream, &spiffe_id).await;
        latencies.push(created.elapsed());
    }
    report(
        &format!(
            "{SERVERS} servers: entry created (admin API returned) on another server -> SVID on an open stream"
        ),
        &mut latencies,
        started.elapsed(),
    );
    drop(stream);
    drop(agent);
    let rounds = if samples > 3 { 10 } else { 1 };
    let mut failovers = failover(dir.path(), &mut servers, &ports, &url, rounds).await;
    let total = failovers.iter().sum();
    report(
        &format!(
            "{SERVERS} servers: kill -9 of the agent's server -> an entry made through another on the agent's stream"
        ),
        &mut failovers,
        total,
    );
    drop(servers);
    exec(admin, &format!("DROP DATABASE IF EXISTS {name}")).await;
}

/// A `FetchX509SVID` stream from the agent at `socket`, retried until the workload has an
/// identity.
async fn open_x509_stream(
    socket: &Path,
) -> tonic::Streaming<sigil_proto::workload::X509svidResponse> {
    let mut client = workload_client(socket).await.unwrap();
    loop {
        match client
            .fetch_x509svid(workload_request(X509svidRequest {}))
            .await
        {
            Ok(stream) => return stream.into_inner(),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The failover rounds (see the module comment); the time of each.
async fn failover(
    dir: &Path,
    servers: &mut [SigilServer],
    ports: &[u16],
    url: &str,
    rounds: usize,
) -> Vec<Duration> {
    let uid = fs::metadata("/proc/self").unwrap().uid();
    let ((agent, socket), agent_id) =
        start_agent_named(dir, "failover-agent", &servers[0], ports, "info").await;
    let mut channels = Vec::new();
    for server in servers.iter() {
        channels.push(unix_channel(server.admin_socket.clone()).await.unwrap());
    }
    create_uid_entry(
        &channels[0],
        &agent_id,
        "spiffe://example.org/failover/first",
        uid,
        &[],
    )
    .await;
    let mut stream = open_x509_stream(&socket).await;
    wait_for_id(&mut stream, "spiffe://example.org/failover/first").await;
    // Its sync stream a second and a half old, as in every round (see the end of the loop).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let connected = |agent: &Process| -> Vec<usize> {
        agent
            .log()
            .lines()
            .filter(|line| line.contains("connected to server"))
            .filter_map(|line| line.split("server=").nth(1))
            .filter_map(|rest| {
                let address = rest.split_whitespace().next()?;
                ports
                    .iter()
                    .position(|port| address == format!("127.0.0.1:{port}"))
            })
            .collect()
    };
    let mut times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let current = *connected(&agent).last().expect("the agent connected");
        let other = (current + 1) % servers.len();
        let killed = Instant::now();
        servers[current].process.child.kill().unwrap();
        servers[current].process.child.wait().unwrap();
        let spiffe_id = format!("spiffe://example.org/failover/{round}");
        create_uid_entry(&channels[other], &agent_id, &spiffe_id, uid, &[]).await;
        wait_for_id(&mut stream, &spiffe_id).await;
        times.push(killed.elapsed());
        // Back, and the agent with it (it prefers that one), before the next round.
        let moves = connected(&agent).len();
        servers[current] =
            spawn_server(&dir.join(format!("server-{current}")), url, ports[current]);
        wait_for_socket(&servers[current].admin_socket).await;
        channels[current] = unix_channel(servers[current].admin_socket.clone())
            .await
            .unwrap();
        let deadline = Instant::now() + common::HANG_GUARD;
        while connected(&agent).len() < moves + 1 || connected(&agent).last() != Some(&current) {
            assert!(
                Instant::now() < deadline,
                "the agent never moved back: {}",
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A real agent's stream has been open for long; the agent treats the end of one
        // younger than a second as a refusal and backs off (sync::HEALTHY_AFTER).
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    times
}

/// Starts `sigil agent run` against `server` (a token made there); returns it with its
/// socket, and its SPIFFE ID.
async fn start_agent(dir: &Path, server: &SigilServer, port: u16) -> ((Process, PathBuf), String) {
    start_agent_named(dir, "agent", server, &[port], "warn").await
}
