//! `sigil dev`: the README's run command. It prints the socket to export, the `spiffe` crate
//! gets the caller's identity from it, Ctrl-C (SIGINT) stops it cleanly, and a second start
//! on the same directory serves the same identity.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use spiffe::WorkloadApiClient;
use tokio_stream::StreamExt;

use crate::agent_run::own_uid;

/// Starts `sigil dev` and reads its stdout up to the `export` line; returns the child and the
/// endpoint URI.
fn start(dir: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["dev", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let endpoint = loop {
        let line = lines
            .next()
            .expect("sigil dev ended before printing the socket")
            .unwrap();
        if let Some(endpoint) = line.strip_prefix("export SPIFFE_ENDPOINT_SOCKET=") {
            break endpoint.to_owned();
        }
    };
    // Keep reading so that a full pipe never blocks the child.
    std::thread::spawn(move || for _ in lines {});
    (child, endpoint)
}

fn interrupt(mut child: Child) {
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "sigil dev exited with {status}");
}

#[test]
fn sigil_dev_serves_the_callers_identity_and_restarts_on_its_data() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let expected = format!("spiffe://example.org/dev/uid/{}", own_uid());
    for _ in 0..2 {
        let (child, endpoint) = start(dir.path());
        assert!(endpoint.starts_with("unix://"), "{endpoint}");
        let (id, mut stream) = runtime.block_on(async {
            let client = WorkloadApiClient::connect_to(&endpoint).await.unwrap();
            let svid = client.fetch_x509_svid().await.unwrap();
            let mut stream = client.stream_x509_contexts().await.unwrap();
            stream.next().await.unwrap().unwrap();
            (svid.spiffe_id().to_string(), stream)
        });
        assert_eq!(id, expected);
        // Ctrl-C with a stream still open: the stream ends, the process exits cleanly.
        interrupt(child);
        let ended = runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(60), stream.next()).await
        });
        assert!(
            !matches!(ended, Ok(Some(Ok(_)))),
            "the stream got no more SVIDs"
        );
    }
}
