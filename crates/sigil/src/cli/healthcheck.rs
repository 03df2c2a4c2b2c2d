//! `sigil healthcheck`: exits 0 when the server is ready, 1 otherwise (the reason on stderr).
//! It asks the standard gRPC health service on the server's admin socket, which runs the
//! server's readiness check on every call.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use serde_json::json;
use sigil_server::api::health::REASON_METADATA;
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
    /// An agent's socket (not available yet: the agent has no health check so far).
    #[arg(long, value_name = "URI", value_parser = agent_not_yet)]
    socket: Option<String>,
}

fn agent_not_yet(_: &str) -> Result<String, String> {
    Err("the agent health check is not available yet; use --server-socket PATH".into())
}

pub(crate) fn run(args: &HealthcheckArgs, output: Output) -> anyhow::Result<()> {
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
