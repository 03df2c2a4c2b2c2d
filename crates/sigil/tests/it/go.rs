//! The go-spiffe workload of `crates/sigil/tests/go-spiffe` (a Go module pinned by its go.mod
//! and go.sum): built once per test process with the machine's `go`, run as a child process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

/// How long a test waits for one line from a go-spiffe process before it fails: far more
/// than any step needs, so only a hang fails on it.
pub(crate) const LINE_TIMEOUT: Duration = Duration::from_secs(90);

/// The built `gospiffe` binary (`go build` with the module's own go.sum, `-mod=readonly`, so
/// nothing but the pinned versions can be used).
pub(crate) fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go-spiffe");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gospiffe");
        let status = Command::new("go")
            .args(["build", "-mod=readonly", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(&module)
            .status()
            .expect("the go toolchain is needed for the go-spiffe interop tests");
        assert!(status.success(), "go build in {} failed", module.display());
        out
    })
}

/// Runs `gospiffe args...` to the end; its stdout's JSON document, or a panic naming stderr.
pub(crate) fn run(command: &mut Command) -> serde_json::Value {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "gospiffe failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A `gospiffe` command for the built binary.
pub(crate) fn command(args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command.args(args);
    command
}

/// A long-running `gospiffe` process whose stdout lines (JSON documents) are read as they
/// come; killed when dropped.
pub(crate) struct GoProcess {
    child: Child,
    lines: Receiver<String>,
    pub(crate) stdin: Option<ChildStdin>,
}

impl GoProcess {
    pub(crate) fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        Self {
            child,
            lines,
            stdin,
        }
    }

    /// The next JSON line, or a panic after [`LINE_TIMEOUT`] or at the end of the output.
    pub(crate) fn next(&mut self) -> serde_json::Value {
        match self.lines.recv_timeout(LINE_TIMEOUT) {
            Ok(line) => {
                eprintln!("gospiffe: {line}");
                serde_json::from_str(&line).unwrap()
            }
            Err(error) => {
                let status = self.child.try_wait().unwrap();
                panic!("no line from gospiffe ({error}); exit status {status:?}")
            }
        }
    }

    /// Reads lines until `wanted` holds for one, which it returns; panics as [`Self::next`].
    pub(crate) fn next_where(
        &mut self,
        what: &str,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        loop {
            let line = self.next();
            if wanted(&line) {
                return line;
            }
            eprintln!("waiting for {what}; skipped {line}");
        }
    }
}

impl Drop for GoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
