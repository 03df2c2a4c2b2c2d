//! The `unix` workload attestor: the caller's user, groups and, when asked, executable.
//!
//! Selectors (type `unix`), compatible with SPIRE's attestor of the same name:
//! - `uid:N`, `gid:N`: the effective ids from SO_PEERCRED, fixed at connect time;
//!   `user:NAME`, `group:NAME` when the id has a name in the user or group database;
//! - `supplementary_gid:N`, `supplementary_group:NAME`: every group of the `Groups:` line of
//!   `/proc/<pid>/status` (the Linux socket API has no SO_PEERGROUPS in nix, so these are the
//!   process's groups at attestation time, not at connect time);
//! - `path:/abs/exe` (`discover_workload_path`): the target of `/proc/<pid>/exe`, verbatim (a
//!   deleted executable reads `/path (deleted)` and so matches no entry for `/path`);
//! - `sha256:HEX` (`workload_sha256`): the hash of the executable, read through
//!   `/proc/<pid>/exe`, so it is the file the process runs even from another mount namespace.
//!
//! Everything read under `/proc/<pid>` is accepted only if, after reading, the process that
//! opened the socket still holds that pid (see [`PeerCredentials`]); otherwise attestation fails
//! with [`WorkloadAttestationError::ProcessExited`] rather than describe another process.

use std::fs::{self, File};
use std::io::{self, Read};

use aws_lc_rs::digest;
use nix::unistd::{Gid, Group, Uid, User};
use sigil_core::Selector;

use super::WorkloadAttestationError;
use crate::workload::peer::{PeerCredentials, process_gone};

/// The selector type this attestor produces.
pub const SELECTOR_TYPE: &str = "unix";

/// The `unix` workload attestor.
#[derive(Clone, Debug)]
pub struct UnixAttestor {
    options: UnixAttestorOptions,
}

/// What the `unix` attestor reports beyond users and groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnixAttestorOptions {
    /// Report `path:` selectors, the executable of the process.
    pub discover_workload_path: bool,
    /// Report `sha256:` selectors, the hash of the executable.
    pub workload_sha256: bool,
    /// The largest executable, in bytes, that is hashed; 0 means no limit (SPIRE's default). An
    /// executable over the limit fails attestation, as in SPIRE: leaving the selector out would
    /// silently turn a hash-pinned entry into one the workload never gets, for no stated reason.
    pub workload_size_limit: u64,
}

impl UnixAttestor {
    /// An attestor with these options.
    pub fn new(options: UnixAttestorOptions) -> Self {
        Self { options }
    }

    /// The selectors of the process behind a connection.
    ///
    /// Blocking (reads /proc, /etc/passwd, maybe hashes a file): call on a blocking thread.
    pub fn attest(
        &self,
        peer: &PeerCredentials,
    ) -> Result<Vec<Selector>, WorkloadAttestationError> {
        let mut selectors = vec![
            unix(&format!("uid:{}", peer.uid()))?,
            unix(&format!("gid:{}", peer.gid()))?,
        ];
        if let Some(name) = user_name(peer.uid())? {
            selectors.push(unix(&format!("user:{name}"))?);
        }
        if let Some(name) = group_name(peer.gid())? {
            selectors.push(unix(&format!("group:{name}"))?);
        }
        let Some(pid) = peer.pid() else {
            return Ok(selectors);
        };

        let facts = self.read_process(pid);
        // Checked after every read under /proc/<pid>, and before looking at their results: a
        // failure there may itself come from the process having exited.
        match peer.still_holds_pid() {
            Ok(true) => {}
            Ok(false) => return Err(WorkloadAttestationError::ProcessExited { pid }),
            Err(source) => return Err(WorkloadAttestationError::Liveness { pid, source }),
        }
        let facts = facts?;

        for gid in facts.supplementary_gids {
            selectors.push(unix(&format!("supplementary_gid:{gid}"))?);
            if let Some(name) = group_name(gid)? {
                selectors.push(unix(&format!("supplementary_group:{name}"))?);
            }
        }
        if let Some(path) = facts.path {
            selectors.push(unix(&format!("path:{path}"))?);
        }
        if let Some(hash) = facts.sha256 {
            selectors.push(unix(&format!("sha256:{hash}"))?);
        }
        Ok(selectors)
    }

    /// Everything this attestor reads under `/proc/<pid>`, to be trusted only once the caller
    /// knows the pid still names the peer.
    fn read_process(&self, pid: i32) -> Result<ProcessFacts, WorkloadAttestationError> {
        let status_path = format!("/proc/{pid}/status");
        let status = fs::read_to_string(&status_path)
            .map_err(|e| proc_error(pid, status_path.clone(), e))?;
        let supplementary_gids =
            parse_groups(&status).map_err(|reason| WorkloadAttestationError::MalformedProc {
                path: status_path,
                reason,
            })?;

        let exe_path = format!("/proc/{pid}/exe");
        let path = if self.options.discover_workload_path {
            let target =
                fs::read_link(&exe_path).map_err(|e| proc_error(pid, exe_path.clone(), e))?;
            // Not lossy: two executables must never share one `path:` selector.
            let target = target.into_os_string().into_string().map_err(|_| {
                WorkloadAttestationError::MalformedProc {
                    path: exe_path.clone(),
                    reason: "the executable's path is not UTF-8".to_owned(),
                }
            })?;
            Some(target)
        } else {
            None
        };
        let sha256 = if self.options.workload_sha256 {
            Some(self.hash_executable(pid, &exe_path)?)
        } else {
            None
        };
        Ok(ProcessFacts {
            supplementary_gids,
            path,
            sha256,
        })
    }

    fn hash_executable(
        &self,
        pid: i32,
        exe_path: &str,
    ) -> Result<String, WorkloadAttestationError> {
        let read_error = |e| proc_error(pid, exe_path.to_owned(), e);
        let file = File::open(exe_path).map_err(read_error)?;
        let limit = self.options.workload_size_limit;
        let size = file.metadata().map_err(read_error)?.len();
        if limit > 0 && size > limit {
            return Err(WorkloadAttestationError::ExecutableTooLarge { pid, size, limit });
        }
        // Read one byte past the limit at most, in case the file grows while being hashed.
        let cap = if limit > 0 { limit + 1 } else { u64::MAX };
        let mut reader = file.take(cap);
        let mut context = digest::Context::new(&digest::SHA256);
        let mut buffer = vec![0; 64 * 1024];
        let mut total: u64 = 0;
        loop {
            let n = match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(e)),
            };
            total += n as u64;
            if limit > 0 && total > limit {
                return Err(WorkloadAttestationError::ExecutableTooLarge {
                    pid,
                    size: total,
                    limit,
                });
            }
            context.update(&buffer[..n]);
        }
        Ok(hex(context.finish().as_ref()))
    }
}

struct ProcessFacts {
    supplementary_gids: Vec<u32>,
    path: Option<String>,
    sha256: Option<String>,
}

fn unix(value: &str) -> Result<Selector, WorkloadAttestationError> {
    Ok(Selector::new(SELECTOR_TYPE, value)?)
}

/// A read under `/proc/<pid>` that found no process means the process exited.
fn proc_error(pid: i32, path: String, source: io::Error) -> WorkloadAttestationError {
    if process_gone(&source) {
        WorkloadAttestationError::ProcessExited { pid }
    } else {
        WorkloadAttestationError::ReadProc { path, source }
    }
}

fn user_name(uid: u32) -> Result<Option<String>, WorkloadAttestationError> {
    User::from_uid(Uid::from_raw(uid))
        .map(|user| user.map(|u| u.name))
        .map_err(|errno| WorkloadAttestationError::NameLookup {
            kind: "user",
            id: uid,
            source: errno.into(),
        })
}

fn group_name(gid: u32) -> Result<Option<String>, WorkloadAttestationError> {
    Group::from_gid(Gid::from_raw(gid))
        .map(|group| group.map(|g| g.name))
        .map_err(|errno| WorkloadAttestationError::NameLookup {
            kind: "group",
            id: gid,
            source: errno.into(),
        })
}

/// The gids of the `Groups:` line of `/proc/<pid>/status` (`Groups:\t4444 4445 \n`; empty when
/// the process has no supplementary groups).
pub(crate) fn parse_groups(status: &str) -> Result<Vec<u32>, String> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .ok_or_else(|| "no Groups: line".to_owned())?;
    line.split_ascii_whitespace()
        .map(|gid| {
            gid.parse()
                .map_err(|_| format!("Groups: holds {gid:?}, not a group id"))
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            // Writing to a String cannot fail.
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn groups_line_lists_every_gid() {
        let status = "Name:\tpython3\nUid:\t4242\t4242\t4242\t4242\nGid:\t4343\t4343\t4343\t4343\n\
                      FDSize:\t64\nGroups:\t4444 4445 \nNStgid:\t17\n";
        assert_eq!(parse_groups(status).unwrap(), vec![4444, 4445]);
    }

    #[test]
    fn empty_groups_line_is_no_groups() {
        assert_eq!(
            parse_groups("Name:\tx\nGroups:\t\nPid:\t1\n").unwrap(),
            Vec::<u32>::new()
        );
        assert_eq!(parse_groups("Groups:").unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn odd_groups_line_is_an_error_naming_it() {
        assert_eq!(parse_groups("Name:\tx\n").unwrap_err(), "no Groups: line");
        let error = parse_groups("Groups:\t12 x3 \n").unwrap_err();
        assert!(error.contains("\"x3\""), "{error}");
        assert!(parse_groups("Groups:\t-1\n").is_err());
        assert!(parse_groups("Groups:\t4294967296\n").is_err());
    }

    struct KillOnDrop(std::process::Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// The start-time anchor (kernels before 6.5), driven here because the integration tests
    /// cannot reach it: a live peer is attested, a peer whose pid went to another process is
    /// not. Needs root, for `ns_last_pid`.
    #[tokio::test]
    async fn start_time_anchor_catches_pid_reuse() {
        use std::io::Write;
        use std::process::{Command, Stdio};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let mut connector = KillOnDrop(Command::new("python3")
            .arg("-c")
            .arg("import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\nsys.stdin.read()")
            .arg(&path)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap());
        let pid = i32::try_from(connector.0.id()).unwrap();
        let accepted = tokio::time::timeout(std::time::Duration::from_secs(30), listener.accept());
        let (stream, _) = accepted
            .await
            .expect("the connector never connected")
            .unwrap();
        let peer = PeerCredentials::from_stream(&stream)
            .unwrap()
            .anchored_by_start_time()
            .unwrap();
        assert!(!peer.has_pidfd());
        let attestor = UnixAttestor::new(UnixAttestorOptions {
            discover_workload_path: true,
            ..UnixAttestorOptions::default()
        });
        let selectors = attestor.attest(&peer).unwrap();
        assert!(
            selectors.iter().any(|s| s.value().starts_with("path:/")),
            "{selectors:?}"
        );

        drop(connector.0.stdin.take());
        assert!(connector.0.wait().unwrap().success());
        let error = attestor.attest(&peer).unwrap_err();
        assert!(
            matches!(error, WorkloadAttestationError::ProcessExited { .. }),
            "{error:?}"
        );

        // Another process takes the pid (retried: anything on the machine may take it first).
        let mut stranger = None;
        for _ in 0..100 {
            let mut last_pid = fs::OpenOptions::new()
                .write(true)
                .open("/proc/sys/kernel/ns_last_pid")
                .expect("this test needs root, to write ns_last_pid");
            write!(last_pid, "{}", pid - 1).unwrap();
            drop(last_pid);
            let child = KillOnDrop(Command::new("sleep").arg("600").spawn().unwrap());
            if i32::try_from(child.0.id()).unwrap() == pid {
                stranger = Some(child);
                break;
            }
        }
        let _stranger = stranger.expect("could not get the pid back");
        let error = attestor.attest(&peer).unwrap_err();
        assert!(
            matches!(error, WorkloadAttestationError::ProcessExited { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }
}
