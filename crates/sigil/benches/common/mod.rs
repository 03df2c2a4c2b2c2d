//! What the `sigil` benches share: a raw Workload API client (the generated tonic client on a
//! Unix socket, so the figures are the agent's and not a client library's), percentiles, and
//! readings of a process's memory and CPU time from `/proc`.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use sigil_proto::workload::{JwtsvidRequest, X509svidRequest, X509svidResponse};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint, Uri};

/// Hang guard for anything awaited: far beyond any expected figure.
pub(crate) const HANG_GUARD: Duration = Duration::from_secs(600);

/// p50 and p99 of a series, in microseconds (nearest rank).
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
}

/// Prints p50, p99, max and the rate of one series, and returns the percentiles.
pub(crate) fn report(name: &str, latencies: &mut [Duration], wall: Duration) -> Percentiles {
    latencies.sort();
    let at = |p: f64| {
        let rank = (p * latencies.len() as f64).ceil() as usize;
        latencies[rank.clamp(1, latencies.len()) - 1].as_secs_f64() * 1e6
    };
    println!(
        "{name}: {} calls, p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs, {:.0} calls/s",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(1.0),
        latencies.len() as f64 / wall.as_secs_f64()
    );
    Percentiles {
        p50: at(0.5),
        p99: at(0.99),
    }
}

/// Kills the child if the bench fails before stopping it.
pub(crate) struct ChildGuard(pub(crate) Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub(crate) struct Memory {
    pub(crate) rss: u64,
    pub(crate) hwm: u64,
}

/// VmRSS and VmHWM of a process, in KiB.
pub(crate) fn status_kib(pid: u32) -> Memory {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap()
    };
    Memory {
        rss: field("VmRSS:"),
        hwm: field("VmHWM:"),
    }
}

/// User plus system CPU time a process has used so far (its own threads, not its children).
pub(crate) fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces): utime is
    // field 14 and stime field 15 of the whole line, so 12 and 13 after the ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let out = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    })
}

pub(crate) fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A TCP port free on 127.0.0.1 when asked.
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

pub(crate) async fn wait_for_socket(socket: &Path) {
    let deadline = Instant::now() + HANG_GUARD;
    while tokio::net::UnixStream::connect(socket).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "{} never came up",
            socket.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(crate) async fn unix_channel(socket: PathBuf) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
}

pub(crate) async fn workload_client(
    socket: &Path,
) -> Result<SpiffeWorkloadApiClient<Channel>, tonic::transport::Error> {
    let channel = unix_channel(socket.to_owned()).await?;
    // 10,000 SVIDs make a message of about 13 MB, over tonic's 4 MiB default.
    Ok(SpiffeWorkloadApiClient::new(channel).max_decoding_message_size(usize::MAX))
}

pub(crate) fn workload_request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    request
}

/// The first message of `FetchX509SVID` on `client`; the stream is dropped after it.
pub(crate) async fn first_message(
    client: &mut SpiffeWorkloadApiClient<Channel>,
) -> Result<X509svidResponse, tonic::Status> {
    let mut stream = client
        .fetch_x509svid(workload_request(X509svidRequest {}))
        .await?
        .into_inner();
    stream
        .message()
        .await?
        .ok_or_else(|| tonic::Status::unknown("the stream ended without a message"))
}

/// What a workload does: connect, take the first `FetchX509SVID` message, hang up.
pub(crate) async fn fetch_first(socket: &Path) -> Result<X509svidResponse, tonic::Status> {
    let mut client = workload_client(socket)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    first_message(&mut client).await
}

/// `FetchJWTSVID` for one audience `calls` times on one connection, after a first call that
/// mints (agent to server): the rest are served from the agent's cache, as each checks.
pub(crate) async fn cached_jwt_latency(socket: &Path, calls: usize) -> Percentiles {
    let mut client = workload_client(socket).await.unwrap();
    let request = || {
        workload_request(JwtsvidRequest {
            audience: vec!["bench-audience".to_owned()],
            spiffe_id: String::new(),
        })
    };
    let minted = client.fetch_jwtsvid(request()).await.unwrap().into_inner();
    assert_eq!(minted.svids.len(), 1);
    let token = minted.svids[0].svid.clone();
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(calls);
    for _ in 0..calls {
        let call = Instant::now();
        let response = client.fetch_jwtsvid(request()).await.unwrap().into_inner();
        latencies.push(call.elapsed());
        assert_eq!(response.svids[0].svid, token, "served from the cache");
    }
    report(
        "FetchJWTSVID, cached, one connection",
        &mut latencies,
        started.elapsed(),
    )
}

/// Reads `stream` until a message holds an SVID of `spiffe_id`.
pub(crate) async fn wait_for_id(stream: &mut tonic::Streaming<X509svidResponse>, spiffe_id: &str) {
    loop {
        let message = tokio::time::timeout(HANG_GUARD, stream.message())
            .await
            .expect("the SVID reached the stream")
            .unwrap()
            .unwrap();
        if message.svids.iter().any(|svid| svid.spiffe_id == spiffe_id) {
            return;
        }
    }
}

/// Creates one entry through the admin API on `channel`: `spiffe_id` under `parent`, selected
/// by `unix:uid:<uid>`, federating with `federates_with`.
pub(crate) async fn create_uid_entry(
    channel: &Channel,
    parent: &str,
    spiffe_id: &str,
    uid: u32,
    federates_with: &[&str],
) {
    use sigil_proto::server::v1 as pb;
    let created = sigil_proto::server::v1::entry_client::EntryClient::new(channel.clone())
        .batch_create_entry(pb::BatchCreateEntryRequest {
            entries: vec![pb::RegistrationEntry {
                spiffe_id: spiffe_id.to_owned(),
                parent_id: parent.to_owned(),
                selectors: vec![pb::Selector {
                    r#type: "unix".to_owned(),
                    value: format!("uid:{uid}"),
                }],
                federates_with: federates_with.iter().map(|td| (*td).to_owned()).collect(),
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let code = created.results[0].status.as_ref().map_or(0, |s| s.code);
    assert_eq!(code, 0, "{:?}", created.results[0]);
}
