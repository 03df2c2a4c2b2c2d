//! SPIRE itself (v1.13.3, built from the Go module proxy by `scripts/build-spire`, nothing of
//! it in this repository) as the peer: Sigil's workload commands and its Workload API client
//! against a real `spire-agent`, and a SPIRE trust domain federated both ways with a Sigil
//! trust domain over `https_spiffe`, each server fetching the other's bundle endpoint, with
//! workloads of both completing mutual TLS across them.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use sigil_spiffe::tls::{self, TlsMaterial};
use sigil_spiffe::workload_api::{Endpoint, WorkloadApiClient, X509Context};
use sigil_spiffe::{Authorizer, SpiffeId};

use crate::agent_run::{Agent, own_uid, server_and_agent_config};
use crate::harness::{POLL_PAUSE, POLLS, Server, json};
use crate::{free_port, text};

/// The directory holding `spire-server` and `spire-agent`, built (or found current) by
/// `scripts/build-spire` once per test process.
pub(crate) fn spire_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-spire");
        let out = Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "{} failed", script.display());
        PathBuf::from(text(&out.stdout).lines().last().unwrap())
    })
}

/// Settings that make SPIRE hand out a new entry fast: the server's events-based entry cache
/// polled every 100 ms (default: a full reload every 5 s) and the agent's sync every 200 ms
/// (default 5 s). Tests use them so they wait less; they change no contract.
const FAST_SERVER: &str =
    "experimental {\n cache_reload_interval = \"100ms\"\n events_based_cache = true\n}\n";
const FAST_AGENT: &str = "experimental {\n sync_interval = \"200ms\"\n}\n";

/// A running process, killed when dropped, its stderr and stdout in `log`.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(mut command: Command, log: PathBuf) -> Self {
        let file = File::create(&log).unwrap();
        let child = command
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn check_running(&mut self, what: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{what} exited ({status}): {}", self.log());
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `spire-server run` of `trust_domain` in `dir`.
pub(crate) struct SpireServer {
    process: Process,
    socket: PathBuf,
    pub(crate) port: u16,
    pub(crate) trust_domain: String,
}

impl SpireServer {
    /// Starts the server with `server_extra` inside its `server { }` block (federation,
    /// experimental settings) and waits for its healthcheck.
    pub(crate) fn start(dir: &Path, trust_domain: &str, server_extra: &str) -> Self {
        let port = free_port();
        let socket = dir.join("spire-server.sock");
        let data = dir.join("spire-server-data");
        let config = dir.join("spire-server.conf");
        fs::write(
            &config,
            format!(
                "server {{\n bind_address = \"127.0.0.1\"\n bind_port = \"{port}\"\n\
                 socket_path = \"{socket}\"\n trust_domain = \"{trust_domain}\"\n\
                 data_dir = \"{data}\"\n log_level = \"INFO\"\n{server_extra}}}\n\
                 plugins {{\n DataStore \"sql\" {{\n plugin_data {{\n\
                 database_type = \"sqlite3\"\n\
                 connection_string = \"{data}/datastore.sqlite3\"\n }}\n }}\n\
                 NodeAttestor \"join_token\" {{\n plugin_data {{}}\n }}\n\
                 KeyManager \"memory\" {{\n plugin_data {{}}\n }}\n}}\n",
                socket = socket.display(),
                data = data.display(),
            ),
        )
        .unwrap();
        let mut command = Command::new(spire_bin().join("spire-server"));
        command.args(["run", "-config"]).arg(&config);
        let mut server = Self {
            process: Process::spawn(command, dir.join("spire-server.log")),
            socket,
            port,
            trust_domain: trust_domain.to_owned(),
        };
        for _ in 0..POLLS {
            server.process.check_running("spire-server");
            if server.cli(&["healthcheck"]).status.success() {
                return server;
            }
            std::thread::sleep(POLL_PAUSE);
        }
        panic!(
            "spire-server never became healthy: {}",
            server.process.log()
        );
    }

    /// Runs `spire-server <args> -socketPath SOCKET`.
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        Command::new(spire_bin().join("spire-server"))
            .args(args)
            .arg("-socketPath")
            .arg(&self.socket)
            .output()
            .unwrap()
    }

    /// [`Self::cli`] that must succeed; its stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "spire-server {args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// A join token whose agent will be `spiffe://<td>/agent` (SPIRE also makes the alias
    /// entry from the token's agent ID to that ID).
    pub(crate) fn join_token(&self) -> String {
        let agent = format!("spiffe://{}/agent", self.trust_domain);
        let out = self.ok(&["token", "generate", "-spiffeID", &agent]);
        out.lines()
            .find_map(|l| l.strip_prefix("Token: "))
            .unwrap_or_else(|| panic!("no token in {out}"))
            .trim()
            .to_owned()
    }

    pub(crate) fn log(&self) -> String {
        self.process.log()
    }
}

/// A running `spire-agent run` attested with a join token, its Workload API in `dir`.
pub(crate) struct SpireAgent {
    process: Process,
    pub(crate) socket: PathBuf,
}

impl SpireAgent {
    pub(crate) fn start(dir: &Path, server: &SpireServer) -> Self {
        let token = server.join_token();
        let bundle = dir.join("spire-bootstrap.pem");
        fs::write(&bundle, server.ok(&["bundle", "show"])).unwrap();
        // The agent's admin socket may not share the Workload API socket's directory, so the
        // Workload API gets a directory of its own.
        let api_dir = dir.join("spire-agent-api");
        fs::create_dir_all(&api_dir).unwrap();
        let socket = api_dir.join("api.sock");
        let config = dir.join("spire-agent.conf");
        fs::write(
            &config,
            format!(
                "agent {{\n data_dir = \"{data}\"\n log_level = \"INFO\"\n\
                 server_address = \"127.0.0.1\"\n server_port = \"{port}\"\n\
                 socket_path = \"{socket}\"\n trust_domain = \"{td}\"\n\
                 trust_bundle_path = \"{bundle}\"\n{FAST_AGENT}}}\n\
                 plugins {{\n NodeAttestor \"join_token\" {{\n plugin_data {{}}\n }}\n\
                 KeyManager \"memory\" {{\n plugin_data {{}}\n }}\n\
                 WorkloadAttestor \"unix\" {{\n plugin_data {{}}\n }}\n}}\n",
                data = dir.join("spire-agent-data").display(),
                port = server.port,
                socket = socket.display(),
                td = server.trust_domain,
                bundle = bundle.display(),
            ),
        )
        .unwrap();
        let mut command = Command::new(spire_bin().join("spire-agent"));
        command
            .args(["run", "-config"])
            .arg(&config)
            .args(["-joinToken", &token]);
        let mut agent = Self {
            process: Process::spawn(command, dir.join("spire-agent.log")),
            socket,
        };
        for _ in 0..POLLS {
            agent.process.check_running("spire-agent");
            if std::os::unix::net::UnixStream::connect(&agent.socket).is_ok() {
                return agent;
            }
            std::thread::sleep(POLL_PAUSE);
        }
        panic!(
            "spire-agent never opened its socket: {}",
            agent.process.log()
        );
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

/// `spire-server entry create` for a workload of this uid, parented to the token's agent.
fn spire_entry(server: &SpireServer, spiffe_id: &str, extra: &[&str]) {
    let parent = format!("spiffe://{}/agent", server.trust_domain);
    let uid = format!("unix:uid:{}", own_uid());
    let mut args = vec![
        "entry",
        "create",
        "-parentID",
        &parent,
        "-spiffeID",
        spiffe_id,
        "-selector",
        &uid,
    ];
    args.extend_from_slice(extra);
    server.ok(&args);
}

/// Runs a `sigil` workload command against `endpoint`.
fn sigil_at(endpoint: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(args)
        .args(["--socket", endpoint])
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .output()
        .unwrap()
}

/// Retries `sigil fetch x509 --output json` until the agent serves `wanted` SVIDs (a new
/// entry reaches a SPIRE agent at its next sync).
fn fetch_until(endpoint: &str, wanted: usize) -> Value {
    let mut last = None;
    for _ in 0..POLLS {
        let out = sigil_at(endpoint, &["fetch", "x509", "--output", "json"]);
        if out.status.success() {
            let document: Value = serde_json::from_slice(&out.stdout).unwrap();
            if document["svids"].as_array().unwrap().len() == wanted {
                return document;
            }
        }
        last = Some(out);
        std::thread::sleep(POLL_PAUSE);
    }
    let last = last.unwrap();
    panic!(
        "never {wanted} SVIDs: {}{}",
        text(&last.stdout),
        text(&last.stderr)
    );
}

#[test]
fn sigil_workload_commands_and_library_against_a_real_spire_agent() {
    let dir = tempfile::tempdir().unwrap();
    let server = SpireServer::start(dir.path(), "spire.test", FAST_SERVER);
    let workload = "spiffe://spire.test/workload";
    spire_entry(&server, workload, &[]);
    let agent = SpireAgent::start(dir.path(), &server);
    let endpoint = agent.endpoint();

    // fetch x509, then --write, with the files checked by openssl.
    let fetched = fetch_until(&endpoint, 1);
    assert_eq!(fetched["svids"][0]["spiffe_id"], workload, "{fetched}");
    assert_eq!(fetched["bundles"][0]["trust_domain"], "spire.test");
    let out_dir = dir.path().join("written");
    let written = sigil_at(
        &endpoint,
        &["fetch", "x509", "--write", out_dir.to_str().unwrap()],
    );
    assert!(written.status.success(), "{}", text(&written.stderr));
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(out_dir.join("bundle.0.pem"))
        .arg(out_dir.join("svid.0.pem"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify.stderr));

    // fetch jwt, validate jwt (by the SPIRE agent), and a wrong audience refused.
    let jwt = json(&sigil_at(
        &endpoint,
        &["fetch", "jwt", "--audience", "db", "--output", "json"],
    ));
    assert_eq!(jwt["svids"][0]["spiffe_id"], workload);
    let token = jwt["svids"][0]["token"].as_str().unwrap().to_owned();
    let valid = json(&sigil_at(
        &endpoint,
        &[
            "validate",
            "jwt",
            "--audience",
            "db",
            "--token",
            &token,
            "--output",
            "json",
        ],
    ));
    assert_eq!(valid["valid"], true);
    assert_eq!(valid["spiffe_id"], workload);
    let wrong = sigil_at(
        &endpoint,
        &["validate", "jwt", "--audience", "not-db", "--token", &token],
    );
    assert_eq!(wrong.status.code(), Some(1));

    // fetch bundles: X.509 and JWT halves of spire.test.
    let bundles = json(&sigil_at(
        &endpoint,
        &["fetch", "bundles", "--output", "json"],
    ));
    let spire = &bundles["bundles"][0];
    assert_eq!(spire["trust_domain"], "spire.test");
    assert!(
        spire["x509_authorities_pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert!(!spire["jwks"]["keys"].as_array().unwrap().is_empty());

    // The library: X.509 context, JWT-SVIDs validated online and offline, a watch that sees a
    // new entry.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = WorkloadApiClient::connect(&endpoint.parse::<Endpoint>().unwrap())
            .await
            .unwrap();
        let context = client.fetch_x509_context().await.unwrap();
        assert_eq!(context.default_svid().spiffe_id().to_string(), workload);
        assert!(context.bundles().get("spire.test").is_some());
        let svids = client.fetch_jwt_svids(&["db"], None).await.unwrap();
        let token = svids[0].token().to_owned();
        let validated = client.validate_jwt_svid("db", &token).await.unwrap();
        assert_eq!(validated.spiffe_id().to_string(), workload);
        let jwt_bundles = client.fetch_jwt_bundles().await.unwrap();
        let offline = sigil_spiffe::jwt::JwtSvid::parse_and_validate(
            &token,
            &jwt_bundles,
            &["db"],
            std::time::SystemTime::now(),
        )
        .unwrap();
        assert_eq!(offline.spiffe_id().to_string(), workload);

        let mut stream = client.watch_x509_contexts().await.unwrap();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.svids().len(), 1);
        spire_entry(&server, "spiffe://spire.test/second", &[]);
        let mut ids = Vec::new();
        for _ in 0..10 {
            let next = tokio::time::timeout(std::time::Duration::from_secs(60), stream.next())
                .await
                .expect("the new entry reached the open stream")
                .unwrap()
                .unwrap();
            ids = ids_of(&next);
            if ids.len() == 2 {
                break;
            }
        }
        assert_eq!(ids, ["spiffe://spire.test/second", workload]);
    });

    // sigil watch prints the update of that stream too.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["watch", "--output", "json", "--socket", &endpoint])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(watch.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    let update: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(update["svids"].as_array().unwrap().len(), 2, "{update}");
    drop(agent);
    drop(server);
}

fn ids_of(context: &X509Context) -> Vec<String> {
    let mut ids: Vec<String> = context
        .svids()
        .iter()
        .map(|s| s.spiffe_id().to_string())
        .collect();
    ids.sort();
    ids
}

/// The X.509 context at `endpoint` once it holds the federated bundle of `peer`.
async fn context_with_bundle_of(endpoint: &str, peer: &str) -> X509Context {
    let client = WorkloadApiClient::connect(&endpoint.parse::<Endpoint>().unwrap())
        .await
        .unwrap();
    for _ in 0..POLLS {
        if let Ok(context) = client.fetch_x509_context().await
            && context.bundles().get(peer).is_some()
        {
            return context;
        }
        tokio::time::sleep(POLL_PAUSE).await;
    }
    panic!("the {peer} bundle never reached the workload at {endpoint}");
}

fn material(context: &X509Context) -> Arc<TlsMaterial> {
    Arc::new(TlsMaterial::new(context.default_svid(), context.bundles().clone()).unwrap())
}

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

#[test]
fn a_spire_and_a_sigil_trust_domain_federate_both_ways_over_https_spiffe() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let sigil_dir = tempfile::tempdir().unwrap();
    let spire_dir = tempfile::tempdir().unwrap();
    let (sigil_endpoint_port, spire_endpoint_port) = (free_port(), free_port());

    // Sigil (example.org): serves its bundle with its own SVID, fetches spire.test's from
    // SPIRE's endpoint, authenticated as SPIRE's server ID. Its first spire.test bundle is set
    // by hand below, as SPIRE's own operators do with `bundle set`.
    let (server, agent_id) = server_and_agent_config(sigil_dir.path());
    drop(server);
    let mut config = fs::read_to_string(sigil_dir.path().join("server.toml")).unwrap();
    config.push_str(&format!(
        "[federation.bundle_endpoint]\nbind_address = \"127.0.0.1:{sigil_endpoint_port}\"\n\
         profile = \"https_spiffe\"\nrefresh_hint = \"1s\"\n\
         [[federation.federates_with]]\ntrust_domain = \"spire.test\"\n\
         url = \"https://127.0.0.1:{spire_endpoint_port}\"\nprofile = \"https_spiffe\"\n\
         endpoint_spiffe_id = \"spiffe://spire.test/spire/server\"\n"
    ));
    fs::write(sigil_dir.path().join("server.toml"), config).unwrap();
    let sigil = Server::start(sigil_dir.path());

    // SPIRE (spire.test): the same, the other way.
    let spire = SpireServer::start(
        spire_dir.path(),
        "spire.test",
        &format!(
            "{FAST_SERVER}federation {{\n bundle_endpoint {{\n address = \"127.0.0.1\"\n\
             port = {spire_endpoint_port}\n refresh_hint = \"1s\"\n\
             profile \"https_spiffe\" {{}}\n }}\n\
             federates_with \"example.org\" {{\n\
             bundle_endpoint_url = \"https://127.0.0.1:{sigil_endpoint_port}\"\n\
             bundle_endpoint_profile \"https_spiffe\" {{\n\
             endpoint_spiffe_id = \"spiffe://example.org/sigil/server\"\n }}\n }}\n}}\n"
        ),
    );

    // Each side is given the other's bundle once.
    let sigil_bundle = sigil_dir.path().join("example.org.json");
    let shown = sigil.cli(&["bundle", "show", "--format", "spiffe"]);
    assert_eq!(shown.status.code(), Some(0), "{}", text(&shown.stderr));
    fs::write(&sigil_bundle, &shown.stdout).unwrap();
    spire.ok(&[
        "bundle",
        "set",
        "-format",
        "spiffe",
        "-id",
        "spiffe://example.org",
        "-path",
        sigil_bundle.to_str().unwrap(),
    ]);
    let spire_bundle = spire_dir.path().join("spire.test.json");
    fs::write(
        &spire_bundle,
        spire.ok(&["bundle", "show", "-format", "spiffe"]),
    )
    .unwrap();
    json(&sigil.cli(&[
        "bundle",
        "set",
        "--id",
        "spiffe://spire.test",
        "--format",
        "spiffe",
        "--path",
        spire_bundle.to_str().unwrap(),
        "--output",
        "json",
    ]));

    // Then each fetches the other's endpoint: a refresh is one real fetch, and must succeed.
    let mut refreshed = false;
    for _ in 0..POLLS {
        if spire
            .cli(&["federation", "refresh", "-id", "spiffe://example.org"])
            .status
            .success()
        {
            refreshed = true;
            break;
        }
        std::thread::sleep(POLL_PAUSE);
    }
    assert!(
        refreshed,
        "SPIRE never fetched Sigil's endpoint: {}",
        spire.log()
    );
    let out = sigil.cli(&["federation", "refresh", "--trust-domain", "spire.test"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "Sigil fetching SPIRE's endpoint: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // A workload in each domain, each federating with the other.
    let sigil_workload = "spiffe://example.org/sigil-workload";
    let out = sigil.entry(&[
        "create",
        "--spiffe-id",
        sigil_workload,
        "--parent-id",
        &agent_id,
        "--selector",
        &format!("unix:uid:{}", own_uid()),
        "--federates-with",
        "spire.test",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let spire_workload = "spiffe://spire.test/spire-workload";
    spire_entry(
        &spire,
        spire_workload,
        &["-federatesWith", "spiffe://example.org"],
    );
    let sigil_agent = Agent::start(sigil_dir.path());
    let spire_agent = SpireAgent::start(spire_dir.path(), &spire);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let at_sigil = context_with_bundle_of(&sigil_agent.endpoint(), "spire.test").await;
        let at_spire = context_with_bundle_of(&spire_agent.endpoint(), "example.org").await;
        assert_eq!(
            at_sigil.default_svid().spiffe_id().to_string(),
            sigil_workload
        );
        assert_eq!(
            at_spire.default_svid().spiffe_id().to_string(),
            spire_workload
        );
        // SPIRE's workload as the client, Sigil's as the server; then the other way round.
        for (client, server, client_id, server_id) in [
            (&at_spire, &at_sigil, spire_workload, sigil_workload),
            (&at_sigil, &at_spire, sigil_workload, spire_workload),
        ] {
            let server_config =
                tls::server_config(material(server), Authorizer::exact(id(client_id))).unwrap();
            let client_config =
                tls::client_config(material(client), Authorizer::exact(id(server_id))).unwrap();
            let (seen_by_server, seen_by_client) =
                crate::workloads::tls_exchange(server_config, client_config).await;
            assert_eq!(seen_by_server, client_id);
            assert_eq!(seen_by_client, server_id);
        }
        // A peer the authorizer does not name is refused across the domains too.
        let server_config = tls::server_config(
            material(&at_sigil),
            Authorizer::exact(id("spiffe://spire.test/someone-else")),
        )
        .unwrap();
        let client_config =
            tls::client_config(material(&at_spire), Authorizer::exact(id(sigil_workload))).unwrap();
        assert!(
            crate::workloads::try_tls_exchange(server_config, client_config)
                .await
                .is_err()
        );
    });
    sigil_agent.terminate();
    drop(spire_agent);
    drop(spire);
    drop(sigil);
}
