//! `sigil token generate`: single-use join tokens through the admin API on the server's Unix
//! socket.

use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::json;
use sigil_core::parse_duration;
use sigil_proto::server::v1 as pb;
use sigil_spiffe::SpiffeId;

use super::agent::{connect, time_text};
use super::entry::{SocketArgs, status_error};
use super::{Output, client};

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Make a single-use join token for one agent's attestation. The token is printed once
    /// and stored only as a hash.
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub(crate) struct GenerateArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// The SPIFFE ID the agent gets (`spiffe://<td>/sigil/agent/...`); without it the server
    /// picks `spiffe://<td>/sigil/agent/join_token/<random>`.
    #[arg(long, value_name = "ID")]
    spiffe_id: Option<SpiffeId>,
    /// How long the token stays usable (`10m`, `1h`, `7d`).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = positive_duration)]
    ttl: Duration,
}

/// A duration flag that must not be zero: a token that is never usable is a typo.
fn positive_duration(input: &str) -> Result<Duration, String> {
    match parse_duration(input) {
        Ok(d) if d.is_zero() => Err("must be longer than 0s".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) fn run(command: TokenCommand, output: Output) -> anyhow::Result<()> {
    client::runtime()?.block_on(async move {
        match command {
            TokenCommand::Generate(args) => generate(args, output).await,
        }
    })
}

async fn generate(args: GenerateArgs, output: Output) -> anyhow::Result<()> {
    let Ok(ttl) = i64::try_from(args.ttl.as_secs()) else {
        bail!("--ttl is too long");
    };
    let mut client = connect(&args.socket).await?;
    let token = client
        .create_join_token(pb::CreateJoinTokenRequest {
            ttl,
            agent_id: args.spiffe_id.map(|id| id.to_string()).unwrap_or_default(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if token.value.is_empty() {
        bail!("the server returned no token");
    }
    match output {
        Output::Text => {
            println!("Token      : {}", token.value);
            println!("SPIFFE ID  : {}", token.agent_id);
            println!("Expires at : {}", time_text(token.expires_at));
        }
        Output::Json => println!(
            "{}",
            json!({
                "token": token.value,
                "spiffe_id": token.agent_id,
                "expires_at": token.expires_at,
            })
        ),
    }
    Ok(())
}
