//! The `:authority` shim with real clients: a tonic server on a Unix socket serving
//! `grpc.health.v1` through `AuthorityRewrite`, called by Python grpcio (which sends the
//! percent-encoded socket path as `:authority`) and by a tonic client (which sends `localhost`).
#![allow(clippy::unwrap_used)]

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use sigil_agent::workload::authority::AuthorityRewrite;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Server, Uri};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as PbStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::server::HealthReporter;
use tower::service_fn;

use crate::python;

/// Three Check calls on one channel: after the first, grpcio's HPACK encoder refers to its
/// dynamic table, so the shim must mirror it. A second argument adds a metadata entry of that
/// many bytes to each call.
const PYTHON_CHECKS: &str = r#"
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
channel = grpc.insecure_channel("unix:" + sys.argv[1])
stub = health_pb2_grpc.HealthStub(channel)
size = int(sys.argv[2])
metadata = [("x-large", "v" * size)] if size else []
for _ in range(3):
    try:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), metadata=metadata, timeout=10)
        print(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    except grpc.RpcError as e:
        print("FAILED", e.code().name, e.details())
"#;

/// An accepted connection behind the shim, as tonic's server needs it.
struct Rewritten(AuthorityRewrite<UnixStream>);

impl Connected for Rewritten {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Rewritten {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewritten {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A health server on a socket in a temp dir; stopped on drop.
struct HealthSocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    reporter: HealthReporter,
    task: JoinHandle<()>,
}

impl Drop for HealthSocket {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(shim: bool) -> HealthSocket {
    serve_with(shim, Server::builder()).await
}

async fn serve_with(shim: bool, mut builder: Server) -> HealthSocket {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let (reporter, health) = tonic_health::server::health_reporter();
    let incoming = UnixListenerStream::new(UnixListener::bind(&path).unwrap());
    let router = builder.add_service(health);
    let task = if shim {
        let incoming = incoming.map(|conn| conn.map(|c| Rewritten(AuthorityRewrite::new(c))));
        tokio::spawn(async move { router.serve_with_incoming(incoming).await.unwrap() })
    } else {
        tokio::spawn(async move { router.serve_with_incoming(incoming).await.unwrap() })
    };
    HealthSocket {
        _dir: dir,
        path,
        reporter,
        task,
    }
}

/// A tonic client over the socket: `:authority` is `localhost`, as the `spiffe` crate sends.
async fn tonic_client(path: &Path) -> HealthClient<Channel> {
    let path = path.to_owned();
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .unwrap();
    HealthClient::new(channel)
}

async fn python_checks(path: &Path, metadata_size: usize) -> Vec<String> {
    let size = metadata_size.to_string();
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        python::run(PYTHON_CHECKS, &[path.to_str().unwrap(), &size]),
    )
    .await
    .expect("the Python client hung");
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn python_grpcio_is_served_through_the_shim() {
    let server = serve(true).await;
    assert_eq!(python_checks(&server.path, 0).await, ["SERVING"; 3]);
}

#[tokio::test]
async fn python_grpcio_large_metadata_through_the_shim() {
    // 40 kB of metadata: grpcio splits the block into HEADERS + CONTINUATION frames, and the
    // entry is larger than the whole dynamic table (RFC 7541 §4.4 empties the table).
    let builder = Server::builder().http2_max_header_list_size(256 * 1024);
    let server = serve_with(true, builder).await;
    assert_eq!(python_checks(&server.path, 40_000).await, ["SERVING"; 3]);
}

#[tokio::test]
async fn python_grpcio_fails_without_the_shim() {
    // The control: the same client and server without the shim hit h2's PROTOCOL_ERROR, so
    // the test above does exercise the bug.
    let server = serve(false).await;
    let lines = python_checks(&server.path, 0).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        assert!(
            line.starts_with("FAILED INTERNAL") && line.contains("RST_STREAM"),
            "{lines:?}"
        );
    }
}

#[tokio::test]
async fn tonic_client_is_served_through_the_shim() {
    let server = serve(true).await;
    let mut client = tonic_client(&server.path).await;
    for _ in 0..3 {
        let reply = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
        assert_eq!(reply.into_inner().status(), PbStatus::Serving);
    }
    // A request body over several DATA frames (a 100 kB service name) passes unchanged.
    let status = client
        .check(HealthCheckRequest {
            service: "s".repeat(100_000),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    // A stream stays open through the shim and carries a pushed change.
    server
        .reporter
        .set_service_status("svc", ServingStatus::Serving)
        .await;
    let mut watch = client
        .watch(HealthCheckRequest {
            service: "svc".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), PbStatus::Serving);
    server
        .reporter
        .set_service_status("svc", ServingStatus::NotServing)
        .await;
    let second = tokio::time::timeout(Duration::from_secs(30), watch.message())
        .await
        .expect("no push within 30 s")
        .unwrap()
        .unwrap();
    assert_eq!(second.status(), PbStatus::NotServing);
}
