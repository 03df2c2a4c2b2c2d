//! The command tree and its dispatch; each command group lives in its own module.

mod agent;
mod agent_run;
mod bundle;
mod client;
mod dev;
mod entry;
mod federation;
mod healthcheck;
mod mint;
mod server;
mod token;
mod workload;

use clap::{Parser, Subcommand, ValueEnum};
use sigil_server::config::ConfigError;

/// SPIFFE workload identity: server, agent and admin commands.
#[derive(Debug, Parser)]
#[command(
    name = "sigil",
    version,
    propagate_version = true,
    arg_required_else_help = true
)]
pub(crate) struct Cli {
    /// How commands print their results: `text` for people, `json` for one JSON document.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Server commands: run the server, check a config.
    #[command(subcommand)]
    Server(server::ServerCommand),
    /// Registration entries, through the server's admin socket.
    #[command(subcommand)]
    Entry(entry::EntryCommand),
    /// Trust bundles: this server's own and the federated ones.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// Federation relationships made at run time, through the server's admin socket.
    #[command(subcommand)]
    Federation(federation::FederationCommand),
    /// X.509-SVIDs minted by the server for any workload ID.
    #[command(subcommand)]
    X509(mint::X509Command),
    /// JWT-SVIDs minted by the server for any workload ID.
    #[command(subcommand)]
    Jwt(mint::JwtCommand),
    /// The agent (run, validate) and attested agents (through the server's admin socket).
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Join tokens for agent attestation, through the server's admin socket.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// A server and an agent in one process on SQLite, with your uid registered: the
    /// quickest way to get an SPIFFE identity. Runs until Ctrl-C.
    Dev(dev::DevArgs),
    /// Exit 0 when the server is ready (its datastore answers and its CA can sign), or with
    /// --socket when an agent's Workload API socket reports SERVING; 1 otherwise with the
    /// reason on stderr.
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Workload API: fetch this process's SVIDs or bundles from the agent.
    #[command(subcommand)]
    Fetch(workload::FetchCommand),
    /// Workload API: have the agent validate a token.
    #[command(subcommand)]
    Validate(workload::ValidateCommand),
    /// Workload API: print every X.509 update the agent pushes, until Ctrl-C.
    Watch(workload::WatchArgs),
}

/// Runs a parsed command line.
pub(crate) fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Server(command) => server::run(command, cli.output),
        Command::Entry(command) => entry::run(command, cli.output),
        Command::Bundle(command) => bundle::run(command, cli.output),
        Command::Federation(command) => federation::run(command, cli.output),
        Command::X509(command) => mint::run_x509(command, cli.output),
        Command::Jwt(command) => mint::run_jwt(command, cli.output),
        Command::Agent(command) => agent::run(command, cli.output),
        Command::Token(command) => token::run(command, cli.output),
        Command::Dev(args) => dev::run(&args),
        Command::Healthcheck(args) => healthcheck::run(&args, cli.output),
        Command::Fetch(command) => workload::run_fetch(command, cli.output),
        Command::Validate(command) => workload::run_validate(command, cli.output),
        Command::Watch(args) => workload::run_watch(args, cli.output),
    }
}

/// Whether a failure is the caller's input (exit 64) rather than the environment (exit 1).
pub(crate) fn is_usage_error(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.is::<ConfigError>() || cause.is::<federation::UsageError>())
}

/// What `server validate` and `agent validate` do with a config that did not load: with
/// `--output json`, print the one JSON document that names the file, key and position; then
/// hand the error back for `main` (exit 64, message on stderr).
pub(crate) fn invalid_config(
    file: &std::path::Path,
    error: ConfigError,
    output: Output,
) -> anyhow::Error {
    if output == Output::Json {
        let document = serde_json::json!({
            "valid": false,
            "file": path_json(file),
            "key": error.key(),
            "position": error.position().map(|(line, column)| {
                serde_json::json!({"line": line, "column": column})
            }),
            "error": error.to_string(),
        });
        println!("{document}");
    }
    error.into()
}

/// A path as a JSON string (`json!` on a `Path` would fail on one that is not UTF-8).
pub(crate) fn path_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::json!(path.display().to_string())
}
