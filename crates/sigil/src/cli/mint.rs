//! `sigil x509 mint` and `sigil jwt mint`: SVIDs for any workload ID of the trust domain,
//! through the admin API, as spire-server's commands of the same names.
//!
//! For X.509 the key is generated here (EC P-256) and only a CSR goes to the server: the
//! private key never leaves this process except to stdout or to the file asked for (0600).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use sigil_core::parse_duration;
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::bundle_client::BundleClient;
use sigil_proto::server::v1::svid_client::SvidClient;
use sigil_spiffe::x509::create_csr;
use sigil_spiffe::{Bundle, KeyType, PrivateKey, SpiffeId, TrustDomain};
use zeroize::Zeroizing;

use super::entry::{SocketArgs, status_error};
use super::{Output, client};

#[derive(Debug, Subcommand)]
pub(crate) enum X509Command {
    /// Mint an X.509-SVID (and a fresh key) for a workload ID of the trust domain.
    Mint(X509MintArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum JwtCommand {
    /// Mint a JWT-SVID for a workload ID of the trust domain.
    Mint(JwtMintArgs),
}

#[derive(Debug, Args)]
pub(crate) struct X509MintArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// The SPIFFE ID of the SVID.
    #[arg(long, value_name = "ID")]
    spiffe_id: SpiffeId,
    /// Lifetime (`1h`, `30m`); the server's default X.509-SVID TTL when absent.
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    ttl: Option<Duration>,
    /// A DNS name for the SVID (repeat for several; the first is also the common name).
    #[arg(long = "dns", value_name = "NAME")]
    dns_names: Vec<String>,
    /// Write svid.0.pem, svid.0.key and bundle.0.pem into this directory instead of printing.
    #[arg(long, value_name = "DIR")]
    write: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct JwtMintArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// The SPIFFE ID of the SVID (its `sub`).
    #[arg(long, value_name = "ID")]
    spiffe_id: SpiffeId,
    /// An audience (repeat for several).
    #[arg(long, value_name = "AUDIENCE", required = true)]
    audience: Vec<String>,
    /// Lifetime; the server's default JWT-SVID TTL when absent.
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    ttl: Option<Duration>,
}

pub(crate) fn run_x509(command: X509Command, output: Output) -> anyhow::Result<()> {
    client::runtime()?.block_on(async move {
        match command {
            X509Command::Mint(args) => mint_x509(args, output).await,
        }
    })
}

pub(crate) fn run_jwt(command: JwtCommand, output: Output) -> anyhow::Result<()> {
    client::runtime()?.block_on(async move {
        match command {
            JwtCommand::Mint(args) => mint_jwt(args, output).await,
        }
    })
}

/// A duration flag that must not be zero (zero on the wire means "the server's default").
fn positive_duration(input: &str) -> Result<Duration, String> {
    match parse_duration(input) {
        Ok(d) if d.is_zero() => Err("the duration must be longer than 0s".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

fn ttl_to_wire(ttl: Option<Duration>) -> i64 {
    ttl.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

async fn mint_x509(args: X509MintArgs, output: Output) -> anyhow::Result<()> {
    let key = PrivateKey::generate(KeyType::EcP256).context("cannot generate a key")?;
    let csr = create_csr(&key, &args.spiffe_id).context("cannot create the CSR")?;
    let channel = client::connect(args.socket.server_socket.clone()).await?;
    let response = SvidClient::new(channel.clone())
        .mint_x509svid(pb::MintX509svidRequest {
            csr,
            spiffe_id: args.spiffe_id.to_string(),
            ttl: ttl_to_wire(args.ttl),
            dns_names: args.dns_names,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let svid = response
        .svid
        .context("the server answered without an SVID")?;
    let bundle = BundleClient::new(channel)
        .get_bundle(pb::GetBundleRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let trust_domain = TrustDomain::new(&bundle.trust_domain)
        .context("the server sent a bundle without a valid trust domain")?;
    let bundle_pem = Bundle::from_document(trust_domain, &bundle.document)
        .context("the server sent an unreadable bundle document")?
        .x509()
        .to_pem();
    let svid_pem: String = svid
        .cert_chain
        .iter()
        .map(|der| sigil_spiffe::pem::encode("CERTIFICATE", der))
        .collect();
    let key_pem = key.to_pem();
    if response.ttl_capped {
        eprintln!("warning: the TTL was cut to the signing CA's remaining lifetime");
    }
    let written = match &args.write {
        Some(dir) => Some(write_svid(dir, &svid_pem, &key_pem, &bundle_pem)?),
        None => None,
    };
    match (output, written) {
        (Output::Text, None) => {
            // spire-server x509 mint's layout.
            println!("X509-SVID:\n{svid_pem}");
            println!("Private key:\n{}", key_pem.as_str());
            println!("Root CAs:\n{bundle_pem}");
        }
        (Output::Text, Some(paths)) => {
            println!("X509-SVID written to {}", paths.svid.display());
            println!("Private key written to {}", paths.key.display());
            println!("Root CAs written to {}", paths.bundle.display());
        }
        (Output::Json, None) => {
            let document = Zeroizing::new(
                json!({
                    "spiffe_id": svid.spiffe_id,
                    "expires_at": svid.expires_at,
                    "ttl_capped": response.ttl_capped,
                    "svid_pem": svid_pem,
                    "key_pem": key_pem.as_str(),
                    "bundle_pem": bundle_pem,
                })
                .to_string(),
            );
            println!("{}", document.as_str());
        }
        (Output::Json, Some(paths)) => println!(
            "{}",
            json!({
                "spiffe_id": svid.spiffe_id,
                "expires_at": svid.expires_at,
                "ttl_capped": response.ttl_capped,
                "svid_path": paths.svid,
                "key_path": paths.key,
                "bundle_path": paths.bundle,
            })
        ),
    }
    Ok(())
}

struct Written {
    svid: PathBuf,
    key: PathBuf,
    bundle: PathBuf,
}

/// Writes the files under the names spire-agent uses; the key file is 0600 from its creation.
fn write_svid(
    dir: &Path,
    svid_pem: &str,
    key_pem: &str,
    bundle_pem: &str,
) -> anyhow::Result<Written> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let written = Written {
        svid: dir.join("svid.0.pem"),
        key: dir.join("svid.0.key"),
        bundle: dir.join("bundle.0.pem"),
    };
    write_file(&written.key, key_pem, true)?;
    write_file(&written.svid, svid_pem, false)?;
    write_file(&written.bundle, bundle_pem, false)?;
    Ok(written)
}

/// Writes `contents` to `path`; a `secret` file is for its owner only (0600).
fn write_file(path: &Path, contents: &str, secret: bool) -> anyhow::Result<()> {
    let context = || format!("cannot write {}", path.display());
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(context)?;
    if secret {
        // The mode applies only to a new file: an existing one is narrowed before anything
        // is written to it.
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .with_context(context)?;
    }
    file.write_all(contents.as_bytes()).with_context(context)?;
    Ok(())
}

async fn mint_jwt(args: JwtMintArgs, output: Output) -> anyhow::Result<()> {
    let channel = client::connect(args.socket.server_socket.clone()).await?;
    let svid = SvidClient::new(channel)
        .mint_jwtsvid(pb::MintJwtsvidRequest {
            spiffe_id: args.spiffe_id.to_string(),
            audience: args.audience,
            ttl: ttl_to_wire(args.ttl),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let token = Zeroizing::new(svid.token);
    match output {
        Output::Text => println!("{}", token.as_str()),
        Output::Json => {
            let document = Zeroizing::new(
                json!({
                    "token": token.as_str(),
                    "spiffe_id": svid.spiffe_id,
                    "expires_at": svid.expires_at,
                })
                .to_string(),
            );
            println!("{}", document.as_str());
        }
    }
    Ok(())
}
