//! `sigil bundle ...`: our trust bundle and the federated bundles, through the admin API on the
//! server's Unix socket. Bundles print as PEM (the X.509 authorities, as spire-server does by
//! default) or as SPIFFE bundle documents.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::bundle_client::BundleClient;
use sigil_spiffe::{Bundle, JwtBundle, SpiffeId, TrustDomain, X509Bundle};
use tonic::transport::Channel;

use super::entry::{SocketArgs, status_error};
use super::{Output, client};

#[derive(Debug, Subcommand)]
pub(crate) enum BundleCommand {
    /// Show this server's own trust bundle.
    Show(ShowArgs),
    /// List the federated bundles.
    List(ListArgs),
    /// Set (create or replace) the bundle of a federated trust domain from a file.
    Set(SetArgs),
    /// Delete the bundle of a federated trust domain.
    Delete(DeleteArgs),
}

/// How a bundle is read or printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum BundleFormat {
    /// PEM `CERTIFICATE` blocks: the X.509 authorities only.
    Pem,
    /// The SPIFFE bundle document (JSON): X.509 and JWT authorities and the sequence.
    Spiffe,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// How to print the bundle.
    #[arg(long, value_enum, default_value_t = BundleFormat::Pem)]
    format: BundleFormat,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// How to print the bundles.
    #[arg(long, value_enum, default_value_t = BundleFormat::Pem)]
    format: BundleFormat,
}

#[derive(Debug, Args)]
pub(crate) struct SetArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// The federated trust domain, `spiffe://<trust domain>`.
    #[arg(long = "id", value_name = "spiffe://TD", value_parser = trust_domain_id)]
    trust_domain: TrustDomain,
    /// The file holding the bundle.
    #[arg(long, value_name = "FILE")]
    path: PathBuf,
    /// The file's format. PEM gives X.509 authorities only.
    #[arg(long, value_enum, default_value_t = BundleFormat::Pem)]
    format: BundleFormat,
}

#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// The federated trust domain, `spiffe://<trust domain>`.
    #[arg(long = "id", value_name = "spiffe://TD", value_parser = trust_domain_id)]
    trust_domain: TrustDomain,
}

pub(crate) fn run(command: BundleCommand, output: Output) -> anyhow::Result<()> {
    client::runtime()?.block_on(async move {
        match command {
            BundleCommand::Show(args) => show(args, output).await,
            BundleCommand::List(args) => list(args, output).await,
            BundleCommand::Set(args) => set(args, output).await,
            BundleCommand::Delete(args) => delete(args, output).await,
        }
    })
}

/// `spiffe://<td>` (or a bare name) as a trust domain; an ID with a path is refused.
pub(super) fn trust_domain_id(input: &str) -> Result<TrustDomain, String> {
    if input.contains(":/") {
        let id = input.parse::<SpiffeId>().map_err(|e| e.to_string())?;
        if !id.is_root() {
            return Err("expected spiffe://<trust domain>, without a path".to_owned());
        }
        Ok(id.trust_domain())
    } else {
        TrustDomain::new(input).map_err(|e| e.to_string())
    }
}

async fn connect(socket: &SocketArgs) -> anyhow::Result<BundleClient<Channel>> {
    Ok(BundleClient::new(
        client::connect(socket.server_socket.clone()).await?,
    ))
}

/// A bundle message from the server, read back into a bundle.
fn from_wire(message: &pb::TrustBundle) -> anyhow::Result<Bundle> {
    let trust_domain = TrustDomain::new(&message.trust_domain).with_context(|| {
        format!(
            "the server sent a bundle for {:?}, not a trust domain",
            message.trust_domain
        )
    })?;
    Bundle::from_document(trust_domain, &message.document).with_context(|| {
        format!(
            "the server sent an unreadable bundle document for {}",
            message.trust_domain
        )
    })
}

/// The document as pretty JSON, or as sent when it is somehow not JSON.
fn pretty_document(document: &[u8]) -> String {
    serde_json::from_slice::<Value>(document)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(document).into_owned())
}

fn bundle_json(message: &pb::TrustBundle, bundle: &Bundle) -> Value {
    json!({
        "trust_domain": message.trust_domain,
        "sequence": message.sequence,
        "pem": bundle.x509().to_pem(),
        "document": serde_json::from_slice::<Value>(&message.document).unwrap_or(Value::Null),
    })
}

fn bundle_text(message: &pb::TrustBundle, bundle: &Bundle, format: BundleFormat) -> String {
    match format {
        BundleFormat::Pem => bundle.x509().to_pem(),
        BundleFormat::Spiffe => format!("{}\n", pretty_document(&message.document)),
    }
}

async fn show(args: ShowArgs, output: Output) -> anyhow::Result<()> {
    let message = connect(&args.socket)
        .await?
        .get_bundle(pb::GetBundleRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let bundle = from_wire(&message)?;
    match output {
        Output::Text => print!("{}", bundle_text(&message, &bundle, args.format)),
        Output::Json => println!("{}", bundle_json(&message, &bundle)),
    }
    Ok(())
}

async fn list(args: ListArgs, output: Output) -> anyhow::Result<()> {
    let messages = connect(&args.socket)
        .await?
        .list_federated_bundles(pb::ListFederatedBundlesRequest {})
        .await
        .map_err(status_error)?
        .into_inner()
        .bundles;
    let bundles = messages
        .iter()
        .map(|m| Ok((m, from_wire(m)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    match output {
        Output::Text => {
            // spire-server's layout: a banner with the trust domain's ID before each bundle.
            let rule = "*".repeat(40);
            for (i, (message, bundle)) in bundles.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                println!("{rule}\n* {}\n{rule}", bundle.trust_domain().id());
                print!("{}", bundle_text(message, bundle, args.format));
            }
        }
        Output::Json => {
            let list: Vec<Value> = bundles.iter().map(|(m, b)| bundle_json(m, b)).collect();
            println!("{}", json!({ "bundles": list }));
        }
    }
    Ok(())
}

async fn set(args: SetArgs, output: Output) -> anyhow::Result<()> {
    let td = args.trust_domain;
    let bytes = std::fs::read(&args.path)
        .with_context(|| format!("cannot read {}", args.path.display()))?;
    let mut bundle = match args.format {
        BundleFormat::Pem => {
            let x509 = X509Bundle::from_pem(td.clone(), &bytes)
                .with_context(|| format!("{} is not a PEM bundle", args.path.display()))?;
            if x509.is_empty() {
                bail!("{} holds no certificates", args.path.display());
            }
            Bundle::from_parts(x509, JwtBundle::new(td.clone()))?
        }
        BundleFormat::Spiffe => Bundle::from_document(td.clone(), &bytes)
            .with_context(|| format!("{} is not a SPIFFE bundle document", args.path.display()))?,
    };
    let mut client = connect(&args.socket).await?;
    // A document that carries its own sequence is sent as it is: the server decides whether it
    // may replace the stored one. Otherwise (PEM has none) the sequence continues the stored
    // bundle's: unchanged for the same content, one more for new content.
    let document = if bundle.sequence().is_some() {
        bytes
    } else {
        let stored = client
            .list_federated_bundles(pb::ListFederatedBundlesRequest {})
            .await
            .map_err(status_error)?
            .into_inner()
            .bundles
            .iter()
            .find(|m| m.trust_domain == td.as_str())
            .map(from_wire)
            .transpose()?;
        let sequence = match stored {
            Some(stored) => {
                let previous = stored.sequence().unwrap_or(0);
                let mut unsequenced = stored;
                unsequenced.set_sequence(None);
                unsequenced.set_refresh_hint(bundle.refresh_hint());
                if unsequenced == bundle {
                    previous
                } else {
                    previous + 1
                }
            }
            None => 1,
        };
        bundle.set_sequence(Some(sequence));
        bundle
            .to_document()
            .context("cannot write the bundle as a SPIFFE bundle document")?
            .into_bytes()
    };
    let sequence = bundle.sequence().unwrap_or(0);
    client
        .set_federated_bundle(pb::TrustBundle {
            trust_domain: td.to_string(),
            document,
            sequence: 0,
        })
        .await
        .map_err(status_error)?;
    match output {
        Output::Text => println!("Bundle for {} set (sequence {sequence})", td.id()),
        Output::Json => println!(
            "{}",
            json!({ "trust_domain": td.to_string(), "sequence": sequence })
        ),
    }
    Ok(())
}

async fn delete(args: DeleteArgs, output: Output) -> anyhow::Result<()> {
    let td = args.trust_domain;
    connect(&args.socket)
        .await?
        .delete_federated_bundle(pb::DeleteFederatedBundleRequest {
            trust_domain: td.to_string(),
        })
        .await
        .map_err(status_error)?;
    match output {
        Output::Text => println!("Bundle for {} deleted", td.id()),
        Output::Json => println!(
            "{}",
            json!({ "trust_domain": td.to_string(), "deleted": true })
        ),
    }
    Ok(())
}
