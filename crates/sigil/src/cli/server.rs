//! `sigil server ...`: `run` the server, or `validate` a config with exactly the config loading
//! of the server.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use sigil_core::format_duration;
use sigil_server::config::{Config, EndpointProfile, RemoteProfile};

use tokio::signal::unix::{SignalKind, signal};

use super::{Output, client};

#[derive(Debug, Subcommand)]
pub(crate) enum ServerCommand {
    /// Run the server until SIGTERM or SIGINT.
    Run(RunArgs),
    /// Parse and check a server config without opening, binding or creating anything.
    Validate(ValidateArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The server config file (TOML).
    #[arg(long, value_name = "FILE", env = "SIGIL_SERVER_CONFIG")]
    config: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// The server config file (TOML).
    #[arg(long, value_name = "FILE", env = "SIGIL_SERVER_CONFIG")]
    config: PathBuf,
}

pub(crate) fn run(command: ServerCommand, output: Output) -> anyhow::Result<()> {
    match command {
        ServerCommand::Run(args) => run_server(&args),
        ServerCommand::Validate(args) => validate(&args, output),
    }
}

fn run_server(args: &RunArgs) -> anyhow::Result<()> {
    // A bad config is a ConfigError: main exits 64.
    let config = Config::load(&args.config)?;
    for warning in config.warnings() {
        tracing::warn!(key = %warning.key, "{}", warning.message);
    }
    client::runtime()?.block_on(async move {
        // Listen for the signals before serving so that none is missed.
        let mut terminate = signal(SignalKind::terminate())
            .map_err(|e| anyhow::anyhow!("cannot listen for SIGTERM: {e}"))?;
        let mut interrupt = signal(SignalKind::interrupt())
            .map_err(|e| anyhow::anyhow!("cannot listen for SIGINT: {e}"))?;
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
            }
        };
        sigil_server::run::run(&config, shutdown).await?;
        Ok(())
    })
}

fn validate(args: &ValidateArgs, output: Output) -> anyhow::Result<()> {
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
            document["warnings"] = warnings
                .iter()
                .map(|w| json!({"key": w.key, "message": w.message}))
                .collect();
            println!("{document}");
        }
    }
    Ok(())
}

/// The checked config as JSON, with defaults filled in, paths absolute and passwords redacted.
fn summary(config: &Config) -> Value {
    let federation = &config.federation;
    json!({
        "trust_domain": config.trust_domain.as_str(),
        "server_spiffe_id": config.server_spiffe_id().as_str(),
        "data_dir": super::path_json(&config.data_dir),
        "bind_address": config.bind_address.to_string(),
        "advertise_address": config.advertise_address,
        "admin_socket": super::path_json(&config.admin_socket),
        "datastore": {
            "kind": config.datastore.kind(),
            "url": config.datastore.redacted(),
        },
        "ca": {
            "key_type": config.ca.key_type.as_str(),
            "ttl": format_duration(config.ca.ttl),
            "upstream": config.ca.upstream.as_ref().map(|u| json!({
                "cert_file": super::path_json(&u.cert_file),
                "key_file": super::path_json(&u.key_file),
            })),
        },
        "svid": {
            "default_x509_ttl": format_duration(config.svid.default_x509_ttl),
            "default_jwt_ttl": format_duration(config.svid.default_jwt_ttl),
            "jwt_issuer": config.svid.jwt_issuer,
        },
        "oidc_discovery": config.oidc_discovery.as_ref().map(|o| json!({
            "bind_address": o.bind_address.to_string(),
            "cert_file": super::path_json(&o.cert_file),
            "key_file": super::path_json(&o.key_file),
        })),
        "health": config.health.as_ref().map(|h| json!({
            "bind_address": h.bind_address.to_string(),
        })),
        "federation": {
            "bundle_endpoint": federation.bundle_endpoint.as_ref().map(|e| {
                let mut endpoint = json!({
                    "bind_address": e.bind_address.to_string(),
                    "refresh_hint": format_duration(e.refresh_hint),
                });
                endpoint["profile"] = json!(e.profile.as_str());
                if let EndpointProfile::HttpsWeb { cert_file, key_file } = &e.profile {
                    endpoint["cert_file"] = super::path_json(cert_file);
                    endpoint["key_file"] = super::path_json(key_file);
                }
                endpoint
            }),
            "federates_with": federation.federates_with.iter().map(|r| {
                let mut remote = json!({
                    "trust_domain": r.trust_domain.as_str(),
                    "url": r.url,
                });
                remote["profile"] = json!(r.profile.as_str());
                match &r.profile {
                    RemoteProfile::HttpsSpiffe { endpoint_spiffe_id, bundle_path } => {
                        remote["endpoint_spiffe_id"] = json!(endpoint_spiffe_id.as_str());
                        remote["bundle_path"] = bundle_path.as_deref().map_or(Value::Null, super::path_json);
                    }
                    RemoteProfile::HttpsWeb { ca_file, .. } => {
                        remote["ca_file"] = ca_file.as_deref().map_or(Value::Null, super::path_json);
                    }
                    // A profile added later prints its name only until it is described here.
                    _ => {}
                }
                remote
            }).collect::<Vec<_>>(),
        },
    })
}
