//! `sigil bundle ...`, `sigil x509 mint` and `sigil jwt mint` against the real `sigil server
//! run`, checked by independent tools: `openssl` verifies the minted chain against the bundle
//! the CLI printed, the `spiffe` crate parses the SVID, and `jsonwebtoken` validates the JWT
//! with keys it reads itself from the SPIFFE bundle document.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::harness::{Server, json};
use crate::text;

fn start_server(dir: &Path) -> Server {
    fs::write(
        dir.join("server.toml"),
        format!(
            "trust_domain = \"example.org\"\ndata_dir = \"data\"\n\
             bind_address = \"127.0.0.1:0\"\nadmin_socket = \"{}\"\n",
            dir.join("run/admin.sock").display()
        ),
    )
    .unwrap();
    Server::start(dir)
}

fn ok(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// Asserts a failure with `code` whose message contains `needle`.
fn fails(out: &Output, code: i32, needle: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {} stderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains(needle),
        "expected {needle:?} in: {}",
        text(&out.stderr)
    );
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl").args(args).output().unwrap()
}

fn now_unix() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// A self-signed CA certificate made by openssl, as another trust domain's bundle would be.
pub(crate) fn openssl_ca(dir: &Path, name: &str) -> String {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    ok(&openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
        "-subj",
        &format!("/CN={name}"),
        "-days",
        "2",
    ]));
    cert.to_str().unwrap().to_owned()
}

#[test]
fn minted_svids_verify_with_independent_tools() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());

    // The bundle as PEM, kept in a file for openssl.
    let bundle_pem = ok(&server.cli(&["bundle", "show", "--format", "pem"]));
    assert!(
        bundle_pem.starts_with("-----BEGIN CERTIFICATE-----"),
        "{bundle_pem}"
    );
    let bundle_file = dir.path().join("bundle.pem");
    fs::write(&bundle_file, &bundle_pem).unwrap();
    let shown = json(&server.cli(&["bundle", "show", "--output", "json"]));
    assert_eq!(shown["trust_domain"], "example.org");
    assert_eq!(shown["pem"], bundle_pem.as_str());
    assert!(shown["sequence"].as_u64().unwrap() > 0);

    // x509 mint --write: openssl verifies the chain against the bundle, the key file is the
    // owner's only and holds the certificate's key.
    let out_dir = dir.path().join("svid");
    let minted = json(&server.cli(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--dns",
        "web.example.org",
        "--ttl",
        "10m",
        "--write",
        out_dir.to_str().unwrap(),
        "--output",
        "json",
    ]));
    assert_eq!(minted["spiffe_id"], "spiffe://example.org/web");
    assert_eq!(minted["ttl_capped"], false);
    let expires_at = minted["expires_at"].as_i64().unwrap();
    assert!((now_unix() + 500..=now_unix() + 600).contains(&expires_at));
    let (svid, key, bundle0) = (
        out_dir.join("svid.0.pem"),
        out_dir.join("svid.0.key"),
        out_dir.join("bundle.0.pem"),
    );
    assert_eq!(minted["key_path"], key.to_str().unwrap());
    let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(fs::read_to_string(&bundle0).unwrap(), bundle_pem);
    let verify = openssl(&[
        "verify",
        "-CAfile",
        bundle_file.to_str().unwrap(),
        svid.to_str().unwrap(),
    ]);
    assert!(ok(&verify).ends_with(": OK\n"));
    let sans = ok(&openssl(&[
        "x509",
        "-in",
        svid.to_str().unwrap(),
        "-noout",
        "-ext",
        "subjectAltName",
    ]));
    assert!(sans.contains("URI:spiffe://example.org/web"), "{sans}");
    assert!(sans.contains("DNS:web.example.org"), "{sans}");
    let cert_key = ok(&openssl(&[
        "x509",
        "-in",
        svid.to_str().unwrap(),
        "-noout",
        "-pubkey",
    ]));
    let file_key = ok(&openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]));
    assert_eq!(cert_key, file_key);

    // The spiffe crate reads the same files (as DER, converted by openssl) as an X.509-SVID.
    let leaf_der = openssl(&["x509", "-in", svid.to_str().unwrap(), "-outform", "DER"]).stdout;
    let key_der = openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        key.to_str().unwrap(),
        "-outform",
        "DER",
    ])
    .stdout;
    let parsed = spiffe::X509Svid::parse_from_der(&leaf_der, &key_der).unwrap();
    assert_eq!(parsed.spiffe_id().to_string(), "spiffe://example.org/web");

    // Without --write: the three PEMs on stdout, in spire-server's layout.
    let printed = ok(&server.cli(&["x509", "mint", "--spiffe-id", "spiffe://example.org/db"]));
    for part in [
        "X509-SVID:\n-----BEGIN CERTIFICATE-----",
        "Private key:\n-----BEGIN PRIVATE KEY-----",
        "Root CAs:\n-----BEGIN CERTIFICATE-----",
    ] {
        assert!(printed.contains(part), "{part:?} missing from {printed}");
    }
    let as_json = json(&server.cli(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://example.org/db",
        "--output",
        "json",
    ]));
    assert!(as_json["key_pem"].as_str().unwrap().contains("PRIVATE KEY"));
    assert_eq!(as_json["bundle_pem"], bundle_pem.as_str());

    // jwt mint: jsonwebtoken validates it with the JWT key it finds in the bundle document.
    let token = json(&server.cli(&[
        "jwt",
        "mint",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--audience",
        "aud-a",
        "--audience",
        "aud-b",
        "--ttl",
        "2m",
        "--output",
        "json",
    ]));
    assert_eq!(token["spiffe_id"], "spiffe://example.org/web");
    let token_text = token["token"].as_str().unwrap();
    let document = ok(&server.cli(&["bundle", "show", "--format", "spiffe"]));
    let keys: JwkSet = serde_json::from_str(&document).unwrap();
    let header = jsonwebtoken::decode_header(token_text).unwrap();
    let jwk = keys.find(header.kid.as_deref().unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&["aud-b"]);
    validation.set_required_spec_claims(&["exp", "sub", "aud"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        token_text,
        &DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sub"], "spiffe://example.org/web");
    assert_eq!(claims["exp"], token["expires_at"]);
    // The plain output is the token alone.
    let plain = ok(&server.cli(&[
        "jwt",
        "mint",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--audience",
        "x",
    ]));
    assert_eq!(plain.trim().split('.').count(), 3, "{plain}");

    // Bad flag syntax exits 64; the server's refusals exit 1 with its reason.
    let bad_flags: [&[&str]; 5] = [
        &["x509", "mint", "--spiffe-id", "not-an-id"],
        &[
            "x509",
            "mint",
            "--spiffe-id",
            "spiffe://example.org/web",
            "--ttl",
            "5x",
        ],
        &[
            "x509",
            "mint",
            "--spiffe-id",
            "spiffe://example.org/web",
            "--ttl",
            "0s",
        ],
        &["jwt", "mint", "--spiffe-id", "spiffe://example.org/web"],
        &[
            "jwt",
            "mint",
            "--spiffe-id",
            "spiffe://Example.org/web",
            "--audience",
            "a",
        ],
    ];
    for args in bad_flags {
        let out = server.cli(args);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    fails(
        &server.cli(&[
            "x509",
            "mint",
            "--spiffe-id",
            "spiffe://example.org/sigil/server",
        ]),
        1,
        "is reserved",
    );
    fails(
        &server.cli(&["x509", "mint", "--spiffe-id", "spiffe://other.org/web"]),
        1,
        "is not in trust domain example.org",
    );
    fails(
        &server.cli(&[
            "x509",
            "mint",
            "--spiffe-id",
            "spiffe://example.org/web",
            "--dns",
            "bad name",
        ]),
        1,
        "\"bad name\" is not a valid DNS name",
    );
    fails(
        &server.cli(&[
            "x509",
            "mint",
            "--spiffe-id",
            "spiffe://example.org/web",
            "--ttl",
            "31d",
        ]),
        1,
        "must be between 10s and 30d",
    );
    fails(
        &server.cli(&[
            "jwt",
            "mint",
            "--spiffe-id",
            "spiffe://example.org/web",
            "--audience",
            "",
        ]),
        1,
        "audience: values cannot be empty",
    );
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn federated_bundles_are_set_listed_and_deleted_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    assert_eq!(ok(&server.cli(&["bundle", "list"])), "");

    // A PEM file: a bundle of X.509 authorities only, sequence 1.
    let first = openssl_ca(dir.path(), "other-ca-1");
    let set = ok(&server.cli(&[
        "bundle",
        "set",
        "--id",
        "spiffe://other.org",
        "--path",
        &first,
    ]));
    assert_eq!(set, "Bundle for spiffe://other.org set (sequence 1)\n");
    let listed = ok(&server.cli(&["bundle", "list"]));
    let first_pem = fs::read_to_string(&first).unwrap();
    assert!(listed.contains("* spiffe://other.org\n"), "{listed}");
    assert!(listed.ends_with(&first_pem), "{listed}");
    // openssl agrees the listed PEM is the certificate that was set.
    let listed_file = dir.path().join("listed.pem");
    fs::write(&listed_file, &listed).unwrap();
    let fingerprint = |path: &str| {
        ok(&openssl(&[
            "x509",
            "-in",
            path,
            "-noout",
            "-fingerprint",
            "-sha256",
        ]))
    };
    assert_eq!(
        fingerprint(listed_file.to_str().unwrap()),
        fingerprint(&first)
    );

    // The same content keeps its sequence; new content takes the next one.
    let again = json(&server.cli(&[
        "bundle",
        "set",
        "--id",
        "spiffe://other.org",
        "--path",
        &first,
        "--output",
        "json",
    ]));
    assert_eq!(again["sequence"], 1);
    let second = openssl_ca(dir.path(), "other-ca-2");
    let replaced = json(&server.cli(&[
        "bundle",
        "set",
        "--id",
        "spiffe://other.org",
        "--path",
        &second,
        "--output",
        "json",
    ]));
    assert_eq!(replaced["sequence"], 2);
    let list = json(&server.cli(&["bundle", "list", "--output", "json"]));
    assert_eq!(list["bundles"].as_array().unwrap().len(), 1);
    assert_eq!(list["bundles"][0]["trust_domain"], "other.org");
    assert_eq!(list["bundles"][0]["sequence"], 2);
    assert_eq!(list["bundles"][0]["document"]["spiffe_sequence"], 2);
    assert_eq!(
        list["bundles"][0]["pem"],
        fs::read_to_string(&second).unwrap().as_str()
    );

    // A SPIFFE document whose own sequence goes back is refused by the server, naming why.
    let own_document = dir.path().join("own.json");
    let own = ok(&server.cli(&["bundle", "show", "--format", "spiffe"]));
    let own_sequence = serde_json::from_str::<serde_json::Value>(&own).unwrap()["spiffe_sequence"]
        .as_u64()
        .unwrap();
    assert!(own_sequence < 2);
    fs::write(&own_document, &own).unwrap();
    fails(
        &server.cli(&[
            "bundle",
            "set",
            "--id",
            "spiffe://other.org",
            "--path",
            own_document.to_str().unwrap(),
            "--format",
            "spiffe",
        ]),
        1,
        "is lower than the stored bundle's sequence 2",
    );
    // The spiffe listing carries the document of what is stored.
    let spiffe_list = ok(&server.cli(&["bundle", "list", "--format", "spiffe"]));
    assert!(
        spiffe_list.contains("\"spiffe_sequence\": 2"),
        "{spiffe_list}"
    );

    // Our own trust domain, a file that is not PEM, and malformed flags.
    fails(
        &server.cli(&[
            "bundle",
            "set",
            "--id",
            "spiffe://example.org",
            "--path",
            &first,
        ]),
        1,
        "own trust domain",
    );
    let not_pem = dir.path().join("not.pem");
    fs::write(&not_pem, "hello").unwrap();
    fails(
        &server.cli(&[
            "bundle",
            "set",
            "--id",
            "spiffe://other.org",
            "--path",
            not_pem.to_str().unwrap(),
        ]),
        1,
        "is not a PEM bundle",
    );
    for args in [
        [
            "bundle",
            "set",
            "--id",
            "spiffe://other.org/web",
            "--path",
            first.as_str(),
        ],
        [
            "bundle",
            "set",
            "--id",
            "spiffe://Other.org",
            "--path",
            first.as_str(),
        ],
        [
            "bundle",
            "set",
            "--id",
            "spiffe://other.org",
            "--format",
            "der",
        ],
    ] {
        let out = server.cli(&args);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(
        json(&server.cli(&["bundle", "list", "--output", "json"]))["bundles"][0]["sequence"],
        2
    );

    // Delete, and deleting again says what is missing.
    let deleted = ok(&server.cli(&["bundle", "delete", "--id", "spiffe://other.org"]));
    assert_eq!(deleted, "Bundle for spiffe://other.org deleted\n");
    fails(
        &server.cli(&["bundle", "delete", "--id", "spiffe://other.org"]),
        1,
        "no federated bundle for trust domain other.org",
    );
    assert_eq!(ok(&server.cli(&["bundle", "list"])), "");
    assert_eq!(server.terminate().code(), Some(0));
}
