//! Health and upstream CAs end to end with the real binary: `sigil healthcheck` against a
//! running server and against nothing, the `[health]` HTTP listener (plain HTTP/1.1 over a
//! TCP socket), and `[ca.upstream]` with an openssl-made CA.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use sigil_server::datastore::DataStore;
use sigil_spiffe::{TrustDomain, pem};

use crate::harness::Server;
use crate::text;

fn healthcheck(socket: &Path, json: bool) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sigil"));
    command
        .arg("healthcheck")
        .arg("--server-socket")
        .arg(socket)
        .env_remove("SIGIL_SERVER_SOCKET");
    if json {
        command.args(["--output", "json"]);
    }
    command.output().unwrap()
}

use crate::free_port;

fn write_config(dir: &Path, extra: &str) {
    fs::write(
        dir.join("server.toml"),
        format!(
            "trust_domain = \"example.org\"\ndata_dir = \"data\"\n\
             bind_address = \"127.0.0.1:0\"\nadmin_socket = \"{}\"\n{extra}",
            dir.join("run/admin.sock").display()
        ),
    )
    .unwrap();
}

/// One raw HTTP/1.1 GET: the status code and the body.
fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {response:?}"))
        .parse()
        .unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (code, body)
}

#[test]
fn healthcheck_says_ready_for_a_running_server_and_fails_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(
        dir.path(),
        &format!("[health]\nbind_address = \"127.0.0.1:{port}\"\n"),
    );
    let server = Server::start(dir.path());

    let ready = healthcheck(&server.socket, false);
    assert_eq!(ready.status.code(), Some(0), "{}", text(&ready.stderr));
    assert_eq!(text(&ready.stdout), "server is ready\n");
    let ready = healthcheck(&server.socket, true);
    assert_eq!(ready.status.code(), Some(0), "{}", text(&ready.stderr));
    let document: serde_json::Value = serde_json::from_slice(&ready.stdout).unwrap();
    assert_eq!(document, serde_json::json!({"ready": true, "reason": null}));

    // The HTTP listener of [health], on the port the config names.
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    assert_eq!(get(address, "/live"), (200, "live\n".to_owned()));
    assert_eq!(get(address, "/ready"), (200, "ready\n".to_owned()));
    assert_eq!(get(address, "/nope").0, 404);
    assert!(
        server.log().contains("health listening"),
        "{}",
        server.log()
    );

    // Stopped: the listener is gone with the server, and healthcheck fails clearly.
    let socket = server.socket.clone();
    assert_eq!(server.terminate().code(), Some(0));
    assert!(TcpStream::connect(address).is_err());
    let down = healthcheck(&socket, false);
    assert_eq!(down.status.code(), Some(1));
    assert!(
        text(&down.stderr)
            .contains("server is not ready: cannot connect to the server admin socket"),
        "{}",
        text(&down.stderr)
    );
    let down = healthcheck(&socket, true);
    assert_eq!(down.status.code(), Some(1));
    let document: serde_json::Value = serde_json::from_slice(&down.stdout).unwrap();
    assert_eq!(document["ready"], false);
    assert!(
        document["reason"]
            .as_str()
            .unwrap()
            .contains("cannot connect to the server admin socket")
    );
}

#[test]
fn a_health_port_in_use_is_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    write_config(
        dir.path(),
        &format!("[health]\nbind_address = \"127.0.0.1:{port}\"\n"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["server", "run", "--config"])
        .arg(dir.path().join("server.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!(
            "cannot bind the health listener on 127.0.0.1:{port}"
        )),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("data").exists());
}

/// An upstream CA by `openssl req -x509` in `dir`: `up.pem` and `up.key` (0600).
fn openssl_upstream(dir: &Path) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "up.key",
            "-out",
            "up.pem",
            "-days",
            "30",
            "-subj",
            "/O=Upstream/CN=up",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    fs::set_permissions(dir.join("up.key"), fs::Permissions::from_mode(0o600)).unwrap();
}

/// The X.509 authorities and the sequence of the bundle the stopped server left in its
/// datastore.
fn stored_roots(dir: &Path) -> (Vec<Vec<u8>>, Option<u64>) {
    let url = format!("sqlite://{}", dir.join("data/datastore.sqlite3").display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = DataStore::open(&url).await.unwrap();
        let td = TrustDomain::new("example.org").unwrap();
        let bundle = store.bundle(&td).await.unwrap().unwrap();
        store.close().await;
        let roots = bundle
            .x509()
            .authorities()
            .iter()
            .map(|c| c.to_vec())
            .collect();
        (roots, bundle.sequence())
    })
}

#[test]
fn a_server_under_an_openssl_upstream_publishes_its_root() {
    let dir = tempfile::tempdir().unwrap();
    openssl_upstream(dir.path());
    let upstream_section = "[ca.upstream]\ncert_file = \"up.pem\"\nkey_file = \"up.key\"\n";
    write_config(dir.path(), upstream_section);
    let server = Server::start(dir.path());
    let ready = healthcheck(&server.socket, false);
    assert_eq!(ready.status.code(), Some(0), "{}", text(&ready.stderr));
    assert_eq!(server.terminate().code(), Some(0));
    let upstream = pem::certificates(&fs::read(dir.path().join("up.pem")).unwrap()).unwrap();
    let (roots, sequence) = stored_roots(dir.path());
    assert_eq!(roots, [upstream[0].to_vec()]);

    // Without the upstream, the CAs it signed are not resumed: new self-signed ones are made.
    write_config(dir.path(), "");
    let server = Server::start(dir.path());
    assert!(
        server.log().contains("made under another upstream ca"),
        "{}",
        server.log()
    );
    assert_eq!(server.terminate().code(), Some(0));
    let (roots, sequence_after) = stored_roots(dir.path());
    assert_eq!(roots.len(), 1);
    assert_ne!(roots[0], upstream[0].to_vec());
    assert!(
        sequence_after > sequence,
        "{sequence_after:?} after {sequence:?}"
    );
}

#[test]
fn a_missing_upstream_key_file_is_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    openssl_upstream(dir.path());
    write_config(
        dir.path(),
        "[ca.upstream]\ncert_file = \"up.pem\"\nkey_file = \"missing.key\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["server", "run", "--config"])
        .arg(dir.path().join("server.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let expected = format!(
        "error: ca.upstream: cannot read {}: No such file or directory",
        dir.path().join("missing.key").display()
    );
    assert!(
        text(&out.stderr).contains(&expected),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("data").exists());
    assert!(!dir.path().join("run").exists());
}
