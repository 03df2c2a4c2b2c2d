//! Caller attestation: the configured workload attestors run over the connection's
//! [`PeerCredentials`], and the caller's selectors are everything they report.

use sigil_core::SelectorSet;
use tonic::Status;

use super::api::CallerAttestor;
use super::peer::PeerCredentials;
use crate::attestor::unix::{UnixAttestor, UnixAttestorOptions};
use crate::config::WorkloadAttestor;

/// The workload attestors of one agent.
#[derive(Debug)]
pub struct Attestors {
    unix: Option<UnixAttestor>,
}

impl Attestors {
    /// The attestors the config names.
    pub fn from_config(attestors: &[WorkloadAttestor]) -> Self {
        let mut unix = None;
        for attestor in attestors {
            match attestor {
                WorkloadAttestor::Unix {
                    discover_workload_path,
                    workload_sha256,
                    workload_size_limit,
                } => {
                    unix = Some(UnixAttestor::new(UnixAttestorOptions {
                        discover_workload_path: *discover_workload_path,
                        workload_sha256: *workload_sha256,
                        workload_size_limit: *workload_size_limit,
                    }));
                }
            }
        }
        Self { unix }
    }
}

impl CallerAttestor for Attestors {
    fn attest(&self, extensions: &http::Extensions) -> Result<SelectorSet, Status> {
        let peer = extensions.get::<PeerCredentials>().ok_or_else(|| {
            tracing::warn!("a Workload API call without peer credentials");
            Status::unavailable("workload attestation failed")
        })?;
        let mut selectors = SelectorSet::new();
        if let Some(unix) = &self.unix {
            // SPIRE answers Unavailable when attestation fails (checklist §2.8): the caller
            // may retry; the reason, which may name the caller's process, stays in our log.
            let found = unix.attest(peer).map_err(|error| {
                tracing::info!(pid = ?peer.pid(), uid = peer.uid(), "workload attestation failed: {error}");
                Status::unavailable("workload attestation failed")
            })?;
            for selector in found {
                selectors.insert(selector);
            }
        }
        Ok(selectors)
    }
}
