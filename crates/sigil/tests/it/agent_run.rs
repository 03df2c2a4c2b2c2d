//! The real `sigil agent run` beside the real `sigil server run`: the agent attests with a
//! token from `sigil token generate`, trusts the bundle `sigil bundle show` printed, syncs,
//! signs, and serves the Workload API to the `spiffe` crate (an independent client): X.509
//! context, a stream that sees a new entry, JWT-SVIDs validated by the agent and offline.
//! A restarted agent reuses its stored SVID.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use spiffe::{JwtSvid, SpiffeId, TrustDomain, WorkloadApiClient};
use tokio_stream::StreamExt;

use crate::agent_api::write_config;
use crate::harness::{POLL_PAUSE, POLLS, Server, json};

/// A running `sigil agent run`, killed when dropped.
pub(crate) struct Agent {
    child: Child,
    pub(crate) socket: PathBuf,
    log: PathBuf,
}

impl Agent {
    /// Starts the agent on `dir/agent.toml` and waits for its Workload API socket.
    pub(crate) fn start(dir: &Path) -> Self {
        let socket = dir.join("agent/api.sock");
        let log = dir.join("agent.log");
        let child = Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(["agent", "run", "--config"])
            .arg(dir.join("agent.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(
                File::options()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        let mut agent = Self { child, socket, log };
        for _ in 0..POLLS {
            if let Some(status) = agent.child.try_wait().unwrap() {
                panic!("agent exited early ({status}): {}", agent.log());
            }
            if UnixStream::connect(&agent.socket).is_ok() {
                return agent;
            }
            std::thread::sleep(POLL_PAUSE);
        }
        panic!("agent did not start: {}", agent.log());
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub(crate) fn terminate(mut self) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        for _ in 0..POLLS {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "agent exit {status}: {}", self.log());
                return;
            }
            std::thread::sleep(POLL_PAUSE);
        }
        panic!("agent did not stop: {}", self.log());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The uid this test runs as: the workload's `unix:uid` selector.
pub(crate) fn own_uid() -> u32 {
    fs::metadata("/proc/self").unwrap().uid()
}

/// Starts a server, gives an agent a token and the bootstrap bundle, and writes
/// `dir/agent.toml`. Returns the server and the agent's SPIFFE ID.
pub(crate) fn server_and_agent_config(dir: &Path) -> (Server, String) {
    let addr = write_config(dir);
    let server = Server::start(dir);
    let token = json(&server.cli(&["token", "generate", "--output", "json"]));
    let agent_id = token["spiffe_id"].as_str().unwrap().to_owned();
    let token = token["token"].as_str().unwrap().to_owned();
    let bundle = server.cli(&["bundle", "show", "--format", "pem"]);
    assert_eq!(bundle.status.code(), Some(0));
    fs::write(dir.join("bootstrap.pem"), &bundle.stdout).unwrap();
    fs::write(
        dir.join("agent.toml"),
        format!(
            "trust_domain = \"example.org\"\nserver_address = \"{addr}\"\n\
             data_dir = \"agent\"\ntrust_bundle_path = \"bootstrap.pem\"\n\
             [node_attestor]\ntype = \"join_token\"\ntoken = \"{token}\"\n"
        ),
    )
    .unwrap();
    (server, agent_id)
}

fn create_entry(server: &Server, spiffe_id: &str, parent: &str, selector: &str) {
    let out = server.entry(&[
        "create",
        "--spiffe-id",
        spiffe_id,
        "--parent-id",
        parent,
        "--selector",
        selector,
        "--output",
        "json",
    ]);
    json(&out);
}

#[test]
fn a_workload_gets_its_identity_from_the_real_agent_through_the_spiffe_crate() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (server, agent_id) = server_and_agent_config(dir.path());
    let uid = own_uid();
    let web = "spiffe://example.org/web";
    create_entry(&server, web, &agent_id, &format!("unix:uid:{uid}"));
    // An entry for another uid: this workload must never see it.
    create_entry(
        &server,
        "spiffe://example.org/other",
        &agent_id,
        "unix:uid:4242",
    );
    let agent = Agent::start(dir.path());
    let td = TrustDomain::new("example.org").unwrap();

    runtime.block_on(async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        let context = client.fetch_x509_context().await.unwrap();
        assert_eq!(context.svids().len(), 1, "only the entry of this uid");
        let svid = context.default_svid().unwrap();
        assert_eq!(svid.spiffe_id().to_string(), web);
        assert!(context.bundle_set().get(&td).is_some());

        // A stream sees an entry registered after it opened.
        let mut stream = client.stream_x509_contexts().await.unwrap();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.svids().len(), 1);
        create_entry(
            &server,
            "spiffe://example.org/api",
            &agent_id,
            &format!("unix:uid:{uid}"),
        );
        let second = tokio::time::timeout(std::time::Duration::from_secs(60), stream.next())
            .await
            .expect("the new entry reached the open stream")
            .unwrap()
            .unwrap();
        let mut ids: Vec<String> = second
            .svids()
            .iter()
            .map(|s| s.spiffe_id().to_string())
            .collect();
        ids.sort();
        assert_eq!(ids, ["spiffe://example.org/api", web]);

        // JWT-SVIDs: minted through the agent, validated by the agent and offline.
        let web_id: SpiffeId = web.parse().unwrap();
        let jwt = client.fetch_jwt_svid(["db"], Some(&web_id)).await.unwrap();
        assert_eq!(jwt.spiffe_id().to_string(), web);
        let validated = client.validate_jwt_token("db", jwt.token()).await.unwrap();
        assert_eq!(validated.spiffe_id().to_string(), web);
        assert!(
            client
                .validate_jwt_token("other", jwt.token())
                .await
                .is_err()
        );
        let bundles = client.fetch_jwt_bundles().await.unwrap();
        JwtSvid::parse_and_validate(jwt.token(), &bundles, &["db"]).unwrap();
        let api: SpiffeId = "spiffe://example.org/api".parse().unwrap();
        let second_jwt = client.fetch_jwt_svid(["db"], Some(&api)).await.unwrap();
        assert_eq!(second_jwt.spiffe_id(), &api);
    });

    // A restarted agent reuses its stored SVID (the join token is spent).
    agent.terminate();
    let agent = Agent::start(dir.path());
    runtime.block_on(async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        let context = client.fetch_x509_context().await.unwrap();
        assert_eq!(context.svids().len(), 2);
    });
    assert!(
        agent.log().contains("reusing the stored agent SVID"),
        "{}",
        agent.log()
    );
    let key = dir.path().join("agent/agent_key.pem");
    assert_eq!(fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
    agent.terminate();
    drop(server);
}
