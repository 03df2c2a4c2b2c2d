//! The harness of the end-to-end tests that need a server: starts the real `sigil server
//! run` on a config in a temporary directory, waits for its admin socket, runs admin commands
//! against it, and stops it with SIGTERM (or kills it when a test fails).

use std::fs::{self, File};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use crate::text;

/// How often the server's start or stop is polled before the test fails, and the pause
/// between polls: a minute in all, far more than it needs on a loaded machine.
pub(crate) const POLLS: u32 = 1200;
pub(crate) const POLL_PAUSE: Duration = Duration::from_millis(50);

/// A running `sigil server run`, killed when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) socket: PathBuf,
    pub(crate) log: PathBuf,
}

impl Server {
    /// Starts `sigil server run` on the config in `dir` and waits until the socket accepts.
    pub(crate) fn start(dir: &Path) -> Self {
        let socket = dir.join("run").join("admin.sock");
        let log = dir.join("server.log");
        let child = Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(["server", "run", "--config"])
            .arg(dir.join("server.toml"))
            .env_remove("SIGIL_SERVER_CONFIG")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = Self { child, socket, log };
        for _ in 0..POLLS {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("server exited early ({status}): {}", server.log());
            }
            if UnixStream::connect(&server.socket).is_ok() {
                return server;
            }
            std::thread::sleep(POLL_PAUSE);
        }
        panic!("server did not start: {}", server.log());
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `sigil entry ...` against this server.
    pub(crate) fn entry(&self, args: &[&str]) -> Output {
        self.admin("entry", args)
    }

    /// Runs `sigil <args>` (an admin command, group first) against this server.
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        self.admin(args[0], &args[1..])
    }

    /// Runs `sigil <group> ...` (an admin command group) against this server.
    pub(crate) fn admin(&self, group: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sigil"))
            .arg(group)
            .args(args)
            .arg("--server-socket")
            .arg(&self.socket)
            .env_remove("SIGIL_SERVER_SOCKET")
            .output()
            .unwrap()
    }

    /// Sends SIGTERM and waits for the exit.
    pub(crate) fn terminate(mut self) -> ExitStatus {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        for _ in 0..POLLS {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(POLL_PAUSE);
        }
        panic!("server did not stop: {}", self.log());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failed test must not leave a server behind; after terminate() this is a no-op.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn json(out: &Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Writes a `server.toml` for `example.org` in `dir`: data in `dir/data`, the admin socket at
/// `dir/run/admin.sock` (where [`Server::start`] looks for it), agent API on a free port.
pub(crate) fn write_config(dir: &Path) {
    fs::write(
        dir.join("server.toml"),
        format!(
            "trust_domain = \"example.org\"\ndata_dir = \"data\"\n\
             bind_address = \"127.0.0.1:0\"\nadmin_socket = \"{}\"\n",
            dir.join("run/admin.sock").display()
        ),
    )
    .unwrap();
}
