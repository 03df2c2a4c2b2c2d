//! A client of the SPIFFE Workload API (SPIFFE_Workload_API.md, SPIFFE_Workload_Endpoint.md;
//! checklist §1.5, §1.6, §2.7, §2.8, §3.1), behind the `workload-api` cargo feature.
//!
//! - [`Endpoint`] parses the address (`unix:///path`, `tcp://IP:PORT`), from configuration or
//!   from [`SPIFFE_ENDPOINT_SOCKET`].
//! - [`WorkloadApiClient`] speaks gRPC over it (plaintext HTTP/2) and sends the
//!   `workload.spiffe.io: true` header on every call. Its answers are this crate's own types,
//!   checked as go-spiffe checks them: every X.509-SVID through the whole profile and its key,
//!   every bundle parsed, duplicate hints dropped, JWT-SVIDs parsed (without the signature,
//!   the agent is trusted) and held to the requested audience.
//! - [`WorkloadApiError`] keeps the gRPC code, so "no identity issued" (PermissionDenied) is
//!   told apart from an agent that is not there (Unavailable), and
//!   [`WorkloadApiError::is_retryable`] is the Workload API client's retry rule.
//!
//! ```no_run
//! # async fn example() -> Result<(), sigil_spiffe::workload_api::WorkloadApiError> {
//! use sigil_spiffe::workload_api::{Endpoint, WorkloadApiClient};
//!
//! let client = WorkloadApiClient::connect(&Endpoint::from_env()?).await?;
//! let context = client.fetch_x509_context().await?;
//! println!("I am {}", context.default_svid().spiffe_id());
//! # Ok(())
//! # }
//! ```

mod client;
mod endpoint;
mod response;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub use client::{HealthStatus, WorkloadApiClient, X509ContextStream};
pub use endpoint::{Endpoint, EndpointError, SPIFFE_ENDPOINT_SOCKET};

use crate::bundle::{BundleDocumentError, BundleSet};
use crate::id::{SpiffeId, SpiffeIdError, TrustDomain};
use crate::jwt::JwtSvidError;
use crate::x509::{X509Svid, X509SvidError};

/// The metadata every Workload API request carries; the server refuses a call without it
/// (SPIFFE_Workload_Endpoint.md §5; checklist item 44).
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// What the first (or any) message of `FetchX509SVID` gives a workload: its X.509-SVIDs, the
/// default first, and the X.509 bundles to verify peers with.
#[derive(Debug)]
pub struct X509Context {
    svids: Vec<X509Svid>,
    bundles: BundleSet,
    federated: Vec<TrustDomain>,
    crls: Vec<Vec<u8>>,
}

impl X509Context {
    /// Every SVID, in the agent's order, duplicate hints dropped. Never empty.
    pub fn svids(&self) -> &[X509Svid] {
        &self.svids
    }

    /// The default identity: the first SVID (SPIFFE_Workload_API.md §5.2).
    pub fn default_svid(&self) -> &X509Svid {
        // The response parser refuses an empty list, so index 0 exists.
        &self.svids[0]
    }

    /// The X.509 bundles: the trust domain of each SVID (from the SVID's `bundle` field) and
    /// every federated trust domain. Only their X.509 halves are filled.
    pub fn bundles(&self) -> &BundleSet {
        &self.bundles
    }

    /// The federated trust domains (from `federated_bundles`), in name order.
    pub fn federated_trust_domains(&self) -> &[TrustDomain] {
        &self.federated
    }

    /// The DER certificate revocation lists, as sent.
    pub fn crls(&self) -> &[Vec<u8>] {
        &self.crls
    }
}

/// The answer of `ValidateJWTSVID`: the agent checked the token (signature, expiry, audience)
/// and says whose it is.
#[derive(Clone, Debug)]
pub struct ValidatedJwtSvid {
    spiffe_id: SpiffeId,
    claims: Map<String, Value>,
}

impl ValidatedJwtSvid {
    /// The token's subject.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The claims the agent returned (it may filter private claims).
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }
}

/// Why a Workload API call failed.
#[non_exhaustive]
#[derive(Clone, Debug, thiserror::Error)]
pub enum WorkloadApiError {
    /// The address is not a Workload API endpoint.
    #[error("invalid workload api address: {0}")]
    Endpoint(EndpointError),
    /// Nothing answers at the address (no socket, refused, not HTTP/2).
    #[error("cannot connect to the workload api at {endpoint}: {reason}")]
    Connect {
        /// The address, as a URI.
        endpoint: String,
        /// What the transport said.
        reason: String,
    },
    /// The agent answered with a gRPC error status.
    #[error("{}", status_text(rpc, *code, message))]
    Status {
        /// The RPC, e.g. `FetchX509SVID`.
        rpc: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// The agent's message.
        message: String,
    },
    /// A response stream closed before its first message.
    #[error("the workload api closed the {rpc} stream without a message")]
    StreamEnded {
        /// The RPC.
        rpc: &'static str,
    },
    /// A response with no SVID (checklist §2.8).
    #[error("no SVIDs in response")]
    NoSvids,
    /// A bundles response with no bundle (checklist items 60, 62).
    #[error("no bundles in {rpc} response")]
    NoBundles {
        /// The RPC.
        rpc: &'static str,
    },
    /// A `spiffe_id` field that is not a SPIFFE ID.
    #[error("{field}: invalid spiffe id {value:?}: {error}")]
    InvalidSpiffeId {
        /// Where, e.g. `svids[0].spiffe_id`.
        field: String,
        /// The value sent.
        value: String,
        /// Why it is not one.
        error: SpiffeIdError,
    },
    /// A bundle map key that is not a trust domain (`spiffe://td` or `td`).
    #[error("{field}: invalid trust domain {key:?}: {error}")]
    InvalidTrustDomain {
        /// Which map.
        field: &'static str,
        /// The key sent.
        key: String,
        /// Why it is not one.
        error: SpiffeIdError,
    },
    /// An X.509-SVID that fails to parse, breaks the profile, or whose key is not its leaf's.
    #[error("svids[{index}] ({spiffe_id}): {error}")]
    X509Svid {
        /// Its position in the response.
        index: usize,
        /// The `spiffe_id` field.
        spiffe_id: String,
        /// The check that failed.
        error: X509SvidError,
    },
    /// The `spiffe_id` field names another ID than the SVID itself.
    #[error("svids[{index}]: spiffe_id field {field:?} differs from the SVID's own {svid:?}")]
    SpiffeIdMismatch {
        /// Its position in the response.
        index: usize,
        /// The `spiffe_id` field.
        field: String,
        /// The ID in the certificate or token.
        svid: String,
    },
    /// An SVID's `bundle` field is empty (it is mandatory, checklist item 58).
    #[error("svids[{index}]: no certificates in the bundle of trust domain {trust_domain:?}")]
    EmptyBundle {
        /// Its position in the response.
        index: usize,
        /// The SVID's trust domain.
        trust_domain: String,
    },
    /// A bundle that cannot be read.
    #[error("bundle of trust domain {trust_domain:?}: {error}")]
    Bundle {
        /// Its trust domain.
        trust_domain: String,
        /// Why it cannot be read.
        error: BundleDocumentError,
    },
    /// A JWT-SVID that does not parse, is expired, or is not for the requested audience.
    #[error("svids[{index}]: {error}")]
    JwtSvid {
        /// Its position in the response.
        index: usize,
        /// The check that failed.
        error: JwtSvidError,
    },
    /// A JWT-SVID for another identity than the one requested.
    #[error("asked for a JWT-SVID of {requested}, the workload api returned one of {returned}")]
    UnexpectedSpiffeId {
        /// The requested ID.
        requested: String,
        /// The returned one.
        returned: String,
    },
}

impl WorkloadApiError {
    /// The gRPC code, when the agent answered with an error status.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The agent has no identity for this process (yet): PermissionDenied.
    pub fn is_permission_denied(&self) -> bool {
        self.code() == Some(tonic::Code::PermissionDenied)
    }

    /// Whether a watcher should reconnect after a backoff: yes for an unreachable agent, a
    /// closed stream and every status but InvalidArgument, Cancelled and Unimplemented, which
    /// mean retrying cannot help (checklist item 49, §2.8). Errors in a message's content are
    /// not retried by reconnecting: the stream goes on and the next message may be good.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::StreamEnded { .. } => true,
            Self::Status { code, .. } => !matches!(
                code,
                tonic::Code::InvalidArgument | tonic::Code::Cancelled | tonic::Code::Unimplemented
            ),
            _ => false,
        }
    }
}

impl From<EndpointError> for WorkloadApiError {
    fn from(error: EndpointError) -> Self {
        Self::Endpoint(error)
    }
}

fn status_text(rpc: &str, code: tonic::Code, message: &str) -> String {
    if code == tonic::Code::PermissionDenied {
        format!("no identity issued for this process (PermissionDenied from {rpc}: {message})")
    } else {
        format!("{rpc} failed: {code:?}: {message}")
    }
}

/// Keeps the first SVID of each non-empty hint and every SVID without one (checklist item 59,
/// §2.8: hints `[A, B, A, "", ""]` keep entries 0, 1, 3 and 4).
fn drop_duplicate_hints<T>(items: Vec<T>, hint: impl Fn(&T) -> Option<&str>) -> Vec<T> {
    let mut seen = BTreeMap::new();
    items
        .into_iter()
        .filter(|item| match hint(item) {
            Some(h) => seen.insert(h.to_owned(), ()).is_none(),
            None => true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_hints_keep_the_first_and_every_empty_one() {
        let items = vec![
            (0, Some("A")),
            (1, Some("B")),
            (2, Some("A")),
            (3, None),
            (4, None),
        ];
        let kept: Vec<i32> = drop_duplicate_hints(items, |(_, h)| *h)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(kept, [0, 1, 3, 4]);
    }

    #[test]
    fn permission_denied_reads_as_no_identity_and_is_retried() {
        let error = WorkloadApiError::Status {
            rpc: "FetchX509SVID",
            code: tonic::Code::PermissionDenied,
            message: "no identity issued".into(),
        };
        assert!(error.is_permission_denied());
        assert!(error.is_retryable());
        assert_eq!(
            error.to_string(),
            "no identity issued for this process (PermissionDenied from FetchX509SVID: no \
             identity issued)"
        );
        let invalid = WorkloadApiError::Status {
            rpc: "FetchX509SVID",
            code: tonic::Code::InvalidArgument,
            message: "security header missing from request".into(),
        };
        assert!(!invalid.is_retryable());
        assert!(!invalid.is_permission_denied());
        assert!(WorkloadApiError::StreamEnded { rpc: "x" }.is_retryable());
        assert!(!WorkloadApiError::NoSvids.is_retryable());
    }
}
