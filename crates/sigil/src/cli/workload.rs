//! The workload commands (architecture.md §3): `sigil fetch x509|jwt|bundles`, `sigil validate
//! jwt` and `sigil watch`, clients of the SPIFFE Workload API at `--socket` (or
//! `SPIFFE_ENDPOINT_SOCKET`), as a workload sees it: what they print is what the agent gives
//! the calling process.
//!
//! Private keys are never printed: `fetch x509 --write DIR` puts them in files of mode 0600
//! (created with that mode, then renamed into place), under the names spire-agent's
//! `api fetch x509 -write` uses.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rustls::pki_types::UnixTime;
use serde_json::{Value, json};
use sigil_core::parse_duration;
use sigil_spiffe::workload_api::{Endpoint, WorkloadApiClient, WorkloadApiError, X509Context};
use sigil_spiffe::{BundleSet, JwtSvid, SpiffeId, SvidUsage, X509Svid, verify_chain};
use zeroize::Zeroizing;

use super::agent::time_text;
use super::{Output, client};

#[derive(Debug, Subcommand)]
pub(crate) enum FetchCommand {
    /// This workload's X.509-SVIDs and the bundles to verify peers with.
    X509(FetchX509Args),
    /// JWT-SVIDs for one or more audiences.
    Jwt(FetchJwtArgs),
    /// The X.509 and JWT bundles of every trust domain this workload may trust.
    Bundles(FetchBundlesArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ValidateCommand {
    /// Ask the agent whether a JWT-SVID is valid for an audience.
    Jwt(ValidateJwtArgs),
}

/// How to reach the agent; every workload command takes these.
#[derive(Debug, Args)]
pub(crate) struct WorkloadApiArgs {
    /// The Workload API address: unix:///path/to/api.sock or tcp://IP:PORT.
    #[arg(long, value_name = "URI", env = "SPIFFE_ENDPOINT_SOCKET")]
    socket: Endpoint,
    /// How long to wait for the agent to answer (`5s`, `1m`); for `watch`, each connection
    /// attempt.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = positive_duration)]
    timeout: Duration,
}

#[derive(Debug, Args)]
pub(crate) struct FetchX509Args {
    #[command(flatten)]
    api: WorkloadApiArgs,
    /// Also write, for each SVID i: svid.i.pem (chain), svid.i.key (PKCS#8, mode 0600),
    /// bundle.i.pem (its trust domain's bundle) and federated_bundle.i.j.pem.
    #[arg(long, value_name = "DIR")]
    write: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct FetchJwtArgs {
    #[command(flatten)]
    api: WorkloadApiArgs,
    /// An audience the tokens are for (repeat for several).
    #[arg(long, value_name = "AUDIENCE", required = true)]
    audience: Vec<String>,
    /// Only the SVID of this identity (default: one per identity of the workload).
    #[arg(long, value_name = "ID")]
    spiffe_id: Option<SpiffeId>,
}

#[derive(Debug, Args)]
pub(crate) struct FetchBundlesArgs {
    #[command(flatten)]
    api: WorkloadApiArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ValidateJwtArgs {
    #[command(flatten)]
    api: WorkloadApiArgs,
    /// The audience the validator is (one value).
    #[arg(long, value_name = "AUDIENCE")]
    audience: String,
    /// The token; `-` reads it from standard input (keeps it out of the process list).
    #[arg(long, value_name = "TOKEN")]
    token: String,
}

#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    #[command(flatten)]
    api: WorkloadApiArgs,
}

pub(crate) fn run_fetch(command: FetchCommand, output: Output) -> anyhow::Result<()> {
    client::runtime()?.block_on(async move {
        match command {
            FetchCommand::X509(args) => fetch_x509(args, output).await,
            FetchCommand::Jwt(args) => fetch_jwt(args, output).await,
            FetchCommand::Bundles(args) => fetch_bundles(args, output).await,
        }
    })
}

pub(crate) fn run_validate(command: ValidateCommand, output: Output) -> anyhow::Result<()> {
    let ValidateCommand::Jwt(args) = command;
    let token = if args.token == "-" {
        let mut token = Zeroizing::new(String::new());
        std::io::stdin()
            .read_to_string(&mut token)
            .context("cannot read the token from standard input")?;
        Zeroizing::new(token.trim().to_owned())
    } else {
        Zeroizing::new(args.token.clone())
    };
    client::runtime()?.block_on(validate_jwt(&args, &token, output))
}

pub(crate) fn run_watch(args: WatchArgs, output: Output) -> anyhow::Result<()> {
    client::runtime()?.block_on(async move {
        tokio::select! {
            result = watch(&args, output) => result,
            // Ctrl-C is how a watch ends: not an error.
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

/// A duration flag that must not be zero.
fn positive_duration(input: &str) -> Result<Duration, String> {
    match parse_duration(input) {
        Ok(d) if d.is_zero() => Err("the duration must be longer than 0s".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs `call` on a fresh connection within the `--timeout`.
async fn with_client<T, F>(api: &WorkloadApiArgs, call: F) -> anyhow::Result<T>
where
    F: AsyncFnOnce(&WorkloadApiClient) -> Result<T, WorkloadApiError>,
{
    let attempt = async {
        let client = WorkloadApiClient::connect(&api.socket).await?;
        call(&client).await
    };
    match tokio::time::timeout(api.timeout, attempt).await {
        Ok(result) => Ok(result?),
        Err(_) => bail!(
            "the workload api at {} did not answer within {}",
            api.socket,
            sigil_core::format_duration(api.timeout)
        ),
    }
}

// --- fetch x509 -------------------------------------------------------------------------

async fn fetch_x509(args: FetchX509Args, output: Output) -> anyhow::Result<()> {
    let context = with_client(&args.api, async |c| c.fetch_x509_context().await).await?;
    verify_x509(&context)?;
    let written = match &args.write {
        Some(dir) => Some(write_x509(dir, &context)?),
        None => None,
    };
    match output {
        Output::Json => {
            let mut document = x509_json(&context);
            if let Some(files) = &written {
                document["written"] = json!(files);
            }
            println!("{document}");
        }
        Output::Text => {
            print_x509(&context);
            for file in written.iter().flatten() {
                println!("Wrote {}", file.display());
            }
        }
    }
    Ok(())
}

/// Each SVID must chain to its own trust domain's bundle, as spire-agent's `api fetch x509`
/// checks before it prints or writes anything: material that would fail every peer is
/// reported here, where the cause is plain.
fn verify_x509(context: &X509Context) -> anyhow::Result<()> {
    let now = UnixTime::now();
    for (i, svid) in context.svids().iter().enumerate() {
        let verify = |usage| verify_chain(svid.cert_chain(), context.bundles(), now, usage);
        // Either usage will do: what matters is the chain, and an SVID meant only for one
        // side of TLS is still a valid SVID.
        if let Err(error) = verify(SvidUsage::ClientAuth).or_else(|_| verify(SvidUsage::ServerAuth))
        {
            bail!(
                "SVID #{i} ({}) does not verify against the bundle of its trust domain: {error}",
                svid.spiffe_id()
            );
        }
    }
    Ok(())
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn expiry_text(time: SystemTime) -> String {
    time_text(i64::try_from(unix_seconds(time)).unwrap_or(i64::MAX))
}

fn svid_json(svid: &X509Svid) -> Value {
    json!({
        "spiffe_id": svid.spiffe_id(),
        "hint": svid.hint(),
        "expires_at": unix_seconds(svid.not_after()),
        "chain_length": svid.cert_chain().len(),
    })
}

/// Trust domains in name order, own ones first.
fn bundle_names(context: &X509Context) -> Vec<(&str, bool)> {
    let mut names: Vec<(&str, bool)> = context
        .bundles()
        .iter()
        .map(|b| {
            let federated = context.federated_trust_domains().contains(b.trust_domain());
            (b.trust_domain().as_str(), federated)
        })
        .collect();
    names.sort_by_key(|(name, federated)| (*federated, *name));
    names
}

fn x509_json(context: &X509Context) -> Value {
    let bundles: Vec<Value> = bundle_names(context)
        .into_iter()
        .map(|(name, federated)| {
            let authorities = context
                .bundles()
                .get(name)
                .map_or(0, |b| b.x509().authorities().len());
            json!({"trust_domain": name, "federated": federated, "authorities": authorities})
        })
        .collect();
    json!({
        "svids": context.svids().iter().map(svid_json).collect::<Vec<_>>(),
        "bundles": bundles,
    })
}

fn print_x509(context: &X509Context) {
    println!("Received {} X.509-SVID(s)", context.svids().len());
    for (i, svid) in context.svids().iter().enumerate() {
        println!();
        println!("SVID #{i}");
        println!("SPIFFE ID        : {}", svid.spiffe_id());
        println!("Hint             : {}", svid.hint().unwrap_or("-"));
        println!("Expires at       : {}", expiry_text(svid.not_after()));
        println!("Chain length     : {}", svid.cert_chain().len());
    }
    println!();
    for (name, federated) in bundle_names(context) {
        let authorities = context
            .bundles()
            .get(name)
            .map_or(0, |b| b.x509().authorities().len());
        let kind = if federated {
            "federated bundle"
        } else {
            "bundle"
        };
        println!("{kind:<17}: {name} ({authorities} CA certificate(s))");
    }
}

/// Writes every SVID's files under spire-agent's names; returns the paths written.
fn write_x509(dir: &Path, context: &X509Context) -> anyhow::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    let mut put = |name: String, contents: &str, mode: u32| -> anyhow::Result<()> {
        let path = dir.join(name);
        write_atomically(&path, contents.as_bytes(), mode)?;
        written.push(path);
        Ok(())
    };
    let federated = context.federated_trust_domains();
    for (i, svid) in context.svids().iter().enumerate() {
        put(format!("svid.{i}.pem"), &svid.chain_pem(), 0o644)?;
        put(format!("svid.{i}.key"), &svid.private_key().to_pem(), 0o600)?;
        let own = context
            .bundles()
            .get(svid.spiffe_id().trust_domain_name())
            .context("the agent sent no bundle for an SVID's trust domain")?;
        put(format!("bundle.{i}.pem"), &own.x509().to_pem(), 0o644)?;
        // Federated trust domains in name order, so the numbering is stable between runs.
        for (j, trust_domain) in federated.iter().enumerate() {
            if let Some(bundle) = context.bundles().get(trust_domain.as_str()) {
                put(
                    format!("federated_bundle.{i}.{j}.pem"),
                    &bundle.x509().to_pem(),
                    0o644,
                )?;
            }
        }
    }
    Ok(written)
}

/// Writes `contents` to a new temporary file created with `mode`, then renames it over
/// `path`: a key file is never readable by others, not even for a moment, and a reader never
/// sees half a file.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let context = || format!("cannot write {}", path.display());
    let name = path.file_name().context("no file name")?.to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result.with_context(context)
}

// --- fetch jwt ---------------------------------------------------------------------------

async fn fetch_jwt(args: FetchJwtArgs, output: Output) -> anyhow::Result<()> {
    let audience = args.audience.clone();
    let spiffe_id = args.spiffe_id.clone();
    let svids = with_client(&args.api, async |c| {
        c.fetch_jwt_svids(&audience, spiffe_id.as_ref()).await
    })
    .await?;
    match output {
        Output::Json => {
            let svids: Vec<Value> = svids.iter().map(jwt_json).collect();
            let document = Zeroizing::new(json!({ "svids": svids }).to_string());
            println!("{}", document.as_str());
        }
        Output::Text => {
            for (i, svid) in svids.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                println!("SVID #{i}");
                println!("SPIFFE ID        : {}", svid.spiffe_id());
                println!("Hint             : {}", svid.hint().unwrap_or("-"));
                println!("Expires at       : {}", expiry_text(svid.expiry()));
                println!(
                    "Claims           : {}",
                    Value::Object(svid.claims().clone())
                );
                println!("Token            : {}", svid.token());
            }
        }
    }
    Ok(())
}

fn jwt_json(svid: &JwtSvid) -> Value {
    json!({
        "spiffe_id": svid.spiffe_id(),
        "hint": svid.hint(),
        "expires_at": unix_seconds(svid.expiry()),
        "claims": svid.claims(),
        "token": svid.token(),
    })
}

// --- fetch bundles -----------------------------------------------------------------------

async fn fetch_bundles(args: FetchBundlesArgs, output: Output) -> anyhow::Result<()> {
    let (x509, jwt) = with_client(&args.api, async |c| {
        Ok((c.fetch_x509_bundles().await?, c.fetch_jwt_bundles().await?))
    })
    .await?;
    let mut names: Vec<&str> = x509
        .iter()
        .chain(jwt.iter())
        .map(|b| b.trust_domain().as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    match output {
        Output::Json => {
            let bundles: Vec<Value> = names
                .iter()
                .map(|name| bundle_json(name, &x509, &jwt))
                .collect();
            println!("{}", json!({ "bundles": bundles }));
        }
        Output::Text => {
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                println!("Trust domain     : {name}");
                let key_ids: Vec<&str> = jwt
                    .get(name)
                    .map(|b| b.jwt().authorities().map(|a| a.key_id()).collect())
                    .unwrap_or_default();
                let key_ids = if key_ids.is_empty() {
                    "-".to_owned()
                } else {
                    key_ids.join(", ")
                };
                println!("JWT key IDs      : {key_ids}");
                match x509.get(name) {
                    Some(bundle) => print!("{}", bundle.x509().to_pem()),
                    None => println!("X.509 authorities: none"),
                }
            }
        }
    }
    Ok(())
}

fn bundle_json(name: &str, x509: &BundleSet, jwt: &BundleSet) -> Value {
    let x509_pem = x509.get(name).map(|b| b.x509().to_pem());
    let jwks = jwt
        .get(name)
        .and_then(|b| serde_json::from_str::<Value>(&b.jwt().to_jwks()).ok());
    json!({"trust_domain": name, "x509_authorities_pem": x509_pem, "jwks": jwks})
}

// --- validate jwt ------------------------------------------------------------------------

async fn validate_jwt(args: &ValidateJwtArgs, token: &str, output: Output) -> anyhow::Result<()> {
    let audience = args.audience.clone();
    let result = with_client(&args.api, async |c| {
        c.validate_jwt_svid(&audience, token).await
    })
    .await;
    let validated = match result {
        Ok(validated) => validated,
        Err(error) => {
            // The agent answers InvalidArgument for a token that fails validation: say so
            // plainly, with its reason.
            if let Some(WorkloadApiError::Status {
                code: tonic::Code::InvalidArgument,
                message,
                ..
            }) = error.downcast_ref::<WorkloadApiError>()
            {
                bail!("the token is not valid: {message}");
            }
            return Err(error);
        }
    };
    match output {
        Output::Json => println!(
            "{}",
            json!({
                "valid": true,
                "spiffe_id": validated.spiffe_id(),
                "claims": validated.claims(),
            })
        ),
        Output::Text => {
            println!("SVID is valid.");
            println!("SPIFFE ID        : {}", validated.spiffe_id());
            println!(
                "Claims           : {}",
                Value::Object(validated.claims().clone())
            );
        }
    }
    Ok(())
}

// --- watch -------------------------------------------------------------------------------

/// The first pause before reconnecting, and the longest.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Prints every X.509 update until Ctrl-C. Reconnects with a doubling backoff on errors the
/// Workload API client state machine retries (Unavailable, PermissionDenied, a closed stream:
/// checklist item 49, §2.8), and stops on the others (InvalidArgument above all).
async fn watch(args: &WatchArgs, output: Output) -> anyhow::Result<()> {
    let mut backoff = BACKOFF_START;
    loop {
        let error = match watch_once(&args.api, output, &mut backoff).await {
            Ok(()) => WorkloadApiError::StreamEnded {
                rpc: "FetchX509SVID",
            },
            Err(error) if !error.is_retryable() => return Err(error.into()),
            Err(error) => error,
        };
        eprintln!(
            "warning: {error}; reconnecting in {}",
            sigil_core::format_duration(backoff)
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection's worth of watching: `Ok` when the agent closed the stream.
async fn watch_once(
    api: &WorkloadApiArgs,
    output: Output,
    backoff: &mut Duration,
) -> Result<(), WorkloadApiError> {
    let open = async {
        let client = WorkloadApiClient::connect(&api.socket).await?;
        client.watch_x509_contexts().await
    };
    let mut stream = match tokio::time::timeout(api.timeout, open).await {
        Ok(stream) => stream?,
        Err(_) => {
            return Err(WorkloadApiError::Connect {
                endpoint: api.socket.to_string(),
                reason: format!(
                    "no answer within {}",
                    sigil_core::format_duration(api.timeout)
                ),
            });
        }
    };
    while let Some(update) = stream.next().await {
        match update {
            Ok(context) => {
                *backoff = BACKOFF_START;
                print_update(&context, output);
            }
            // A status ends the stream; what follows is tonic's end of stream.
            Err(error @ WorkloadApiError::Status { .. }) => return Err(error),
            // A message that does not parse is reported and the stream goes on (§2.8).
            Err(error) => eprintln!("warning: ignored an update the agent sent: {error}"),
        }
    }
    Ok(())
}

fn print_update(context: &X509Context, output: Output) {
    match output {
        Output::Json => {
            let mut document = x509_json(context);
            document["received_at"] = json!(unix_seconds(SystemTime::now()));
            println!("{document}");
        }
        Output::Text => {
            let svids: Vec<String> = context
                .svids()
                .iter()
                .map(|svid| {
                    format!(
                        "{} (expires {})",
                        svid.spiffe_id(),
                        expiry_text(svid.not_after())
                    )
                })
                .collect();
            let bundles: Vec<&str> = bundle_names(context)
                .into_iter()
                .map(|(name, _)| name)
                .collect();
            println!(
                "{} update: svids {}; bundles {}",
                expiry_text(SystemTime::now()),
                svids.join(", "),
                bundles.join(", ")
            );
        }
    }
}
