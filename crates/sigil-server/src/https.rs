//! What the server's public HTTPS listeners share (the federation bundle endpoint and OIDC
//! discovery): an HTTP/1.1-over-TLS listener answering GETs from a route function, and a
//! serving certificate read from PEM files that is reloaded when the files change.

use std::fmt;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// A TLS handshake or a request's headers taking longer than this end the connection.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers a request from its method and path; built once per listener.
pub type Routes = Arc<dyn Fn(&Method, &str) -> Response<Full<Bytes>> + Send + Sync>;

/// A running HTTPS listener; [`stop`](Self::stop) ends it.
#[derive(Debug)]
pub struct HttpsServer {
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl HttpsServer {
    /// Serves `routes` over TLS with `config` on `listener`, in a task of its own. `name`
    /// goes in the log lines.
    pub fn spawn(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        name: &'static str,
        routes: Routes,
    ) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(
            listener,
            TlsAcceptor::from(config),
            name,
            routes,
            async move {
                // A dropped sender stops the listener as well.
                let _ = stopped.await;
            },
        ));
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
            tracing::error!(%error, "https listener task failed");
        }
    }
}

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    name: &'static str,
    routes: Routes,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let acceptor = acceptor.clone();
                    let routes = Arc::clone(&routes);
                    // The handshake runs in the connection's task, so a slow client cannot
                    // hold up the accept loop.
                    connections.spawn(async move {
                        let tls = match tokio::time::timeout(CLIENT_TIMEOUT, acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "{name}: tls handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "{name}: tls handshake timed out");
                                return;
                            }
                        };
                        let service = service_fn(move |request: hyper::Request<_>| {
                            let response = routes(request.method(), request.uri().path());
                            async move { Ok::<_, std::convert::Infallible>(response) }
                        });
                        let served = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(CLIENT_TIMEOUT)
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                        if let Err(error) = served {
                            tracing::debug!(%peer, %error, "{name}: connection failed");
                        }
                    });
                }
                // Out of file descriptors and the like: pause rather than spin.
                Err(error) => {
                    tracing::warn!(%error, "{name}: cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

/// A JSON response with `status` (hyper drops the body of an answer to HEAD).
pub fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `405` for anything but GET and HEAD.
pub fn method_not_allowed() -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
    response
}

/// Whether a method reads (GET or HEAD).
pub fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// Why a serving certificate could not be loaded. Every message names the file.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ServingCertError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The certificate file holds no `CERTIFICATE` PEM block.
    #[error("{}: no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
    /// The key file holds no unencrypted private key.
    #[error(
        "{}: no unencrypted PEM private key (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)",
        .0.display()
    )]
    NoKey(PathBuf),
    /// rustls cannot sign with the key.
    #[error("{}: unusable private key: {reason}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        reason: rustls::Error,
    },
    /// The key is not the certificate's.
    #[error("{} does not hold the private key of the first certificate of {}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused to build the configuration.
    #[error("cannot build the tls configuration: {0}")]
    Config(rustls::Error),
}

/// What identifies one version of a file: replacing it (rename) or writing it changes this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

fn stamp(path: &Path) -> io::Result<Stamp> {
    let meta = fs::metadata(path)?;
    Ok(Stamp {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec(),
    })
}

struct Loaded {
    key: Arc<CertifiedKey>,
    stamps: [Stamp; 2],
}

/// Presents the certificate chain and key of two PEM files, reloading them on the first
/// handshake after either file changes (new inode, size or modification time). A change that
/// does not load (half-written, key and certificate not matching yet) keeps the last good pair
/// and is logged once per version of the files.
///
/// Checking costs two `stat` calls per handshake, which is small beside the handshake itself,
/// and means a replaced certificate is served from the very next connection.
pub struct FileCertResolver {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: ArcSwap<Loaded>,
    /// The file versions whose load failed last, so a broken pair is reported once.
    failed: Mutex<Option<[Stamp; 2]>>,
}

impl fmt::Debug for FileCertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileCertResolver")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl FileCertResolver {
    /// Loads the pair now; an error here stops the server from starting.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, ServingCertError> {
        let loaded = load_pair(cert_file, key_file)?;
        Ok(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: ArcSwap::from_pointee(loaded),
            failed: Mutex::new(None),
        })
    }

    /// A server config presenting this pair, asking no client certificate, ALPN http/1.1.
    pub fn server_config(self: Arc<Self>) -> Result<ServerConfig, ServingCertError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(ServingCertError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(self);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(config)
    }

    fn refresh(&self) {
        let current = self.current.load();
        let stamps = match (stamp(&self.cert_file), stamp(&self.key_file)) {
            (Ok(cert), Ok(key)) => [cert, key],
            // A file briefly missing while it is replaced: keep serving the last pair.
            _ => return,
        };
        if stamps == current.stamps {
            return;
        }
        match load_pair(&self.cert_file, &self.key_file) {
            Ok(loaded) => {
                tracing::info!(cert_file = %self.cert_file.display(), "serving certificate reloaded");
                self.current.store(Arc::new(loaded));
            }
            Err(error) => {
                let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
                if *failed != Some(stamps) {
                    tracing::warn!(
                        %error,
                        "cannot reload the serving certificate; keeping the previous one"
                    );
                    *failed = Some(stamps);
                }
            }
        }
    }
}

impl ResolvesServerCert for FileCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.refresh();
        Some(Arc::clone(&self.current.load().key))
    }
}

fn load_pair(cert_file: &Path, key_file: &Path) -> Result<Loaded, ServingCertError> {
    let read = |path: &Path| {
        // Stamped before reading: a write racing the read changes the stamp, so the next
        // handshake loads again rather than keeping a torn read.
        let stamp = stamp(path).map_err(|source| ServingCertError::Read {
            path: path.to_owned(),
            source,
        })?;
        let bytes =
            zeroize::Zeroizing::new(fs::read(path).map_err(|source| ServingCertError::Read {
                path: path.to_owned(),
                source,
            })?);
        Ok::<_, ServingCertError>((stamp, bytes))
    };
    let (cert_stamp, cert_pem) = read(cert_file)?;
    let (key_stamp, key_pem) = read(key_file)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|chain| !chain.is_empty())
        .ok_or_else(|| ServingCertError::NoCertificate(cert_file.to_owned()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| ServingCertError::NoKey(key_file.to_owned()))?;
    let signing_key =
        rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|reason| {
            ServingCertError::BadKey {
                path: key_file.to_owned(),
                reason,
            }
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    // `Unknown` (a key whose public half rustls cannot derive) is let through: the
    // handshake itself would then show a mismatch to every client.
    if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) =
        certified.keys_match()
    {
        return Err(ServingCertError::Mismatch {
            cert: cert_file.to_owned(),
            key: key_file.to_owned(),
        });
    }
    Ok(Loaded {
        key: Arc::new(certified),
        stamps: [cert_stamp, key_stamp],
    })
}
