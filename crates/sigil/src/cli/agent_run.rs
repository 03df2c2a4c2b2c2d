//! `sigil agent run --config FILE` (the agent itself) and `sigil agent validate --config FILE`.

use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};
use sigil_agent::config::{Bootstrap, Config, NodeAttestor, WorkloadAttestor};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use super::{Output, client};

#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    /// The agent config file (TOML).
    #[arg(long, value_name = "FILE", env = "SIGIL_AGENT_CONFIG")]
    config: PathBuf,
}

/// Runs the agent until SIGTERM or SIGINT.
pub(crate) fn run(args: &ConfigArgs) -> anyhow::Result<()> {
    // A bad config is a ConfigError: main exits 64.
    let config = Config::load(&args.config)?;
    client::runtime()?.block_on(async move {
        let mut terminate = signal(SignalKind::terminate())
            .map_err(|e| anyhow::anyhow!("cannot listen for SIGTERM: {e}"))?;
        let mut interrupt = signal(SignalKind::interrupt())
            .map_err(|e| anyhow::anyhow!("cannot listen for SIGINT: {e}"))?;
        let (stop, shutdown) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
            }
            let _ = stop.send(true);
        });
        sigil_agent::run::run(config, shutdown).await?;
        Ok(())
    })
}

/// Checks an agent config without connecting, binding or creating anything.
pub(crate) fn validate(args: &ConfigArgs, output: Output) -> anyhow::Result<()> {
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(error) => return Err(super::invalid_config(&args.config, error, output)),
    };
    let warnings = config.warnings();
    match output {
        Output::Text => {
            for warning in &warnings {
                eprintln!("warning: {warning}");
            }
            println!("configuration OK");
        }
        Output::Json => {
            let mut document = summary(&config);
            document["valid"] = json!(true);
            document["file"] = super::path_json(&args.config);
            document["warnings"] = json!(warnings);
            println!("{document}");
        }
    }
    Ok(())
}

/// The checked config as JSON, defaults filled in, paths absolute, the join token left out.
fn summary(config: &Config) -> Value {
    let bootstrap = match &config.bootstrap {
        Bootstrap::Path { path: file, format } => {
            json!({"kind": "path", "path": super::path_json(file), "format": format!("{format:?}").to_lowercase()})
        }
        Bootstrap::Url { url, format } => {
            json!({"kind": "url", "url": url, "format": format!("{format:?}").to_lowercase()})
        }
        Bootstrap::Insecure => json!({"kind": "insecure"}),
        _ => json!({"kind": "other"}),
    };
    let attestors: Vec<Value> = config
        .workload_attestors
        .iter()
        .map(|attestor| match attestor {
            WorkloadAttestor::Unix {
                discover_workload_path,
                workload_sha256,
                workload_size_limit,
            } => json!({
                "type": "unix",
                "discover_workload_path": discover_workload_path,
                "workload_sha256": workload_sha256,
                "workload_size_limit": workload_size_limit,
            }),
            _ => json!({"type": "other"}),
        })
        .collect();
    let node_attestor = match &config.node_attestor {
        NodeAttestor::JoinToken(_) => json!({"type": "join_token"}),
        _ => json!({"type": "other"}),
    };
    json!({
        "trust_domain": config.trust_domain.as_str(),
        "server_address": config.server_addresses,
        "server_rebalance_interval": sigil_core::format_duration(config.server_rebalance_interval),
        "server_spiffe_id": config.server_spiffe_id().as_str(),
        "data_dir": super::path_json(&config.data_dir),
        "socket_path": super::path_json(&config.socket_path),
        "bootstrap": bootstrap,
        "node_attestor": node_attestor,
        "workload_attestors": attestors,
        "svid": {
            "key_type": config.svid.key_type.as_str(),
            "x509_cache_size": config.svid.x509_cache_size,
            "jwt_cache_size": config.svid.jwt_cache_size,
        },
    })
}
