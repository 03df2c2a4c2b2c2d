//! `sigil dev`: a server and an agent in one process, on SQLite under one data directory,
//! with the calling user registered, so that `sigil fetch x509` works right away.
//!
//! Both halves are the real ones (`sigil_server::run`, `sigil_agent::run`) talking over
//! loopback TCP with mutual TLS, exactly as two processes would. The agent always has the ID
//! `spiffe://<td>/sigil/agent/dev` (its join token fixes it), so the workload entry made on
//! the first start stays valid on every later start, even when the agent has to attest again.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use sigil_core::config::ConfigError;
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::agent_client::AgentClient;
use sigil_proto::server::v1::bundle_client::BundleClient;
use sigil_proto::server::v1::entry_client::EntryClient;
use sigil_spiffe::TrustDomain;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use super::client;

/// How long the server and the agent get to come up before `sigil dev` gives up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// Where the server and agent keep their state (default: `sigil/dev` in the user's cache
    /// directory, `$XDG_CACHE_HOME` or `~/.cache`). A second start reuses it.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The trust domain.
    #[arg(long, value_name = "TD", default_value = "example.org")]
    trust_domain: String,
}

pub(crate) fn run(args: &DevArgs) -> anyhow::Result<()> {
    let trust_domain = TrustDomain::new(&args.trust_domain).map_err(|e| {
        ConfigError::invalid("--trust-domain", format!("{:?}: {e}", args.trust_domain))
    })?;
    let data_dir = match &args.data_dir {
        Some(dir) => std::path::absolute(dir).context("cannot resolve --data-dir")?,
        None => default_data_dir()?,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let port = free_port()?;
    let server_config = sigil_server::config::Config::parse(
        &format!(
            "trust_domain = \"{trust_domain}\"\ndata_dir = \"server\"\n\
             bind_address = \"127.0.0.1:{port}\"\nadmin_socket = \"server/admin.sock\"\n"
        ),
        &data_dir,
    )?;
    client::runtime()?.block_on(async move {
        let mut terminate = signal(SignalKind::terminate())
            .map_err(|e| anyhow::anyhow!("cannot listen for SIGTERM: {e}"))?;
        let mut interrupt = signal(SignalKind::interrupt())
            .map_err(|e| anyhow::anyhow!("cannot listen for SIGINT: {e}"))?;
        let (stop, stopped) = watch::channel(false);
        let admin_socket = server_config.admin_socket.clone();
        let mut server_stop = stopped.clone();
        let mut server = tokio::spawn(async move {
            sigil_server::run::run(&server_config, async move {
                let _ = server_stop.wait_for(|stop| *stop).await;
            })
            .await
        });
        let admin = tokio::select! {
            admin = wait_for_admin(&admin_socket) => admin?,
            result = &mut server => {
                result??;
                bail!("the server stopped before it was ready");
            }
        };
        let agent_config = prepare_agent(admin, &trust_domain, &data_dir, port).await?;
        let socket = agent_config.socket_path.clone();
        let mut agent = tokio::spawn(sigil_agent::run::run(agent_config, stopped));
        tokio::select! {
            ready = wait_for_socket(&socket) => ready?,
            result = &mut agent => {
                result??;
                bail!("the agent stopped before it was ready");
            }
        }
        let uid = caller_uid()?;
        println!(
            "sigil dev is running: trust domain {trust_domain}, state in {}",
            data_dir.display()
        );
        println!("Your uid {uid} has the identity spiffe://{trust_domain}/dev/uid/{uid}.");
        println!();
        println!("export SPIFFE_ENDPOINT_SOCKET=unix://{}", socket.display());
        println!("sigil fetch x509");
        println!();
        println!("Press Ctrl-C to stop.");
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
            result = &mut agent => { result??; bail!("the agent stopped") }
            result = &mut server => { result??; bail!("the server stopped") }
        }
        let _ = stop.send(true);
        agent.await??;
        server.await??;
        Ok(())
    })
}

/// Registers the caller and writes nothing but the bootstrap bundle; returns the agent config.
async fn prepare_agent(
    admin: tonic::transport::Channel,
    trust_domain: &TrustDomain,
    data_dir: &Path,
    port: u16,
) -> anyhow::Result<sigil_agent::config::Config> {
    let agent_id = format!("spiffe://{trust_domain}/sigil/agent/dev");
    let bundle = BundleClient::new(admin.clone())
        .get_bundle(pb::GetBundleRequest {})
        .await
        .context("cannot read the server's bundle")?
        .into_inner();
    let bootstrap = data_dir.join("bootstrap.json");
    std::fs::write(&bootstrap, &bundle.document)
        .with_context(|| format!("cannot write {}", bootstrap.display()))?;
    // A fresh token on every start: it is used only when the agent has no valid stored SVID.
    let token = AgentClient::new(admin.clone())
        .create_join_token(pb::CreateJoinTokenRequest {
            ttl: 600,
            agent_id: agent_id.clone(),
        })
        .await
        .context("cannot create a join token")?
        .into_inner()
        .value;
    let uid = caller_uid()?;
    let workload_id = format!("spiffe://{trust_domain}/dev/uid/{uid}");
    let mut entries = EntryClient::new(admin);
    let existing = entries
        .list_entries(pb::ListEntriesRequest {
            filter: Some(pb::list_entries_request::Filter {
                by_spiffe_id: workload_id.clone(),
                by_parent_id: agent_id.clone(),
                by_selectors: Vec::new(),
            }),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .context("cannot list entries")?
        .into_inner();
    if existing.entries.is_empty() {
        let created = entries
            .batch_create_entry(pb::BatchCreateEntryRequest {
                entries: vec![pb::RegistrationEntry {
                    spiffe_id: workload_id,
                    parent_id: agent_id,
                    selectors: vec![pb::Selector {
                        r#type: "unix".to_owned(),
                        value: format!("uid:{uid}"),
                    }],
                    ..Default::default()
                }],
            })
            .await
            .context("cannot register the caller")?
            .into_inner();
        if let Some(status) = created.results.first().and_then(|r| r.status.as_ref())
            && status.code != 0
        {
            bail!("cannot register the caller: {}", status.message);
        }
    }
    let text = format!(
        "trust_domain = \"{trust_domain}\"\nserver_address = \"127.0.0.1:{port}\"\n\
         data_dir = \"agent\"\ntrust_bundle_path = \"bootstrap.json\"\n\
         trust_bundle_format = \"spiffe\"\n\
         [node_attestor]\ntype = \"join_token\"\ntoken = \"{token}\"\n"
    );
    Ok(sigil_agent::config::Config::parse(&text, data_dir)?)
}

async fn wait_for_admin(socket: &Path) -> anyhow::Result<tonic::transport::Channel> {
    wait_for_socket(socket).await?;
    client::connect(socket.to_owned()).await
}

async fn wait_for_socket(socket: &Path) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    while tokio::net::UnixStream::connect(socket).await.is_err() {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{} did not come up within {START_TIMEOUT:?}",
                socket.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// A free loopback port for the agent API (only the agent in this process connects to it).
fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set: give --data-dir")?;
    Ok(cache.join("sigil").join("dev"))
}

/// The effective uid of this process (the user who ran `sigil dev`): what the agent reads
/// from the socket's peer credentials when that user's workloads connect.
fn caller_uid() -> anyhow::Result<u32> {
    // /proc/self is owned by the process's effective uid.
    Ok(std::fs::metadata("/proc/self")
        .context("cannot read /proc/self to learn the caller's uid")?
        .uid())
}
