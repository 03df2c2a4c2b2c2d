//! The standard gRPC health service (`grpc.health.v1.Health`) on the admin socket, answered
//! by running [`health::readiness`] on every call, so it is always current.
//!
//! Only the whole server is known: the service name `""`. Other names are `NotFound`, as
//! the standard asks. A NOT_SERVING answer carries the reason in the response metadata
//! [`REASON_METADATA`] for clients that want it (`sigil healthcheck`); standard clients see
//! only the status.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::health::{self, NotReady};
use crate::state::ServerState;

/// The response metadata key that holds why the server is not ready.
pub const REASON_METADATA: &str = "sigil-not-ready-reason";

/// How often a `Watch` stream re-checks readiness.
const WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// The gRPC health service over the server's state.
#[derive(Clone)]
pub struct HealthApi {
    state: Arc<ServerState>,
}

impl HealthApi {
    /// A health service for `state`.
    pub fn new(state: Arc<ServerState>) -> Self {
        Self { state }
    }
}

fn known(request: &HealthCheckRequest) -> Result<(), Status> {
    if request.service.is_empty() {
        Ok(())
    } else {
        Err(Status::not_found(format!(
            "unknown service {:?}: only \"\" (the whole server) is reported",
            request.service
        )))
    }
}

fn response(readiness: &Result<(), NotReady>) -> HealthCheckResponse {
    let status = match readiness {
        Ok(()) => ServingStatus::Serving,
        Err(_) => ServingStatus::NotServing,
    };
    HealthCheckResponse {
        status: status as i32,
    }
}

/// Metadata values are visible ASCII; anything else in a reason becomes `?`.
fn metadata_text(reason: &NotReady) -> String {
    reason
        .to_string()
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[tonic::async_trait]
impl Health for HealthApi {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        known(request.get_ref())?;
        let readiness = health::readiness(&self.state).await;
        let mut answer = Response::new(response(&readiness));
        if let Err(reason) = &readiness
            && let Ok(value) = MetadataValue::try_from(metadata_text(reason))
        {
            answer.metadata_mut().insert(REASON_METADATA, value);
        }
        Ok(answer)
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    /// Sends the status at once, then again whenever a check every [`WATCH_INTERVAL`] finds
    /// it changed; the checking task ends when the client goes away.
    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        known(request.get_ref())?;
        let (sender, receiver) = mpsc::channel(1);
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let status = response(&health::readiness(&state).await);
                if last != Some(status.status) {
                    last = Some(status.status);
                    if sender.send(Ok(status)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    () = sender.closed() => return,
                    () = tokio::time::sleep(WATCH_INTERVAL) => {}
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}
