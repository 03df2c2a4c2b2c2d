//! JWT-SVIDs: minting through a [`JwtSigner`] and validation against a [`BundleSet`]
//! (JWT-SVID.md; checklist §1.3, §2.5, §3.5).
//!
//! # Token shape
//!
//! Sigil writes JWS compact serialization only, base64url without padding, with the header
//! exactly `{"alg":..,"kid":..,"typ":"JWT"}` and the claims `aud`, `exp`, `iat`, `sub`, then
//! `iss` and any extra claims the caller adds. `aud` is written as a string when there is one
//! audience and as an array otherwise, as SPIRE does (through go-jose); both forms are read
//! (RFC 7519 §4.1.3).
//!
//! # Validation
//!
//! [`JwtSvid::parse_and_validate`] checks, in this order, so the error names the first rule
//! that failed (the order go-spiffe uses, made stricter where the spec allows):
//!
//! 1. the token is at most [`MAX_TOKEN_LEN`] bytes, is compact serialization (three
//!    dot-separated parts; the JWS JSON serialization is refused, JWT-SVID.md §2) and every part
//!    is unpadded base64url;
//! 2. the header is one JSON object without duplicate parameters;
//! 3. `alg` is one of the nine allowed algorithms, before anything else is looked at;
//! 4. the header holds nothing but `alg`, `kid` and `typ`. The spec says issuers MUST NOT add
//!    other parameters (JWT-SVID.md §2.1); go-spiffe and SPIRE accept them, Sigil refuses them,
//!    as the `spiffe` crate does;
//! 5. `typ` is absent, `JWT` or `JOSE`;
//! 6. `kid` is present (the spec makes it optional, but a key cannot be chosen without it, and
//!    go-spiffe, SPIRE and Sigil's own tokens agree);
//! 7. the claims are one JSON object without duplicate names; `sub` is present and a valid
//!    SPIFFE ID; `exp` is present; `exp`, `nbf` and `iat` are non-negative integers;
//! 8. a bundle exists for the trust domain of `sub` (never another one's);
//! 9. that bundle has a JWT authority with the `kid`;
//! 10. the authority's key suits `alg` (curve for ES*, RSA of 2048..=8192 bits for RS*/PS*);
//! 11. the signature verifies;
//! 12. `exp` is not past, `nbf` (if present) and `iat` (if present) are not in the future, each
//!     with a leeway ([`DEFAULT_LEEWAY`], 60 s, as go-spiffe and jsonwebtoken use);
//! 13. `aud` is present, not empty, and holds at least one of the expected audiences. The
//!     expected list itself must be non-empty: go-spiffe skips the check on an empty list, the
//!     spec says a validator always checks its own audience.
//!
//! Each failure is one [`JwtSvidError`] variant. [`danger::parse_insecure`] runs every check
//! except 8–11, for an agent reading tokens its own server has just signed.

mod algorithm;
mod signer;
mod svid;
mod verifier;

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

pub use algorithm::Algorithm;
pub use signer::{JwtSigner, PrivateKeySigner};
pub use svid::{JwtSvid, JwtSvidParams, mint};
pub(crate) use verifier::VerifierCache;

use crate::id::SpiffeIdError;

#[cfg(doc)]
use crate::bundle::BundleSet;

/// The clock skew tolerated on `exp`, `nbf` and `iat` by default: 60 s, as go-spiffe (through
/// go-jose) and jsonwebtoken use.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

/// The longest token accepted, in bytes. JWT-SVIDs are a few hundred bytes; the cap bounds the
/// work an attacker can cause before the signature is checked.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Why a JWT-SVID could not be minted, or a signing key or algorithm was refused.
#[non_exhaustive]
#[derive(Clone, Debug, thiserror::Error)]
pub enum JwtError {
    /// An `alg` outside the JWT-SVID list (`none`, HS*, EdDSA, anything unknown).
    #[error(
        "unsupported jwt-svid algorithm {0:?}: expected one of RS256, RS384, RS512, ES256, \
         ES384, ES512, PS256, PS384, PS512"
    )]
    UnsupportedAlgorithm(String),
    /// The key cannot produce this algorithm's signatures.
    #[error("the signing key is {key}, which cannot sign {algorithm}")]
    KeyMismatch {
        /// The key's family, e.g. `EC P-256`.
        key: &'static str,
        /// The algorithm asked for.
        algorithm: Algorithm,
    },
    /// A key type no JWT-SVID algorithm uses (Ed25519: EdDSA is not allowed).
    #[error("{0} keys cannot sign jwt-svids")]
    UnsupportedKey(&'static str),
    /// An RSA key below 2048 bits.
    #[error("rsa signing key has {bits} bits; jwt-svids need at least 2048")]
    WeakRsaKey {
        /// The modulus size.
        bits: usize,
    },
    /// The signer's key ID is empty; validators find keys by `kid`.
    #[error("jwt signing key id cannot be empty")]
    EmptyKeyId,
    /// No audience was given (JWT-SVID.md §3.2 requires at least one).
    #[error("a jwt-svid needs at least one audience")]
    EmptyAudience,
    /// One of the audiences is the empty string.
    #[error("jwt-svid audience values cannot be empty")]
    EmptyAudienceValue,
    /// An extra claim would overwrite one the JWT-SVID sets itself.
    #[error("claim {0:?} is set by the jwt-svid itself and cannot be given as an extra claim")]
    ReservedClaim(String),
    /// The expiry is not at least one whole second after the issue time, or either is before
    /// 1970.
    #[error("jwt-svid expiry must be at least one second after its issue time, both after 1970")]
    InvalidLifetime,
    /// An ECDSA signer returned a signature that is not the fixed-width `r || s`.
    #[error(
        "signer returned a {actual}-byte signature; {algorithm} needs {expected} bytes (r || s)"
    )]
    SignatureLength {
        /// The signer's algorithm.
        algorithm: Algorithm,
        /// The fixed length the algorithm needs.
        expected: usize,
        /// The length returned.
        actual: usize,
    },
    /// The in-memory crypto library refused to sign.
    #[error("signing failed")]
    Signing,
    /// An external signing backend (KMS, TPM) failed; its error is the source.
    #[error("jwt signing backend failed")]
    Backend(#[source] Arc<dyn StdError + Send + Sync>),
}

/// Why a JWT-SVID was refused. Each variant names the check that failed; the order of the
/// checks is in the [module documentation](self).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtSvidError {
    /// The caller gave no expected audience, or an empty one.
    #[error(
        "expected audience list is empty or holds an empty value: a validator must name its own audience"
    )]
    NoExpectedAudience,
    /// The token is longer than [`MAX_TOKEN_LEN`].
    #[error("token is {len} bytes long; the limit is {MAX_TOKEN_LEN}")]
    TooLong {
        /// The token's length.
        len: usize,
    },
    /// The token is a JWS JSON serialization, which JWT-SVIDs must not use.
    #[error("token uses the jws json serialization; jwt-svids use compact serialization only")]
    JsonSerialization,
    /// The token is not three dot-separated parts.
    #[error(
        "token is not in jws compact serialization: expected 3 dot-separated parts, found {parts}"
    )]
    NotCompact {
        /// How many parts were found.
        parts: usize,
    },
    /// A part is not unpadded base64url.
    #[error("token {part} is not unpadded base64url")]
    InvalidEncoding {
        /// `header`, `claims` or `signature`.
        part: &'static str,
    },
    /// The signature is longer than any allowed algorithm produces.
    #[error("token signature is longer than any allowed algorithm produces")]
    SignatureTooLong,
    /// The header is not a JSON object, or repeats a parameter.
    #[error("token header is not a valid jose header: {0}")]
    InvalidHeader(String),
    /// The header has no `alg`.
    #[error("token header missing alg")]
    MissingAlgorithm,
    /// `alg` is not one of the nine allowed algorithms.
    #[error(
        "token algorithm {0:?} is not allowed: expected one of RS256, RS384, RS512, ES256, \
         ES384, ES512, PS256, PS384, PS512"
    )]
    UnsupportedAlgorithm(String),
    /// A header parameter other than `alg`, `kid` and `typ` (JWT-SVID.md §2.1).
    #[error("token header has parameter {0:?}: only alg, kid and typ are allowed")]
    UnexpectedHeaderParameter(String),
    /// `alg`, `kid` or `typ` is not a JSON string.
    #[error("token header parameter {0} is not a string")]
    HeaderParameterType(&'static str),
    /// `typ` is present and not `JWT` or `JOSE`.
    #[error("token header type {0:?} is not equal to either JWT or JOSE")]
    InvalidType(String),
    /// The header has no (or an empty) `kid`.
    #[error("token header missing key id")]
    MissingKeyId,
    /// The claims are not a JSON object, or repeat a name.
    #[error("token claims are not a valid json object: {0}")]
    InvalidClaims(String),
    /// No `sub` claim.
    #[error("token missing subject claim")]
    MissingSubject,
    /// `sub` is not a valid SPIFFE ID.
    #[error("token has an invalid subject claim")]
    InvalidSubject(#[source] SpiffeIdError),
    /// No `exp` claim.
    #[error("token missing exp claim")]
    MissingExpiry,
    /// A registered claim has the wrong JSON type.
    #[error("token claim {claim} is invalid: {reason}")]
    InvalidClaim {
        /// The claim's name.
        claim: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No bundle for the trust domain of `sub`.
    #[error("no bundle found for trust domain {0:?}")]
    NoBundle(String),
    /// The trust domain's bundle has no JWT authority with the token's `kid`.
    #[error("no jwt authority {key_id:?} found for trust domain {trust_domain:?}")]
    NoAuthority {
        /// The token's `kid`.
        key_id: String,
        /// The trust domain of `sub`.
        trust_domain: String,
    },
    /// The authority's key cannot verify the token's `alg`.
    #[error("jwt authority {key_id:?} holds a {key} key, which cannot verify {algorithm}")]
    KeyMismatch {
        /// The token's `kid`.
        key_id: String,
        /// The authority key's family.
        key: &'static str,
        /// The token's `alg`.
        algorithm: Algorithm,
    },
    /// The authority's key is malformed, or an RSA key outside 2048..=8192 bits.
    #[error("jwt authority {0:?} has a malformed or too weak public key")]
    InvalidAuthorityKey(String),
    /// The signature does not verify with the authority's key.
    #[error("token signature verification failed")]
    InvalidSignature,
    /// `exp` is past, beyond the leeway.
    #[error("token has expired (exp {expiry}, now {now}, leeway {leeway}s)")]
    Expired {
        /// The token's `exp`, in seconds since 1970.
        expiry: u64,
        /// The validation time, in seconds since 1970.
        now: u64,
        /// The leeway, in seconds.
        leeway: u64,
    },
    /// `nbf` is in the future, beyond the leeway.
    #[error("token is not valid yet (nbf {not_before}, now {now}, leeway {leeway}s)")]
    NotYetValid {
        /// The token's `nbf`.
        not_before: u64,
        /// The validation time.
        now: u64,
        /// The leeway, in seconds.
        leeway: u64,
    },
    /// `iat` is in the future, beyond the leeway.
    #[error("token was issued in the future (iat {issued_at}, now {now}, leeway {leeway}s)")]
    IssuedInFuture {
        /// The token's `iat`.
        issued_at: u64,
        /// The validation time.
        now: u64,
        /// The leeway, in seconds.
        leeway: u64,
    },
    /// No `aud` claim (JWT-SVID.md §3.2 requires one).
    #[error("token missing audience claim")]
    MissingAudience,
    /// `aud` is an empty array.
    #[error("token audience is empty")]
    EmptyAudience,
    /// `aud` holds none of the expected audiences.
    #[error("token audience {actual:?} does not include any of {expected:?}")]
    AudienceMismatch {
        /// The token's audiences.
        actual: Vec<String>,
        /// The audiences the validator accepts.
        expected: Vec<String>,
    },
}

/// Parsing without signature verification. Only for tokens whose origin is already trusted,
/// such as an agent reading the JWT-SVIDs its server just signed for it over mTLS.
pub mod danger {
    use std::time::SystemTime;

    use super::{JwtSvid, JwtSvidError};

    /// Parses a token and runs every check except the bundle, `kid` lookup, key and signature:
    /// structure, header, claims, times (with [`DEFAULT_LEEWAY`](super::DEFAULT_LEEWAY)) and
    /// audience. The result is **not** authenticated: anyone can write a token that passes.
    pub fn parse_insecure<A: AsRef<str>>(
        token: &str,
        expected_audience: &[A],
        now: SystemTime,
    ) -> Result<JwtSvid, JwtSvidError> {
        super::svid::parse(token, None, expected_audience, now, super::DEFAULT_LEEWAY)
    }
}
