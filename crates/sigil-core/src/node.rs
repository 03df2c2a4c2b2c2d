//! Attested nodes (agents), join tokens, and the SPIFFE IDs reserved for the server and its
//! agents: `spiffe://<td>/sigil/server` and `spiffe://<td>/sigil/agent/<attestor>/<node id>`.

use std::fmt;

use serde::{Deserialize, Serialize};
use sigil_spiffe::{SpiffeId, SpiffeIdError, TrustDomain};
use zeroize::Zeroizing;

use crate::selector::SelectorSet;

/// The first path segment reserved for the server and agents; no entry may use it.
pub const RESERVED_PATH_PREFIX: &str = "/sigil/";

/// The server's own SPIFFE ID, `spiffe://<td>/sigil/server`; entries parented to it are node
/// aliases.
pub fn server_spiffe_id(trust_domain: &TrustDomain) -> Result<SpiffeId, SpiffeIdError> {
    SpiffeId::from_segments(trust_domain, &["sigil", "server"])
}

/// An agent's SPIFFE ID, `spiffe://<td>/sigil/agent/<attestor>/<node id>`.
pub fn agent_spiffe_id(
    trust_domain: &TrustDomain,
    attestor: &str,
    node_id: &str,
) -> Result<SpiffeId, SpiffeIdError> {
    SpiffeId::from_segments(trust_domain, &["sigil", "agent", attestor, node_id])
}

/// True for an agent's ID (`/sigil/agent/...`) in `trust_domain`.
pub fn is_agent_id(id: &SpiffeId, trust_domain: &TrustDomain) -> bool {
    let mut segments = id.segments();
    id.is_member_of(trust_domain)
        && segments.next() == Some("sigil")
        && segments.next() == Some("agent")
        && segments.next().is_some()
}

/// An agent the server has attested.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestedNode {
    /// The agent's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The node attestor that vouched for it (`join_token`, ...).
    pub attestation_type: String,
    /// The serial number of the agent's current X.509-SVID (hex); renewal must present it.
    pub cert_serial: String,
    /// When that SVID expires, in seconds since the Unix epoch.
    pub cert_not_after: i64,
    /// A banned agent can neither attest nor renew.
    pub banned: bool,
    /// Whether the attestor allows the same node to attest again (join tokens do not).
    pub can_reattest: bool,
    /// The node selectors the attestor produced; node-alias entries match on them.
    pub selectors: SelectorSet,
    /// When the node first attested, in seconds since the Unix epoch.
    pub created_at: i64,
}

/// A single-use join token. `Debug` never prints the secret; it is zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The secret itself.
    pub token: Zeroizing<String>,
    /// When it stops being accepted, in seconds since the Unix epoch.
    pub expires_at: i64,
    /// The agent ID the token's node will get, when fixed at generation.
    pub spiffe_id: Option<SpiffeId>,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("spiffe_id", &self.spiffe_id)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ids() {
        let td = TrustDomain::new("example.org").unwrap();
        assert_eq!(
            server_spiffe_id(&td).unwrap().as_str(),
            "spiffe://example.org/sigil/server"
        );
        let agent = agent_spiffe_id(&td, "join_token", "abc").unwrap();
        assert_eq!(
            agent.as_str(),
            "spiffe://example.org/sigil/agent/join_token/abc"
        );
        assert!(is_agent_id(&agent, &td));
        assert!(!is_agent_id(&server_spiffe_id(&td).unwrap(), &td));
        assert!(agent_spiffe_id(&td, "join_token", "a/b").is_err());
    }

    #[test]
    fn join_token_debug_hides_the_secret() {
        let token = JoinToken {
            token: Zeroizing::new("s3cret".into()),
            expires_at: 1,
            spiffe_id: None,
        };
        assert!(!format!("{token:?}").contains("s3cret"));
    }
}
