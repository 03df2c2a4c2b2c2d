//! What the benches with several servers share: `sigil server run` processes on one database
//! and `sigil agent run` processes given their addresses, each a real process logging to a
//! file in its directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sigil_proto::server::v1 as pb;
use sqlx::{AssertSqlSafe, Connection};

use crate::common::{unix_channel, wait_for_socket};
use crate::spire_process::Process;

/// A running `sigil server run` on the shared database.
pub(crate) struct SigilServer {
    pub(crate) process: Process,
    pub(crate) admin_socket: PathBuf,
}

pub(crate) fn spawn_server(dir: &Path, url: &str, port: u16) -> SigilServer {
    fs::create_dir_all(dir).unwrap();
    let admin_socket = dir.join("run/admin.sock");
    let config = dir.join("server.toml");
    fs::write(
        &config,
        format!(
            "trust_domain = \"example.org\"\ndata_dir = \"data\"\n\
             bind_address = \"127.0.0.1:{port}\"\nadmin_socket = \"{}\"\n\
             [datastore]\nurl = \"{url}\"\n",
            admin_socket.display()
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sigil"));
    command
        .args(["server", "run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn");
    SigilServer {
        process: Process::spawn(command, dir.join("server.log")),
        admin_socket,
    }
}

/// A server on each of `ports` in `dir/server-N`, all on `url`: the first alone, then the
/// others together (each new one waits before signing); returns once every admin socket
/// answers.
pub(crate) async fn start_servers(dir: &Path, url: &str, ports: &[u16]) -> Vec<SigilServer> {
    let first = spawn_server(&dir.join("server-0"), url, ports[0]);
    wait_for_socket(&first.admin_socket).await;
    let mut servers = vec![first];
    for (n, port) in ports.iter().enumerate().skip(1) {
        servers.push(spawn_server(&dir.join(format!("server-{n}")), url, *port));
    }
    for server in &servers {
        wait_for_socket(&server.admin_socket).await;
    }
    servers
}

/// An agent in `dir/name` given the servers on `ports` (checking every second for a
/// preferred one that is back), logging at `log_level`.
pub(crate) async fn start_agent_named(
    dir: &Path,
    name: &str,
    server: &SigilServer,
    ports: &[u16],
    log_level: &str,
) -> ((Process, PathBuf), String) {
    let channel = unix_channel(server.admin_socket.clone()).await.unwrap();
    let token = sigil_proto::server::v1::agent_client::AgentClient::new(channel.clone())
        .create_join_token(pb::CreateJoinTokenRequest {
            ttl: 600,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let bundle = sigil_proto::server::v1::bundle_client::BundleClient::new(channel)
        .get_bundle(pb::GetBundleRequest::default())
        .await
        .unwrap()
        .into_inner();
    let dir = dir.join(name);
    fs::create_dir_all(&dir).unwrap();
    let addresses: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    fs::write(dir.join("bootstrap.json"), &bundle.document).unwrap();
    fs::write(
        dir.join("agent.toml"),
        format!(
            "trust_domain = \"example.org\"\nserver_address = [{}]\n\
             server_rebalance_interval = \"1s\"\n\
             data_dir = \"data\"\nsocket_path = \"api.sock\"\n\
             trust_bundle_path = \"bootstrap.json\"\ntrust_bundle_format = \"spiffe\"\n\
             [node_attestor]\ntype = \"join_token\"\ntoken = \"{}\"\n",
            addresses.join(", "),
            token.value
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sigil"));
    command
        .args(["agent", "run", "--config"])
        .arg(dir.join("agent.toml"))
        .env("RUST_LOG", log_level);
    let process = Process::spawn(command, dir.join("agent.log"));
    let socket = dir.join("api.sock");
    wait_for_socket(&socket).await;
    ((process, socket), token.agent_id)
}

pub(crate) async fn exec(admin: &str, statement: &str) {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(admin).await.unwrap();
    sqlx::query(AssertSqlSafe(statement.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// The admin URL with its database name replaced.
pub(crate) fn with_database(admin: &str, name: &str) -> String {
    let (base, query) = admin
        .split_once('?')
        .map_or((admin, None), |(b, q)| (b, Some(q)));
    let (server, _) = base.rsplit_once('/').unwrap();
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}
