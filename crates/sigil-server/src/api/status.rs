//! The one place where errors become gRPC statuses: a whole call's [`Status`] and the
//! per-item `sigil.server.v1.Status` of the batch calls.

use sigil_core::EntryError;
use sigil_core::wire::WireError;
use sigil_proto::server::v1 as pb;
use sigil_spiffe::{JwtError, KeyError, SpiffeId, TrustDomain, X509SvidError};
use tonic::{Code, Status};

use crate::ca::CaError;
use crate::datastore::DataStoreError;
use crate::state::TokenError;

/// A datastore failure as a status. Missing and duplicate records are the caller's business
/// and keep their message; a database failure is logged here and reported as `Internal`.
pub fn datastore(error: &DataStoreError) -> Status {
    match error {
        DataStoreError::NotFound { .. } => Status::not_found(error.to_string()),
        DataStoreError::DuplicateEntry { .. } | DataStoreError::AlreadyExists { .. } => {
            Status::already_exists(error.to_string())
        }
        DataStoreError::TokenExpired => Status::permission_denied(error.to_string()),
        _ => {
            tracing::error!(%error, "datastore call failed");
            Status::internal(error.to_string())
        }
    }
}

/// A message that does not read into the model: the message names the field.
pub fn wire(error: &WireError) -> Status {
    Status::invalid_argument(error.to_string())
}

/// An entry that breaks a rule of the model (foreign trust domain, no selectors, ...).
pub fn invalid_entry(error: &EntryError) -> Status {
    Status::invalid_argument(error.to_string())
}

/// A signing failure as a status. What the caller sent (a CSR that does not parse or verify,
/// a key or DNS name that cannot go in a certificate) is `InvalidArgument`; a CA without an
/// active authority is `Unavailable` (it comes back once rotation catches up); anything else is
/// logged and `Internal`.
pub fn ca(error: &CaError) -> Status {
    match error {
        // The inner error's message, without the "x509 authority: " of the CA's own.
        CaError::X509(
            inner @ (X509SvidError::CsrMalformed
            | X509SvidError::CsrSignature
            | X509SvidError::UnsupportedPublicKey(_)
            | X509SvidError::Key(KeyError::InvalidPublicKey(_))),
        ) => Status::invalid_argument(format!("csr: {inner}")),
        CaError::X509(inner @ X509SvidError::InvalidDnsName(_)) => {
            Status::invalid_argument(format!("dns_names: {inner}"))
        }
        CaError::Jwt(inner @ (JwtError::EmptyAudience | JwtError::EmptyAudienceValue)) => {
            Status::invalid_argument(format!("audience: {inner}"))
        }
        CaError::NoActiveAuthority(_) => {
            tracing::error!(%error, "cannot sign");
            Status::unavailable(error.to_string())
        }
        _ => {
            tracing::error!(%error, "signing failed");
            Status::internal(error.to_string())
        }
    }
}

/// A request `field` naming an ID that cannot be an agent of `trust_domain`.
pub fn not_an_agent(field: &str, id: &SpiffeId, trust_domain: &TrustDomain) -> Status {
    Status::invalid_argument(format!(
        "{field}: {id} is not an agent ID of trust domain {trust_domain} \
         (spiffe://{trust_domain}/sigil/agent/...)"
    ))
}

/// No attested agent has this ID (never attested, or evicted).
pub fn agent_not_found(id: &SpiffeId) -> Status {
    Status::not_found(format!("agent {id} not found"))
}

/// A failed write to agent `id`: a missing node is reported as a missing agent, the word the
/// admin knows.
pub fn agent(error: &DataStoreError, id: &SpiffeId) -> Status {
    match error {
        DataStoreError::NotFound { kind: "node", .. } => agent_not_found(id),
        _ => datastore(error),
    }
}

/// A join token that cannot be made: a bad agent ID or TTL is the caller's.
pub fn token(error: &TokenError) -> Status {
    match error {
        TokenError::NotAnAgentId(..) | TokenError::BadTtl => {
            Status::invalid_argument(error.to_string())
        }
        TokenError::DataStore(error) => datastore(error),
    }
}

/// A status as the per-item result of a batch call.
pub fn to_proto(status: &Status) -> pb::Status {
    pb::Status {
        code: status.code() as i32,
        message: status.message().to_owned(),
    }
}

/// The per-item result of an item that succeeded.
pub fn ok() -> pb::Status {
    pb::Status {
        code: Code::Ok as i32,
        message: String::new(),
    }
}
