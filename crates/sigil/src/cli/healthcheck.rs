//! `sigil healthcheck`: exits 0 when the server is ready, 1 otherwise (the reason on stderr).
//! It asks the standard gRPC health service on the server's admin socket, which runs the
//! server's readiness check on every call; with `--socket URI`, the same service on an
//! agent's Workload API socket instead (service name "", SERVING or not).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use serde_json::json;
use sigil_server::api::health::REASON_METADATA;
use sigil_spiffe::workload_api::{Endpoint, HealthStatus, WorkloadApiClient};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::{Output, client};

/// How long the whole check may take; a server that does not answer in time is not ready.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub(crate) struct HealthcheckArgs {
    /// The server's admin socket.
    #[arg(
        long,
        value_name = "PATH",
        env = "SIGIL_SERVER_SOCKET",
        default_value = "/run/sigil/server/admin.sock"
    )]
    server_socket: PathBuf,
    /// Check an agent instead: its Workload API address (unix:///path or tcp://IP:PORT).
    /// Takes precedence over --server-socket.
    #[arg(long, value_name = "URI")]
    socket: Option<Endpoint>,
}

pub(crate) fn run(args: &HealthcheckArgs, output: Output) -> anyhow::Result<()> {
    if let Some(endpoint) = &args.socket {
        return run_agent(endpoint, output);
    }
    let answer = client::runtime()?.block_on(async {
        match tokio::time::timeout(TIMEOUT, check(args)).await {
            Ok(answer) => answer,
            Err(_) => Err(format!(
                "the server did not answer within {} s",
                TIMEOUT.as_secs()
            )),
        }
    });
    match output {
        Output::Json => {
            let reason = answer.as_ref().err();
            println!("{}", json!({"ready": answer.is_ok(), "reason": reason}));
        }
        Output::Text => {
            if answer.is_ok() {
                println!("server is ready");
            }
        }
    }
    match answer {
        Ok(()) => Ok(()),
        Err(reason) => bail!("server is not ready: {reason}"),
    }
}

/// The agent's side: the gRPC health Check on its Workload API socket.
fn run_agent(endpoint: &Endpoint, output: Output) -> anyhow::Result<()> {
    let answer = client::runtime()?.block_on(async {
        let check = async {
            let client = WorkloadApiClient::connect(endpoint)
                .await
                .map_err(|e| e.to_string())?;
            match client.health_check("").await {
                Ok(HealthStatus::Serving) => Ok(()),
                Ok(status) => Err(format!("the agent reports {status:?}")),
                Err(error) => Err(error.to_string()),
            }
        };
        match tokio::time::timeout(TIMEOUT, check).await {
            Ok(answer) => answer,
            Err(_) => Err(format!(
                "the agent did not answer within {} s",
                TIMEOUT.as_secs()
            )),
        }
    });
    match output {
        Output::Json => {
            let reason = answer.as_ref().err();
            println!("{}", json!({"ready": answer.is_ok(), "reason": reason}));
        }
        Output::Text => {
            if answer.is_ok() {
                println!("agent is serving");
            }
        }
    }
    match answer {
        Ok(()) => Ok(()),
        Err(reason) => bail!("agent is not serving: {reason}"),
    }
}

/// `Ok` when the server reports SERVING; otherwise why not.
async fn check(args: &HealthcheckArgs) -> Result<(), String> {
    let channel = client::connect(args.server_socket.clone())
        .await
        .map_err(|e| format!("{e:#}"))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|status| format!("health check failed: {}", status.message()))?;
    let reason = response
        .metadata()
        .get(REASON_METADATA)
        .and_then(|value| value.to_str().ok())
        .map(ToOwned::to_owned);
    let status = response.into_inner().status;
    if status == ServingStatus::Serving as i32 {
        return Ok(());
    }
    let name = ServingStatus::try_from(status).map_or("UNKNOWN", |s| s.as_str_name());
    Err(reason.unwrap_or_else(|| format!("status {name}")))
}
