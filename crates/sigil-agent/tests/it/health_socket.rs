//! A `grpc.health.v1` server on a Unix socket in a temp dir, with or without the `:authority`
//! shim, and a tonic client for it (shared with `benches/authority.rs`).
#![allow(clippy::unwrap_used)]

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use sigil_agent::workload::authority::AuthorityRewrite;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Server, Uri};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::server::HealthReporter;
use tower::service_fn;

/// The client type [`tonic_client`] returns.
pub(crate) type HealthClientChannel = HealthClient<Channel>;

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
pub(crate) struct HealthSocket {
    _dir: tempfile::TempDir,
    pub(crate) path: PathBuf,
    pub(crate) reporter: HealthReporter,
    task: JoinHandle<()>,
}

impl Drop for HealthSocket {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn serve(shim: bool) -> HealthSocket {
    serve_with(shim, Server::builder()).await
}

pub(crate) async fn serve_with(shim: bool, mut builder: Server) -> HealthSocket {
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
pub(crate) async fn tonic_client(path: &Path) -> HealthClientChannel {
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
