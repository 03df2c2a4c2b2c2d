//! Health: the readiness check ([`readiness`]) and the `[health]` HTTP listener that serves
//! it (`GET /live`, `GET /ready`).
//!
//! Live means the process serves HTTP. Ready means the server can do its job: the datastore
//! answers a cheap query within [`DATASTORE_TIMEOUT`], and the CA has an active X.509
//! authority that has not expired. The admin socket's gRPC health service
//! ([`crate::api::health`]) runs the same check.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::state::ServerState;

/// How long the datastore may take to answer the readiness query.
pub const DATASTORE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the server is not ready.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// The datastore did not answer in time.
    #[error("datastore did not answer within {} ms", .0.as_millis())]
    DatastoreTimeout(Duration),
    /// The datastore answered with an error.
    #[error("datastore: {0}")]
    Datastore(String),
    /// The CA has no authority that signs.
    #[error("ca cannot sign: {0}")]
    Ca(String),
    /// The active X.509 CA certificate has expired.
    #[error("ca certificate expired at {0} (unix seconds)")]
    CaExpired(u64),
}

/// Whether the server can serve now: the CA can sign, and the datastore answers within
/// [`DATASTORE_TIMEOUT`].
pub async fn readiness(state: &ServerState) -> Result<(), NotReady> {
    ca_readiness(state, SystemTime::now())?;
    match tokio::time::timeout(DATASTORE_TIMEOUT, state.datastore().schema_version()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(NotReady::Datastore(error.to_string())),
        Err(_) => Err(NotReady::DatastoreTimeout(DATASTORE_TIMEOUT)),
    }
}

/// The CA half of [`readiness`], kept apart so the CA's read lock is never held across an
/// await.
fn ca_readiness(state: &ServerState, now: SystemTime) -> Result<(), NotReady> {
    let ca = state.ca();
    let active = ca
        .active_x509()
        .map_err(|error| NotReady::Ca(error.to_string()))?;
    if active.not_after() <= now {
        let seconds = active
            .not_after()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        return Err(NotReady::CaExpired(seconds));
    }
    Ok(())
}

/// The running `[health]` listener; [`stop`](Self::stop) ends it.
#[derive(Debug)]
pub struct HealthServer {
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl HealthServer {
    /// Binds `address`; nothing is served until [`spawn`](Self::spawn).
    pub async fn bind(address: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::bind(address).await
    }

    /// Serves `/live` and `/ready` of `state` on `listener` in a task of its own.
    pub fn spawn(listener: TcpListener, state: Arc<ServerState>) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, state, async move {
            // A dropped sender stops the listener as well.
            let _ = stopped.await;
        }));
        Ok(Self {
            local_addr,
            stop,
            task,
        })
    }

    /// The address served (the port chosen when the configured one was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, drops the open connections and waits until the listener is closed.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::error!(%error, "health listener task failed");
        }
    }
}

/// Serves `/live` and `/ready` on `listener` until `shutdown` completes; connections still
/// open then are dropped (probes are short, and a kept-alive one must not hold the
/// shutdown).
pub async fn serve(
    listener: TcpListener,
    state: Arc<ServerState>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let state = Arc::clone(&state);
                    connections.spawn(async move {
                        let service = service_fn(move |request| {
                            let state = Arc::clone(&state);
                            async move { Ok::<_, Infallible>(respond(&state, &request).await) }
                        });
                        let served = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        if let Err(error) = served {
                            tracing::debug!(%peer, %error, "health connection failed");
                        }
                    });
                }
                // Out of file descriptors and the like: pause rather than spin.
                Err(error) => {
                    tracing::warn!(%error, "health listener cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn respond(state: &ServerState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if path != "/live" && path != "/ready" {
        return text(StatusCode::NOT_FOUND, "not found\n".into());
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    if path == "/live" {
        return text(StatusCode::OK, "live\n".into());
    }
    match readiness(state).await {
        Ok(()) => text(StatusCode::OK, "ready\n".into()),
        Err(reason) => {
            tracing::debug!(%reason, "not ready");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            )
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
