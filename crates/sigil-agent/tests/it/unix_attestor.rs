//! The `unix` attestor against real processes: a Python connector started under other uids and
//! groups with `setpriv` (util-linux) connects to a listening socket, and the selectors are
//! checked against `getent`, `sha256sum` and the kernel's own view of the process. Needs root
//! (setpriv to other uids, `ns_last_pid` for pid reuse), as CI has.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use sigil_agent::attestor::{UnixAttestor, UnixAttestorOptions, WorkloadAttestationError};
use sigil_agent::workload::PeerCredentials;
use tokio::net::UnixListener;
use tokio::sync::Mutex;

/// Connects to the socket named by argv[1], then holds the connection until stdin closes.
const CONNECTOR: &str = "import socket, sys\n\
                         s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n\
                         s.connect(sys.argv[1])\n\
                         sys.stdin.read()\n";

const HANG_GUARD: Duration = Duration::from_secs(30);

/// Every test that spawns processes holds this, so the pid-reuse test is not raced by its
/// neighbours for the pid it wants.
static SPAWNING: Mutex<()> = Mutex::const_new(());

/// A listening socket any uid may connect to.
struct Listener {
    _dir: tempfile::TempDir,
    path: PathBuf,
    listener: UnixListener,
}

impl Listener {
    fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the unix attestor tests start processes under other uids: run them as root"
        );
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("workload.sock");
        let listener = UnixListener::bind(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
        Self {
            _dir: dir,
            path,
            listener,
        }
    }

    /// Starts the connector with `setpriv` arguments (none: as root) and returns it with the
    /// credentials of its accepted connection.
    async fn connect(&self, setpriv: &[&str]) -> (Connector, PeerCredentials) {
        let mut command = if setpriv.is_empty() {
            Command::new(python())
        } else {
            let mut command = Command::new("setpriv");
            command.args(setpriv).arg(python());
            command
        };
        command
            .arg("-c")
            .arg(CONNECTOR)
            .arg(&self.path)
            .stdin(Stdio::piped());
        let child = Connector(command.spawn().unwrap());
        let (stream, _) = tokio::time::timeout(HANG_GUARD, self.listener.accept())
            .await
            .expect("the connector never connected")
            .unwrap();
        let peer = PeerCredentials::from_stream(&stream).unwrap();
        (child, peer)
    }
}

/// The connector process, killed and reaped on drop.
struct Connector(Child);

impl Connector {
    fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).unwrap()
    }

    /// Closes its stdin and waits for it to exit (and be reaped).
    fn finish(mut self) {
        drop(self.0.stdin.take());
        let status = self.0.wait().unwrap();
        assert!(status.success(), "connector failed: {status}");
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Python 3 the test uids can run: the one on PATH may live under root's 0700 home (pyenv).
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let mut candidates = vec![PathBuf::from("/usr/bin/python3")];
        candidates.push(PathBuf::from("/usr/local/bin/python3"));
        if let Ok(out) = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
        {
            candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        }
        candidates
            .into_iter()
            .find(|python| {
                Command::new("setpriv")
                    .args(["--reuid", "4242", "--regid", "4343", "--clear-groups"])
                    .arg(python)
                    .args(["-c", "pass"])
                    .status()
                    .is_ok_and(|status| status.success())
            })
            .expect("no python3 that uid 4242 may run (tried /usr/bin, /usr/local/bin, PATH)")
    })
}

/// The name `getent` gives an id in `passwd` or `group`, if any: the system's own lookup.
fn getent(database: &str, id: u32) -> Option<String> {
    let out = Command::new("getent")
        .arg(database)
        .arg(id.to_string())
        .output()
        .unwrap();
    // getent exits 2 when the key is not found.
    out.status.success().then(|| {
        let line = String::from_utf8(out.stdout).unwrap();
        line.split(':').next().unwrap().to_owned()
    })
}

fn selectors(attested: Vec<sigil_core::Selector>) -> BTreeSet<String> {
    attested.iter().map(ToString::to_string).collect()
}

/// What a process with these ids must be attested as, names from `getent`.
fn expected_ids(uid: u32, gid: u32, groups: &[u32]) -> BTreeSet<String> {
    let mut expected = BTreeSet::from([format!("unix:uid:{uid}"), format!("unix:gid:{gid}")]);
    expected.extend(getent("passwd", uid).map(|name| format!("unix:user:{name}")));
    expected.extend(getent("group", gid).map(|name| format!("unix:group:{name}")));
    for group in groups {
        expected.insert(format!("unix:supplementary_gid:{group}"));
        expected.extend(getent("group", *group).map(|n| format!("unix:supplementary_group:{n}")));
    }
    expected
}

fn attest(options: UnixAttestorOptions, peer: &PeerCredentials) -> BTreeSet<String> {
    selectors(UnixAttestor::new(options).attest(peer).unwrap())
}

#[tokio::test]
async fn other_uid_and_groups_from_the_socket_and_proc() {
    let _spawning = SPAWNING.lock().await;
    let listener = Listener::new();
    let setpriv = [
        "--reuid",
        "4242",
        "--regid",
        "4343",
        "--groups",
        "4444,4445",
    ];
    let (connector, peer) = listener.connect(&setpriv).await;

    assert_eq!(peer.pid(), Some(connector.pid()));
    assert_eq!((peer.uid(), peer.gid()), (4242, 4343));
    assert!(peer.has_pidfd(), "this kernel has SO_PEERPIDFD");
    // Neither path nor sha256 unless asked for.
    assert_eq!(
        attest(UnixAttestorOptions::default(), &peer),
        expected_ids(4242, 4343, &[4444, 4445])
    );
    connector.finish();
}

#[tokio::test]
async fn names_come_from_the_user_and_group_databases() {
    let _spawning = SPAWNING.lock().await;
    let listener = Listener::new();
    // Debian's base-passwd gives uid 1 and gid 1 (daemon), 3 (sys) and 4 (adm) names.
    let setpriv = ["--reuid", "1", "--regid", "1", "--groups", "3,4"];
    let (connector, peer) = listener.connect(&setpriv).await;
    let attested = attest(UnixAttestorOptions::default(), &peer);
    assert_eq!(attested, expected_ids(1, 1, &[3, 4]));
    assert!(attested.contains("unix:user:daemon"), "{attested:?}");
    assert!(
        attested.contains("unix:supplementary_group:adm"),
        "{attested:?}"
    );
    connector.finish();

    let (connector, peer) = listener.connect(&[]).await;
    let attested = attest(UnixAttestorOptions::default(), &peer);
    for selector in [
        "unix:uid:0",
        "unix:user:root",
        "unix:gid:0",
        "unix:group:root",
    ] {
        assert!(
            attested.contains(selector),
            "{selector} missing from {attested:?}"
        );
    }
    connector.finish();
}

#[tokio::test]
async fn path_and_sha256_of_the_executable_when_enabled() {
    let _spawning = SPAWNING.lock().await;
    let listener = Listener::new();
    let setpriv = ["--reuid", "4242", "--regid", "4343", "--clear-groups"];
    let (connector, peer) = listener.connect(&setpriv).await;
    let exe = fs::read_link(format!("/proc/{}/exe", connector.pid())).unwrap();
    assert_eq!(exe, fs::canonicalize(python()).unwrap());
    let sha256sum = Command::new("sha256sum").arg(&exe).output().unwrap();
    let sha256 = String::from_utf8(sha256sum.stdout).unwrap();
    let sha256 = sha256.split_whitespace().next().unwrap();
    assert_eq!(sha256.len(), 64);

    let both = UnixAttestorOptions {
        discover_workload_path: true,
        workload_sha256: true,
        workload_size_limit: 0,
    };
    let mut expected = expected_ids(4242, 4343, &[]);
    expected.insert(format!("unix:path:{}", exe.display()));
    expected.insert(format!("unix:sha256:{sha256}"));
    assert_eq!(attest(both.clone(), &peer), expected);

    let path_only = UnixAttestorOptions {
        workload_sha256: false,
        ..both
    };
    let attested = attest(path_only, &peer);
    assert!(attested.contains(&format!("unix:path:{}", exe.display())));
    assert!(
        !attested.iter().any(|s| s.starts_with("unix:sha256:")),
        "{attested:?}"
    );

    let sha_only = UnixAttestorOptions {
        discover_workload_path: false,
        ..both
    };
    let attested = attest(sha_only, &peer);
    assert!(attested.contains(&format!("unix:sha256:{sha256}")));
    assert!(
        !attested.iter().any(|s| s.starts_with("unix:path:")),
        "{attested:?}"
    );
    connector.finish();
}

#[tokio::test]
async fn executable_over_the_size_limit_is_refused() {
    let _spawning = SPAWNING.lock().await;
    let listener = Listener::new();
    let (connector, peer) = listener.connect(&[]).await;
    let size = fs::metadata(format!("/proc/{}/exe", connector.pid()))
        .unwrap()
        .len();
    let limited = |limit| UnixAttestorOptions {
        discover_workload_path: false,
        workload_sha256: true,
        workload_size_limit: limit,
    };

    let error = UnixAttestor::new(limited(size - 1))
        .attest(&peer)
        .unwrap_err();
    assert!(
        matches!(
            error,
            WorkloadAttestationError::ExecutableTooLarge { pid, size: s, limit }
                if pid == connector.pid() && s == size && limit == size - 1
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("workload_size_limit"), "{error}");

    // Exactly at the limit is allowed.
    let attested = attest(limited(size), &peer);
    assert!(
        attested.iter().any(|s| s.starts_with("unix:sha256:")),
        "{attested:?}"
    );
    connector.finish();
}

#[tokio::test]
async fn exited_peer_is_not_attested() {
    let _spawning = SPAWNING.lock().await;
    let listener = Listener::new();
    let setpriv = ["--reuid", "4242", "--regid", "4343", "--groups", "4444"];
    let (connector, peer) = listener.connect(&setpriv).await;
    let pid = connector.pid();
    connector.finish();

    let error = UnixAttestor::new(UnixAttestorOptions::default())
        .attest(&peer)
        .unwrap_err();
    assert!(
        matches!(error, WorkloadAttestationError::ProcessExited { pid: p } if p == pid),
        "{error:?}"
    );
    // What SO_PEERCRED fixed at connect time is still known.
    assert_eq!(
        (peer.uid(), peer.gid(), peer.pid()),
        (4242, 4343, Some(pid))
    );
}

#[tokio::test]
async fn peer_gone_before_accept_is_not_attested() {
    let _spawning = SPAWNING.lock().await;
    let listener = Listener::new();
    // With stdin closed the connector exits right after connecting; it is reaped before the
    // connection is even accepted.
    let status = Command::new("setpriv")
        .args(["--reuid", "4242", "--regid", "4343", "--clear-groups"])
        .arg(python())
        .arg("-c")
        .arg(CONNECTOR)
        .arg(&listener.path)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let (stream, _) = tokio::time::timeout(HANG_GUARD, listener.listener.accept())
        .await
        .unwrap()
        .unwrap();
    let peer = PeerCredentials::from_stream(&stream).unwrap();
    assert_eq!((peer.uid(), peer.gid()), (4242, 4343));
    let error = UnixAttestor::new(UnixAttestorOptions::default())
        .attest(&peer)
        .unwrap_err();
    assert!(
        matches!(error, WorkloadAttestationError::ProcessExited { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn reused_pid_is_never_attested_as_the_peer() {
    let _spawning = SPAWNING.lock().await;
    let listener = Listener::new();
    let setpriv = ["--reuid", "4242", "--regid", "4343", "--groups", "4444"];
    let (connector, peer) = listener.connect(&setpriv).await;
    let pid = connector.pid();
    connector.finish();

    // A root process now holds the peer's old pid: /proc/<pid> describes a stranger.
    let stranger = spawn_with_pid(pid);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("\nUid:\t0\t"), "{status}");

    let all = UnixAttestorOptions {
        discover_workload_path: true,
        workload_sha256: true,
        workload_size_limit: 0,
    };
    let error = UnixAttestor::new(all).attest(&peer).unwrap_err();
    assert!(
        matches!(error, WorkloadAttestationError::ProcessExited { pid: p } if p == pid),
        "{error:?}"
    );
    drop(stranger);
}

/// Starts `sleep` as root with exactly this pid, by setting the pid namespace's last pid just
/// below it. Another process on the machine may take the pid first, so it tries again.
fn spawn_with_pid(pid: i32) -> Connector {
    for _ in 0..100 {
        let mut last_pid = fs::OpenOptions::new()
            .write(true)
            .open("/proc/sys/kernel/ns_last_pid")
            .unwrap();
        write!(last_pid, "{}", pid - 1).unwrap();
        drop(last_pid);
        let child = Connector(
            Command::new("sleep")
                .arg("600")
                .stdin(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        if child.pid() == pid {
            return child;
        }
    }
    panic!("could not get pid {pid} back after 100 tries");
}
