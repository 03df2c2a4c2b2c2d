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
        let mut command = Command::new(env!("CARGO_BIN_EXE_sigil"));
        command
            .args(["agent", "run", "--config"])
            .arg(dir.join("agent.toml"));
        Self::start_with(dir, command)
    }

    /// Starts `command` (an agent on `dir/agent.toml`) and waits for its socket.
    pub(crate) fn start_with(dir: &Path, mut command: Command) -> Self {
        let socket = dir.join("agent/api.sock");
        let log = dir.join("agent.log");
        let child = command
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
    server_and_agent_config_with(dir, "")
}

/// [`server_and_agent_config`] with `extra` (TOML tables) appended to the server's config.
pub(crate) fn server_and_agent_config_with(dir: &Path, extra: &str) -> (Server, String) {
    let addr = write_config(dir);
    let mut server_toml = fs::read_to_string(dir.join("server.toml")).unwrap();
    server_toml.push_str(extra);
    fs::write(dir.join("server.toml"), server_toml).unwrap();
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

pub(crate) fn create_entry(server: &Server, spiffe_id: &str, parent: &str, selector: &str) {
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

    // The workload commands against the real agent: health, and files that openssl verifies.
    let socket = format!("unix://{}", agent.socket.display());
    let health = crate::sigil(&["healthcheck", "--socket", &socket]);
    assert_eq!(
        health.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    let written = dir.path().join("written");
    let fetched = crate::sigil(&[
        "fetch",
        "x509",
        "--socket",
        &socket,
        "--write",
        written.to_str().unwrap(),
    ]);
    assert_eq!(
        fetched.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    let verified = Command::new("openssl")
        .args(["verify", "-CAfile", "bundle.0.pem", "svid.0.pem"])
        .current_dir(&written)
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert_eq!(
        fs::metadata(written.join("svid.0.key")).unwrap().mode() & 0o777,
        0o600
    );

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

/// Writes another agent config in `dir` (its own data directory and socket) with a new token.
fn second_agent_config(server: &Server, dir: &Path, main_dir: &Path) -> String {
    let token = json(&server.cli(&["token", "generate", "--output", "json"]));
    let agent_id = token["spiffe_id"].as_str().unwrap().to_owned();
    let token = token["token"].as_str().unwrap();
    let main = fs::read_to_string(main_dir.join("agent.toml")).unwrap();
    let server_address = main
        .lines()
        .find_map(|line| line.strip_prefix("server_address = "))
        .unwrap();
    fs::copy(main_dir.join("bootstrap.pem"), dir.join("bootstrap.pem")).unwrap();
    fs::write(
        dir.join("agent.toml"),
        format!(
            "trust_domain = \"example.org\"\nserver_address = {server_address}\n\
             data_dir = \"agent\"\ntrust_bundle_path = \"bootstrap.pem\"\n\
             [node_attestor]\ntype = \"join_token\"\ntoken = \"{token}\"\n"
        ),
    )
    .unwrap();
    agent_id
}

/// A raw Workload API client on the agent's socket, to send what real clients never do.
pub(crate) async fn raw_client(
    socket: PathBuf,
) -> sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient<
    tonic::transport::Channel,
> {
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .unwrap();
    sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(channel)
}

#[test]
fn minimal_knowledge_and_bad_input_on_the_workload_socket() {
    use sigil_proto::workload as pb;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let (server, agent_a) = server_and_agent_config(dir.path());
    let agent_b = second_agent_config(&server, other_dir.path(), dir.path());
    let uid = own_uid();
    let selector = format!("unix:uid:{uid}");
    create_entry(
        &server,
        "spiffe://example.org/only-on-a",
        &agent_a,
        &selector,
    );
    let a = Agent::start(dir.path());
    let b = Agent::start(other_dir.path());

    runtime.block_on(async {
        // Agent A serves the entry; agent B, same uid, same server, has nothing to give.
        let on_a = WorkloadApiClient::connect_to(a.endpoint()).await.unwrap();
        let svid = on_a.fetch_x509_svid().await.unwrap();
        assert_eq!(
            svid.spiffe_id().to_string(),
            "spiffe://example.org/only-on-a"
        );
        let on_b = WorkloadApiClient::connect_to(b.endpoint()).await.unwrap();
        let denied = on_b.fetch_x509_svid().await.unwrap_err();
        assert!(
            format!("{denied:?}").contains("NoIdentityIssued"),
            "{denied:?}"
        );
        let mut raw_b = raw_client(b.socket.clone()).await;
        let mut request = tonic::Request::new(pb::X509svidRequest {});
        request
            .metadata_mut()
            .insert("workload.spiffe.io", "true".parse().unwrap());
        let status = raw_b.fetch_x509svid(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(status.message(), "no identity issued");
        // An entry for agent B reaches it, not A (B's view changes, A's does not).
        create_entry(
            &server,
            "spiffe://example.org/only-on-b",
            &agent_b,
            &selector,
        );
        // Until the entry has reached B, B still answers PermissionDenied.
        let mut context = None;
        for _ in 0..POLLS {
            if let Ok(found) = on_b.fetch_x509_context().await {
                context = Some(found);
                break;
            }
            tokio::time::sleep(POLL_PAUSE).await;
        }
        let context = context.expect("the entry for B reached B");
        let ids: Vec<String> = context
            .svids()
            .iter()
            .map(|s| s.spiffe_id().to_string())
            .collect();
        assert_eq!(ids, ["spiffe://example.org/only-on-b"]);
        let on_a_now = on_a.fetch_x509_context().await.unwrap();
        let ids: Vec<String> = on_a_now
            .svids()
            .iter()
            .map(|s| s.spiffe_id().to_string())
            .collect();
        assert_eq!(ids, ["spiffe://example.org/only-on-a"]);

        // No security header, or a wrong one: InvalidArgument, and nothing else happens.
        let mut raw = raw_client(a.socket.clone()).await;
        let status = raw
            .fetch_x509svid(pb::X509svidRequest {})
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        let mut request = tonic::Request::new(pb::JwtsvidRequest {
            audience: vec!["x".into()],
            spiffe_id: String::new(),
        });
        request
            .metadata_mut()
            .insert("workload.spiffe.io", "false".parse().unwrap());
        let status = raw.fetch_jwtsvid(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        // A JWT request without an audience, and a malformed requested ID.
        for (audience, spiffe_id) in [(vec![], ""), (vec!["a".to_owned()], "not-an-id")] {
            let mut request = tonic::Request::new(pb::JwtsvidRequest {
                audience,
                spiffe_id: spiffe_id.to_owned(),
            });
            request
                .metadata_mut()
                .insert("workload.spiffe.io", "true".parse().unwrap());
            let status = raw.fetch_jwtsvid(request).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        }
        // Tokens to validate that are malformed, or from a trust domain nobody trusts here.
        let foreign = sigil_spiffe::jwt::mint(
            &sigil_spiffe::jwt::PrivateKeySigner::with_default_algorithm(
                "k1",
                sigil_spiffe::PrivateKey::generate(sigil_spiffe::KeyType::EcP256).unwrap(),
            )
            .unwrap(),
            sigil_spiffe::jwt::JwtSvidParams::new(
                "spiffe://elsewhere.test/w".parse().unwrap(),
                ["db"],
                std::time::SystemTime::now(),
                std::time::SystemTime::now() + std::time::Duration::from_secs(60),
            ),
        )
        .unwrap();
        for token in ["garbage", "a.b.c", foreign.token()] {
            let error = on_a.validate_jwt_token("db", token).await.unwrap_err();
            assert!(
                format!("{error:?}").contains("InvalidArgument"),
                "{error:?}"
            );
        }

        // Garbage bytes on the socket, and a client that leaves mid-stream: the agent drops
        // those connections and goes on serving the others.
        let mut garbage = tokio::net::UnixStream::connect(&a.socket).await.unwrap();
        garbage
            .write_all(&[0x16, 0x03, 0x01, 0xff, 0x00, 0x42, 0x13, 0x37])
            .await
            .unwrap();
        garbage.write_all(&vec![0xAB; 4096]).await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            garbage.read_to_end(&mut sink),
        )
        .await
        .expect("the agent closes a connection that does not speak HTTP/2");
        let mut leaving = on_a.stream_x509_contexts().await.unwrap();
        leaving.next().await.unwrap().unwrap();
        drop(leaving);
        let again = on_a.fetch_x509_svid().await.unwrap();
        assert_eq!(
            again.spiffe_id().to_string(),
            "spiffe://example.org/only-on-a"
        );
    });
    a.terminate();
    b.terminate();
    drop(server);
}

/// The leaf's validity window.
fn validity(svid: &spiffe::X509Svid) -> (std::time::SystemTime, std::time::SystemTime) {
    use x509_parser::prelude::FromDer;
    let der = svid.cert_chain()[0].as_ref();
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).unwrap();
    let at = |t: x509_parser::time::ASN1Time| {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.timestamp().try_into().unwrap())
    };
    (
        at(cert.validity().not_before),
        at(cert.validity().not_after),
    )
}

#[test]
fn an_open_stream_gets_rotated_svids_and_survives_the_server_going_away() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (server, agent_id) = server_and_agent_config(dir.path());
    let out = server.entry(&[
        "create",
        "--spiffe-id",
        "spiffe://example.org/short",
        "--parent-id",
        &agent_id,
        "--selector",
        &format!("unix:uid:{}", own_uid()),
        "--x509-ttl",
        "20s",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let agent = Agent::start(dir.path());
    let server = runtime.block_on(async move {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        let mut stream = client.stream_x509_contexts().await.unwrap();
        let first = stream.next().await.unwrap().unwrap();
        let first = first.default_svid().unwrap().clone();
        let (not_before, not_after) = validity(&first);
        let sixty_percent = not_before + (not_after.duration_since(not_before).unwrap() * 6 / 10);
        let second = stream.next().await.unwrap().unwrap();
        let arrived = std::time::SystemTime::now();
        let second = second.default_svid().unwrap().clone();
        assert_ne!(second.cert_chain()[0], first.cert_chain()[0]);
        assert!(
            arrived < sixty_percent,
            "the rotated SVID came after 60% of the old one's life"
        );

        // The server goes away: the agent keeps serving what it has.
        assert!(server.terminate().success());
        let held = client.fetch_x509_svid().await.unwrap();
        assert_eq!(held.cert_chain()[0], second.cert_chain()[0]);
        // It comes back (same config, same port): rotation resumes on the open stream.
        let server = Server::start(dir.path());
        let third = stream.next().await.unwrap().unwrap();
        let third = third.default_svid().unwrap().clone();
        assert_ne!(third.cert_chain()[0], second.cert_chain()[0]);
        agent.terminate();
        server
    });
    drop(server);
}

/// Runs `openssl` with `args` in `dir`, which must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A web CA and a certificate for 127.0.0.1 made by `openssl`, in `dir`: `web-ca.pem`,
/// `web.pem`, `web.key`.
pub(crate) fn web_pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "web-ca.key",
            "-out",
            "web-ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test web ca",
            "-addext",
            "basicConstraints=critical,CA:true",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "web.key",
            "-out",
            "web.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    fs::write(
        dir.join("web.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:false\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "web.csr",
            "-CA",
            "web-ca.pem",
            "-CAkey",
            "web-ca.key",
            "-CAcreateserial",
            "-out",
            "web.pem",
            "-days",
            "1",
            "-extfile",
            "web.ext",
        ],
    );
}

/// `openssl s_server -WWW` serving the files of `dir` over HTTPS on a free port.
struct WebServer {
    child: Child,
    port: u16,
}

impl WebServer {
    fn start(dir: &Path) -> Self {
        let port = crate::free_port();
        // Held by the value at once, so that Drop kills it on every path.
        let server = Self {
            child: Command::new("openssl")
                .args([
                    "s_server", "-quiet", "-WWW", "-cert", "web.pem", "-key", "web.key",
                ])
                .args(["-accept", &format!("127.0.0.1:{port}")])
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
            port,
        };
        for _ in 0..POLLS {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(POLL_PAUSE);
        }
        panic!("openssl s_server did not start");
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_agent_bootstraps_from_an_https_url_checked_with_the_system_roots() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let web = tempfile::tempdir().unwrap();
    let (server, agent_id) = server_and_agent_config(dir.path());
    web_pki(web.path());
    fs::copy(
        dir.path().join("bootstrap.pem"),
        web.path().join("bundle.pem"),
    )
    .unwrap();
    let https = WebServer::start(web.path());
    let config = fs::read_to_string(dir.path().join("agent.toml"))
        .unwrap()
        .replace(
            "trust_bundle_path = \"bootstrap.pem\"",
            &format!(
                "trust_bundle_url = \"https://127.0.0.1:{}/bundle.pem\"",
                https.port
            ),
        );
    fs::write(dir.path().join("agent.toml"), config).unwrap();
    create_entry(
        &server,
        "spiffe://example.org/boot",
        &agent_id,
        &format!("unix:uid:{}", own_uid()),
    );

    // Without the web CA among the system roots, the URL is refused and nothing is attested.
    let refused = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["agent", "run", "--config"])
        .arg(dir.path().join("agent.toml"))
        .env("SSL_CERT_FILE", web.path().join("web.pem"))
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("cannot fetch the bootstrap bundle from https://127.0.0.1"),
        "{stderr}"
    );
    assert!(!dir.path().join("agent/agent_svid.pem").exists());

    // With it (SSL_CERT_FILE names the system roots), the agent attests and serves.
    let mut agent = Command::new(env!("CARGO_BIN_EXE_sigil"));
    agent
        .args(["agent", "run", "--config"])
        .arg(dir.path().join("agent.toml"))
        .env("SSL_CERT_FILE", web.path().join("web-ca.pem"));
    let agent = Agent::start_with(dir.path(), agent);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let id = runtime.block_on(async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        client
            .fetch_x509_svid()
            .await
            .unwrap()
            .spiffe_id()
            .to_string()
    });
    assert_eq!(id, "spiffe://example.org/boot");
    agent.terminate();
    drop(server);
}

#[test]
fn sigil_agent_validate_checks_a_config_without_printing_the_token() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conf/agent.toml");
    let out = crate::sigil(&[
        "agent",
        "validate",
        "--config",
        conf.to_str().unwrap(),
        "--output",
        "json",
    ]);
    let document = json(&out);
    assert_eq!(document["valid"], true);
    assert_eq!(
        document["server_spiffe_id"],
        "spiffe://example.org/sigil/server"
    );
    assert_eq!(document["node_attestor"]["type"], "join_token");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("paste-the-token-here"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("agent.toml");
    fs::write(
        &bad,
        "trust_domain = \"example.org\"\nserver_address = \"nowhere\"\ndata_dir = \"d\"\n\
         insecure_bootstrap = true\n[node_attestor]\ntype = \"join_token\"\ntoken = \"t\"\n",
    )
    .unwrap();
    let out = crate::sigil(&["agent", "validate", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("agent.toml:2:"), "{stderr}");
    assert!(stderr.contains("server_address"), "{stderr}");
}

#[test]
fn an_agent_on_insecure_bootstrap_learns_the_bundle_from_its_attestation() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (server, agent_id) = server_and_agent_config(dir.path());
    let config = fs::read_to_string(dir.path().join("agent.toml"))
        .unwrap()
        .replace(
            "trust_bundle_path = \"bootstrap.pem\"",
            "insecure_bootstrap = true",
        );
    fs::write(dir.path().join("agent.toml"), config).unwrap();
    create_entry(
        &server,
        "spiffe://example.org/dev-only",
        &agent_id,
        &format!("unix:uid:{}", own_uid()),
    );
    let agent = Agent::start(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let id = runtime.block_on(async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        client
            .fetch_x509_svid()
            .await
            .unwrap()
            .spiffe_id()
            .to_string()
    });
    assert_eq!(id, "spiffe://example.org/dev-only");
    assert!(
        agent.log().contains("insecure_bootstrap"),
        "the warning is logged"
    );
    agent.terminate();
    drop(server);
}
