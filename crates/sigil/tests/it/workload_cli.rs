//! The workload commands of the real `sigil` binary (`fetch x509|jwt|bundles`, `validate
//! jwt`, `watch`, `healthcheck --socket`) against a test Workload API server hosted by this
//! test process on a Unix socket (the one sigil-spiffe's tests use). Written files are checked
//! with `openssl verify`, tokens with sigil-spiffe's validator against the server's bundle.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use sigil_spiffe::{BundleSet, JwtSvid, X509Svid};

use crate::text;

#[path = "../../../sigil-spiffe/tests/it/workload_server.rs"]
mod workload_server;

use workload_server::{FEDERATED, Identity, JWT_KEY_ID, TRUST_DOMAIN, TestWorkloadApi};

/// A hang guard only.
const GUARD: Duration = Duration::from_secs(60);

fn identities() -> Vec<Identity> {
    vec![
        Identity::new("spiffe://a.test/web", "web"),
        Identity::new("spiffe://a.test/db", ""),
    ]
}

async fn start() -> (tempfile::TempDir, TestWorkloadApi) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestWorkloadApi::start(dir.path(), identities()).await;
    (dir, server)
}

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sigil"));
    command
        .args(args)
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .env_remove("SIGIL_SERVER_SOCKET");
    command
}

/// Runs `sigil` off the async threads, so the server in this process keeps answering.
async fn run(command: Command) -> Output {
    run_with_stdin(command, None).await
}

async fn run_with_stdin(mut command: Command, stdin: Option<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(stdin) = stdin {
            input.write_all(stdin.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

async fn sigil(server: &TestWorkloadApi, args: &[&str]) -> Output {
    let uri = server.uri();
    let mut all = args.to_vec();
    all.extend(["--socket", uri.as_str()]);
    run(command(&all)).await
}

fn ok(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_x509_prints_svids_and_bundles() {
    let (_dir, server) = start().await;
    let out = ok(&sigil(&server, &["fetch", "x509"]).await);
    assert!(out.starts_with("Received 2 X.509-SVID(s)\n"), "{out}");
    assert!(out.contains("SPIFFE ID        : spiffe://a.test/web\nHint             : web\n"));
    assert!(out.contains("SPIFFE ID        : spiffe://a.test/db\nHint             : -\n"));
    assert!(out.contains("Chain length     : 1\n"), "{out}");
    assert!(
        out.contains("bundle           : a.test (1 CA certificate(s))\n"),
        "{out}"
    );
    assert!(
        out.contains("federated bundle : b.test (1 CA certificate(s))\n"),
        "{out}"
    );
    assert!(!out.contains("PRIVATE KEY"), "a key was printed: {out}");

    // JSON, with the address taken from SPIFFE_ENDPOINT_SOCKET this time.
    let mut env_command = command(&["fetch", "x509", "--output", "json"]);
    env_command.env("SPIFFE_ENDPOINT_SOCKET", server.uri());
    let document = json(&run(env_command).await);
    let svids = document["svids"].as_array().unwrap();
    assert_eq!(svids.len(), 2);
    assert_eq!(svids[0]["spiffe_id"], "spiffe://a.test/web");
    assert_eq!(svids[0]["hint"], "web");
    assert_eq!(svids[1]["hint"], Value::Null);
    assert_eq!(svids[0]["chain_length"], 1);
    let expires = svids[0]["expires_at"].as_u64().unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(expires > now && expires <= now + 3600, "{expires} vs {now}");
    assert_eq!(
        document["bundles"],
        serde_json::json!([
            {"trust_domain": TRUST_DOMAIN, "federated": false, "authorities": 1},
            {"trust_domain": FEDERATED, "federated": true, "authorities": 1},
        ])
    );
    assert!(!document.to_string().contains("PRIVATE KEY"));
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_x509_write_puts_spire_named_files_with_a_private_key_file() {
    let (dir, server) = start().await;
    let out_dir = dir.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    // A world-readable key file from before must not stay world-readable.
    fs::write(out_dir.join("svid.0.key"), "old").unwrap();
    fs::set_permissions(
        out_dir.join("svid.0.key"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let out = sigil(
        &server,
        &["fetch", "x509", "--write", out_dir.to_str().unwrap()],
    )
    .await;
    let printed = ok(&out);
    let mut names: Vec<String> = fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "bundle.0.pem",
            "bundle.1.pem",
            "federated_bundle.0.0.pem",
            "federated_bundle.1.0.pem",
            "svid.0.key",
            "svid.0.pem",
            "svid.1.key",
            "svid.1.pem",
        ]
    );
    assert!(printed.contains(&format!("Wrote {}", out_dir.join("svid.0.key").display())));
    for i in 0..2 {
        assert_eq!(mode(&out_dir.join(format!("svid.{i}.key"))), 0o600);
        assert_eq!(mode(&out_dir.join(format!("svid.{i}.pem"))), 0o644);
        assert_eq!(mode(&out_dir.join(format!("bundle.{i}.pem"))), 0o644);
    }

    // The files are what the agent sent: chain + its key, the bundles by trust domain.
    let svid = X509Svid::from_pem_parts(
        &fs::read(out_dir.join("svid.0.pem")).unwrap(),
        &fs::read(out_dir.join("svid.0.key")).unwrap(),
    )
    .unwrap();
    assert_eq!(svid.spiffe_id().as_str(), "spiffe://a.test/web");
    assert_eq!(
        fs::read_to_string(out_dir.join("bundle.0.pem")).unwrap(),
        sigil_spiffe::pem::encode("CERTIFICATE", &server.ca_der())
    );
    assert_eq!(
        fs::read_to_string(out_dir.join("federated_bundle.1.0.pem")).unwrap(),
        sigil_spiffe::pem::encode("CERTIFICATE", &server.federated_ca_der())
    );
    let key = fs::read_to_string(out_dir.join("svid.1.key")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{key}");

    // An independent check: openssl verifies each chain against its bundle.
    for i in 0..2 {
        let verify = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(out_dir.join(format!("bundle.{i}.pem")))
            .arg(out_dir.join(format!("svid.{i}.pem")))
            .output()
            .unwrap();
        assert!(verify.status.success(), "{}", text(&verify.stderr));
        // And against the federated bundle (another CA) it does not.
        let wrong = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(out_dir.join(format!("federated_bundle.{i}.0.pem")))
            .arg(out_dir.join(format!("svid.{i}.pem")))
            .output()
            .unwrap();
        assert!(!wrong.status.success());
    }

    // JSON lists the files written.
    let out_dir2 = dir.path().join("created/here");
    let document = json(
        &sigil(
            &server,
            &[
                "fetch",
                "x509",
                "--output",
                "json",
                "--write",
                out_dir2.to_str().unwrap(),
            ],
        )
        .await,
    );
    let written = document["written"].as_array().unwrap();
    assert_eq!(written.len(), 8);
    assert_eq!(written[1], out_dir2.join("svid.0.key").to_str().unwrap());
    assert_eq!(mode(&out_dir2.join("svid.0.key")), 0o600);
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_x509_refuses_an_svid_that_does_not_chain_to_its_bundle() {
    let (dir, server) = start().await;
    // The agent hands out the wrong CA as the SVIDs' bundle.
    let mut message = server.current_x509();
    for svid in &mut message.svids {
        svid.bundle = server.federated_ca_der();
    }
    server.send(message);
    let out_dir = dir.path().join("out");
    let out = sigil(
        &server,
        &["fetch", "x509", "--write", out_dir.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "SVID #0 (spiffe://a.test/web) does not verify against the bundle of its trust domain"
        ),
        "{}",
        text(&out.stderr)
    );
    assert!(!out_dir.exists(), "files were written for a bad SVID");
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_jwt_gives_tokens_that_validate_against_the_agent_bundle() {
    let (_dir, server) = start().await;
    let bundles: BundleSet = [server.bundle()].into_iter().collect();

    let document = json(
        &sigil(
            &server,
            &[
                "fetch",
                "jwt",
                "--audience",
                "db",
                "--audience",
                "cache",
                "--output",
                "json",
            ],
        )
        .await,
    );
    let svids = document["svids"].as_array().unwrap();
    assert_eq!(svids.len(), 2);
    assert_eq!(svids[0]["spiffe_id"], "spiffe://a.test/web");
    assert_eq!(
        svids[0]["claims"]["aud"],
        serde_json::json!(["db", "cache"])
    );
    let token = svids[0]["token"].as_str().unwrap();
    let svid = JwtSvid::parse_and_validate(token, &bundles, &["cache"], SystemTime::now()).unwrap();
    assert_eq!(svid.spiffe_id().as_str(), "spiffe://a.test/web");

    let out = ok(&sigil(
        &server,
        &[
            "fetch",
            "jwt",
            "--audience",
            "db",
            "--spiffe-id",
            "spiffe://a.test/db",
        ],
    )
    .await);
    assert!(
        out.starts_with("SVID #0\nSPIFFE ID        : spiffe://a.test/db\n"),
        "{out}"
    );
    assert!(!out.contains("SVID #1"), "{out}");
    let token = out
        .lines()
        .find_map(|line| line.strip_prefix("Token            : "))
        .unwrap();
    JwtSvid::parse_and_validate(token, &bundles, &["db"], SystemTime::now()).unwrap();

    // --audience is required: usage error.
    let missing = sigil(&server, &["fetch", "jwt"]).await;
    assert_eq!(missing.status.code(), Some(64), "{}", text(&missing.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_bundles_lists_x509_and_jwt_authorities_per_trust_domain() {
    let (_dir, server) = start().await;
    let document = json(&sigil(&server, &["fetch", "bundles", "--output", "json"]).await);
    let bundles = document["bundles"].as_array().unwrap();
    assert_eq!(bundles.len(), 2);
    assert_eq!(bundles[0]["trust_domain"], TRUST_DOMAIN);
    assert_eq!(
        bundles[0]["x509_authorities_pem"],
        sigil_spiffe::pem::encode("CERTIFICATE", &server.ca_der())
    );
    assert_eq!(bundles[0]["jwks"]["keys"][0]["kid"], JWT_KEY_ID);
    assert_eq!(bundles[1]["trust_domain"], FEDERATED);
    assert_eq!(bundles[1]["jwks"], Value::Null);

    let out = ok(&sigil(&server, &["fetch", "bundles"]).await);
    assert!(
        out.starts_with(&format!(
            "Trust domain     : a.test\nJWT key IDs      : {JWT_KEY_ID}\n-----BEGIN CERTIFICATE-----\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("Trust domain     : b.test\nJWT key IDs      : -\n"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_jwt_asks_the_agent_and_reports_its_reason() {
    let (_dir, server) = start().await;
    let token = server.jwt("spiffe://a.test/web", &["db"]);

    let out = ok(&sigil(
        &server,
        &["validate", "jwt", "--audience", "db", "--token", &token],
    )
    .await);
    assert!(
        out.starts_with("SVID is valid.\nSPIFFE ID        : spiffe://a.test/web\n"),
        "{out}"
    );
    assert!(out.contains("\"sub\":\"spiffe://a.test/web\""), "{out}");

    // From standard input, JSON out.
    let uri = server.uri();
    let document: Value = {
        let out = run_with_stdin(
            command(&[
                "validate",
                "jwt",
                "--audience",
                "db",
                "--token",
                "-",
                "--output",
                "json",
                "--socket",
                &uri,
            ]),
            Some(format!("{token}\n")),
        )
        .await;
        json(&out)
    };
    assert_eq!(document["valid"], true);
    assert_eq!(document["spiffe_id"], "spiffe://a.test/web");
    assert_eq!(document["claims"]["aud"], "db");

    let wrong = sigil(
        &server,
        &["validate", "jwt", "--audience", "web", "--token", &token],
    )
    .await;
    assert_eq!(wrong.status.code(), Some(1));
    let stderr = text(&wrong.stderr);
    assert!(
        stderr.contains("error: the token is not valid: token audience"),
        "{stderr}"
    );
    assert!(wrong.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_addresses_are_usage_errors_and_refusals_fail_clearly() {
    let (dir, server) = start().await;
    for bad in ["tcp://foo:1", "unix://relative", "/no/scheme.sock"] {
        let out = run(command(&["fetch", "x509", "--socket", bad])).await;
        assert_eq!(out.status.code(), Some(64), "{bad}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("workload api address"),
            "{}",
            text(&out.stderr)
        );
    }
    let unset = run(command(&["fetch", "x509"])).await;
    assert_eq!(unset.status.code(), Some(64));
    assert!(
        text(&unset.stderr).contains("--socket"),
        "{}",
        text(&unset.stderr)
    );

    let nobody = format!("unix://{}", dir.path().join("nobody.sock").display());
    let out = run(command(&["fetch", "x509", "--socket", &nobody])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot connect to the workload api at unix://"),
        "{}",
        text(&out.stderr)
    );

    server.set_denied(true);
    for args in [
        &["fetch", "x509"][..],
        &["fetch", "jwt", "--audience", "db"][..],
        &["fetch", "bundles"][..],
    ] {
        let out = sigil(&server, args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains("no identity issued for this process (PermissionDenied"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_socket_asks_the_agent() {
    let (dir, server) = start().await;
    let uri = server.uri();
    let out = run(command(&["healthcheck", "--socket", &uri])).await;
    assert_eq!(ok(&out), "agent is serving\n");
    let out = run(command(&[
        "healthcheck",
        "--socket",
        &uri,
        "--output",
        "json",
    ]))
    .await;
    assert_eq!(
        json(&out),
        serde_json::json!({"ready": true, "reason": null})
    );

    let nobody = format!("unix://{}", dir.path().join("nobody.sock").display());
    let out = run(command(&["healthcheck", "--socket", &nobody])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("agent is not serving: cannot connect to the workload api"),
        "{}",
        text(&out.stderr)
    );
    let bad = run(command(&["healthcheck", "--socket", "tcp://localhost:1"])).await;
    assert_eq!(bad.status.code(), Some(64));
}

/// A running `sigil watch`: its stdout lines arrive on a channel, its stderr in a file.
struct Watch {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    stderr: std::path::PathBuf,
}

impl Watch {
    fn start(uri: &str, dir: &Path) -> Self {
        let stderr = dir.join("watch.stderr");
        let mut child = command(&["watch", "--output", "json", "--socket", uri])
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if send.send(line.unwrap()).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            stderr,
        }
    }

    async fn line(&self) -> Value {
        let line = tokio::task::block_in_place(|| self.lines.recv_timeout(GUARD))
            .unwrap_or_else(|_| panic!("no update; stderr: {}", self.stderr()));
        serde_json::from_str(&line).unwrap()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until stderr contains `needle` (the hang guard fails the test).
    async fn stderr_contains(&self, needle: &str) {
        let deadline = tokio::time::Instant::now() + GUARD;
        while !self.stderr().contains(needle) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "stderr never said {needle:?}: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_prints_each_update_and_reconnects_after_a_refusal() {
    let (dir, server) = start().await;
    // No identity at first: the watch keeps trying (PermissionDenied is retried).
    server.set_denied(true);
    let watch = Watch::start(&server.uri(), dir.path());
    watch
        .stderr_contains("no identity issued for this process")
        .await;
    assert!(
        watch.stderr().contains("reconnecting in"),
        "{}",
        watch.stderr()
    );

    server.set_denied(false);
    let first = watch.line().await;
    assert_eq!(first["svids"][0]["spiffe_id"], "spiffe://a.test/web");
    assert_eq!(first["bundles"][1]["trust_domain"], FEDERATED);

    // Each rotation is one more document.
    server.rotate();
    let second = watch.line().await;
    assert_eq!(second["svids"].as_array().unwrap().len(), 2);
    server.rotate();
    watch.line().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_stops_on_invalid_argument() {
    let (dir, server) = start().await;
    server.refuse(
        tonic::Code::InvalidArgument,
        "security header missing from request",
    );
    let mut watch = Watch::start(&server.uri(), dir.path());
    let status = tokio::task::block_in_place(|| {
        let deadline = SystemTime::now() + GUARD;
        loop {
            if let Some(status) = watch.child.try_wait().unwrap() {
                return status;
            }
            assert!(SystemTime::now() < deadline, "watch did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    assert_eq!(status.code(), Some(1));
    assert!(
        watch
            .stderr()
            .contains("FetchX509SVID failed: InvalidArgument: security header missing"),
        "{}",
        watch.stderr()
    );
}
