//! X.509-SVIDs (X509-SVID.md): parsing, the SPIFFE certificate profile, chain verification
//! against a trust bundle, and issuance of CA certificates and SVIDs.
//!
//! - [`X509Svid`] is an SVID we hold: a SPIFFE ID, the certificate chain (leaf first) and the
//!   private key, read from PEM or from the Workload API's DER fields.
//! - [`profile`] holds the one set of profile rules, run on what others give us and on every
//!   certificate we produce.
//! - [`verify_chain`] checks a peer's chain against the bundle of the peer's own trust domain
//!   (checklist items 10, 17, 18, 42), as rustls verifiers need it.
//! - [`X509Authority`] signs SVIDs for CSRs or public keys through an [`X509Signer`], the seam
//!   where a CA key kept outside memory (KMS, HSM, TPM) plugs in.

pub mod issue;
pub mod profile;
mod svid;
mod verify;

pub use issue::{
    CaParams, IssuedX509Svid, SignatureAlgorithm, Subject, SvidParams, X509Authority, X509Signer,
    create_csr, csr_public_key,
};
pub use svid::X509Svid;
pub use verify::{
    SvidUsage, VerifiedChain, verify_chain, verify_chain_with_bundle, verify_end_entity,
};

use crate::id::SpiffeIdError;
use crate::key::KeyError;

/// Why an X.509-SVID, a chain, a CSR or a certificate to issue was refused. Each variant names
/// the rule that failed (X509-SVID.md; checklist §1.2, §2.3, §2.4).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum X509SvidError {
    // --- reading input ---
    /// No certificate at all (an empty chain or an empty DER blob).
    #[error("empty certificates chain")]
    EmptyChain,
    /// PEM input with blocks, but no `CERTIFICATE` block.
    #[error("no certificates found")]
    NoCertificates,
    /// PEM input with no `PRIVATE KEY` (PKCS#8) block.
    #[error("no private key found")]
    NoPrivateKey,
    /// Input that holds no PEM block at all.
    #[error("no PEM blocks found")]
    NoPemBlocks,
    /// A PEM block that cannot be decoded.
    #[error("malformed PEM: {0}")]
    MalformedPem(String),
    /// Bytes that are not a DER certificate (or a chain of them).
    #[error("cannot parse DER encoded certificate {index} of the chain")]
    CertificateParse {
        /// Zero-based position in the chain (0 is the leaf).
        index: usize,
    },
    /// Bytes that are not an unencrypted PKCS#8 private key.
    #[error("cannot parse DER encoded private key")]
    PrivateKeyParse,
    /// The private key is not the key of the leaf certificate.
    #[error("leaf certificate does not match private key")]
    KeyMismatch,

    // --- profile: every certificate ---
    /// A certificate without a URI SAN where a SPIFFE ID is required.
    #[error("certificate contains no URI SAN")]
    NoUriSan,
    /// More than one URI SAN, even if the others are not `spiffe:` URIs (X509-SVID.md §2).
    #[error("certificate contains more than one URI SAN")]
    MultipleUriSans,
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("certificate URI SAN is not a valid SPIFFE ID: {0}")]
    InvalidSpiffeId(SpiffeIdError),
    /// An extension appears twice, or cannot be decoded.
    #[error("certificate has a malformed or duplicated extension: {0}")]
    MalformedExtension(String),
    /// Empty subject and a non-critical SAN extension (RFC 5280 §4.1.2.6).
    #[error("certificate with an empty subject must have a critical subject alternative name")]
    EmptySubjectSanNotCritical,

    // --- profile: leaf ---
    /// A leaf whose SPIFFE ID has no path (X509-SVID.md §2).
    #[error("leaf certificate SPIFFE ID must have a non-root path")]
    LeafRootId,
    /// A leaf without the basic constraints extension (X509-SVID.md §4.1).
    #[error("leaf certificate must have the basic constraints extension")]
    LeafNoBasicConstraints,
    /// A leaf with `cA=true` (X509-SVID.md §4.1).
    #[error("leaf certificate must not have CA flag set to true")]
    LeafIsCa,
    /// A leaf without the key usage extension (X509-SVID.md §4.3).
    #[error("leaf certificate must have the key usage extension")]
    LeafNoKeyUsage,
    /// A leaf whose key usage extension is not critical (X509-SVID.md §4.3).
    #[error("leaf certificate key usage extension must be critical")]
    LeafKeyUsageNotCritical,
    /// A leaf without `digitalSignature` (X509-SVID.md §4.3).
    #[error("leaf certificate must have 'digitalSignature' set as key usage")]
    LeafNoDigitalSignature,
    /// A leaf with `keyCertSign` (X509-SVID.md §4.3).
    #[error("leaf certificate must not have 'keyCertSign' set as key usage")]
    LeafKeyCertSign,
    /// A leaf with `cRLSign` (X509-SVID.md §4.3).
    #[error("leaf certificate must not have 'cRLSign' set as key usage")]
    LeafCrlSign,
    /// A leaf EKU extension that lacks serverAuth or clientAuth (X509-SVID.md §4.4).
    #[error("leaf certificate extended key usage must include both serverAuth and clientAuth")]
    LeafExtendedKeyUsage,

    // --- profile: signing certificates ---
    /// A signing certificate without `cA=true` (X509-SVID.md §4.1).
    #[error("signing certificate must have CA flag set to true")]
    SigningNotCa,
    /// A signing certificate without `keyCertSign` (X509-SVID.md §4.3).
    #[error("signing certificate must have 'keyCertSign' set as key usage")]
    SigningNoKeyCertSign,
    /// A signing certificate whose SPIFFE ID has a path (X509-SVID.md §3).
    #[error("signing certificate SPIFFE ID must not have a path")]
    SigningIdHasPath,

    // --- verification ---
    /// No bundle for the leaf's trust domain.
    #[error("no X.509 bundle found for trust domain: {0:?}")]
    NoBundle(String),
    /// The bundle of the leaf's trust domain holds no authority: everything is untrusted
    /// (checklist item 37).
    #[error("X.509 bundle for trust domain {0:?} has no authorities")]
    EmptyBundle(String),
    /// Path validation failed (unknown issuer, expired, bad signature, ...).
    #[error("certificate chain verification failed: {0:?}")]
    Chain(webpki::Error),

    // --- issuance ---
    /// Bytes that are not a DER certificate signing request.
    #[error("malformed certificate signing request")]
    CsrMalformed,
    /// The CSR's signature does not verify with the key it carries.
    #[error("certificate signing request signature does not verify")]
    CsrSignature,
    /// The public key (from a CSR or given) cannot be put in an SVID.
    #[error("unsupported public key: {0}")]
    UnsupportedPublicKey(String),
    /// `not_after` is not after `not_before`, or a time cannot be encoded.
    #[error("invalid validity period: {0}")]
    InvalidValidity(&'static str),
    /// The signing authority is no longer (or not yet) valid at the requested start time.
    #[error("signing authority is not valid at the requested not_before")]
    AuthorityNotValid,
    /// The SPIFFE ID to issue is not in the authority's trust domain.
    #[error("spiffe id {id:?} is not in the authority's trust domain {authority:?}")]
    WrongTrustDomain {
        /// The requested ID.
        id: String,
        /// The authority's trust domain.
        authority: String,
    },
    /// The authority has no SPIFFE ID, so it names no trust domain to sign SVIDs for.
    #[error("signing authority has no SPIFFE ID: it may sign intermediate CAs, not SVIDs")]
    AuthorityWithoutTrustDomain,
    /// A DNS name given for an SVID is not a valid DNS name.
    #[error("invalid DNS name {0:?}")]
    InvalidDnsName(String),
    /// The key could not be used.
    #[error("key error: {0}")]
    Key(KeyError),
    /// The signer's key does not match the CA certificate it is loaded with.
    #[error("signer public key does not match the CA certificate")]
    SignerMismatch,
    /// The certificate encoder failed.
    #[error("certificate generation failed: {0}")]
    Generation(String),
}

impl From<KeyError> for X509SvidError {
    fn from(error: KeyError) -> Self {
        Self::Key(error)
    }
}
