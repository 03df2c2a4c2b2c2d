//! `sigil server run` end to end: the real binary serves the admin API on its Unix socket,
//! `sigil entry ...` drives it, SIGTERM stops it, and a restart finds its state again.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use sigil_server::datastore::DataStore;
use sigil_spiffe::TrustDomain;

use crate::harness::{Server, json};
use crate::text;

fn entry_count(server: &Server) -> usize {
    json(&server.entry(&["show", "--output", "json"]))["entries"]
        .as_array()
        .unwrap()
        .len()
}

/// The own bundle and CA journal as the stopped server left them in its SQLite datastore.
fn stored_ca_state(dir: &Path) -> (String, Vec<u8>) {
    let url = format!("sqlite://{}", dir.join("data/datastore.sqlite3").display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = DataStore::open(&url).await.unwrap();
        let td = TrustDomain::new("example.org").unwrap();
        let bundle = store.bundle(&td).await.unwrap().unwrap();
        // The journal is this server instance's, named by the ID in its data directory.
        let instance = fs::read_to_string(dir.join("data/instance_id")).unwrap();
        let journal = store.ca_journal(instance.trim()).await.unwrap().unwrap();
        store.close().await;
        (bundle.to_document().unwrap(), journal)
    })
}

#[test]
fn server_serves_entries_stops_on_sigterm_and_restarts_with_its_state() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("server.toml"),
        format!(
            "trust_domain = \"example.org\"\ndata_dir = \"data\"\n\
             bind_address = \"127.0.0.1:0\"\nadmin_socket = \"{}\"\n",
            dir.path().join("run/admin.sock").display()
        ),
    )
    .unwrap();
    let server = Server::start(dir.path());

    // The socket is for its owner only, in a directory the server created for it.
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&server.socket), 0o600);
    assert_eq!(mode(&dir.path().join("run")), 0o700);

    let created = json(&server.entry(&[
        "create",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--parent-id",
        "spiffe://example.org/sigil/agent/join_token/abc",
        "--selector",
        "unix:uid:1000",
        "--selector",
        "unix:gid:50",
        "--x509-ttl",
        "1h",
        "--dns",
        "web.example.org",
        "--output",
        "json",
    ]));
    let web_id = created["id"].as_str().unwrap().to_owned();
    assert!(!web_id.is_empty());
    assert_eq!(created["spiffe_id"], "spiffe://example.org/web");
    assert_eq!(created["x509_svid_ttl"], 3600);
    assert_eq!(created["revision"], 1);

    // --node: the parent is the server itself.
    let node = server.entry(&[
        "create",
        "--spiffe-id",
        "spiffe://example.org/cluster/a",
        "--node",
        "--selector",
        "k8s_psat:cluster:a",
    ]);
    assert_eq!(node.status.code(), Some(0), "{}", text(&node.stderr));
    assert!(text(&node.stdout).contains("Parent ID        : spiffe://example.org/sigil/server"));
    let node_id = text(&node.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Entry ID         : "))
        .unwrap()
        .to_owned();

    // Text and JSON show, by ID and by filter.
    let shown = server.entry(&["show", "--id", &web_id]);
    assert_eq!(shown.status.code(), Some(0), "{}", text(&shown.stderr));
    assert!(text(&shown.stdout).contains("Selector         : unix:gid:50"));
    assert!(text(&shown.stdout).contains("DNS name         : web.example.org"));
    let by_selector =
        json(&server.entry(&["show", "--selector", "unix:uid:1000", "--output", "json"]));
    assert_eq!(by_selector["entries"].as_array().unwrap().len(), 1);
    assert_eq!(by_selector["entries"][0]["id"], web_id.as_str());
    assert_eq!(entry_count(&server), 2);

    // The same registration again is refused, naming the entry that has it.
    let duplicate = server.entry(&[
        "create",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--parent-id",
        "spiffe://example.org/sigil/agent/join_token/abc",
        "--selector",
        "unix:gid:50",
        "--selector",
        "unix:uid:1000",
    ]);
    assert_eq!(duplicate.status.code(), Some(1));
    assert!(
        text(&duplicate.stderr).contains(&web_id),
        "{}",
        text(&duplicate.stderr)
    );

    // A foreign trust domain is refused by the server; a malformed selector by the flags.
    let foreign = server.entry(&[
        "create",
        "--spiffe-id",
        "spiffe://other.org/web",
        "--parent-id",
        "spiffe://example.org/sigil/server",
        "--selector",
        "unix:uid:1",
    ]);
    assert_eq!(foreign.status.code(), Some(1));
    assert!(
        text(&foreign.stderr).contains("spiffe_id spiffe://other.org/web is not in trust domain"),
        "{}",
        text(&foreign.stderr)
    );
    let bad_selector = server.entry(&[
        "create",
        "--spiffe-id",
        "spiffe://example.org/db",
        "--node",
        "--selector",
        "no-separator",
    ]);
    assert_eq!(bad_selector.status.code(), Some(64));
    assert!(text(&bad_selector.stderr).contains("no-separator"));
    assert_eq!(entry_count(&server), 2);

    // Update replaces the fields given and keeps the others.
    let updated = json(&server.entry(&[
        "update", "--id", &web_id, "--hint", "blue", "--admin", "true", "--output", "json",
    ]));
    assert_eq!(updated["hint"], "blue");
    assert_eq!(updated["admin"], true);
    assert_eq!(updated["revision"], 2);
    assert_eq!(updated["dns_names"][0], "web.example.org");
    assert_eq!(updated["selectors"].as_array().unwrap().len(), 2);
    let reserved = server.entry(&[
        "update",
        "--id",
        &web_id,
        "--spiffe-id",
        "spiffe://example.org/sigil/x",
    ]);
    assert_eq!(reserved.status.code(), Some(1));
    assert!(
        text(&reserved.stderr).contains("reserved"),
        "{}",
        text(&reserved.stderr)
    );

    // Delete, and deleting again says what is missing.
    let deleted = json(&server.entry(&["delete", "--id", &node_id, "--output", "json"]));
    assert_eq!(deleted["id"], node_id.as_str());
    let again = server.entry(&["delete", "--id", &node_id]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("not found"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(entry_count(&server), 1);

    // A second server on the same config is refused while the first runs.
    let second = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["server", "run", "--config"])
        .arg(dir.path().join("server.toml"))
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(
        text(&second.stderr).contains("in use"),
        "{}",
        text(&second.stderr)
    );
    assert_eq!(entry_count(&server), 1);

    // SIGTERM: a clean exit that takes the socket away.
    let socket = server.socket.clone();
    let status = server.terminate();
    assert_eq!(status.code(), Some(0));
    assert!(!socket.exists());
    let (bundle, journal) = stored_ca_state(dir.path());

    // A restart on the same data_dir resumes the CA and still has the entries.
    let server = Server::start(dir.path());
    let kept = json(&server.entry(&["show", "--id", &web_id, "--output", "json"]));
    assert_eq!(kept["entries"][0]["dns_names"][0], "web.example.org");
    assert_eq!(entry_count(&server), 1);
    assert!(server.log().contains("resumed=true"), "{}", server.log());
    assert_eq!(server.terminate().code(), Some(0));
    let (bundle_after, journal_after) = stored_ca_state(dir.path());
    assert_eq!(bundle_after, bundle);
    assert_eq!(journal_after, journal);
}

#[test]
fn entry_commands_without_a_server_fail_with_status_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["entry", "show", "--server-socket"])
        .arg(dir.path().join("missing.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot connect to the server admin socket"));
}

#[test]
fn a_bad_config_exits_64_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("server.toml"), "trust_domain = \"\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["server", "run", "--config"])
        .arg(dir.path().join("server.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn an_admin_socket_dir_writable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let open_dir = dir.path().join("open");
    fs::create_dir(&open_dir).unwrap();
    fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(
        dir.path().join("server.toml"),
        format!(
            "trust_domain = \"example.org\"\ndata_dir = \"data\"\nadmin_socket = \"{}\"\n",
            open_dir.join("admin.sock").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["server", "run", "--config"])
        .arg(dir.path().join("server.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("writable by group or others (mode 777)"),
        "{}",
        text(&out.stderr)
    );
    assert!(!open_dir.join("admin.sock").exists());
    // Refused before anything else was created.
    assert!(!dir.path().join("data").exists());
}
