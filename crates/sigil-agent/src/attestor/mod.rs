//! Workload attestors: what the agent can learn about the process behind a Workload API
//! connection, as selectors matched against registration entries.

use std::io;

use sigil_core::SelectorError;

pub mod unix;

pub use unix::{UnixAttestor, UnixAttestorOptions};

/// Why a workload could not be attested. The reason is for the agent's log; the caller answers
/// the workload only "permission denied" (architecture §7).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum WorkloadAttestationError {
    /// The process that opened the socket exited (and its pid may since name another process)
    /// before everything about it had been read.
    #[error("process {pid} exited before its attestation finished")]
    ProcessExited {
        /// The pid the peer had at connect time.
        pid: i32,
    },
    /// A file under `/proc/<pid>` could not be read.
    #[error("cannot read {path}")]
    ReadProc {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A file under `/proc/<pid>` did not hold what the kernel writes there.
    #[error("{path} is malformed: {reason}")]
    MalformedProc {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The user or group database could not be read for an id.
    #[error("cannot look up the name of {kind} id {id}")]
    NameLookup {
        /// `user` or `group`.
        kind: &'static str,
        /// The id looked up.
        id: u32,
        /// The error from the lookup.
        #[source]
        source: io::Error,
    },
    /// The executable is over the `workload_size_limit`, so its hash was not computed.
    #[error(
        "the executable of process {pid} has {size} bytes, over the workload_size_limit of {limit}"
    )]
    ExecutableTooLarge {
        /// The process.
        pid: i32,
        /// The executable's size, or the bytes read when it grew while being hashed.
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// Whether the process still holds its pid could not be checked.
    #[error("cannot check whether process {pid} is still alive")]
    Liveness {
        /// The process.
        pid: i32,
        /// The error from the check.
        #[source]
        source: io::Error,
    },
    /// A fact about the process does not make a valid selector (a path with a control character).
    #[error("a unix selector is invalid")]
    Selector(#[from] SelectorError),
}
