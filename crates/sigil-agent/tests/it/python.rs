//! The Python interpreter of the test venv, where the independent clients live (grpcio,
//! grpcio-health-checking, py-spiffe): `scripts/install-test-deps` creates it.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The venv's interpreter: `$SIGIL_TEST_VENV/bin/python`, the venv defaulting to
/// `$HOME/.cache/sigil/test-venv`. Panics, naming the fix, when it is missing: these tests
/// are never skipped silently.
pub(crate) fn interpreter() -> PathBuf {
    let venv = match std::env::var_os("SIGIL_TEST_VENV") {
        Some(venv) => PathBuf::from(venv),
        None => {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/sigil/test-venv")
        }
    };
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no Python test venv at {} (SIGIL_TEST_VENV): run scripts/install-test-deps",
        venv.display()
    );
    python
}

/// Runs `script` (Python source) with `args` on a blocking thread, and returns what it
/// printed and its status.
pub(crate) async fn run(script: &str, args: &[&str]) -> Output {
    let python = interpreter();
    let mut command = Command::new(&python);
    command.arg("-c").arg(script).args(args);
    tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the Python runner thread")
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()))
}
