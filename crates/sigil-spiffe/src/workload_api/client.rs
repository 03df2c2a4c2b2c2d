//! The gRPC client: one HTTP/2 channel to the agent, the security header on every call.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use hyper_util::rt::TokioIo;
use sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use sigil_proto::workload::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, X509BundlesRequest, X509svidRequest,
    X509svidResponse,
};
use tokio::net::UnixStream;
use tokio_stream::Stream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Uri};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::service_fn;

use super::response::{self, x509_context};
use super::{Endpoint, SECURITY_HEADER, ValidatedJwtSvid, WorkloadApiError, X509Context};
use crate::bundle::BundleSet;
use crate::id::SpiffeId;
use crate::jwt::JwtSvid;

/// A connection to a Workload API endpoint. Cheap to clone; clones share the connection,
/// which reconnects by itself on the next call after it breaks.
#[derive(Clone, Debug)]
pub struct WorkloadApiClient {
    channel: Channel,
    endpoint: Endpoint,
}

/// What the `grpc.health.v1` Check on the endpoint answered.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthStatus {
    /// Ready to serve.
    Serving,
    /// Up but not serving (e.g. not attested yet).
    NotServing,
    /// The server does not know its own status.
    Unknown,
    /// No such service name.
    ServiceUnknown,
}

impl WorkloadApiClient {
    /// Connects to `endpoint` now, so an address where nothing listens fails here rather than
    /// on the first call. Plaintext HTTP/2: the Workload API never uses TLS (checklist 45).
    pub async fn connect(endpoint: &Endpoint) -> Result<Self, WorkloadApiError> {
        let connect_error = |error: tonic::transport::Error| WorkloadApiError::Connect {
            endpoint: endpoint.to_string(),
            // The transport error says only "transport error"; its source says why.
            reason: std::error::Error::source(&error)
                .map_or_else(|| error.to_string(), ToString::to_string),
        };
        let channel = match endpoint {
            Endpoint::Unix(path) => {
                let path = path.clone();
                // HTTP/2 needs an authority; `localhost` is what go-spiffe and the spiffe
                // crate send, and the connector ignores the URI.
                tonic::transport::Endpoint::from_static("http://localhost")
                    .connect_with_connector(service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                        }
                    }))
                    .await
                    .map_err(connect_error)?
            }
            Endpoint::Tcp(address) => {
                tonic::transport::Endpoint::from_shared(format!("http://{address}"))
                    .map_err(connect_error)?
                    .connect()
                    .await
                    .map_err(connect_error)?
            }
        };
        Ok(Self {
            channel,
            endpoint: endpoint.clone(),
        })
    }

    /// Connects to the endpoint named by `SPIFFE_ENDPOINT_SOCKET`.
    pub async fn connect_env() -> Result<Self, WorkloadApiError> {
        Self::connect(&Endpoint::from_env()?).await
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The first message of `FetchX509SVID`: this workload's X.509-SVIDs and bundles. The
    /// stream is closed after it.
    pub async fn fetch_x509_context(&self) -> Result<X509Context, WorkloadApiError> {
        let mut stream = self.x509_stream().await?;
        match stream.message().await {
            Ok(Some(message)) => x509_context(message),
            Ok(None) => Err(WorkloadApiError::StreamEnded {
                rpc: FETCH_X509_SVID,
            }),
            Err(status) => Err(status_error(FETCH_X509_SVID, status)),
        }
    }

    /// `FetchX509SVID` kept open: every message the agent pushes (rotation, new or removed
    /// identities, bundle changes), each the whole current state. A message that does not
    /// parse is an `Err` item and the stream goes on; an error status ends it. Reconnecting is
    /// the caller's choice ([`WorkloadApiError::is_retryable`]).
    pub async fn watch_x509_contexts(&self) -> Result<X509ContextStream, WorkloadApiError> {
        Ok(X509ContextStream {
            inner: self.x509_stream().await?,
        })
    }

    /// The first message of `FetchX509Bundles`: the X.509 bundle of every trust domain the
    /// workload may trust (only their X.509 halves are filled).
    pub async fn fetch_x509_bundles(&self) -> Result<BundleSet, WorkloadApiError> {
        const RPC: &str = "FetchX509Bundles";
        let mut stream = self
            .grpc()
            .fetch_x509_bundles(request(X509BundlesRequest {}))
            .await
            .map_err(|status| status_error(RPC, status))?
            .into_inner();
        match stream.message().await {
            Ok(Some(message)) => response::x509_bundles(&message),
            Ok(None) => Err(WorkloadApiError::StreamEnded { rpc: RPC }),
            Err(status) => Err(status_error(RPC, status)),
        }
    }

    /// `FetchJWTSVID`: JWT-SVIDs for `audience` (at least one value), of every identity of the
    /// workload, or only `spiffe_id`. The tokens are checked, except their signatures, against
    /// the audience (checklist §2.8).
    pub async fn fetch_jwt_svids<A: AsRef<str>>(
        &self,
        audience: &[A],
        spiffe_id: Option<&SpiffeId>,
    ) -> Result<Vec<JwtSvid>, WorkloadApiError> {
        const RPC: &str = "FetchJWTSVID";
        let message = JwtsvidRequest {
            audience: audience.iter().map(|a| a.as_ref().to_owned()).collect(),
            spiffe_id: spiffe_id.map(ToString::to_string).unwrap_or_default(),
        };
        let answer = self
            .grpc()
            .fetch_jwtsvid(request(message))
            .await
            .map_err(|status| status_error(RPC, status))?
            .into_inner();
        response::jwt_svids(answer, audience, spiffe_id, SystemTime::now())
    }

    /// The first message of `FetchJWTBundles`: the JWT bundle of every trust domain (only
    /// their JWT halves are filled).
    pub async fn fetch_jwt_bundles(&self) -> Result<BundleSet, WorkloadApiError> {
        const RPC: &str = "FetchJWTBundles";
        let mut stream = self
            .grpc()
            .fetch_jwt_bundles(request(JwtBundlesRequest {}))
            .await
            .map_err(|status| status_error(RPC, status))?
            .into_inner();
        match stream.message().await {
            Ok(Some(message)) => response::jwt_bundles(&message),
            Ok(None) => Err(WorkloadApiError::StreamEnded { rpc: RPC }),
            Err(status) => Err(status_error(RPC, status)),
        }
    }

    /// `ValidateJWTSVID`: the agent checks `token` for `audience`; an invalid token is a
    /// [`WorkloadApiError::Status`] carrying the agent's reason (InvalidArgument).
    pub async fn validate_jwt_svid(
        &self,
        audience: &str,
        token: &str,
    ) -> Result<ValidatedJwtSvid, WorkloadApiError> {
        const RPC: &str = "ValidateJWTSVID";
        let message = ValidateJwtsvidRequest {
            audience: audience.to_owned(),
            svid: token.to_owned(),
        };
        let answer = self
            .grpc()
            .validate_jwtsvid(request(message))
            .await
            .map_err(|status| status_error(RPC, status))?
            .into_inner();
        response::validated_jwt_svid(answer, audience, token, SystemTime::now())
    }

    /// The `grpc.health.v1.Health/Check` of `service` (`""` for the server as a whole) on the
    /// same endpoint. It carries the security header too, so a server that demands it on
    /// every service still answers.
    pub async fn health_check(&self, service: &str) -> Result<HealthStatus, WorkloadApiError> {
        const RPC: &str = "grpc.health.v1.Health/Check";
        let answer = HealthClient::new(self.channel.clone())
            .check(request(HealthCheckRequest {
                service: service.to_owned(),
            }))
            .await
            .map_err(|status| status_error(RPC, status))?
            .into_inner();
        Ok(match ServingStatus::try_from(answer.status) {
            Ok(ServingStatus::Serving) => HealthStatus::Serving,
            Ok(ServingStatus::NotServing) => HealthStatus::NotServing,
            Ok(ServingStatus::ServiceUnknown) => HealthStatus::ServiceUnknown,
            Ok(ServingStatus::Unknown) | Err(_) => HealthStatus::Unknown,
        })
    }

    fn grpc(&self) -> SpiffeWorkloadApiClient<Channel> {
        SpiffeWorkloadApiClient::new(self.channel.clone())
    }

    async fn x509_stream(&self) -> Result<tonic::Streaming<X509svidResponse>, WorkloadApiError> {
        Ok(self
            .grpc()
            .fetch_x509svid(request(X509svidRequest {}))
            .await
            .map_err(|status| status_error(FETCH_X509_SVID, status))?
            .into_inner())
    }
}

/// The open `FetchX509SVID` stream of [`WorkloadApiClient::watch_x509_contexts`].
pub struct X509ContextStream {
    inner: tonic::Streaming<X509svidResponse>,
}

impl X509ContextStream {
    /// The next update: `None` once the agent closed the stream.
    pub async fn next(&mut self) -> Option<Result<X509Context, WorkloadApiError>> {
        match self.inner.message().await {
            Ok(Some(message)) => Some(x509_context(message)),
            Ok(None) => None,
            Err(status) => Some(Err(status_error(FETCH_X509_SVID, status))),
        }
    }
}

impl Stream for X509ContextStream {
    type Item = Result<X509Context, WorkloadApiError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|item| {
            item.map(|message| match message {
                Ok(message) => x509_context(message),
                Err(status) => Err(status_error(FETCH_X509_SVID, status)),
            })
        })
    }
}

impl std::fmt::Debug for X509ContextStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509ContextStream").finish_non_exhaustive()
    }
}

const FETCH_X509_SVID: &str = "FetchX509SVID";

/// A request with the security header (checklist item 44).
fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(SECURITY_HEADER, MetadataValue::from_static("true"));
    request
}

fn status_error(rpc: &'static str, status: tonic::Status) -> WorkloadApiError {
    // A transport failure under a call (agent gone, socket removed) arrives as a status too;
    // tonic reports it as Unavailable or Unknown with the cause in the message.
    WorkloadApiError::Status {
        rpc,
        code: status.code(),
        message: status.message().to_owned(),
    }
}
