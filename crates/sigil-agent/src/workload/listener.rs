//! Accepting Workload API connections: each accepted Unix stream gets its peer credentials
//! read at once (so the pid anchor is taken as early as possible) and is wrapped in the
//! `:authority` rewrite, so that every gRPC client, in any language, is served.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

use super::authority::AuthorityRewrite;
use super::peer::PeerCredentials;

/// One accepted Workload API connection; handlers find its [`PeerCredentials`] in the
/// request's extensions.
pub struct WorkloadConnection {
    io: AuthorityRewrite<UnixStream>,
    peer: PeerCredentials,
}

impl Connected for WorkloadConnection {
    type ConnectInfo = PeerCredentials;

    fn connect_info(&self) -> PeerCredentials {
        self.peer.clone()
    }
}

impl AsyncRead for WorkloadConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for WorkloadConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The connections accepted on `listener`. A connection whose credentials cannot be read is
/// closed and logged; it never ends the stream (tonic also skips failed accepts), since one
/// bad peer must not stop the others.
pub fn incoming(listener: UnixListener) -> impl Stream<Item = io::Result<WorkloadConnection>> {
    UnixListenerStream::new(listener).filter_map(|accepted| match accepted {
        Ok(stream) => match PeerCredentials::from_stream(&stream) {
            Ok(peer) => Some(Ok(WorkloadConnection {
                io: AuthorityRewrite::new(stream),
                peer,
            })),
            Err(error) => {
                tracing::warn!("cannot read a Workload API caller's credentials: {error}");
                None
            }
        },
        Err(error) => Some(Err(error)),
    })
}
