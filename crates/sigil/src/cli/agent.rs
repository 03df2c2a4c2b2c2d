//! `sigil agent run|validate` (the agent itself, in `agent_run`) and
//! `sigil agent list|show|ban|evict`: attested agents through the admin API on the server's
//! Unix socket.

use anyhow::bail;
use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::agent_client::AgentClient;
use sigil_spiffe::SpiffeId;
use time::OffsetDateTime;
use tonic::transport::Channel;

use super::entry::{SocketArgs, status_error};
use super::{Output, client};

#[derive(Debug, Subcommand)]
pub(crate) enum AgentCommand {
    /// Run the agent until SIGTERM or SIGINT.
    Run(super::agent_run::ConfigArgs),
    /// Parse and check an agent config without connecting, binding or creating anything.
    Validate(super::agent_run::ConfigArgs),
    /// List attested agents, those matching every filter given (all without filters).
    List(ListArgs),
    /// Show one attested agent.
    Show(IdArgs),
    /// Ban an agent: it can neither attest again nor renew, and loses its entries until it is
    /// evicted.
    Ban(IdArgs),
    /// Evict an agent: the server forgets it (and a ban), and it must attest again.
    Evict(IdArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// Only banned (`true`) or only not banned (`false`) agents.
    #[arg(long, value_name = "BOOL")]
    banned: Option<bool>,
    /// Only agents attested by this node attestor (`join_token`, ...).
    #[arg(long, value_name = "TYPE", value_parser = NonEmptyStringValueParser::new())]
    attestation_type: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct IdArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// The agent's SPIFFE ID.
    #[arg(long, value_name = "ID")]
    spiffe_id: SpiffeId,
}

pub(crate) fn run(command: AgentCommand, output: Output) -> anyhow::Result<()> {
    let command = match command {
        AgentCommand::Run(args) => return super::agent_run::run(&args),
        AgentCommand::Validate(args) => return super::agent_run::validate(&args, output),
        other => other,
    };
    client::runtime()?.block_on(async move {
        match command {
            AgentCommand::List(args) => list(args, output).await,
            AgentCommand::Show(args) => show(args, output).await,
            AgentCommand::Ban(args) => ban(args, output).await,
            AgentCommand::Evict(args) => evict(args, output).await,
            AgentCommand::Run(_) | AgentCommand::Validate(_) => unreachable!("handled above"),
        }
    })
}

pub(crate) async fn connect(socket: &SocketArgs) -> anyhow::Result<AgentClient<Channel>> {
    Ok(AgentClient::new(
        client::connect(socket.server_socket.clone()).await?,
    ))
}

async fn list(args: ListArgs, output: Output) -> anyhow::Result<()> {
    let mut client = connect(&args.socket).await?;
    let mut agents = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_agents(pb::ListAgentsRequest {
                banned: args.banned,
                attestation_type: args.attestation_type.clone().unwrap_or_default(),
                page_size: 0,
                page_token,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        agents.extend(page.agents);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    match output {
        Output::Text => {
            println!(
                "Found {} attested agent{}",
                agents.len(),
                if agents.len() == 1 { "" } else { "s" }
            );
            for agent in &agents {
                println!();
                print_agent(agent);
            }
        }
        Output::Json => {
            let list: Vec<Value> = agents.iter().map(agent_json).collect();
            println!("{}", json!({ "agents": list }));
        }
    }
    Ok(())
}

async fn show(args: IdArgs, output: Output) -> anyhow::Result<()> {
    let mut client = connect(&args.socket).await?;
    let agent = client
        .get_agent(pb::GetAgentRequest {
            spiffe_id: args.spiffe_id.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if agent.spiffe_id.is_empty() {
        bail!("the server returned no agent");
    }
    match output {
        Output::Text => print_agent(&agent),
        Output::Json => println!("{}", agent_json(&agent)),
    }
    Ok(())
}

async fn ban(args: IdArgs, output: Output) -> anyhow::Result<()> {
    let mut client = connect(&args.socket).await?;
    client
        .ban_agent(pb::BanAgentRequest {
            spiffe_id: args.spiffe_id.to_string(),
        })
        .await
        .map_err(status_error)?;
    match output {
        Output::Text => println!("Agent {} banned", args.spiffe_id),
        Output::Json => println!(
            "{}",
            json!({ "spiffe_id": args.spiffe_id.to_string(), "banned": true })
        ),
    }
    Ok(())
}

async fn evict(args: IdArgs, output: Output) -> anyhow::Result<()> {
    let mut client = connect(&args.socket).await?;
    client
        .delete_agent(pb::DeleteAgentRequest {
            spiffe_id: args.spiffe_id.to_string(),
        })
        .await
        .map_err(status_error)?;
    match output {
        Output::Text => println!("Agent {} evicted", args.spiffe_id),
        Output::Json => println!(
            "{}",
            json!({ "spiffe_id": args.spiffe_id.to_string(), "evicted": true })
        ),
    }
    Ok(())
}

fn print_agent(agent: &pb::AttestedAgent) {
    println!("SPIFFE ID         : {}", agent.spiffe_id);
    println!("Attestation type  : {}", agent.attestation_type);
    println!("X509-SVID serial  : {}", agent.x509_svid_serial);
    println!(
        "X509-SVID expires : {}",
        time_text(agent.x509_svid_expires_at)
    );
    for selector in &agent.selectors {
        println!("Selector          : {}:{}", selector.r#type, selector.value);
    }
    println!("Banned            : {}", agent.banned);
    println!("Can re-attest     : {}", agent.can_reattest);
    println!("Attested at       : {}", time_text(agent.created_at));
}

fn agent_json(agent: &pb::AttestedAgent) -> Value {
    json!({
        "spiffe_id": agent.spiffe_id,
        "attestation_type": agent.attestation_type,
        "x509_svid_serial": agent.x509_svid_serial,
        "x509_svid_expires_at": agent.x509_svid_expires_at,
        "selectors": agent
            .selectors
            .iter()
            .map(|s| format!("{}:{}", s.r#type, s.value))
            .collect::<Vec<_>>(),
        "banned": agent.banned,
        "can_reattest": agent.can_reattest,
        "created_at": agent.created_at,
    })
}

/// Unix seconds as an RFC 3339 UTC time, for people; JSON keeps the seconds.
pub(crate) fn time_text(seconds: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => seconds.to_string(),
    }
}
