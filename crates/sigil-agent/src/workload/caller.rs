//! Caller attestation from the connection's peer credentials (uid and gid, read by the kernel
//! at connect time, which the caller cannot forge).

use sigil_core::{Selector, SelectorSet};
use tonic::Status;
use tonic::transport::server::UdsConnectInfo;

use super::api::CallerAttestor;

/// The `unix:uid` and `unix:gid` selectors of a Unix socket caller.
#[derive(Debug, Default)]
pub struct PeerCredAttestor;

impl CallerAttestor for PeerCredAttestor {
    fn attest(&self, extensions: &http::Extensions) -> Result<SelectorSet, Status> {
        let credentials = extensions
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)
            .ok_or_else(|| {
                tracing::warn!("a Workload API connection without peer credentials");
                Status::permission_denied("the caller could not be attested")
            })?;
        let mut selectors = SelectorSet::new();
        for (kind, id) in [("uid", credentials.uid()), ("gid", credentials.gid())] {
            let selector = Selector::new("unix", &format!("{kind}:{id}"))
                .map_err(|_| Status::internal("selector construction failed"))?;
            selectors.insert(selector);
        }
        Ok(selectors)
    }
}
