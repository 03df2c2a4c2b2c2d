//! Java workloads against the real `sigil server run` and `sigil agent run`: stock grpc-java
//! (grpc-netty on netty's epoll transport, dialing the Unix socket as a `DomainSocketAddress`,
//! which sends the socket path as `:authority`) and java-spiffe 0.8.17 (the SPIFFE Java
//! library: X.509 and JWT SVIDs, offline JWT validation, mTLS through its SSL context factory)
//! with a go-spiffe workload as the mTLS peer. The Java side is
//! `crates/sigil/tests/java-workload` (a Maven project, versions pinned in its pom.xml), built
//! once per test process by its `build.sh`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

use crate::agent_run::{Agent, create_entry, own_uid, server_and_agent_config};
use crate::go::{self, GoProcess};
use crate::harness::{POLL_PAUSE, POLLS};

/// The runnable jar, built (or found up to date) by the project's `build.sh`.
fn jar() -> &'static Path {
    static JAR: OnceLock<PathBuf> = OnceLock::new();
    JAR.get_or_init(|| {
        let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/java-workload");
        let out = Command::new(project.join("build.sh"))
            .output()
            .expect("Java 17 and Maven are needed for the Java interop tests");
        assert!(
            out.status.success(),
            "java-workload build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(stdout.lines().last().unwrap())
    })
}

fn java(args: &[&str]) -> Command {
    let mut command = Command::new("java");
    command.arg("-jar").arg(jar()).args(args);
    command
}

/// The JSON document a successful run printed, or a panic with its stderr.
fn report(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "java-workload failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The JSON document a failed run printed on stderr (exit status 1).
fn failure(out: &Output) -> Value {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|_| panic!("not a JSON error: {stderr}"))
}

#[test]
fn stock_grpc_java_fetches_over_the_unix_socket_through_the_authority_shim() {
    let dir = tempfile::tempdir().unwrap();
    let (server, agent_id) = server_and_agent_config(dir.path());
    let web = "spiffe://example.org/java";
    create_entry(&server, web, &agent_id, &format!("unix:uid:{}", own_uid()));
    let agent = Agent::start(dir.path());
    let socket = agent.socket.to_str().unwrap().to_owned();

    let fetched = report(&java(&["grpc-fetch", "-socket", &socket]).output().unwrap());
    // grpc-java sent the socket path as :authority, which the stock h2 server refuses; the
    // agent's shim rewrote it, so the call went through.
    assert_eq!(fetched["authority"], socket.as_str());
    assert_eq!(fetched["client"], "grpc-java");
    let svids = fetched["svids"].as_array().unwrap();
    assert_eq!(svids.len(), 1, "{fetched}");
    assert_eq!(svids[0]["spiffe_id"], web);
    assert_eq!(svids[0]["chain_len"], 1);
    assert_eq!(svids[0]["leaf_uri_sans"][0], web);
    assert!(svids[0]["key_len"].as_u64().unwrap() > 0);
    assert!(svids[0]["bundle_certs"].as_u64().unwrap() >= 1);

    let health = report(&java(&["grpc-health", "-socket", &socket]).output().unwrap());
    assert_eq!(health["status"], "SERVING");
    assert_eq!(health["authority"], socket.as_str());

    // Without the security header the call is refused, as the standard requires.
    let refused = failure(
        &java(&["grpc-fetch", "-socket", &socket, "-no-header"])
            .output()
            .unwrap(),
    );
    assert_eq!(refused["grpc_code"], "INVALID_ARGUMENT", "{refused}");
    agent.terminate();
    drop(server);
}

#[test]
fn java_spiffe_gets_x509_and_jwt_svids_and_validates_them() {
    let dir = tempfile::tempdir().unwrap();
    let (server, agent_id) = server_and_agent_config(dir.path());
    let web = "spiffe://example.org/java-spiffe";
    create_entry(&server, web, &agent_id, &format!("unix:uid:{}", own_uid()));
    let agent = Agent::start(dir.path());
    let socket = format!("unix:{}", agent.socket.display());

    let doc = report(
        &java(&["spiffe-context", "-socket", &socket, "-audience", "db"])
            .output()
            .unwrap(),
    );
    assert_eq!(doc["client"], "java-spiffe");
    assert_eq!(doc["x509_svids"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc["x509_svids"][0]["spiffe_id"], web);
    assert_eq!(doc["x509_default_svid"], web);
    assert_eq!(doc["x509_source_svid"], web);
    assert_eq!(doc["x509_verified"], true);
    assert!(doc["x509_bundles"]["example.org"].as_u64().unwrap() >= 1);
    assert_eq!(doc["jwt_svid"]["spiffe_id"], web);
    assert_eq!(doc["jwt_svid"]["audience"], serde_json::json!(["db"]));
    assert_eq!(doc["jwt_source_svid"], web);
    assert_eq!(doc["validated_by_api"], web);
    assert_eq!(doc["validated_offline"], web);
    assert!(doc["jwt_bundles"]["example.org"].as_u64().unwrap() >= 1);
    assert_eq!(doc["wrong_audience_api"]["rejected"], true, "{doc}");
    assert_eq!(doc["wrong_audience_offline"]["rejected"], true, "{doc}");
    agent.terminate();
    drop(server);
}

#[test]
fn java_spiffe_and_go_spiffe_workloads_complete_mtls_both_ways() {
    assert_eq!(
        own_uid(),
        0,
        "setpriv needs root: run the suite as root (as CI does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    fs::set_permissions(bin.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let gospiffe = bin.path().join("gospiffe");
    fs::copy(go::binary(), &gospiffe).unwrap();
    fs::set_permissions(&gospiffe, fs::Permissions::from_mode(0o755)).unwrap();
    let (server, agent_id) = server_and_agent_config(dir.path());
    let java_id = "spiffe://example.org/java-mtls";
    let go_id = "spiffe://example.org/go-mtls";
    create_entry(
        &server,
        java_id,
        &agent_id,
        &format!("unix:uid:{}", own_uid()),
    );
    create_entry(&server, go_id, &agent_id, "unix:uid:4343");
    let agent = Agent::start(dir.path());
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(dir.path().join("agent"), fs::Permissions::from_mode(0o755)).unwrap();
    let socket = format!("unix://{}", agent.socket.display());
    let go_as = |args: &[&str]| {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=4343", "--regid=4343", "--clear-groups"])
            .arg(&gospiffe)
            .args(args);
        command
    };
    // The Go workload's entry may still be signing when it first asks; wait for it.
    let mut ready = false;
    for _ in 0..POLLS {
        if go_as(&["context", "-socket", &socket])
            .output()
            .unwrap()
            .status
            .success()
        {
            ready = true;
            break;
        }
        std::thread::sleep(POLL_PAUSE);
    }
    assert!(ready, "the go-spiffe workload never got its SVID");

    // Java server, Go client.
    let mut java_server = GoProcess::spawn(java(&[
        "spiffe-mtls-server",
        "-socket",
        &socket,
        "-accept-id",
        go_id,
    ]));
    let listening = java_server.next();
    assert_eq!(listening["own_id"], java_id);
    let java_addr = listening["listening"].as_str().unwrap().to_owned();
    let reply = go::run(&mut go_as(&[
        "mtls-client",
        "-socket",
        &socket,
        "-connect",
        &java_addr,
        "-authorize-id",
        java_id,
    ]));
    assert_eq!(reply["peer"], java_id);
    assert_eq!(reply["reply"], "ping from java");
    assert_eq!(java_server.next()["served"], go_id);
    drop(java_server);

    // A Java server that accepts someone else refuses the Go client.
    let mut java_server = GoProcess::spawn(java(&[
        "spiffe-mtls-server",
        "-socket",
        &socket,
        "-accept-id",
        "spiffe://example.org/someone-else",
    ]));
    let java_addr = java_server.next()["listening"].as_str().unwrap().to_owned();
    let refused = go_as(&[
        "mtls-client",
        "-socket",
        &socket,
        "-connect",
        &java_addr,
        "-authorize-id",
        java_id,
    ])
    .output()
    .unwrap();
    assert_eq!(refused.status.code(), Some(1), "the Go client got a reply");
    let refusal = java_server.next();
    assert!(
        refusal["refused"].as_str().unwrap().contains(go_id),
        "{refusal}"
    );
    drop(java_server);

    // Go server, Java client; then a Java client that wants someone else refuses the server.
    let mut go_server = GoProcess::spawn(go_as(&[
        "mtls-server",
        "-socket",
        &socket,
        "-authorize-id",
        java_id,
    ]));
    let go_addr = go_server.next()["listening"].as_str().unwrap().to_owned();
    let reply = report(
        &java(&[
            "spiffe-mtls-client",
            "-socket",
            &socket,
            "-connect",
            &go_addr,
            "-accept-id",
            go_id,
        ])
        .output()
        .unwrap(),
    );
    assert_eq!(reply["peer"], go_id);
    assert_eq!(reply["reply"], format!("ping from {go_id} to {java_id}"));
    assert_eq!(go_server.next()["served"], java_id);
    let refused = failure(
        &java(&[
            "spiffe-mtls-client",
            "-socket",
            &socket,
            "-connect",
            &go_addr,
            "-accept-id",
            "spiffe://example.org/someone-else",
        ])
        .output()
        .unwrap(),
    );
    assert!(
        refused["error"].as_str().unwrap().contains("not accepted"),
        "{refused}"
    );
    drop(go_server);
    agent.terminate();
    drop(server);
}
