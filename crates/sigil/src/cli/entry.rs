//! `sigil entry ...`: registration entries through the admin API on the server's Unix socket.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use sigil_core::{Selector, format_duration, parse_duration, server_spiffe_id};
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::entry_client::EntryClient;
use sigil_spiffe::{SpiffeId, TrustDomain};
use tonic::Code;
use tonic::transport::Channel;

use super::{Output, client};

#[derive(Debug, Subcommand)]
pub(crate) enum EntryCommand {
    /// Register a workload or node alias.
    Create(CreateArgs),
    /// Show entries: one by ID, or those matching every filter given (all without filters).
    Show(ShowArgs),
    /// Change an entry: the fields given replace the stored ones (a repeated flag replaces
    /// the whole list); the others are kept.
    Update(UpdateArgs),
    /// Delete an entry.
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub(crate) struct SocketArgs {
    /// The server's admin socket.
    #[arg(
        long,
        value_name = "PATH",
        env = "SIGIL_SERVER_SOCKET",
        default_value = "/run/sigil/server/admin.sock"
    )]
    pub(crate) server_socket: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// The SPIFFE ID the entry issues.
    #[arg(long, value_name = "ID")]
    spiffe_id: SpiffeId,
    /// The agent or node alias that may issue it.
    #[arg(
        long,
        value_name = "ID",
        required_unless_present = "node",
        conflicts_with = "node"
    )]
    parent_id: Option<SpiffeId>,
    /// A selector `type:value` the workload must have (repeat for several).
    #[arg(long = "selector", value_name = "TYPE:VALUE", required = true)]
    selectors: Vec<Selector>,
    /// X.509-SVID lifetime (`1h`, `30m`); the server's default when absent.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    x509_ttl: Option<Duration>,
    /// JWT-SVID lifetime; the server's default when absent.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    jwt_ttl: Option<Duration>,
    /// A DNS name for the X.509-SVID (repeat for several).
    #[arg(long = "dns", value_name = "NAME")]
    dns_names: Vec<String>,
    /// A trust domain whose bundle the workload also gets (repeat for several).
    #[arg(long = "federates-with", value_name = "TRUST_DOMAIN")]
    federates_with: Vec<TrustDomain>,
    /// The workload may use the admin API.
    #[arg(long)]
    admin: bool,
    /// The workload may mint SVIDs for a downstream trust domain.
    #[arg(long)]
    downstream: bool,
    /// A hint for the workload to tell its SVIDs apart.
    #[arg(long, value_name = "HINT", default_value = "")]
    hint: String,
    /// A node alias: the parent is the server itself (in the trust domain of --spiffe-id).
    #[arg(long)]
    node: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// The entry ID.
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// Only entries with this SPIFFE ID.
    #[arg(long, value_name = "ID", conflicts_with = "id")]
    spiffe_id: Option<SpiffeId>,
    /// Only entries with this parent ID.
    #[arg(long, value_name = "ID", conflicts_with = "id")]
    parent_id: Option<SpiffeId>,
    /// Only entries having this selector (repeat: all of them).
    #[arg(long = "selector", value_name = "TYPE:VALUE", conflicts_with = "id")]
    selectors: Vec<Selector>,
}

#[derive(Debug, Args)]
pub(crate) struct UpdateArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// The entry ID.
    #[arg(long, value_name = "ID")]
    id: String,
    /// A new SPIFFE ID.
    #[arg(long, value_name = "ID")]
    spiffe_id: Option<SpiffeId>,
    /// A new parent ID.
    #[arg(long, value_name = "ID")]
    parent_id: Option<SpiffeId>,
    /// The new selectors (repeat for several).
    #[arg(long = "selector", value_name = "TYPE:VALUE")]
    selectors: Vec<Selector>,
    /// A new X.509-SVID lifetime.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    x509_ttl: Option<Duration>,
    /// A new JWT-SVID lifetime.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    jwt_ttl: Option<Duration>,
    /// The new DNS names (repeat for several).
    #[arg(long = "dns", value_name = "NAME")]
    dns_names: Vec<String>,
    /// The new federated trust domains (repeat for several).
    #[arg(long = "federates-with", value_name = "TRUST_DOMAIN")]
    federates_with: Vec<TrustDomain>,
    /// Whether the workload may use the admin API.
    #[arg(long, value_name = "BOOL")]
    admin: Option<bool>,
    /// Whether the workload may mint SVIDs for a downstream trust domain.
    #[arg(long, value_name = "BOOL")]
    downstream: Option<bool>,
    /// A new hint.
    #[arg(long, value_name = "HINT")]
    hint: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// The entry ID.
    #[arg(long, value_name = "ID")]
    id: String,
}

pub(crate) fn run(command: EntryCommand, output: Output) -> anyhow::Result<()> {
    client::runtime()?.block_on(async move {
        match command {
            EntryCommand::Create(args) => create(args, output).await,
            EntryCommand::Show(args) => show(args, output).await,
            EntryCommand::Update(args) => update(args, output).await,
            EntryCommand::Delete(args) => delete(args, output).await,
        }
    })
}

async fn connect(socket: &SocketArgs) -> anyhow::Result<EntryClient<Channel>> {
    Ok(EntryClient::new(
        client::connect(socket.server_socket.clone()).await?,
    ))
}

fn selector_to_wire(selector: &Selector) -> pb::Selector {
    pb::Selector {
        r#type: selector.kind().to_owned(),
        value: selector.value().to_owned(),
    }
}

fn ttl_to_wire(ttl: Option<Duration>) -> i64 {
    ttl.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

async fn create(args: CreateArgs, output: Output) -> anyhow::Result<()> {
    let parent_id = match args.parent_id {
        Some(parent) => parent,
        None => server_spiffe_id(&args.spiffe_id.trust_domain())
            .context("cannot form the server's SPIFFE ID")?,
    };
    let entry = pb::RegistrationEntry {
        spiffe_id: args.spiffe_id.to_string(),
        parent_id: parent_id.to_string(),
        selectors: args.selectors.iter().map(selector_to_wire).collect(),
        x509_svid_ttl: ttl_to_wire(args.x509_ttl),
        jwt_svid_ttl: ttl_to_wire(args.jwt_ttl),
        dns_names: args.dns_names,
        federates_with: args
            .federates_with
            .iter()
            .map(ToString::to_string)
            .collect(),
        admin: args.admin,
        downstream: args.downstream,
        hint: args.hint,
        ..Default::default()
    };
    let mut client = connect(&args.socket).await?;
    let response = client
        .batch_create_entry(pb::BatchCreateEntryRequest {
            entries: vec![entry],
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let result = response.results.into_iter().next();
    print_single(result.map(|r| (r.status, r.entry)), "Entry created", output)
}

/// Prints the one entry that a batch call of one item returned, or fails with the error that
/// item carried.
fn print_single(
    result: Option<(Option<pb::Status>, Option<pb::RegistrationEntry>)>,
    done: &str,
    output: Output,
) -> anyhow::Result<()> {
    let Some((status, entry)) = result else {
        bail!("the server returned no result");
    };
    check_item(status.as_ref())?;
    let Some(entry) = entry else {
        bail!("the server returned no entry");
    };
    match output {
        Output::Text => {
            println!("{done}");
            print_entry(&entry);
        }
        Output::Json => println!("{}", entry_json(&entry)),
    }
    Ok(())
}

async fn show(args: ShowArgs, output: Output) -> anyhow::Result<()> {
    let mut client = connect(&args.socket).await?;
    let entries = if let Some(id) = args.id {
        let entry = client
            .get_entry(pb::GetEntryRequest { id })
            .await
            .map_err(status_error)?
            .into_inner();
        vec![entry]
    } else {
        let filter = pb::list_entries_request::Filter {
            by_spiffe_id: args.spiffe_id.map(|id| id.to_string()).unwrap_or_default(),
            by_parent_id: args.parent_id.map(|id| id.to_string()).unwrap_or_default(),
            by_selectors: args.selectors.iter().map(selector_to_wire).collect(),
        };
        let mut entries = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_entries(pb::ListEntriesRequest {
                    filter: Some(filter.clone()),
                    page_size: 0,
                    page_token,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            entries.extend(page.entries);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        entries
    };
    match output {
        Output::Text => {
            println!(
                "Found {} entr{}",
                entries.len(),
                if entries.len() == 1 { "y" } else { "ies" }
            );
            for entry in &entries {
                println!();
                print_entry(entry);
            }
        }
        Output::Json => {
            let list: Vec<Value> = entries.iter().map(entry_json).collect();
            println!("{}", json!({ "entries": list }));
        }
    }
    Ok(())
}

async fn update(args: UpdateArgs, output: Output) -> anyhow::Result<()> {
    let mut client = connect(&args.socket).await?;
    let mut entry = client
        .get_entry(pb::GetEntryRequest {
            id: args.id.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if let Some(id) = args.spiffe_id {
        entry.spiffe_id = id.to_string();
    }
    if let Some(id) = args.parent_id {
        entry.parent_id = id.to_string();
    }
    if !args.selectors.is_empty() {
        entry.selectors = args.selectors.iter().map(selector_to_wire).collect();
    }
    if args.x509_ttl.is_some() {
        entry.x509_svid_ttl = ttl_to_wire(args.x509_ttl);
    }
    if args.jwt_ttl.is_some() {
        entry.jwt_svid_ttl = ttl_to_wire(args.jwt_ttl);
    }
    if !args.dns_names.is_empty() {
        entry.dns_names = args.dns_names;
    }
    if !args.federates_with.is_empty() {
        entry.federates_with = args
            .federates_with
            .iter()
            .map(ToString::to_string)
            .collect();
    }
    if let Some(admin) = args.admin {
        entry.admin = admin;
    }
    if let Some(downstream) = args.downstream {
        entry.downstream = downstream;
    }
    if let Some(hint) = args.hint {
        entry.hint = hint;
    }
    let response = client
        .batch_update_entry(pb::BatchUpdateEntryRequest {
            entries: vec![entry],
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let result = response.results.into_iter().next();
    print_single(result.map(|r| (r.status, r.entry)), "Entry updated", output)
}

async fn delete(args: DeleteArgs, output: Output) -> anyhow::Result<()> {
    let mut client = connect(&args.socket).await?;
    let response = client
        .batch_delete_entry(pb::BatchDeleteEntryRequest {
            ids: vec![args.id.clone()],
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let Some(result) = response.results.into_iter().next() else {
        bail!("the server returned no result");
    };
    check_item(result.status.as_ref())?;
    match output {
        Output::Text => println!("Entry {} deleted", args.id),
        Output::Json => println!("{}", json!({ "id": args.id, "deleted": true })),
    }
    Ok(())
}

/// A failed call as an error carrying the server's message.
pub(crate) fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

/// A failed batch item as an error carrying the server's message.
fn check_item(status: Option<&pb::Status>) -> anyhow::Result<()> {
    match status {
        Some(status) if status.code != Code::Ok as i32 => bail!("{}", status.message),
        _ => Ok(()),
    }
}

fn ttl_text(seconds: i64) -> String {
    match u64::try_from(seconds) {
        Ok(s) if s > 0 => format_duration(Duration::from_secs(s)),
        _ => "default".to_owned(),
    }
}

fn print_entry(entry: &pb::RegistrationEntry) {
    println!("Entry ID         : {}", entry.id);
    println!("SPIFFE ID        : {}", entry.spiffe_id);
    println!("Parent ID        : {}", entry.parent_id);
    println!("Revision         : {}", entry.revision);
    println!("X509-SVID TTL    : {}", ttl_text(entry.x509_svid_ttl));
    println!("JWT-SVID TTL     : {}", ttl_text(entry.jwt_svid_ttl));
    for selector in &entry.selectors {
        println!("Selector         : {}:{}", selector.r#type, selector.value);
    }
    for name in &entry.dns_names {
        println!("DNS name         : {name}");
    }
    for td in &entry.federates_with {
        println!("FederatesWith    : {td}");
    }
    if entry.admin {
        println!("Admin            : true");
    }
    if entry.downstream {
        println!("Downstream       : true");
    }
    if !entry.hint.is_empty() {
        println!("Hint             : {}", entry.hint);
    }
}

fn entry_json(entry: &pb::RegistrationEntry) -> Value {
    json!({
        "id": entry.id,
        "spiffe_id": entry.spiffe_id,
        "parent_id": entry.parent_id,
        "selectors": entry.selectors.iter()
            .map(|s| format!("{}:{}", s.r#type, s.value))
            .collect::<Vec<_>>(),
        "x509_svid_ttl": entry.x509_svid_ttl,
        "jwt_svid_ttl": entry.jwt_svid_ttl,
        "dns_names": entry.dns_names,
        "federates_with": entry.federates_with,
        "admin": entry.admin,
        "downstream": entry.downstream,
        "hint": entry.hint,
        "expires_at": entry.expires_at,
        "revision": entry.revision,
        "created_at": entry.created_at,
    })
}
