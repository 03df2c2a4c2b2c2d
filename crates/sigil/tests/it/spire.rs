//! SPIRE itself (v1.13.3, built from the Go module proxy by `scripts/build-spire`, nothing of
//! it in this repository) as the peer: Sigil's workload commands and its Workload API client
//! against a real `spire-agent`, and a SPIRE trust domain federated both ways with a Sigil
//! trust domain over `https_spiffe`, each server fetching the other's bundle endpoint, with
//! workloads of both completing mutual TLS across them.

use std::fs;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use serde_json::Value;
use sigil_spiffe::tls::{self, TlsMaterial};
use sigil_spiffe::workload_api::{Endpoint, WorkloadApiClient, X509Context};
use sigil_spiffe::{Authorizer, SpiffeId};

use crate::agent_run::{Agent, own_uid, server_and_agent_config};
use crate::harness::{POLL_PAUSE, POLLS, Server, json};
use crate::spire_process::{FAST_AGENT, FAST_SERVER, SpireAgent, SpireServer};
use crate::{free_port, text};

/// SPIRE's agent ID in these tests (the join token's alias).
const SPIRE_AGENT: &str = "spiffe://spire.test/agent";

/// `spire-server entry create` for a workload of this uid, parented to the token's agent.
fn spire_entry(server: &SpireServer, spiffe_id: &str, extra: &[&str]) {
    let uid = format!("unix:uid:{}", own_uid());
    let mut args = vec![
        "entry",
        "create",
        "-parentID",
        SPIRE_AGENT,
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
    let server = SpireServer::start(dir.path(), "spire.test", free_port(), FAST_SERVER);
    let workload = "spiffe://spire.test/workload";
    spire_entry(&server, workload, &[]);
    let agent = SpireAgent::start(dir.path(), &server, SPIRE_AGENT, FAST_AGENT);
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
        free_port(),
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
    let spire_agent = SpireAgent::start(spire_dir.path(), &spire, SPIRE_AGENT, FAST_AGENT);

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
