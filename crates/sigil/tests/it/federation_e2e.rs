//! Two trust domains federated both ways, end to end with real processes: `a.test` and
//! `b.test`, each a `sigil server run` and a `sigil agent run` on loopback. B fetches A's bundle
//! over `https_spiffe` (authenticating A's endpoint with the bundle it was given first), A
//! fetches B's over `https_web`. A workload in A and a workload in B then complete mutual TLS
//! with `spiffe-rustls`, and a JWT-SVID of A's workload is validated by B's agent and offline
//! against the federated JWT bundle with the `spiffe` crate.

use std::fs;
use std::path::Path;

use spiffe::{JwtSvid, SpiffeId, TrustDomain, WorkloadApiClient};

use crate::agent_run::{Agent, own_uid, web_pki};
use crate::harness::{POLL_PAUSE, POLLS, Server, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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

#[test]
fn workloads_of_two_federated_trust_domains_authenticate_each_other() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
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
            "[federation.bundle_endpoint]\nbind_address = \"127.0.0.1:{a_endpoint}\"\n\
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
    let (endpoint_a, endpoint_b) = (agent_a.endpoint(), agent_b.endpoint());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        wait_for_federated_bundle(&endpoint_a, "b.test").await;
        wait_for_federated_bundle(&endpoint_b, "a.test").await;

        // Mutual TLS across the trust domains, each side trusting the other's bundle only
        // because its entry federates with it.
        let source = |endpoint: String| async move {
            spiffe::X509Source::builder()
                .endpoint(&endpoint)
                .build()
                .await
                .unwrap()
        };
        let server_config = spiffe_rustls::mtls_server(source(endpoint_b.clone()).await)
            .authorize(spiffe_rustls::authorizer::exact([client_id.as_str()]).unwrap())
            .build()
            .unwrap();
        let client_config = spiffe_rustls::mtls_client(source(endpoint_a.clone()).await)
            .authorize(spiffe_rustls::authorizer::exact([server_id.as_str()]).unwrap())
            .build()
            .unwrap();
        let (seen_by_server, seen_by_client) =
            crate::workloads::tls_exchange(server_config, client_config).await;
        assert_eq!(seen_by_server, client_id);
        assert_eq!(seen_by_client, server_id);

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
    });
    agent_a.terminate();
    agent_b.terminate();
    drop((server_a, server_b));
}
