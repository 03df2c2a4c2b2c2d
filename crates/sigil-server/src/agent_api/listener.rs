//! The agent API's TCP listener: TLS handshakes run concurrently off the accept loop (a slow
//! or silent client cannot hold up the others), and each connection carries what the
//! handshake established about its peer into every request's extensions.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tonic::transport::server::Connected;

use super::peer::PeerInfo;

/// A handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many handshakes run at once; further connections wait in the kernel's
/// backlog, so a flood of half-open connections cannot exhaust memory.
const MAX_HANDSHAKES: usize = 256;

/// One accepted, authenticated-as-far-as-TLS-goes connection.
pub(super) struct AgentConnection {
    stream: TlsStream<TcpStream>,
    info: PeerInfo,
}

impl Connected for AgentConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for AgentConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for AgentConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The stream of connections tonic serves. Dropping it stops the accept loop.
pub(super) struct Incoming {
    connections: mpsc::Receiver<AgentConnection>,
    accept_loop: JoinHandle<()>,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl Stream for Incoming {
    type Item = Result<AgentConnection, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.connections.poll_recv(cx).map(|c| c.map(Ok))
    }
}

/// Accepts TCP connections on `listener` and completes their TLS handshakes with `config`.
pub(super) fn incoming(listener: TcpListener, config: Arc<ServerConfig>) -> Incoming {
    let (sender, connections) = mpsc::channel(64);
    let accept_loop = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), sender));
    Incoming {
        connections,
        accept_loop,
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    sender: mpsc::Sender<AgentConnection>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
            return;
        };
        let (tcp, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Per-connection errors (the peer reset before accept, too many open files)
                // must not stop the listener; pause a little so a persistent one cannot spin.
                tracing::warn!(%error, "agent api: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let info = PeerInfo::from_tls(addr, stream.get_ref().1);
                    // The receiver is gone only when the server shuts down.
                    let _ = sender.send(AgentConnection { stream, info }).await;
                }
                Ok(Err(error)) => log_handshake_failure(addr, &error),
                Err(_) => tracing::debug!(%addr, "agent api: tls handshake timed out"),
            }
        });
    }
}

fn log_handshake_failure(addr: SocketAddr, error: &io::Error) {
    tracing::info!(%addr, %error, "agent api: tls handshake failed");
}
