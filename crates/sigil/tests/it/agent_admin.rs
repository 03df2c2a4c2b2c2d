//! `sigil token generate` and `sigil agent list|show|ban|evict` end to end against the real
//! `sigil server run`. Until `sigil agent run` exists to attest, attested agents are written
//! into the server's SQLite datastore before it starts (the server loads them at start); the
//! attestation with an admin-made token is covered in process (sigil-server's agent_admin).

use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sigil_core::{AttestedNode, JoinToken};
use sigil_server::datastore::{DataStore, DataStoreError};

use crate::harness::{Server, json, write_config};
use crate::text;

const ALICE: &str = "spiffe://example.org/sigil/agent/join_token/alice";
const CAROL: &str = "spiffe://example.org/sigil/agent/x509pop/carol";
const NOBODY: &str = "spiffe://example.org/sigil/agent/join_token/nobody";

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn datastore_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("data/datastore.sqlite3").display())
}

/// Writes attested nodes into the datastore the server in `dir` will open.
fn seed_agents(dir: &Path, nodes: &[AttestedNode]) {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir.join("data"))
        .unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = DataStore::open(&datastore_url(dir)).await.unwrap();
        for node in nodes {
            store.create_node(node).await.unwrap();
        }
        store.close().await;
    });
}

/// Takes a token from the stopped server's datastore, as attestation will.
fn take_token(dir: &Path, token: &str) -> Result<JoinToken, DataStoreError> {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = DataStore::open(&datastore_url(dir)).await.unwrap();
        let taken = store.take_join_token(token).await;
        store.close().await;
        taken
    })
}

fn node(spiffe_id: &str, attestation_type: &str, serial: &str) -> AttestedNode {
    AttestedNode {
        spiffe_id: spiffe_id.parse().unwrap(),
        attestation_type: attestation_type.to_owned(),
        cert_serial: serial.to_owned(),
        cert_not_after: 1_900_000_000,
        banned: false,
        can_reattest: attestation_type != "join_token",
        selectors: ["region:eu".parse().unwrap()].into_iter().collect(),
        created_at: 1_800_000_000,
    }
}

fn fails_with(out: &std::process::Output, code: i32, message: &str) {
    assert_eq!(out.status.code(), Some(code), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(message),
        "{:?} does not say {message:?}",
        text(&out.stderr)
    );
}

fn listed(server: &Server, filters: &[&str]) -> Vec<String> {
    let mut args = vec!["list", "--output", "json"];
    args.extend_from_slice(filters);
    json(&server.admin("agent", &args))["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["spiffe_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn token_generate_prints_a_single_use_token_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let server = Server::start(dir.path());

    // Text: the token, the agent ID the server picked, the expiry.
    let before = now();
    let out = server.admin("token", &["generate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name:?} in {stdout}"))
            .to_owned()
    };
    let text_token = field("Token      : ");
    assert_eq!(text_token.len(), 32, "{stdout}");
    assert!(
        field("SPIFFE ID  : ").starts_with("spiffe://example.org/sigil/agent/join_token/"),
        "{stdout}"
    );
    assert!(field("Expires at : ").ends_with('Z'), "{stdout}");

    // JSON, default TTL: ten minutes.
    let generated = json(&server.admin("token", &["generate", "--output", "json"]));
    let default_token = generated["token"].as_str().unwrap().to_owned();
    let picked_id = generated["spiffe_id"].as_str().unwrap().to_owned();
    assert!(picked_id.starts_with("spiffe://example.org/sigil/agent/join_token/"));
    let expires_at = generated["expires_at"].as_i64().unwrap();
    assert!(
        (before + 600..=now() + 600).contains(&expires_at),
        "{generated}"
    );
    assert_ne!(default_token, text_token);

    // A fixed agent ID and TTL.
    let fixed = json(&server.admin(
        "token",
        &[
            "generate",
            "--spiffe-id",
            ALICE,
            "--ttl",
            "1h",
            "--output",
            "json",
        ],
    ));
    assert_eq!(fixed["spiffe_id"], ALICE);
    let fixed_token = fixed["token"].as_str().unwrap().to_owned();
    let expires_at = fixed["expires_at"].as_i64().unwrap();
    assert!(
        (before + 3600..=now() + 3600).contains(&expires_at),
        "{fixed}"
    );

    // Bad flags exit 64 before reaching the server; IDs the server refuses exit 1.
    for ttl in ["10x", "0s", "", "-5m"] {
        let out = server.admin("token", &["generate", &format!("--ttl={ttl}")]);
        fails_with(&out, 64, "--ttl");
    }
    fails_with(
        &server.admin("token", &["generate", "--spiffe-id", "not-an-id"]),
        64,
        "--spiffe-id",
    );
    fails_with(
        &server.admin(
            "token",
            &[
                "generate",
                "--spiffe-id",
                "spiffe://other.org/sigil/agent/x/y",
            ],
        ),
        1,
        "must be an agent ID of this trust domain",
    );
    fails_with(
        &server.admin(
            "token",
            &["generate", "--spiffe-id", "spiffe://example.org/web"],
        ),
        1,
        "must be an agent ID of this trust domain",
    );
    fails_with(
        &server.admin("token", &["generate", "--ttl", "36500d"]),
        1,
        "between 1s and 10 years",
    );

    // The log says tokens were made and never shows one.
    let log = server.log();
    assert!(log.contains("join token created"), "{log}");
    for token in [&text_token, &default_token, &fixed_token] {
        assert!(
            !log.contains(token.as_str()),
            "a token is in the log: {log}"
        );
    }
    assert_eq!(server.terminate().code(), Some(0));

    // Each token is in the datastore once, with its agent ID; the refused ones made none.
    let taken = take_token(dir.path(), &fixed_token).unwrap();
    assert_eq!(taken.spiffe_id.unwrap().as_str(), ALICE);
    assert!(matches!(
        take_token(dir.path(), &fixed_token),
        Err(DataStoreError::NotFound { .. })
    ));
    let taken = take_token(dir.path(), &default_token).unwrap();
    assert_eq!(taken.spiffe_id.unwrap().as_str(), picked_id);
    take_token(dir.path(), &text_token).unwrap();
}

#[test]
fn agent_commands_on_a_fresh_server_find_nothing_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let server = Server::start(dir.path());

    let out = server.admin("agent", &["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "Found 0 attested agents");
    let empty = json(&server.admin("agent", &["list", "--output", "json"]));
    assert_eq!(empty, serde_json::json!({ "agents": [] }));

    let missing = format!("agent {NOBODY} not found");
    for command in ["show", "ban", "evict"] {
        let out = server.admin("agent", &[command, "--spiffe-id", NOBODY]);
        fails_with(&out, 1, &missing);
        fails_with(
            &server.admin(
                "agent",
                &[command, "--spiffe-id", "spiffe://other.org/sigil/agent/x/y"],
            ),
            1,
            "is not an agent ID of trust domain example.org",
        );
        fails_with(
            &server.admin("agent", &[command, "--spiffe-id", "spiffe:/bad"]),
            64,
            "--spiffe-id",
        );
        fails_with(&server.admin("agent", &[command]), 64, "--spiffe-id");
    }
    fails_with(
        &server.admin("agent", &["list", "--banned", "maybe"]),
        64,
        "--banned",
    );
    fails_with(
        &server.admin("agent", &["list", "--attestation-type", ""]),
        64,
        "--attestation-type",
    );
    assert!(listed(&server, &[]).is_empty());
}

#[test]
fn attested_agents_are_listed_shown_banned_and_evicted() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    seed_agents(
        dir.path(),
        &[
            node(ALICE, "join_token", "0a1b"),
            node(CAROL, "x509pop", "0c0d"),
        ],
    );
    let server = Server::start(dir.path());

    assert_eq!(listed(&server, &[]), [ALICE, CAROL]);
    assert_eq!(listed(&server, &["--attestation-type", "x509pop"]), [CAROL]);
    assert!(listed(&server, &["--banned", "true"]).is_empty());

    // Show, text and JSON.
    let out = server.admin("agent", &["show", "--spiffe-id", ALICE]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    for line in [
        format!("SPIFFE ID         : {ALICE}"),
        "Attestation type  : join_token".to_owned(),
        "X509-SVID serial  : 0a1b".to_owned(),
        "X509-SVID expires : 2030-03-17T17:46:40Z".to_owned(),
        "Selector          : region:eu".to_owned(),
        "Banned            : false".to_owned(),
        "Can re-attest     : false".to_owned(),
        "Attested at       : 2027-01-15T08:00:00Z".to_owned(),
    ] {
        assert!(shown.contains(&line), "no {line:?} in {shown}");
    }
    let agent: Value =
        json(&server.admin("agent", &["show", "--spiffe-id", CAROL, "--output", "json"]));
    assert_eq!(
        agent,
        serde_json::json!({
            "spiffe_id": CAROL,
            "attestation_type": "x509pop",
            "x509_svid_serial": "0c0d",
            "x509_svid_expires_at": 1_900_000_000,
            "selectors": ["region:eu"],
            "banned": false,
            "can_reattest": true,
            "created_at": 1_800_000_000,
        })
    );

    // Ban: shown and filtered as banned.
    let out = server.admin("agent", &["ban", "--spiffe-id", ALICE]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("Agent {ALICE} banned"));
    assert_eq!(listed(&server, &["--banned", "true"]), [ALICE]);
    assert_eq!(listed(&server, &["--banned", "false"]), [CAROL]);
    let banned = json(&server.admin("agent", &["show", "--spiffe-id", ALICE, "--output", "json"]));
    assert_eq!(banned["banned"], true);

    // Evict: gone.
    let evicted = json(&server.admin(
        "agent",
        &["evict", "--spiffe-id", ALICE, "--output", "json"],
    ));
    assert_eq!(
        evicted,
        serde_json::json!({ "spiffe_id": ALICE, "evicted": true })
    );
    fails_with(
        &server.admin("agent", &["show", "--spiffe-id", ALICE]),
        1,
        &format!("agent {ALICE} not found"),
    );
    assert_eq!(listed(&server, &[]), [CAROL]);

    let banned = json(&server.admin("agent", &["ban", "--spiffe-id", CAROL, "--output", "json"]));
    assert_eq!(
        banned,
        serde_json::json!({ "spiffe_id": CAROL, "banned": true })
    );
    let log = server.log();
    assert!(log.contains("agent banned"), "{log}");
    assert!(log.contains("agent evicted"), "{log}");
    assert_eq!(server.terminate().code(), Some(0));

    // Both survive a restart.
    let server = Server::start(dir.path());
    assert_eq!(listed(&server, &[]), [CAROL]);
    assert_eq!(listed(&server, &["--banned", "true"]), [CAROL]);
    assert_eq!(server.terminate().code(), Some(0));
    assert!(
        !fs::read_to_string(dir.path().join("server.log"))
            .unwrap()
            .is_empty()
    );
}
