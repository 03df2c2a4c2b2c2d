//! `sigil federation ...`: federation relationships made at run time, through the admin API's
//! `TrustDomain` service (the config file's `[[federation.federates_with]]` are listed too, and
//! can be refreshed, but not changed here).

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::trust_domain_client::TrustDomainClient;
use sigil_spiffe::{SpiffeId, TrustDomain};
use tonic::Code;
use tonic::transport::Channel;

use super::bundle::trust_domain_id;
use super::entry::{SocketArgs, status_error};
use super::{Output, client};

#[derive(Debug, Subcommand)]
pub(crate) enum FederationCommand {
    /// Create a relationship: fetch a foreign trust domain's bundle from its bundle endpoint.
    Create(RelationshipArgs),
    /// Show one relationship.
    Show(TrustDomainArgs),
    /// List every relationship (the config file's and the API's).
    List(ListArgs),
    /// Replace a relationship made through the API (same flags as create).
    Update(RelationshipArgs),
    /// Delete a relationship made through the API; its stored bundle stays (`sigil bundle
    /// delete` removes it).
    Delete(TrustDomainArgs),
    /// Fetch a relationship's bundle now and report the fetch's own error if it fails.
    Refresh(TrustDomainArgs),
}

/// How the bundle endpoint is authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Profile {
    /// The endpoint presents an X.509-SVID of the foreign trust domain.
    #[value(name = "https_spiffe")]
    HttpsSpiffe,
    /// The endpoint presents a web PKI certificate (system roots).
    #[value(name = "https_web")]
    HttpsWeb,
}

impl Profile {
    fn as_str(self) -> &'static str {
        match self {
            Self::HttpsSpiffe => "https_spiffe",
            Self::HttpsWeb => "https_web",
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct RelationshipArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// The foreign trust domain (a name or `spiffe://<name>`).
    #[arg(long, value_name = "TD", value_parser = trust_domain_id)]
    trust_domain: TrustDomain,
    /// Its bundle endpoint, `https://...`.
    #[arg(long, value_name = "URL", value_parser = https_url)]
    url: String,
    /// How to authenticate the endpoint.
    #[arg(long, value_enum)]
    profile: Profile,
    /// https_spiffe: the endpoint server's SPIFFE ID.
    #[arg(long, value_name = "ID", required_if_eq("profile", "https_spiffe"))]
    endpoint_spiffe_id: Option<SpiffeId>,
    /// https_spiffe: a first bundle of the trust domain (SPIFFE bundle document or PEM),
    /// stored unless one is stored already.
    #[arg(long, value_name = "FILE")]
    bundle: Option<PathBuf>,
    /// https_web: root certificates (PEM) that authenticate the endpoint instead of the
    /// system's; the server stores them (not the path).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct TrustDomainArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// The foreign trust domain (a name or `spiffe://<name>`).
    #[arg(long, value_name = "TD", value_parser = trust_domain_id)]
    trust_domain: TrustDomain,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    socket: SocketArgs,
}

/// Flags that parse but do not go together; exits 64 like a clap error.
#[derive(Debug)]
pub(crate) struct UsageError(String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub(crate) fn run(command: FederationCommand, output: Output) -> anyhow::Result<()> {
    client::runtime()?.block_on(async move {
        match command {
            FederationCommand::Create(args) => change(args, output, false).await,
            FederationCommand::Update(args) => change(args, output, true).await,
            FederationCommand::Show(args) => show(args, output).await,
            FederationCommand::List(args) => list(args, output).await,
            FederationCommand::Delete(args) => delete(args, output).await,
            FederationCommand::Refresh(args) => refresh(args, output).await,
        }
    })
}

/// A first check of the URL; the server checks the rest (host, syntax).
fn https_url(input: &str) -> Result<String, String> {
    if !input.starts_with("https://") {
        return Err("expected an https:// URL: bundle endpoints are https only".to_owned());
    }
    Ok(input.to_owned())
}

async fn connect(socket: &SocketArgs) -> anyhow::Result<TrustDomainClient<Channel>> {
    Ok(TrustDomainClient::new(
        client::connect(socket.server_socket.clone()).await?,
    ))
}

/// The message of a create or update, after the checks clap cannot express.
fn relationship(args: &RelationshipArgs) -> anyhow::Result<pb::FederationRelationship> {
    if args.profile == Profile::HttpsWeb {
        if args.endpoint_spiffe_id.is_some() {
            return Err(
                UsageError("--endpoint-spiffe-id is for --profile https_spiffe".into()).into(),
            );
        }
        if args.bundle.is_some() {
            return Err(UsageError("--bundle is for --profile https_spiffe".into()).into());
        }
    } else if args.ca_file.is_some() {
        return Err(UsageError("--ca-file is for --profile https_web".into()).into());
    }
    let ca_roots = match &args.ca_file {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => Vec::new(),
    };
    let trust_domain_bundle = match &args.bundle {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => Vec::new(),
    };
    Ok(pb::FederationRelationship {
        trust_domain: args.trust_domain.to_string(),
        bundle_endpoint_url: args.url.clone(),
        profile: args.profile.as_str().to_owned(),
        endpoint_spiffe_id: args
            .endpoint_spiffe_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        trust_domain_bundle,
        from_config: false,
        ca_roots,
    })
}

async fn change(args: RelationshipArgs, output: Output, update: bool) -> anyhow::Result<()> {
    let message = relationship(&args)?;
    let mut client = connect(&args.socket).await?;
    let results = if update {
        client
            .batch_update_federation_relationship(pb::BatchUpdateFederationRelationshipRequest {
                relationships: vec![message],
            })
            .await
    } else {
        client
            .batch_create_federation_relationship(pb::BatchCreateFederationRelationshipRequest {
                relationships: vec![message],
            })
            .await
    }
    .map_err(status_error)?
    .into_inner()
    .results;
    let stored = single(results)?;
    match output {
        Output::Text => {
            let verb = if update { "updated" } else { "created" };
            println!("Federation relationship {verb}");
            print_relationship(&stored);
        }
        Output::Json => println!("{}", relationship_json(&stored)),
    }
    Ok(())
}

/// The one item of a batch answer, or its error.
fn single(
    results: Vec<pb::FederationRelationshipResult>,
) -> anyhow::Result<pb::FederationRelationship> {
    let Some(result) = results.into_iter().next() else {
        bail!("the server answered no result");
    };
    if let Some(status) = &result.status
        && status.code != Code::Ok as i32
    {
        bail!("{}", status.message);
    }
    result
        .relationship
        .context("the server answered OK without the relationship")
}

async fn show(args: TrustDomainArgs, output: Output) -> anyhow::Result<()> {
    let relationship = connect(&args.socket)
        .await?
        .get_federation_relationship(pb::GetFederationRelationshipRequest {
            trust_domain: args.trust_domain.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    match output {
        Output::Text => print_relationship(&relationship),
        Output::Json => println!("{}", relationship_json(&relationship)),
    }
    Ok(())
}

async fn list(args: ListArgs, output: Output) -> anyhow::Result<()> {
    let relationships = connect(&args.socket)
        .await?
        .list_federation_relationships(pb::ListFederationRelationshipsRequest {})
        .await
        .map_err(status_error)?
        .into_inner()
        .relationships;
    match output {
        Output::Text => {
            println!("Found {} federation relationship(s)", relationships.len());
            for relationship in &relationships {
                println!();
                print_relationship(relationship);
            }
        }
        Output::Json => {
            let list: Vec<Value> = relationships.iter().map(relationship_json).collect();
            println!("{}", json!({ "relationships": list }));
        }
    }
    Ok(())
}

async fn delete(args: TrustDomainArgs, output: Output) -> anyhow::Result<()> {
    let td = args.trust_domain;
    let results = connect(&args.socket)
        .await?
        .batch_delete_federation_relationship(pb::BatchDeleteFederationRelationshipRequest {
            trust_domains: vec![td.to_string()],
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .results;
    single(results)?;
    match output {
        Output::Text => println!("Federation relationship with {td} deleted (its bundle is kept)"),
        Output::Json => println!(
            "{}",
            json!({ "trust_domain": td.to_string(), "deleted": true })
        ),
    }
    Ok(())
}

async fn refresh(args: TrustDomainArgs, output: Output) -> anyhow::Result<()> {
    let td = args.trust_domain;
    let answer = connect(&args.socket)
        .await?
        .refresh_bundle(pb::RefreshBundleRequest {
            trust_domain: td.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    match output {
        Output::Text => {
            let what = if answer.changed {
                "new bundle stored"
            } else {
                "bundle unchanged"
            };
            println!(
                "Bundle of {td} refreshed: {what} (sequence {})",
                answer.sequence
            );
        }
        Output::Json => println!(
            "{}",
            json!({
                "trust_domain": td.to_string(),
                "changed": answer.changed,
                "sequence": answer.sequence,
            })
        ),
    }
    Ok(())
}

fn print_relationship(relationship: &pb::FederationRelationship) {
    println!("Trust domain        : {}", relationship.trust_domain);
    println!("Bundle endpoint URL : {}", relationship.bundle_endpoint_url);
    println!("Profile             : {}", relationship.profile);
    if !relationship.endpoint_spiffe_id.is_empty() {
        println!("Endpoint SPIFFE ID  : {}", relationship.endpoint_spiffe_id);
    }
    let source = if relationship.from_config {
        "config file"
    } else {
        "admin API"
    };
    println!("Source              : {source}");
}

fn relationship_json(relationship: &pb::FederationRelationship) -> Value {
    let endpoint = (!relationship.endpoint_spiffe_id.is_empty())
        .then(|| relationship.endpoint_spiffe_id.clone());
    json!({
        "trust_domain": relationship.trust_domain,
        "bundle_endpoint_url": relationship.bundle_endpoint_url,
        "profile": relationship.profile,
        "endpoint_spiffe_id": endpoint,
        "from_config": relationship.from_config,
    })
}
