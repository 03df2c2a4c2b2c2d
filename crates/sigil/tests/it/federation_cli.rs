//! `sigil federation ...` end to end with the real binary: server B learns of A through the
//! CLI (no `federates_with` in its config), fetches A's bundle over `https_spiffe`, keeps the
//! relationship across a restart, refreshes on demand with the fetch's own error, and deletes
//! it keeping the bundle. Bad flags exit 64.

use std::fs;
use std::path::Path;
use std::process::Output;

use crate::harness::{POLL_PAUSE, POLLS, Server, json};
use crate::text;

use crate::free_port;

fn write_server(dir: &Path, td: &str, extra: &str) {
    fs::write(
        dir.join("server.toml"),
        format!(
            "trust_domain = \"{td}\"\ndata_dir = \"data\"\n\
             bind_address = \"127.0.0.1:0\"\nadmin_socket = \"{}\"\n{extra}",
            dir.join("run/admin.sock").display()
        ),
    )
    .unwrap();
}

fn failed(out: &Output, code: i32) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// The stored bundle of `td` on `server` as its SPIFFE bundle document.
fn stored_document(server: &Server, td: &str) -> Option<serde_json::Value> {
    let listed = json(&server.cli(&["bundle", "list", "--output", "json"]));
    listed["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["trust_domain"] == td)
        .map(|b| b["document"].clone())
}

/// Waits until B's stored bundle of a.test is the one A's endpoint serves (with its one-second
/// refresh hint), which only a fetch can have brought.
fn wait_for_fetched(server: &Server) {
    for _ in 0..POLLS {
        if stored_document(server, "a.test").is_some_and(|d| d["spiffe_refresh_hint"] == 1) {
            return;
        }
        std::thread::sleep(POLL_PAUSE);
    }
    panic!("a.test's bundle was never fetched: {}", server.log());
}

#[test]
fn relationships_made_with_the_cli_fetch_survive_a_restart_refresh_and_delete() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let (a, b) = (a_dir.path(), b_dir.path());
    let a_endpoint = free_port();
    write_server(
        a,
        "a.test",
        &format!(
            "[federation.bundle_endpoint]\nbind_address = \"127.0.0.1:{a_endpoint}\"\n\
             profile = \"https_spiffe\"\nrefresh_hint = \"1s\"\n"
        ),
    );
    let server_a = Server::start(a);
    let a_bundle = server_a.cli(&["bundle", "show", "--format", "spiffe"]);
    assert_eq!(a_bundle.status.code(), Some(0));
    let initial: serde_json::Value = serde_json::from_slice(&a_bundle.stdout).unwrap();
    assert!(
        initial.get("spiffe_refresh_hint").is_none(),
        "the initial bundle must differ from the served one for the test to see a fetch"
    );
    let bundle_file = b.join("a-bundle.json");
    fs::write(&bundle_file, &a_bundle.stdout).unwrap();
    write_server(b, "b.test", "");
    let server_b = Server::start(b);
    let url = format!("https://127.0.0.1:{a_endpoint}/");

    // Create, with A's bundle to authenticate A's endpoint the first time.
    let created = json(&server_b.cli(&[
        "federation",
        "create",
        "--trust-domain",
        "a.test",
        "--url",
        &url,
        "--profile",
        "https_spiffe",
        "--endpoint-spiffe-id",
        "spiffe://a.test/sigil/server",
        "--bundle",
        bundle_file.to_str().unwrap(),
        "--output",
        "json",
    ]));
    let expected = serde_json::json!({
        "trust_domain": "a.test",
        "bundle_endpoint_url": url,
        "profile": "https_spiffe",
        "endpoint_spiffe_id": "spiffe://a.test/sigil/server",
        "from_config": false,
    });
    assert_eq!(created, expected);
    wait_for_fetched(&server_b);
    let listed = json(&server_b.cli(&["federation", "list", "--output", "json"]));
    assert_eq!(listed, serde_json::json!({ "relationships": [expected] }));
    let shown = json(&server_b.cli(&[
        "federation",
        "show",
        "--trust-domain",
        "spiffe://a.test",
        "--output",
        "json",
    ]));
    assert_eq!(shown, expected);
    let shown = server_b.cli(&["federation", "show", "--trust-domain", "a.test"]);
    let shown = text(&shown.stdout);
    assert!(
        shown.contains("Trust domain        : a.test")
            && shown.contains("Endpoint SPIFFE ID  : spiffe://a.test/sigil/server")
            && shown.contains("Source              : admin API"),
        "{shown}"
    );
    let again = server_b.cli(&[
        "federation",
        "create",
        "--trust-domain",
        "a.test",
        "--url",
        &url,
        "--profile",
        "https_web",
    ]);
    assert!(failed(&again, 1).contains("already exists"));

    // Refresh: one fetch now, through the relationship.
    let refreshed = json(&server_b.cli(&[
        "federation",
        "refresh",
        "--trust-domain",
        "a.test",
        "--output",
        "json",
    ]));
    assert_eq!(refreshed["trust_domain"], "a.test");

    // Restart B: the relationship comes back from the datastore and keeps fetching.
    assert!(server_b.terminate().success());
    let server_b = Server::start(b);
    let listed = json(&server_b.cli(&["federation", "list", "--output", "json"]));
    assert_eq!(listed, serde_json::json!({ "relationships": [expected] }));
    let refreshed = server_b.cli(&["federation", "refresh", "--trust-domain", "a.test"]);
    assert_eq!(
        refreshed.status.code(),
        Some(0),
        "{}",
        text(&refreshed.stderr)
    );
    assert!(text(&refreshed.stdout).contains("Bundle of a.test refreshed"));
    assert!(
        server_b
            .log()
            .contains("federation relationship started from the datastore"),
        "{}",
        server_b.log()
    );

    // Update to an endpoint where nothing listens: refresh reports the fetch's own failure.
    let dead = format!("https://127.0.0.1:{}/", free_port());
    let updated = json(&server_b.cli(&[
        "federation",
        "update",
        "--trust-domain",
        "a.test",
        "--url",
        &dead,
        "--profile",
        "https_spiffe",
        "--endpoint-spiffe-id",
        "spiffe://a.test/sigil/server",
        "--output",
        "json",
    ]));
    assert_eq!(updated["bundle_endpoint_url"], dead);
    let err = failed(
        &server_b.cli(&["federation", "refresh", "--trust-domain", "a.test"]),
        1,
    );
    assert!(
        err.contains(&dead) && err.contains("request failed"),
        "{err}"
    );

    // Delete: gone from the list, the bundle stays.
    let deleted = json(&server_b.cli(&[
        "federation",
        "delete",
        "--trust-domain",
        "a.test",
        "--output",
        "json",
    ]));
    assert_eq!(deleted["deleted"], true);
    let listed = json(&server_b.cli(&["federation", "list", "--output", "json"]));
    assert_eq!(listed, serde_json::json!({ "relationships": [] }));
    assert!(stored_document(&server_b, "a.test").is_some());
    let err = failed(
        &server_b.cli(&["federation", "show", "--trust-domain", "a.test"]),
        1,
    );
    assert!(
        err.contains("no federation relationship with a.test"),
        "{err}"
    );
    // The server checks what clap cannot: an endpoint ID of another trust domain.
    let err = failed(
        &server_b.cli(&[
            "federation",
            "create",
            "--trust-domain",
            "c.test",
            "--url",
            "https://c.test/",
            "--profile",
            "https_spiffe",
            "--endpoint-spiffe-id",
            "spiffe://a.test/sigil/server",
        ]),
        1,
    );
    assert!(err.contains("is not in trust domain c.test"), "{err}");
    // https_web with its own roots: the file's certificates are sent and stored; a file that
    // holds none is refused by the server, which keeps nothing.
    let roots = server_b.log.with_file_name("roots.pem");
    let garbage = server_b.log.with_file_name("garbage.pem");
    let pem = server_a.cli(&["bundle", "show", "--format", "pem"]);
    fs::write(&roots, &pem.stdout).unwrap();
    fs::write(&garbage, "not a certificate").unwrap();
    let web = |file: &Path| {
        server_b.cli(&[
            "federation",
            "create",
            "--trust-domain",
            "d.test",
            "--url",
            "https://127.0.0.1:1/",
            "--profile",
            "https_web",
            "--ca-file",
            file.to_str().unwrap(),
            "--output",
            "json",
        ])
    };
    let err = failed(&web(&garbage), 1);
    assert!(err.contains("ca_roots"), "{err}");
    let created = json(&web(&roots));
    assert_eq!(created["profile"], "https_web");
    drop(server_a);
}

#[test]
fn bad_federation_flags_exit_64() {
    let cases: &[&[&str]] = &[
        // No profile value of that name.
        &[
            "create",
            "--trust-domain",
            "a.test",
            "--url",
            "https://a/",
            "--profile",
            "tls",
        ],
        // https_spiffe without its endpoint ID.
        &[
            "create",
            "--trust-domain",
            "a.test",
            "--url",
            "https://a/",
            "--profile",
            "https_spiffe",
        ],
        // Not https.
        &[
            "create",
            "--trust-domain",
            "a.test",
            "--url",
            "http://a/",
            "--profile",
            "https_web",
        ],
        // Not a trust domain.
        &["show", "--trust-domain", "spiffe://a.test/workload"],
        &["delete"],
        &["refresh", "--trust-domain", "A B"],
        // Flags of the other profile.
        &[
            "update",
            "--trust-domain",
            "a.test",
            "--url",
            "https://a/",
            "--profile",
            "https_web",
            "--endpoint-spiffe-id",
            "spiffe://a.test/x",
        ],
        &[
            "create",
            "--trust-domain",
            "a.test",
            "--url",
            "https://a/",
            "--profile",
            "https_web",
            "--bundle",
            "/nonexistent",
        ],
        &[
            "create",
            "--trust-domain",
            "a.test",
            "--url",
            "https://a/",
            "--profile",
            "https_spiffe",
            "--endpoint-spiffe-id",
            "spiffe://a.test/x",
            "--ca-file",
            "/nonexistent",
        ],
    ];
    for args in cases {
        let mut full = vec!["federation"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--server-socket", "/nonexistent/admin.sock"]);
        let out = crate::sigil(&full);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{full:?}: {}",
            text(&out.stderr)
        );
    }
}
