//! Two trust domains federated both ways, end to end with real processes: `a.test` and
//! `b.test`, each a `sigil server run` and a `sigil agent run` on loopback. B fetches A's bundle
//! over `https_spiffe` (authenticating A's endpoint with the bundle it was given first), A
//! fetches B's over `https_web`. A workload in A and a workload in B then complete mutual TLS
//! with `spiffe-rustls` and with `openssl`, and a JWT-SVID of A's workload is validated by B's
//! agent and offline against the federated JWT bundle with the `spiffe` crate and
//! `jsonwebtoken`.

use std::fs;
use std::path::Path;

use spiffe::{JwtSvid, SpiffeId, TrustDomain, WorkloadApiClient};

use crate::agent_run::{Agent, own_uid, web_pki};
use crate::harness::{POLL_PAUSE, POLLS, Server, json};

use crate::free_port;

fn write_server(dir: &Path, td: &str, port: u16, federation: &str) {
    fs::write(
        dir.join("server.toml"),
        format!(
            "trust_domain = \"{td}\"\ndata_dir = \"data\"\n\
             bind_address = \"127.0.0.1:{port}\"\nadmin_socket = \"{}\"\n{federation}",
            dir.join("run/admin.sock").display()
        ),
    )
    .unwrap();
}

/// A token, the bootstrap bundle and `agent.toml` for an agent of `server` in `dir`; a
/// workload entry for this process's uid that federates with `peer`. Returns the workload ID.
fn agent_and_workload(
    server: &Server,
    dir: &Path,
    td: &str,
    port: u16,
    name: &str,
    peer: &str,
) -> String {
    let token = json(&server.cli(&["token", "generate", "--output", "json"]));
    let agent_id = token["spiffe_id"].as_str().unwrap().to_owned();
    let token = token["token"].as_str().unwrap().to_owned();
    let bundle = server.cli(&["bundle", "show", "--format", "pem"]);
    assert_eq!(bundle.status.code(), Some(0));
    fs::write(dir.join("bootstrap.pem"), &bundle.stdout).unwrap();
    fs::write(
        dir.join("agent.toml"),
        format!(
            "trust_domain = \"{td}\"\nserver_address = \"127.0.0.1:{port}\"\n\
             data_dir = \"agent\"\ntrust_bundle_path = \"bootstrap.pem\"\n\
             [node_attestor]\ntype = \"join_token\"\ntoken = \"{token}\"\n"
        ),
    )
    .unwrap();
    let workload = format!("spiffe://{td}/{name}");
    let out = server.entry(&[
        "create",
        "--spiffe-id",
        &workload,
        "--parent-id",
        &agent_id,
        "--selector",
        &format!("unix:uid:{}", own_uid()),
        "--federates-with",
        peer,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    workload
}

/// Waits until the workload API at `endpoint` hands out the federated bundle of `peer`.
async fn wait_for_federated_bundle(endpoint: &str, peer: &str) {
    let client = WorkloadApiClient::connect_to(endpoint).await.unwrap();
    let peer = TrustDomain::new(peer).unwrap();
    for _ in 0..POLLS {
        if let Ok(context) = client.fetch_x509_context().await
            && context.bundle_set().get(&peer).is_some()
        {
            return;
        }
        tokio::time::sleep(POLL_PAUSE).await;
    }
    panic!("the {peer} bundle never reached the workload at {endpoint}");
}

/// Two federated domains running: servers, agents, one workload entry each.
struct Domains {
    agent_a: Agent,
    agent_b: Agent,
    // Held for their lifetimes (fields drop in order: the servers are killed, then the
    // directories go).
    _server_a: Server,
    _server_b: Server,
    _a_dir: tempfile::TempDir,
    _b_dir: tempfile::TempDir,
    client_id: String,
    server_id: String,
}

/// Starts `a.test` (with `a_extra` in its server config, such as a short CA lifetime) and
/// `b.test`, federated both ways, each with an agent and a workload entry for this uid.
fn federated_domains(a_extra: &str) -> Domains {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let (a, b) = (a_dir.path(), b_dir.path());
    let (a_port, b_port, a_endpoint, b_endpoint) =
        (free_port(), free_port(), free_port(), free_port());
    web_pki(b);

    // A serves its bundle with its own SVID and fetches B's from B's web-PKI endpoint.
    write_server(
        a,
        "a.test",
        a_port,
        &format!(
            "{a_extra}[federation.bundle_endpoint]\nbind_address = \"127.0.0.1:{a_endpoint}\"\n\
             profile = \"https_spiffe\"\nrefresh_hint = \"1s\"\n\
             [[federation.federates_with]]\ntrust_domain = \"b.test\"\n\
             url = \"https://127.0.0.1:{b_endpoint}/\"\nprofile = \"https_web\"\n\
             ca_file = \"{}\"\n",
            b.join("web-ca.pem").display()
        ),
    );
    let server_a = Server::start(a);
    // B is given A's bundle once, then follows A's endpoint, authenticated by that bundle.
    let a_bundle = server_a.cli(&["bundle", "show", "--format", "spiffe"]);
    assert_eq!(a_bundle.status.code(), Some(0));
    fs::write(b.join("a-bundle.json"), &a_bundle.stdout).unwrap();
    write_server(
        b,
        "b.test",
        b_port,
        &format!(
            "[federation.bundle_endpoint]\nbind_address = \"127.0.0.1:{b_endpoint}\"\n\
             profile = \"https_web\"\ncert_file = \"web.pem\"\nkey_file = \"web.key\"\n\
             refresh_hint = \"1s\"\n\
             [[federation.federates_with]]\ntrust_domain = \"a.test\"\n\
             url = \"https://127.0.0.1:{a_endpoint}/\"\nprofile = \"https_spiffe\"\n\
             endpoint_spiffe_id = \"spiffe://a.test/sigil/server\"\n\
             bundle_path = \"a-bundle.json\"\n"
        ),
    );
    let server_b = Server::start(b);

    let client_id = agent_and_workload(&server_a, a, "a.test", a_port, "client", "b.test");
    let server_id = agent_and_workload(&server_b, b, "b.test", b_port, "server", "a.test");
    let agent_a = Agent::start(a);
    let agent_b = Agent::start(b);
    Domains {
        _a_dir: a_dir,
        _b_dir: b_dir,
        agent_a,
        agent_b,
        _server_a: server_a,
        _server_b: server_b,
        client_id,
        server_id,
    }
}

/// spiffe-rustls mTLS between A's workload (client) and B's (server), fresh sources.
async fn mtls_across(domains: &Domains) {
    let (seen_by_server, seen_by_client) = try_mtls_across(domains).await.unwrap();
    assert_eq!(seen_by_server, domains.client_id);
    assert_eq!(seen_by_client, domains.server_id);
}

/// [`mtls_across`] that may fail: around a CA rotation with one-minute CAs an SVID signed late
/// by the old CA lives only seconds, and a loaded machine may hand out one that expires
/// before the handshake; a later attempt gets its successor.
async fn mtls_across_eventually(domains: &Domains) {
    let mut last = None;
    for _ in 0..20 {
        match try_mtls_across(domains).await {
            Ok((seen_by_server, seen_by_client)) => {
                assert_eq!(seen_by_server, domains.client_id);
                assert_eq!(seen_by_client, domains.server_id);
                return;
            }
            Err(error) => last = Some(error),
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    panic!("no mTLS across the domains after 20 attempts: {last:?}");
}

async fn try_mtls_across(domains: &Domains) -> Result<(String, String), std::io::Error> {
    let source = |endpoint: String| async move {
        spiffe::X509Source::builder()
            .endpoint(&endpoint)
            .build()
            .await
            .unwrap()
    };
    let server_config = spiffe_rustls::mtls_server(source(domains.agent_b.endpoint()).await)
        .authorize(spiffe_rustls::authorizer::exact([domains.client_id.as_str()]).unwrap())
        .build()
        .unwrap();
    let client_config = spiffe_rustls::mtls_client(source(domains.agent_a.endpoint()).await)
        .authorize(spiffe_rustls::authorizer::exact([domains.server_id.as_str()]).unwrap())
        .build()
        .unwrap();
    crate::workloads::try_tls_exchange(server_config, client_config).await
}

#[test]
fn workloads_of_two_federated_trust_domains_authenticate_each_other() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let domains = federated_domains("");
    let (endpoint_a, endpoint_b) = (domains.agent_a.endpoint(), domains.agent_b.endpoint());
    let (client_id, server_id) = (domains.client_id.clone(), domains.server_id.clone());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        wait_for_federated_bundle(&endpoint_a, "b.test").await;
        wait_for_federated_bundle(&endpoint_b, "a.test").await;
        // Mutual TLS across the trust domains, each side trusting the other's bundle only
        // because its entry federates with it.
        mtls_across(&domains).await;

        // A JWT-SVID of A's workload, for B's workload: B's agent validates it, and so does the
        // spiffe crate offline with the federated JWT bundle B's agent hands out.
        let in_a = WorkloadApiClient::connect_to(&endpoint_a).await.unwrap();
        let jwt = in_a
            .fetch_jwt_svid([server_id.as_str()], None)
            .await
            .unwrap();
        let in_b = WorkloadApiClient::connect_to(&endpoint_b).await.unwrap();
        let validated = in_b
            .validate_jwt_token(&server_id, jwt.token())
            .await
            .unwrap();
        assert_eq!(validated.spiffe_id().to_string(), client_id);
        let bundles = in_b.fetch_jwt_bundles().await.unwrap();
        let offline =
            JwtSvid::parse_and_validate(jwt.token(), &bundles, &[server_id.as_str()]).unwrap();
        let expected: SpiffeId = client_id.parse().unwrap();
        assert_eq!(offline.spiffe_id(), &expected);
        // And by jsonwebtoken, with the a.test JWKS exactly as B's Workload API serves it.
        let mut raw = crate::agent_run::raw_client(domains.agent_b.socket.clone()).await;
        let mut request = tonic::Request::new(sigil_proto::workload::JwtBundlesRequest {});
        request
            .metadata_mut()
            .insert("workload.spiffe.io", "true".parse().unwrap());
        let mut jwt_bundles = raw.fetch_jwt_bundles(request).await.unwrap().into_inner();
        let message = jwt_bundles.message().await.unwrap().unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet =
            serde_json::from_slice(&message.bundles["spiffe://a.test"]).unwrap();
        let header = jsonwebtoken::decode_header(jwt.token()).unwrap();
        let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_audience(&[server_id.as_str()]);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            jwt.token(),
            &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["sub"], client_id.as_str());
    });
    openssl_mtls_across(&domains);
    let Domains {
        agent_a, agent_b, ..
    } = domains;
    agent_a.terminate();
    agent_b.terminate();
}

#[test]
fn a_peer_ca_rotation_reaches_the_other_domain_with_no_operator_action() {
    use tokio_stream::StreamExt;

    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // A's CA lives a minute: the next one is published after about half of it.
    let domains = federated_domains(
        "[ca]\nttl = \"1m\"\n[svid]\ndefault_x509_ttl = \"10s\"\ndefault_jwt_ttl = \"10s\"\n",
    );
    let a_td = TrustDomain::new("a.test").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        wait_for_federated_bundle(&domains.agent_a.endpoint(), "b.test").await;
        wait_for_federated_bundle(&domains.agent_b.endpoint(), "a.test").await;
        mtls_across_eventually(&domains).await;
        // B's workload keeps a stream open; A's bundle as B's workload first sees it.
        let in_b = WorkloadApiClient::connect_to(domains.agent_b.endpoint())
            .await
            .unwrap();
        let mut stream = in_b.stream_x509_contexts().await.unwrap();
        let first = stream.next().await.unwrap().unwrap();
        let before = first.bundle_set().get(&a_td).unwrap().authorities().len();
        // A's CA rotates: B's stream must carry a bigger a.test bundle (the prepared CA)
        // without anyone touching B.
        loop {
            let context = tokio::time::timeout(std::time::Duration::from_secs(120), stream.next())
                .await
                .expect("no new a.test bundle within two minutes")
                .unwrap()
                .unwrap();
            if context.bundle_set().get(&a_td).unwrap().authorities().len() > before {
                break;
            }
        }
        // Once A signs with the new CA, mTLS across the domains still works.
        let in_a = WorkloadApiClient::connect_to(domains.agent_a.endpoint())
            .await
            .unwrap();
        let first_issuer = issuer_of(&in_a).await;
        for _ in 0..POLLS * 2 {
            if issuer_of(&in_a).await != first_issuer {
                break;
            }
            tokio::time::sleep(POLL_PAUSE).await;
        }
        assert_ne!(
            issuer_of(&in_a).await,
            first_issuer,
            "A's workload never got the new CA"
        );
        mtls_across_eventually(&domains).await;
    });
    let Domains {
        agent_a, agent_b, ..
    } = domains;
    agent_a.terminate();
    agent_b.terminate();
}

/// The issuer name (DER) of the default SVID's leaf, as A's workload gets it now.
async fn issuer_of(client: &WorkloadApiClient) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    let svid = client.fetch_x509_svid().await.unwrap();
    let leaf = svid.cert_chain()[0].as_ref().to_vec();
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&leaf).unwrap();
    cert.issuer().as_raw().to_vec()
}

/// The files `sigil fetch x509 --write` makes for each workload feed `openssl s_server` (B)
/// and `openssl s_client` (A), which verify each other against the federated bundle files.
fn openssl_mtls_across(domains: &Domains) {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let files = tempfile::tempdir().unwrap();
    for (name, agent) in [("a", &domains.agent_a), ("b", &domains.agent_b)] {
        let dir = files.path().join(name);
        let out = crate::sigil(&[
            "fetch",
            "x509",
            "--socket",
            &format!("unix://{}", agent.socket.display()),
            "--write",
            dir.to_str().unwrap(),
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // One federated trust domain each: the peer's bundle is federated_bundle.0.0.pem.
        assert!(dir.join("federated_bundle.0.0.pem").exists());
    }
    let (a, b) = (files.path().join("a"), files.path().join("b"));
    let port = free_port();
    let mut server = Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-www",
            "-Verify",
            "1",
            "-verify_return_error",
        ])
        .args(["-accept", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(b.join("svid.0.pem"))
        .arg("-key")
        .arg(b.join("svid.0.key"))
        .arg("-CAfile")
        .arg(b.join("federated_bundle.0.0.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ready = false;
    for _ in 0..POLLS {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            ready = true;
            break;
        }
        std::thread::sleep(POLL_PAUSE);
    }
    let mut client = Command::new("openssl")
        .args([
            "s_client",
            "-ign_eof",
            "-verify_return_error",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("-cert")
        .arg(a.join("svid.0.pem"))
        .arg("-key")
        .arg(a.join("svid.0.key"))
        .arg("-CAfile")
        .arg(a.join("federated_bundle.0.0.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    client
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .unwrap();
    let out = client.wait_with_output().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(ready, "openssl s_server did not start");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Verify return code: 0 (ok)"), "{stdout}");
    // s_server -www answers only once it has verified the client's certificate.
    assert!(stdout.contains("200 ok"), "{stdout}");
}
