//! The federation bundle endpoint and OIDC discovery end to end with the real binary, each
//! fetched by independent clients: `curl` and `openssl s_client` for the bundle endpoint in
//! both profiles (openssl verifies the `https_spiffe` chain against our bundle), Python's
//! PyJWT for OIDC discovery (it reads the discovery document, fetches the JWKS through
//! `PyJWKClient` and verifies a JWT-SVID minted by `sigil jwt mint`).

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use sigil_spiffe::{Bundle, TrustDomain, pem};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::harness::{POLL_PAUSE, POLLS, Server, json};
use crate::text;

use crate::free_port;

fn write_config(dir: &Path, extra: &str) {
    fs::write(
        dir.join("server.toml"),
        format!(
            "trust_domain = \"example.org\"\ndata_dir = \"data\"\n\
             bind_address = \"127.0.0.1:0\"\nadmin_socket = \"{}\"\n{extra}",
            dir.join("run/admin.sock").display()
        ),
    )
    .unwrap();
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl").args(args).output().unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An openssl-made web PKI: a root CA `ca.pem`, and serving certificates for `127.0.0.1`
/// signed by it, `<name>.pem` with key `<name>.key` in any of the encodings the files may
/// hold.
struct WebPki<'a> {
    dir: &'a Path,
}

impl<'a> WebPki<'a> {
    fn new(dir: &'a Path) -> Self {
        ok(&openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            path(&dir.join("ca.key")),
            "-out",
            path(&dir.join("ca.pem")),
            "-subj",
            "/CN=test web root",
            "-days",
            "2",
        ]));
        Self { dir }
    }

    fn ca(&self) -> String {
        path(&self.dir.join("ca.pem")).to_owned()
    }

    /// Makes `<name>.pem` and `<name>.key`; returns the certificate's DER.
    fn serving(&self, name: &str, key_kind: KeyKind) -> Vec<u8> {
        let key = self.dir.join(format!("{name}.key"));
        if key_kind == KeyKind::Sec1 {
            let pem = ok(&openssl(&[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
            ]));
            assert!(pem.contains("BEGIN EC PRIVATE KEY"));
            fs::write(&key, pem).unwrap();
        } else if key_kind == KeyKind::Pkcs1 {
            let pem = ok(&openssl(&["genrsa", "-traditional", "2048"]));
            assert!(pem.contains("BEGIN RSA PRIVATE KEY"));
            fs::write(&key, pem).unwrap();
        } else {
            ok(&openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                path(&key),
            ]));
        }
        let csr = self.dir.join(format!("{name}.csr"));
        ok(&openssl(&[
            "req",
            "-new",
            "-key",
            path(&key),
            "-subj",
            "/CN=127.0.0.1",
            "-out",
            path(&csr),
        ]));
        let ext = self.dir.join("ext.cnf");
        fs::write(
            &ext,
            "subjectAltName = IP:127.0.0.1, DNS:localhost\nextendedKeyUsage = serverAuth\n",
        )
        .unwrap();
        let cert = self.dir.join(format!("{name}.pem"));
        ok(&openssl(&[
            "x509",
            "-req",
            "-in",
            path(&csr),
            "-CA",
            path(&self.dir.join("ca.pem")),
            "-CAkey",
            path(&self.dir.join("ca.key")),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            path(&ext),
            "-out",
            path(&cert),
        ]));
        pem::certificates(&fs::read(&cert).unwrap()).unwrap()[0]
            .as_ref()
            .to_vec()
    }
}

/// How a serving key is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    /// `PRIVATE KEY` (EC P-256).
    Pkcs8,
    /// `EC PRIVATE KEY` (P-256).
    Sec1,
    /// `RSA PRIVATE KEY` (2048 bits).
    Pkcs1,
}

/// `curl` against `url` trusting `ca`: the status code and the body.
fn curl(url: &str, ca: &str, method: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--cacert",
            ca,
            "-X",
            method,
            "-w",
            "\n%{http_code}",
            url,
        ])
        .output()
        .unwrap();
    let output = ok(&out);
    let (body, code) = output.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

/// What `openssl s_client` saw: the chain presented, whether it verified against `ca`, and
/// the body of `GET /`.
struct Fetched {
    chain: Vec<Vec<u8>>,
    verified: bool,
    body: String,
}

fn s_client(port: u16, ca: &Path) -> Fetched {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-CAfile",
            path(ca),
            "-showcerts",
            "-ign_eof",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let chain = pem::certificates(stdout.as_bytes())
        .map(|certs| certs.iter().map(|c| c.as_ref().to_vec()).collect())
        .unwrap_or_default();
    let verified = stdout.contains("Verify return code: 0 (ok)");
    let body = stdout
        .split_once("HTTP/1.1 200 OK")
        .and_then(|(_, response)| response.split_once("\r\n\r\n"))
        .map(|(_, rest)| {
            // s_client prints its own lines right after the body: take one JSON value.
            let mut values =
                serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
            match values.next() {
                Some(Ok(_)) => rest[..values.byte_offset()].to_owned(),
                _ => String::new(),
            }
        })
        .unwrap_or_default();
    Fetched {
        chain,
        verified,
        body,
    }
}

fn uri_sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    cert.subject_alternative_name()
        .unwrap()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some((*uri).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Our bundle document as served, read by our parser and by two independent ones:
/// jsonwebtoken's JWK set (every key) and the `spiffe` crate's JWT bundle (the `jwt-svid`
/// keys).
fn parse_document(body: &str) -> Bundle {
    let keys: JwkSet = serde_json::from_str(body).unwrap();
    assert!(!keys.keys.is_empty());
    let bundle =
        Bundle::from_document(TrustDomain::new("example.org").unwrap(), body.as_bytes()).unwrap();
    let raw: serde_json::Value = serde_json::from_str(body).unwrap();
    let jwt_keys: Vec<_> = raw["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["use"] == "jwt-svid")
        .cloned()
        .collect();
    let jwks = serde_json::json!({ "keys": jwt_keys }).to_string();
    let theirs = spiffe::JwtBundle::from_jwt_authorities(
        spiffe::TrustDomain::new("example.org").unwrap(),
        jwks.as_bytes(),
    )
    .unwrap();
    for authority in bundle.jwt().authorities() {
        assert!(theirs.find_jwt_authority(authority.key_id()).is_some());
    }
    assert_eq!(jwt_keys.len(), bundle.jwt().authorities().len());
    bundle
}

#[test]
fn the_https_web_bundle_endpoint_serves_the_bundle_and_reloads_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = WebPki::new(dir.path());
    let first = pki.serving("web", KeyKind::Pkcs8);
    let port = free_port();
    write_config(
        dir.path(),
        &format!(
            "[federation.bundle_endpoint]\nbind_address = \"127.0.0.1:{port}\"\n\
             profile = \"https_web\"\ncert_file = \"web.pem\"\nkey_file = \"web.key\"\n\
             refresh_hint = \"2m\"\n"
        ),
    );
    let server = Server::start(dir.path());
    let url = format!("https://127.0.0.1:{port}/");

    let (status, body) = curl(&url, &pki.ca(), "GET");
    assert_eq!(status, 200, "{body}");
    let raw: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(raw["spiffe_refresh_hint"], 120);
    assert!(raw["spiffe_sequence"].as_u64().unwrap() >= 1);
    let served = parse_document(&body);
    assert_eq!(served.refresh_hint(), Some(Duration::from_secs(120)));
    // The same trust anchors as the admin API's bundle.
    let shown = ok(&server.cli(&["bundle", "show", "--format", "pem"]));
    let shown = pem::certificates(shown.as_bytes()).unwrap();
    assert_eq!(served.x509().authorities(), &shown[..]);
    // Only GET / is served.
    assert_eq!(curl(&format!("{url}bundle"), &pki.ca(), "GET").0, 404);
    assert_eq!(curl(&url, &pki.ca(), "POST").0, 405);

    let presented = |port| s_client(port, &dir.path().join("ca.pem"));
    let before = presented(port);
    assert!(before.verified);
    assert_eq!(before.chain[0], first);
    assert_eq!(parse_document(&before.body), served);

    // Replace both files (a new key, SEC1 this time), each by rename as deploy tools do.
    let second = pki.serving("web2", KeyKind::Sec1);
    fs::rename(dir.path().join("web2.pem"), dir.path().join("web.pem")).unwrap();
    fs::rename(dir.path().join("web2.key"), dir.path().join("web.key")).unwrap();
    let after = presented(port);
    assert!(after.verified);
    assert_eq!(after.chain[0], second, "{}", server.log());
    assert_ne!(first, second);

    // A broken replacement keeps the last good pair and is logged.
    fs::write(dir.path().join("web.key"), "not a key\n").unwrap();
    let broken = presented(port);
    assert_eq!(broken.chain[0], second);
    assert!(broken.verified);
    assert!(
        server
            .log()
            .contains("cannot reload the serving certificate"),
        "{}",
        server.log()
    );
    assert!(server.terminate().success());
}

#[test]
fn the_https_spiffe_bundle_endpoint_presents_the_server_svid_and_follows_ca_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // A one-minute CA: the next one is prepared (and published) about 30 s in.
    write_config(
        dir.path(),
        &format!(
            "[ca]\nttl = \"1m\"\n[svid]\ndefault_x509_ttl = \"10s\"\ndefault_jwt_ttl = \"10s\"\n\
             [federation.bundle_endpoint]\nbind_address = \"127.0.0.1:{port}\"\n"
        ),
    );
    let server = Server::start(dir.path());
    let bundle_pem = dir.path().join("bundle.pem");
    fs::write(
        &bundle_pem,
        ok(&server.cli(&["bundle", "show", "--format", "pem"])),
    )
    .unwrap();

    let first = s_client(port, &bundle_pem);
    assert!(first.verified, "openssl did not verify the chain");
    assert_eq!(
        uri_sans(&first.chain[0]),
        ["spiffe://example.org/sigil/server"]
    );
    let raw: serde_json::Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(raw["spiffe_refresh_hint"], 300);
    let bundle = parse_document(&first.body);
    let sequence = bundle.sequence().unwrap();

    let mut rotated = None;
    for _ in 0..POLLS * 2 {
        std::thread::sleep(POLL_PAUSE * 10);
        let fetched = s_client(port, &bundle_pem);
        if fetched.body.is_empty() {
            continue;
        }
        let now = parse_document(&fetched.body);
        if now.sequence().unwrap() > sequence {
            rotated = Some((now, fetched));
            break;
        }
    }
    let (now, _) = rotated.expect("the served sequence never increased");
    assert_ne!(now, bundle);
    assert!(now.x509().authorities().len() > bundle.x509().authorities().len());
    // Still the server's SVID, chaining to the bundle now served.
    fs::write(
        &bundle_pem,
        pem::encode_certificates(now.x509().authorities()),
    )
    .unwrap();
    let fetched = s_client(port, &bundle_pem);
    assert!(fetched.verified);
    assert_eq!(
        uri_sans(&fetched.chain[0]),
        ["spiffe://example.org/sigil/server"]
    );
    assert!(server.terminate().success());
}

/// Reads the discovery document, fetches the JWKS it names with `PyJWKClient` and verifies
/// the token: prints the claims, then whether a wrong issuer is refused.
const PYJWT_SCRIPT: &str = r#"
import json, ssl, sys, urllib.request
import jwt
discovery_url, cafile, token, audience, issuer = sys.argv[1:6]
context = ssl.create_default_context(cafile=cafile)
with urllib.request.urlopen(discovery_url, context=context) as response:
    assert response.headers["Content-Type"] == "application/json", response.headers
    config = json.load(response)
assert config["issuer"] == issuer, config
assert config["jwks_uri"] == issuer + "/keys", config
assert config["response_types_supported"] == ["id_token"], config
assert config["subject_types_supported"] == ["public"], config
algorithms = config["id_token_signing_alg_values_supported"]
client = jwt.PyJWKClient(config["jwks_uri"], ssl_context=context)
key = client.get_signing_key_from_jwt(token)
claims = jwt.decode(token, key.key, algorithms=algorithms, audience=audience, issuer=issuer)
try:
    jwt.decode(token, key.key, algorithms=algorithms, audience=audience, issuer=issuer + "/other")
    wrong_issuer = "accepted"
except jwt.InvalidIssuerError:
    wrong_issuer = "refused"
print(json.dumps({"claims": claims, "algorithms": algorithms, "wrong_issuer": wrong_issuer}))
"#;

/// The test venv's Python (made by `scripts/install-test-deps`; PyJWT comes with py-spiffe).
fn python() -> std::path::PathBuf {
    let venv = match std::env::var_os("SIGIL_TEST_VENV") {
        Some(venv) => std::path::PathBuf::from(venv),
        None => std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
            .join(".cache/sigil/test-venv"),
    };
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no Python test venv at {} (SIGIL_TEST_VENV): run scripts/install-test-deps",
        venv.display()
    );
    python
}

#[test]
fn pyjwt_verifies_a_jwt_svid_through_oidc_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let pki = WebPki::new(dir.path());
    pki.serving("oidc", KeyKind::Pkcs1);
    let port = free_port();
    let issuer = format!("https://127.0.0.1:{port}");
    write_config(
        dir.path(),
        &format!(
            "[svid]\njwt_issuer = \"{issuer}\"\n\
             [oidc_discovery]\nbind_address = \"127.0.0.1:{port}\"\n\
             cert_file = \"oidc.pem\"\nkey_file = \"oidc.key\"\n"
        ),
    );
    let server = Server::start(dir.path());
    let minted = json(&server.cli(&[
        "jwt",
        "mint",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--audience",
        "sts.example.com",
        "--output",
        "json",
    ]));
    let token = minted["token"].as_str().unwrap();
    let out = Command::new(python())
        .arg("-c")
        .arg(PYJWT_SCRIPT)
        .args([
            &format!("{issuer}/.well-known/openid-configuration"),
            &pki.ca(),
            token,
            "sts.example.com",
            &issuer,
        ])
        .output()
        .unwrap();
    let result: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(result["claims"]["sub"], "spiffe://example.org/web");
    assert_eq!(result["claims"]["iss"], issuer.as_str());
    assert_eq!(result["algorithms"], serde_json::json!(["ES256"]));
    assert_eq!(result["wrong_issuer"], "refused");

    // The JWKS is the bundle's JWT keys, each with use and alg; other paths are not served.
    let (status, body) = curl(&format!("{issuer}/keys"), &pki.ca(), "GET");
    assert_eq!(status, 200);
    let keys: serde_json::Value = serde_json::from_str(&body).unwrap();
    let document = ok(&server.cli(&["bundle", "show", "--format", "spiffe"]));
    let bundle: JwkSet = serde_json::from_str(&document).unwrap();
    let jwt_keys: Vec<_> = bundle
        .keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect();
    let served: Vec<_> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            assert_eq!(k["use"], "sig");
            assert_eq!(k["alg"], "ES256");
            k["kid"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(!served.is_empty());
    assert!(served.iter().all(|kid| jwt_keys.contains(kid)));
    assert_eq!(curl(&format!("{issuer}/"), &pki.ca(), "GET").0, 404);
    assert_eq!(curl(&format!("{issuer}/keys"), &pki.ca(), "DELETE").0, 405);
    assert!(server.terminate().success());
}

#[test]
fn a_taken_port_or_a_bad_serving_key_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let pki = WebPki::new(dir.path());
    pki.serving("web", KeyKind::Pkcs8);
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let run = |extra: &str| {
        write_config(dir.path(), extra);
        Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args([
                "server",
                "run",
                "--config",
                path(&dir.path().join("server.toml")),
            ])
            .output()
            .unwrap()
    };
    let out = run(&format!(
        "[federation.bundle_endpoint]\nbind_address = \"127.0.0.1:{port}\"\n"
    ));
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains(&format!(
            "cannot listen on federation.bundle_endpoint.bind_address 127.0.0.1:{port}"
        )),
        "{}",
        text(&out.stderr)
    );
    // Nothing was created before the port was found taken.
    assert!(!dir.path().join("data").exists());
    drop(taken);

    // The CA's key is a good key, but not the serving certificate's.
    let out = run(&format!(
        "[federation.bundle_endpoint]\nbind_address = \"127.0.0.1:{}\"\nprofile = \"https_web\"\n\
         cert_file = \"web.pem\"\nkey_file = \"ca.key\"\n",
        free_port()
    ));
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("does not hold the private key of the first certificate of"),
        "{}",
        text(&out.stderr)
    );
}
