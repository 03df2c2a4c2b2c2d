//! The `:authority` shim with real clients: a tonic server on a Unix socket serving
//! `grpc.health.v1` through `AuthorityRewrite`, called by Python grpcio (which sends the
//! percent-encoded socket path as `:authority`) and by a tonic client (which sends `localhost`).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as PbStatus;

use crate::health_socket::{serve, serve_with, tonic_client};
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
