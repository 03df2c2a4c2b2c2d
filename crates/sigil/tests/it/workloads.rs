//! Workloads of every kind against the real agent: the Python `spiffe` package (py-spiffe,
//! an unmodified grpcio client, which sends the socket path as `:authority`), and processes
//! under other uids started with `setpriv`, each getting exactly what its selectors allow.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::agent_run::{Agent, create_entry, own_uid, server_and_agent_config};
use crate::harness::{POLL_PAUSE, POLLS};

#[path = "../../../sigil-agent/tests/it/python.rs"]
#[allow(dead_code)]
mod python;

/// Everything py-spiffe's client does, through its public API; prints one JSON document.
const PY_SPIFFE: &str = r#"
import json, sys
from spiffe import WorkloadApiClient, JwtSvid, TrustDomain

socket = sys.argv[1]
td = TrustDomain("example.org")
with WorkloadApiClient(socket_path=socket) as client:
    svid = client.fetch_x509_svid()
    context = client.fetch_x509_context()
    bundles = client.fetch_x509_bundles()
    jwt = client.fetch_jwt_svid(audience={"db"})
    jwt_bundles = client.fetch_jwt_bundles()
    validated = client.validate_jwt_svid(jwt.token, "db")
    offline = JwtSvid.parse_and_validate(
        jwt.token, jwt_bundles.get_bundle_for_trust_domain(td), {"db"})
    try:
        client.validate_jwt_svid(jwt.token, "not-db")
        wrong_audience = "accepted"
    except Exception as error:
        wrong_audience = type(error).__name__
    print(json.dumps({
        "x509_svid": str(svid.spiffe_id),
        "chain": len(svid.cert_chain),
        "context_svids": len(context.x509_svids),
        "x509_bundle_authorities": len(
            bundles.get_bundle_for_trust_domain(td).x509_authorities),
        "jwt_svid": str(jwt.spiffe_id),
        "validated": str(validated.spiffe_id),
        "offline": str(offline.spiffe_id),
        "wrong_audience": wrong_audience,
    }))
"#;

#[test]
fn py_spiffe_gets_everything_from_the_real_agent() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (server, agent_id) = server_and_agent_config(dir.path());
    create_entry(
        &server,
        "spiffe://example.org/python",
        &agent_id,
        &format!("unix:uid:{}", own_uid()),
    );
    let agent = Agent::start(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let endpoint = format!("unix://{}", agent.socket.display());
    let out = runtime.block_on(python::run(PY_SPIFFE, &[&endpoint]));
    assert!(
        out.status.success(),
        "py-spiffe failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["x509_svid"], "spiffe://example.org/python");
    assert_eq!(report["chain"], 1);
    assert_eq!(report["context_svids"], 1);
    assert!(report["x509_bundle_authorities"].as_u64().unwrap() >= 1);
    assert_eq!(report["jwt_svid"], "spiffe://example.org/python");
    assert_eq!(report["validated"], "spiffe://example.org/python");
    assert_eq!(report["offline"], "spiffe://example.org/python");
    assert_ne!(report["wrong_audience"], "accepted");
    agent.terminate();
    drop(server);
}

/// A copy of the `sigil` binary that any uid can run (the build directory may not be).
fn shared_binary(dir: &Path) -> PathBuf {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.join("sigil");
    fs::copy(env!("CARGO_BIN_EXE_sigil"), &binary).unwrap();
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
    binary
}

/// `sigil fetch x509 --output json` as `uid`:`gid` with no supplementary groups.
fn fetch_as(binary: &Path, socket: &Path, uid: u32, gid: u32) -> std::process::Output {
    Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(binary)
        .args(["fetch", "x509", "--output", "json", "--socket"])
        .arg(format!("unix://{}", socket.display()))
        .output()
        .unwrap()
}

#[test]
fn workloads_under_other_uids_get_exactly_what_their_selectors_allow() {
    assert_eq!(
        own_uid(),
        0,
        "setpriv needs root: run the suite as root (as CI does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let binary = shared_binary(bin.path());
    let (server, agent_id) = server_and_agent_config(dir.path());
    create_entry(
        &server,
        "spiffe://example.org/u4242",
        &agent_id,
        "unix:uid:4242",
    );
    // Both selectors needed: uid 4343 alone is not enough.
    json_entry(
        &server,
        "spiffe://example.org/u4343-g77",
        &agent_id,
        &["unix:uid:4343", "unix:gid:77"],
    );
    create_entry(
        &server,
        "spiffe://example.org/root",
        &agent_id,
        "unix:uid:0",
    );
    // A cache of one SVID for three entries: each workload still gets its own, signed when
    // it asks (the cache size is a soft limit, as SPIRE's).
    let config = fs::read_to_string(dir.path().join("agent.toml")).unwrap();
    fs::write(
        dir.path().join("agent.toml"),
        config.replace(
            "[node_attestor]",
            "[svid]\nx509_cache_size = 1\n[node_attestor]",
        ),
    )
    .unwrap();
    let agent = Agent::start(dir.path());
    // The agent's data directory is private; its socket must be reachable by anyone.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(dir.path().join("agent"), fs::Permissions::from_mode(0o755)).unwrap();

    let ids = |out: &std::process::Output| -> Vec<String> {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let document: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        document["svids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|svid| svid["spiffe_id"].as_str().unwrap().to_owned())
            .collect()
    };
    // Entries registered before the agent started may still be signing: wait for the first.
    let mut first = fetch_as(&binary, &agent.socket, 4242, 4242);
    for _ in 0..POLLS {
        if first.status.success() {
            break;
        }
        std::thread::sleep(POLL_PAUSE);
        first = fetch_as(&binary, &agent.socket, 4242, 4242);
    }
    assert_eq!(ids(&first), ["spiffe://example.org/u4242"]);
    assert_eq!(
        ids(&fetch_as(&binary, &agent.socket, 4343, 77)),
        ["spiffe://example.org/u4343-g77"]
    );
    for (uid, gid) in [(4343, 4343), (5555, 5555)] {
        let denied = fetch_as(&binary, &agent.socket, uid, gid);
        assert_eq!(denied.status.code(), Some(1), "uid {uid} gid {gid}");
        let stderr = String::from_utf8_lossy(&denied.stderr);
        assert!(stderr.contains("PermissionDenied"), "{stderr}");
    }
    agent.terminate();
    drop(server);
}

fn json_entry(server: &crate::harness::Server, spiffe_id: &str, parent: &str, selectors: &[&str]) {
    let mut args = vec!["create", "--spiffe-id", spiffe_id, "--parent-id", parent];
    for selector in selectors {
        args.extend(["--selector", selector]);
    }
    let out = server.entry(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Picks the SVID with this hint.
struct ByHint(&'static str);

impl spiffe::x509_source::SvidPicker for ByHint {
    fn pick_svid(&self, svids: &[std::sync::Arc<spiffe::X509Svid>]) -> Option<usize> {
        svids.iter().position(|svid| svid.hint() == Some(self.0))
    }
}

#[test]
fn two_workloads_complete_mutual_tls_with_spiffe_rustls_over_x509_sources() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (server, agent_id) = server_and_agent_config(dir.path());
    let uid = format!("unix:uid:{}", own_uid());
    for name in ["frontend", "backend"] {
        let spiffe_id = format!("spiffe://example.org/{name}");
        let out = server.entry(&[
            "create",
            "--spiffe-id",
            &spiffe_id,
            "--parent-id",
            &agent_id,
            "--selector",
            &uid,
            "--hint",
            name,
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let agent = Agent::start(dir.path());
    let endpoint = agent.endpoint();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let source = |hint: &'static str| {
            spiffe::X509Source::builder()
                .endpoint(&endpoint)
                .picker(ByHint(hint))
                .build()
        };
        let backend = source("backend").await.unwrap();
        let frontend = source("frontend").await.unwrap();
        let server_config = spiffe_rustls::mtls_server(backend)
            .authorize(spiffe_rustls::authorizer::exact(["spiffe://example.org/frontend"]).unwrap())
            .build()
            .unwrap();
        let client_config = spiffe_rustls::mtls_client(frontend)
            .authorize(spiffe_rustls::authorizer::exact(["spiffe://example.org/backend"]).unwrap())
            .build()
            .unwrap();
        let (seen_by_server, seen_by_client) = tls_exchange(server_config, client_config).await;
        assert_eq!(seen_by_server, "spiffe://example.org/frontend");
        assert_eq!(seen_by_client, "spiffe://example.org/backend");
    });
    agent.terminate();
    drop(server);
}

/// A TLS connection on loopback between `server` and `client`, a ping and a pong through it;
/// returns the SPIFFE IDs each side saw in the other's certificate (server's view first).
pub(crate) async fn tls_exchange(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
) -> (String, String) {
    try_tls_exchange(server, client).await.unwrap()
}

/// [`tls_exchange`], with a failed handshake as an error (the client's, or else the server's).
pub(crate) async fn try_tls_exchange(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
) -> Result<(String, String), std::io::Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let uri = |der: &rustls::pki_types::CertificateDer<'_>| {
        sigil_spiffe::tls::peer_spiffe_id(Some(&[der.clone().into_owned()]))
            .unwrap()
            .to_string()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
    let served = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let mut request = [0u8; 5];
        tls.read_exact(&mut request).await?;
        assert_eq!(&request, b"ping!");
        tls.write_all(b"pong!").await?;
        tls.shutdown().await?;
        Ok::<_, std::io::Error>(peer)
    });
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    // SPIFFE authenticates IDs; the name only has to be well formed.
    let name = rustls::pki_types::ServerName::try_from("workload").unwrap();
    let client_side = async {
        let mut tls = connector.connect(name, tcp).await?;
        let server_cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        tls.write_all(b"ping!").await?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await?;
        assert_eq!(answer, b"pong!");
        Ok::<_, std::io::Error>(server_cert)
    }
    .await;
    let server_side = served.await.unwrap();
    let server_cert = client_side?;
    let client_cert = server_side?;
    Ok((uri(&client_cert), uri(&server_cert)))
}
