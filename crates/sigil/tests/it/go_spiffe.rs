//! go-spiffe v2, the reference client library most SPIFFE workloads are written with, against
//! the real `sigil server run` and `sigil agent run`: its three sources and client calls, a
//! watcher seeing a new entry, a rotation and a bundle change, mTLS with `spiffetls` between Go
//! workloads under other uids and with sigil-spiffe's rustls configs both ways, `AuthorizeID`
//! and `AuthorizeMemberOf` refusing the wrong peer, and federation both ways:
//! `federation.FetchBundle` reading Sigil's bundle endpoint in both profiles, and Sigil's
//! fetcher following a bundle that `federation.NewHandler` serves and rotates.
//!
//! The Go side is `crates/sigil/tests/go-spiffe` (see `go.rs`); it reports what go-spiffe
//! read as JSON, and these tests judge it against what Sigil says it served.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;
use sigil_spiffe::tls::{self, TlsMaterial};
use sigil_spiffe::workload_api::{Endpoint, WorkloadApiClient};
use sigil_spiffe::{Authorizer, Bundle, SpiffeId, TrustDomain};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::agent_run::{Agent, create_entry, own_uid, server_and_agent_config, web_pki};
use crate::bundle_mint::openssl_ca;
use crate::go::{self, GoProcess};
use crate::harness::{POLL_PAUSE, POLLS, Server, json};

fn unix_socket(agent: &Agent) -> String {
    format!("unix://{}", agent.socket.display())
}

/// SHA-256 of each X.509 authority of a bundle, hex, as the Go side prints them.
fn fingerprints(bundle: &Bundle) -> Vec<String> {
    bundle
        .x509()
        .authorities()
        .iter()
        .map(|der| {
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Our own bundle as `sigil bundle show` reports it.
fn own_bundle(server: &Server) -> Bundle {
    let shown = json(&server.cli(&["bundle", "show", "--output", "json"]));
    Bundle::from_document(
        TrustDomain::from_name_or_id(shown["trust_domain"].as_str().unwrap()).unwrap(),
        shown["document"].to_string().as_bytes(),
    )
    .unwrap()
}

#[test]
fn go_spiffe_sources_and_client_get_everything_from_the_real_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (server, agent_id) = server_and_agent_config(dir.path());
    let web = "spiffe://example.org/go-web";
    create_entry(&server, web, &agent_id, &format!("unix:uid:{}", own_uid()));
    create_entry(
        &server,
        "spiffe://example.org/someone-else",
        &agent_id,
        "unix:uid:4242",
    );
    let agent = Agent::start(dir.path());

    let report = go::run(&mut go::command(&[
        "context",
        "-socket",
        &unix_socket(&agent),
        "-audience",
        "db",
    ]));
    assert_eq!(strings(&report["context_svids"]), [web], "{report}");
    assert_eq!(strings(&report["context_bundles"]), ["example.org"]);
    assert_eq!(report["x509_source_svid"], web);
    assert_eq!(report["x509_source_chain"], 1);
    assert_eq!(report["verified_id"], web, "x509svid.Verify accepted it");
    assert_eq!(report["jwt_source_svid"], web);
    assert_eq!(report["jwt_svid"], web);
    assert_eq!(strings(&report["jwt_audience"]), ["db"]);
    assert_eq!(report["validated"], web, "ValidateJWTSVID by the agent");
    assert_ne!(report["wrong_audience"], "accepted");
    assert_eq!(report["offline"], web, "jwtsvid.ParseAndValidate offline");
    assert_ne!(report["offline_wrong_audience"], "accepted");
    assert_eq!(report["bundle_trust_domain"], "example.org");
    // go-spiffe's BundleSource holds exactly the bundle the server reports.
    let bundle = own_bundle(&server);
    assert_eq!(
        report["bundle_x509_authorities"],
        bundle.x509().authorities().len()
    );
    assert_eq!(
        report["x509_source_bundle_roots"],
        bundle.x509().authorities().len()
    );
    assert_eq!(
        report["bundle_jwt_authorities"],
        bundle.jwt().authorities().len()
    );
    agent.terminate();
    drop(server);
}

/// The IDs and serials of a watcher line's SVIDs, sorted by ID.
fn svids(line: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = line["svids"]
        .as_array()
        .unwrap_or_else(|| panic!("not an update: {line}"))
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["serial"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_go_spiffe_watcher_sees_a_new_entry_a_rotation_and_a_bundle_change() {
    let dir = tempfile::tempdir().unwrap();
    let (server, agent_id) = server_and_agent_config(dir.path());
    let uid = format!("unix:uid:{}", own_uid());
    let web = "spiffe://example.org/go-watch";
    // A 20 s SVID is re-signed at about half its life: the rotation this test waits for.
    json(&server.entry(&[
        "create",
        "--spiffe-id",
        web,
        "--parent-id",
        &agent_id,
        "--selector",
        &uid,
        "--x509-ttl",
        "20s",
        "--federates-with",
        "fed.test",
        "--output",
        "json",
    ]));
    let agent = Agent::start(dir.path());
    let mut watcher = GoProcess::spawn(go::command(&["watch", "-socket", &unix_socket(&agent)]));

    let first = watcher.next();
    let first_svids = svids(&first);
    assert_eq!(first_svids.len(), 1, "{first}");
    assert_eq!(first_svids[0].0, web);
    assert!(first["bundles"]["example.org"].is_string(), "{first}");

    // A new entry for this workload reaches the open watch.
    let api = "spiffe://example.org/go-watch-api";
    create_entry(&server, api, &agent_id, &uid);
    let added = watcher.next_where("the new entry", |line| svids(line).len() == 2);
    let ids: Vec<String> = svids(&added).into_iter().map(|s| s.0).collect();
    assert_eq!(ids, sorted(vec![web.to_owned(), api.to_owned()]));

    // The 20 s SVID rotates: same ID, a new serial, pushed without any request.
    let old_serial = first_svids[0].1.clone();
    let rotated = watcher.next_where("a rotation of the 20 s SVID", |line| {
        svids(line)
            .iter()
            .any(|(id, serial)| id == web && *serial != old_serial)
    });
    assert_eq!(svids(&rotated).len(), 2);

    // A federated bundle set for fed.test (the entry federates with it) arrives, and a
    // replacement of it arrives too.
    for name in ["fed-ca-1", "fed-ca-2"] {
        let pem = openssl_ca(dir.path(), name);
        json(&server.cli(&[
            "bundle",
            "set",
            "--id",
            "spiffe://fed.test",
            "--path",
            &pem,
            "--output",
            "json",
        ]));
        let listed = json(&server.cli(&["bundle", "list", "--output", "json"]));
        let fed = listed["bundles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["trust_domain"].as_str().unwrap().contains("fed.test"))
            .unwrap()
            .clone();
        let expected = fingerprints(
            &Bundle::from_document(
                "fed.test".parse().unwrap(),
                fed["document"].to_string().as_bytes(),
            )
            .unwrap(),
        )
        .join(",");
        let changed = watcher.next_where("the fed.test bundle", |line| {
            line["bundles"]["fed.test"].as_str() == Some(&expected)
        });
        assert_eq!(svids(&changed).len(), 2);
    }
    drop(watcher);
    agent.terminate();
    drop(server);
}

/// `gospiffe args...` as `uid` (gid the same, no supplementary groups), from a copy any uid
/// may run.
fn go_as(binary: &Path, uid: u32, args: &[&str]) -> Command {
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(binary)
        .args(args);
    command
}

/// This process's TLS material from the agent through sigil-spiffe's Workload API client.
async fn rust_material(socket: &str) -> Arc<TlsMaterial> {
    let endpoint: Endpoint = socket.parse().unwrap();
    let context = WorkloadApiClient::connect(&endpoint)
        .await
        .unwrap()
        .fetch_x509_context()
        .await
        .unwrap();
    Arc::new(TlsMaterial::new(context.default_svid(), context.bundles().clone()).unwrap())
}

/// A Rust mTLS server on sigil-spiffe's rustls config for one connection: answers a line with
/// "pong from rust". The task's result is the peer's ID, or the handshake's error.
async fn rust_server(
    material: Arc<TlsMaterial>,
    authorizer: Authorizer,
) -> (String, tokio::task::JoinHandle<Result<String, String>>) {
    let config = tls::server_config(material, authorizer).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let peer = tls::peer_spiffe_id(stream.get_ref().1.peer_certificates())
            .ok_or("no peer ID")?
            .to_string();
        let mut line = String::new();
        let mut reader = BufReader::new(&mut stream);
        reader
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"pong from rust\n")
            .await
            .map_err(|e| e.to_string())?;
        stream.shutdown().await.map_err(|e| e.to_string())?;
        Ok(peer)
    });
    (addr, task)
}

/// A Rust mTLS client on sigil-spiffe's rustls config: sends "ping", returns the server's ID
/// and its reply, or the error that ended the exchange.
async fn rust_client(
    addr: &str,
    material: Arc<TlsMaterial>,
    authorizer: Authorizer,
) -> Result<(String, String), String> {
    let config = tls::client_config(material, authorizer).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let peer = tls::peer_spiffe_id(stream.get_ref().1.peer_certificates())
        .ok_or("no peer ID")?
        .to_string();
    stream
        .write_all(b"ping\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    BufReader::new(&mut stream)
        .read_line(&mut reply)
        .await
        .map_err(|e| e.to_string())?;
    if reply.is_empty() {
        return Err("the server closed the connection without a reply".to_owned());
    }
    Ok((peer, reply.trim().to_owned()))
}

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

#[test]
fn go_spiffe_workloads_under_other_uids_do_mtls_with_go_and_rust_peers() {
    assert_eq!(
        own_uid(),
        0,
        "setpriv needs root: run the suite as root (as CI does)"
    );
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    fs::set_permissions(bin.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let binary = bin.path().join("gospiffe");
    fs::copy(go::binary(), &binary).unwrap();
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
    let (server, agent_id) = server_and_agent_config(dir.path());
    let backend = "spiffe://example.org/go-backend";
    let frontend = "spiffe://example.org/go-frontend";
    let rust = "spiffe://example.org/rust";
    create_entry(&server, backend, &agent_id, "unix:uid:4242");
    create_entry(&server, frontend, &agent_id, "unix:uid:4343");
    create_entry(&server, rust, &agent_id, &format!("unix:uid:{}", own_uid()));
    let agent = Agent::start(dir.path());
    // The agent's data directory is private; its socket must be reachable by anyone.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(dir.path().join("agent"), fs::Permissions::from_mode(0o755)).unwrap();
    let socket = unix_socket(&agent);

    // Each uid gets exactly its own SVID through go-spiffe (the first answer may wait for
    // signing; retried until the agent serves it), and an unknown uid gets none.
    let context_as = |uid: u32| go_as(&binary, uid, &["context", "-socket", &socket]).output();
    let mut first = context_as(4242).unwrap();
    for _ in 0..POLLS {
        if first.status.success() {
            break;
        }
        std::thread::sleep(POLL_PAUSE);
        first = context_as(4242).unwrap();
    }
    let report = |out: std::process::Output| -> Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(strings(&report(first)["context_svids"]), [backend]);
    assert_eq!(
        strings(&report(context_as(4343).unwrap())["context_svids"]),
        [frontend]
    );
    let denied = context_as(5555).unwrap();
    assert_eq!(denied.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.contains("PermissionDenied"), "{stderr}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let material = runtime.block_on(rust_material(&socket));
    assert_eq!(material.spiffe_id().unwrap().to_string(), rust);

    // The Go mTLS client as `uid`, connecting to `addr`, authorizing the server by `flag`.
    let mtls_client = |uid: u32, addr: &str, flag: &str, value: &str| {
        go_as(
            &binary,
            uid,
            &[
                "mtls-client",
                "-socket",
                &socket,
                "-connect",
                addr,
                flag,
                value,
            ],
        )
    };
    // Go <-> Go: a spiffetls server as 4242 that authorizes only the frontend.
    let mut go_server = GoProcess::spawn(go_as(
        &binary,
        4242,
        &["mtls-server", "-socket", &socket, "-authorize-id", frontend],
    ));
    let go_addr = go_server.next()["listening"].as_str().unwrap().to_owned();
    let reply = go::run(&mut mtls_client(4343, &go_addr, "-authorize-id", backend));
    assert_eq!(reply["peer"], backend);
    assert_eq!(reply["reply"], format!("ping from {backend} to {frontend}"));
    assert_eq!(go_server.next()["served"], frontend);
    // The client's AuthorizeID refuses a server that is not the one it wants.
    let refused = mtls_client(
        4343,
        &go_addr,
        "-authorize-id",
        "spiffe://example.org/someone-else",
    )
    .output()
    .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("unexpected ID"), "{stderr}");
    assert!(go_server.next()["refused"].is_string());

    // Rust client -> Go server: the server's AuthorizeID(frontend) refuses the Rust workload.
    let result = runtime.block_on(rust_client(
        &go_addr,
        material.clone(),
        Authorizer::exact(id(backend)),
    ));
    assert!(result.is_err(), "the Go server served {result:?}");
    let refusal = go_server.next();
    assert!(
        refusal["refused"]
            .as_str()
            .unwrap()
            .contains("unexpected ID"),
        "{refusal}"
    );
    drop(go_server);

    // Rust client -> Go server with AuthorizeMemberOf(example.org): accepted both ways.
    let mut go_server = GoProcess::spawn(go_as(
        &binary,
        4242,
        &[
            "mtls-server",
            "-socket",
            &socket,
            "-authorize-member-of",
            "example.org",
        ],
    ));
    let go_addr = go_server.next()["listening"].as_str().unwrap().to_owned();
    let (peer, reply) = runtime
        .block_on(rust_client(
            &go_addr,
            material.clone(),
            Authorizer::exact(id(backend)),
        ))
        .unwrap();
    assert_eq!(peer, backend);
    assert_eq!(reply, format!("ping from {backend} to {rust}"));
    assert_eq!(go_server.next()["served"], rust);
    drop(go_server);

    // Go client -> Rust server: accepted when each side's authorizer allows the other.
    let (rust_addr, task) = runtime.block_on(rust_server(
        material.clone(),
        Authorizer::exact(id(frontend)),
    ));
    let reply = go::run(&mut mtls_client(4343, &rust_addr, "-authorize-id", rust));
    assert_eq!(reply["peer"], rust);
    assert_eq!(reply["reply"], "pong from rust");
    assert_eq!(runtime.block_on(task).unwrap().unwrap(), frontend);

    // The Go client's AuthorizeMemberOf(other.test) refuses the Rust server.
    let (rust_addr, task) = runtime.block_on(rust_server(
        material.clone(),
        Authorizer::exact(id(frontend)),
    ));
    let refused = mtls_client(4343, &rust_addr, "-authorize-member-of", "other.test")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("unexpected trust domain"), "{stderr}");
    assert!(runtime.block_on(task).unwrap().is_err());

    // The Rust server's authorizer refuses the backend as a client.
    let (rust_addr, task) =
        runtime.block_on(rust_server(material, Authorizer::exact(id(frontend))));
    let refused = mtls_client(4242, &rust_addr, "-authorize-id", rust)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1), "the backend got a reply");
    let error = runtime.block_on(task).unwrap().unwrap_err();
    assert!(error.contains("ApplicationVerificationFailure"), "{error}");

    agent.terminate();
    drop(server);
}

/// A server of `example.org` in `dir` serving its bundle endpoint with `endpoint` (the
/// `[federation.bundle_endpoint]` keys after bind_address), refresh hint 7 s. Returns the
/// server and the endpoint's URL.
fn server_with_endpoint(dir: &Path, endpoint: &str) -> (Server, String) {
    crate::agent_api::write_config(dir);
    let port = crate::free_port();
    let mut config = fs::read_to_string(dir.join("server.toml")).unwrap();
    config.push_str(&format!(
        "[federation.bundle_endpoint]\nbind_address = \"127.0.0.1:{port}\"\n\
         refresh_hint = \"7s\"\n{endpoint}"
    ));
    fs::write(dir.join("server.toml"), config).unwrap();
    (Server::start(dir), format!("https://127.0.0.1:{port}/"))
}

/// `gospiffe federation-fetch` of example.org at `url` with `auth` flags; the report when
/// go-spiffe accepted the endpoint, its error text otherwise.
fn go_fetch(url: &str, auth: &[&str]) -> Result<Value, String> {
    let out = go::command(&[
        "federation-fetch",
        "-trust-domain",
        "example.org",
        "-url",
        url,
    ])
    .args(auth)
    .output()
    .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// go-spiffe read exactly our bundle: authorities, sequence and refresh hint.
fn assert_is_our_bundle(report: &Value, server: &Server) {
    let shown = json(&server.cli(&["bundle", "show", "--output", "json"]));
    assert_eq!(report["trust_domain"], "example.org");
    assert_eq!(
        sorted(strings(&report["x509_authorities"])),
        sorted(fingerprints(&own_bundle(server)))
    );
    assert_eq!(
        report["jwt_authorities"],
        own_bundle(server).jwt().authorities().len()
    );
    assert_eq!(report["sequence"], shown["sequence"]);
    assert_eq!(report["refresh_hint_seconds"], 7.0);
}

#[test]
fn go_spiffe_fetches_the_bundle_endpoint_in_both_profiles() {
    // https_spiffe: the endpoint presents the server's own SVID; go-spiffe authenticates it
    // by SPIFFE ID against the bundle it was given.
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = server_with_endpoint(dir.path(), "profile = \"https_spiffe\"\n");
    let pem = dir.path().join("bundle.pem");
    let shown = server.cli(&["bundle", "show", "--format", "pem"]);
    fs::write(&pem, json_ok_bytes(&shown)).unwrap();
    let pem = pem.to_str().unwrap();
    let report = go_fetch(
        &url,
        &[
            "-endpoint-id",
            "spiffe://example.org/sigil/server",
            "-bundle",
            pem,
        ],
    )
    .unwrap();
    assert_is_our_bundle(&report, &server);
    // The wrong endpoint ID is refused by go-spiffe (the server is who it is).
    let error = go_fetch(
        &url,
        &[
            "-endpoint-id",
            "spiffe://example.org/not-the-server",
            "-bundle",
            pem,
        ],
    )
    .unwrap_err();
    assert!(error.contains("unexpected ID"), "{error}");
    // Roots of another CA cannot authenticate the endpoint.
    let other = openssl_ca(dir.path(), "other");
    let error = go_fetch(
        &url,
        &[
            "-endpoint-id",
            "spiffe://example.org/sigil/server",
            "-bundle",
            &other,
        ],
    )
    .unwrap_err();
    assert!(error.contains("x509svid"), "{error}");
    drop(server);

    // https_web: a certificate from files, authenticated by web PKI roots.
    let dir = tempfile::tempdir().unwrap();
    web_pki(dir.path());
    let (server, url) = server_with_endpoint(
        dir.path(),
        "profile = \"https_web\"\ncert_file = \"web.pem\"\nkey_file = \"web.key\"\n",
    );
    let roots = dir.path().join("web-ca.pem");
    let report = go_fetch(&url, &["-web-roots", roots.to_str().unwrap()]).unwrap();
    assert_is_our_bundle(&report, &server);
    let other = openssl_ca(dir.path(), "other");
    let error = go_fetch(&url, &["-web-roots", &other]).unwrap_err();
    assert!(error.contains("certificate"), "{error}");
    drop(server);
}

fn json_ok_bytes(out: &std::process::Output) -> Vec<u8> {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.clone()
}

/// The X.509 authorities and sequence of the federated bundle `server` stores for `td`.
fn stored_federated(server: &Server, td: &str) -> Option<(Vec<String>, u64)> {
    let listed = json(&server.cli(&["bundle", "list", "--output", "json"]));
    let entry = listed["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| {
            TrustDomain::from_name_or_id(b["trust_domain"].as_str().unwrap()).unwrap()
                == td.parse::<TrustDomain>().unwrap()
        })?
        .clone();
    let bundle = Bundle::from_document(
        td.parse().unwrap(),
        entry["document"].to_string().as_bytes(),
    )
    .unwrap();
    Some((
        sorted(fingerprints(&bundle)),
        entry["sequence"].as_u64().unwrap(),
    ))
}

/// Waits until `server` stores the bundle that `gospiffe federation-serve` reported.
fn wait_for_stored(server: &Server, served: &Value) {
    let wanted = (
        sorted(strings(&served["x509_authorities"])),
        served["sequence"].as_u64().unwrap(),
    );
    let mut last = None;
    for _ in 0..POLLS {
        last = stored_federated(server, "go.test");
        if last.as_ref() == Some(&wanted) {
            return;
        }
        std::thread::sleep(POLL_PAUSE);
    }
    panic!(
        "the fetcher never stored {wanted:?}; last stored {last:?}\n{}",
        server.log()
    );
}

#[test]
fn the_fetcher_follows_a_bundle_go_spiffe_serves_and_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let web_ca = dir.path().join("go-web-ca.pem");
    let mut served = GoProcess::spawn(go::command(&[
        "federation-serve",
        "-trust-domain",
        "go.test",
        "-web-ca-out",
        web_ca.to_str().unwrap(),
    ]));
    let url = served.next()["listening"].as_str().unwrap().to_owned();
    let first = served.next();
    crate::agent_api::write_config(dir.path());
    let mut config = fs::read_to_string(dir.path().join("server.toml")).unwrap();
    config.push_str(&format!(
        "[[federation.federates_with]]\ntrust_domain = \"go.test\"\nurl = \"{url}\"\n\
         profile = \"https_web\"\nca_file = \"{}\"\n",
        web_ca.display()
    ));
    fs::write(dir.path().join("server.toml"), config).unwrap();
    let server = Server::start(dir.path());
    wait_for_stored(&server, &first);

    // Each rotation publishes a new CA beside the previous one, then drops the oldest; the
    // fetcher follows at the handler's 1 s refresh hint, with no operator step.
    let mut stdin = served.stdin.take().unwrap();
    for expected_authorities in [2, 2] {
        writeln!(stdin, "rotate").unwrap();
        stdin.flush().unwrap();
        let rotated = served.next();
        assert_eq!(
            rotated["x509_authorities"].as_array().unwrap().len(),
            expected_authorities
        );
        wait_for_stored(&server, &rotated);
    }
    drop(server);
}
