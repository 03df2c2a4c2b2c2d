//! Who is on the other end of a Workload API connection.
//!
//! SO_PEERCRED gives the uid, gid and pid the peer had when it called `connect`. The uid and gid
//! stay true for the life of the socket, but the pid is only a number: once that process exits
//! and is reaped, another process may get it, and whatever is read under `/proc/<pid>` then
//! describes a stranger (architecture §7). So the credentials carry an anchor on the process
//! itself, taken at accept: its pidfd (SO_PEERPIDFD, Linux 6.5+), which keeps the pid from being
//! reused while the process lives; on older kernels, its start time, which a new process holding
//! the same pid will not share.

use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{getsockopt, sockopt};

/// Who opened a Workload API connection, read from the socket at accept time.
///
/// Clones share one pidfd; it is closed when the last clone (and so the connection) goes.
#[derive(Clone, Debug)]
pub struct PeerCredentials {
    pid: Option<i32>,
    uid: u32,
    gid: u32,
    anchor: ProcessAnchor,
}

impl PeerCredentials {
    /// Reads SO_PEERCRED and SO_PEERPIDFD from an accepted connection.
    ///
    /// Call it right at accept: on kernels without SO_PEERPIDFD the process start time is read
    /// here instead, and the later it is read the longer the pid has had to be reused.
    pub fn from_stream(stream: &tokio::net::UnixStream) -> io::Result<Self> {
        Self::from_fd(stream.as_fd())
    }

    fn from_fd(fd: BorrowedFd<'_>) -> io::Result<Self> {
        let cred = getsockopt(&fd, sockopt::PeerCredentials).map_err(io::Error::from)?;
        // A peer in a pid namespace we cannot see shows pid 0: its number means nothing here.
        let pid = (cred.pid() > 0).then_some(cred.pid());
        let anchor = match pid {
            None => ProcessAnchor::NoPid,
            Some(pid) => match getsockopt(&fd, sockopt::PeerPidfd) {
                Ok(pidfd) => ProcessAnchor::Pidfd(Arc::new(pidfd)),
                // Kernels before 6.5 (and 6.5 to 6.15 for a peer that is already reaped).
                Err(Errno::ENOPROTOOPT | Errno::EINVAL) => start_time_anchor(pid)?,
                Err(Errno::ESRCH) => ProcessAnchor::Exited,
                Err(errno) => return Err(errno.into()),
            },
        };
        Ok(Self {
            pid,
            uid: cred.uid(),
            gid: cred.gid(),
            anchor,
        })
    }

    /// The peer's process id, or `None` when it lives in a pid namespace the agent cannot see.
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// The peer's effective user id at connect time.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The peer's effective group id at connect time.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// Whether the process is anchored by a pidfd (else by its start time, or not at all).
    pub fn has_pidfd(&self) -> bool {
        matches!(self.anchor, ProcessAnchor::Pidfd(_))
    }

    /// Whether the process that opened the socket still holds its pid: called after reading
    /// `/proc/<pid>`, `true` means everything read there described that process.
    pub(crate) fn still_holds_pid(&self) -> io::Result<bool> {
        match &self.anchor {
            ProcessAnchor::Pidfd(pidfd) => {
                // A pidfd polls readable once its process has exited (zombie or reaped); before
                // that the pid cannot be handed to anyone else.
                let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
                poll(&mut fds, PollTimeout::ZERO).map_err(io::Error::from)?;
                // Any event, or bits nix does not know, counts as exited: fail closed.
                Ok(fds[0].revents().is_some_and(|events| events.is_empty()))
            }
            ProcessAnchor::StartTime(at_accept) => match self.pid {
                Some(pid) => match read_start_time(pid) {
                    Ok(now) => Ok(now == *at_accept),
                    Err(error) if process_gone(&error) => Ok(false),
                    Err(error) => Err(error),
                },
                None => Ok(false),
            },
            ProcessAnchor::Exited | ProcessAnchor::NoPid => Ok(false),
        }
    }

    /// The same credentials anchored by start time instead of the pidfd: the path kernels before
    /// 6.5 take, so tests can drive it on a new kernel.
    #[cfg(test)]
    pub(crate) fn anchored_by_start_time(mut self) -> io::Result<Self> {
        if let Some(pid) = self.pid {
            self.anchor = start_time_anchor(pid)?;
        }
        Ok(self)
    }
}

/// What ties `pid` to the process that connected.
#[derive(Clone, Debug)]
enum ProcessAnchor {
    /// SO_PEERPIDFD: a handle on the process itself.
    Pidfd(Arc<OwnedFd>),
    /// The start time (clock ticks since boot, `/proc/<pid>/stat` field 22) read at accept.
    StartTime(u64),
    /// The peer was gone before accept, so nothing under `/proc/<pid>` is its own.
    Exited,
    /// No pid to anchor.
    NoPid,
}

fn start_time_anchor(pid: i32) -> io::Result<ProcessAnchor> {
    match read_start_time(pid) {
        Ok(start) => Ok(ProcessAnchor::StartTime(start)),
        Err(error) if process_gone(&error) => Ok(ProcessAnchor::Exited),
        Err(error) => Err(error),
    }
}

/// `ENOENT` or `ESRCH` from `/proc/<pid>/...`: no such process (any more).
pub(crate) fn process_gone(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::NotFound || error.raw_os_error() == Some(Errno::ESRCH as i32)
}

fn read_start_time(pid: i32) -> io::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat has no readable start time"),
        )
    })
}

/// Field 22 of `/proc/<pid>/stat`. Field 2 is the command name in parentheses, and the name
/// may itself hold spaces and parentheses, so the fields are counted from the last `)`.
pub(crate) fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    // After the `)` come fields 3 (state), 4, ...: field 22 is the 20th.
    after_comm.split_ascii_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const STAT_TAIL: &str = "S 1 1234 1234 0 -1 4194560 1099 0 0 0 3 1 0 0 20 0 1 0 \
                             987654 12345678 900 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 \
                             0 0 17 1 0 0 0 0 0";

    #[test]
    fn start_time_is_field_22() {
        assert_eq!(
            parse_start_time(&format!("1234 (python3) {STAT_TAIL}\n")),
            Some(987_654)
        );
    }

    #[test]
    fn start_time_survives_spaces_and_parentheses_in_the_name() {
        // A process may name itself anything, including a fake tail of fields.
        let stat =
            format!("77 (a) b (c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19) {STAT_TAIL}");
        assert_eq!(parse_start_time(&stat), Some(987_654));
        assert_eq!(
            parse_start_time(&format!("77 ( ) {STAT_TAIL}")),
            Some(987_654)
        );
    }

    #[test]
    fn malformed_stat_has_no_start_time() {
        assert_eq!(parse_start_time(""), None);
        assert_eq!(parse_start_time("1234 python3 S 1 2 3"), None);
        assert_eq!(parse_start_time("1234 (python3) S 1 2 3"), None);
        let not_a_number = STAT_TAIL.replace("987654", "98x654");
        assert_eq!(parse_start_time(&format!("1 (x) {not_a_number}")), None);
    }

    #[tokio::test]
    async fn own_connection_names_this_process() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let peer = PeerCredentials::from_stream(&a).unwrap();
        assert_eq!(peer.pid(), Some(i32::try_from(std::process::id()).unwrap()));
        assert_eq!(peer.uid(), nix::unistd::geteuid().as_raw());
        assert_eq!(peer.gid(), nix::unistd::getegid().as_raw());
        assert!(peer.still_holds_pid().unwrap());
        let by_start = peer.anchored_by_start_time().unwrap();
        assert!(!by_start.has_pidfd());
        assert!(by_start.still_holds_pid().unwrap());
    }
}
