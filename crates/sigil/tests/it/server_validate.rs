//! `sigil server validate --config FILE` on good and bad files.

use std::path::Path;
use std::process::Command;

use crate::{sigil, text};

fn write(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_owned()
}

const GOOD: &str = "trust_domain = \"example.org\"\ndata_dir = \"data\"\n";

#[test]
fn a_good_config_is_ok_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "server.toml", GOOD);
    let out = sigil(&["server", "validate", "--config", &file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "configuration OK\n");
    assert_eq!(text(&out.stderr), "");
    // Validation opened nothing: no data_dir, no database, no socket.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn json_output_is_one_document_with_resolved_values() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "server.toml",
        &format!("{GOOD}[svid]\ndefault_x509_ttl = \"6h\"\n"),
    );
    let out = sigil(&["server", "validate", "--config", &file, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["trust_domain"], "example.org");
    assert_eq!(doc["server_spiffe_id"], "spiffe://example.org/sigil/server");
    let data_dir = dir.path().join("data");
    assert_eq!(doc["data_dir"], data_dir.to_str().unwrap());
    assert_eq!(doc["datastore"]["kind"], "sqlite");
    assert_eq!(doc["svid"]["default_x509_ttl"], "6h");
    assert_eq!(doc["warnings"][0]["key"], "svid.default_x509_ttl");
}

#[test]
fn relative_config_paths_resolve_next_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    write(&dir.path().join("etc"), "server.toml", GOOD);
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args([
            "--output",
            "json",
            "server",
            "validate",
            "--config",
            "etc/server.toml",
        ])
        .current_dir(dir.path())
        .env_remove("SIGIL_SERVER_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = std::path::absolute(dir.path().join("etc/data")).unwrap();
    assert_eq!(doc["data_dir"], expected.to_str().unwrap());
}

#[test]
fn the_config_path_may_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "server.toml", GOOD);
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["server", "validate"])
        .env("SIGIL_SERVER_CONFIG", &file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn bad_configs_exit_64_and_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown-top.toml",
            format!("{GOOD}foo = 1\n"),
            ":3:1: unknown key \"foo\" at the top level",
        ),
        (
            "unknown-nested.toml",
            format!("{GOOD}[svid]\nfoo = 1\n"),
            ":4:1: unknown key \"foo\" at svid",
        ),
        (
            "bad-ttl.toml",
            format!("{GOOD}[ca]\nttl = \"1x\"\n"),
            ":4:7: ca.ttl: invalid duration \"1x\"",
        ),
        (
            "bad-td.toml",
            "trust_domain = \"A\"\ndata_dir = \"d\"\n".to_owned(),
            ":1:16: trust_domain: invalid value \"A\"",
        ),
        (
            "no-td.toml",
            "data_dir = \"d\"\n".to_owned(),
            "missing required key \"trust_domain\"",
        ),
        (
            "bad-db.toml",
            format!("{GOOD}[datastore]\nurl = \"redis://x\"\n"),
            ":4:7: datastore.url: unsupported scheme \"redis\"",
        ),
        ("syntax.toml", format!("{GOOD}[ca\n"), ":3:4: invalid TOML"),
    ];
    for (name, body, expected) in cases {
        let file = write(dir.path(), name, &body);
        let out = sigil(&["server", "validate", "--config", &file]);
        assert_eq!(out.status.code(), Some(64), "{name}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with(&format!("error: {file}")) && stderr.contains(expected),
            "{name}: {stderr}"
        );
        assert_eq!(text(&out.stdout), "", "{name}");
    }
}

#[test]
fn a_bad_config_in_json_mode_also_prints_a_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "server.toml",
        &format!("{GOOD}[svid]\nfoo = 1\n"),
    );
    let out = sigil(&["--output", "json", "server", "validate", "--config", &file]);
    assert_eq!(out.status.code(), Some(64));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["valid"], false);
    assert_eq!(doc["key"], "svid.foo");
    assert_eq!(doc["position"]["line"], 4);
    assert!(text(&out.stderr).contains("unknown key \"foo\" at svid"));
}

#[test]
fn a_missing_file_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("absent.toml");
    let out = sigil(&["server", "validate", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("cannot read the config file"));
}
