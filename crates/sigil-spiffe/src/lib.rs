//! The SPIFFE standards as a Rust library: what Sigil's server, agent and CLI share, and what
//! any workload can use on its own.
//!
//! It covers SPIFFE IDs and trust domains, X.509 and JWT bundles and the SPIFFE bundle
//! document, X.509-SVIDs (parse, profile checks, chain verification, issuance), JWT-SVIDs
//! (signing through a [`jwt::JwtSigner`], validation) and rustls configurations for mutual TLS
//! on X.509-SVIDs. It does no I/O of its own: no sockets, no files, no clocks except where a
//! caller passes `now`, unless the `workload-api` feature adds `workload_api`, a client of the
//! SPIFFE Workload API (gRPC over a Unix socket or TCP).
//!
//! ```
//! use sigil_spiffe::{SpiffeId, TrustDomain};
//!
//! let id: SpiffeId = "spiffe://example.org/web/frontend".parse()?;
//! assert_eq!(id.trust_domain(), TrustDomain::new("example.org")?);
//! assert_eq!(id.path(), "/web/frontend");
//! assert!("spiffe://Example.org/web".parse::<SpiffeId>().is_err());
//! # Ok::<(), sigil_spiffe::SpiffeIdError>(())
//! ```

#![warn(missing_docs)]

pub mod authorizer;
pub mod bundle;
pub mod id;
pub mod jwt;
pub mod key;
pub mod pem;
pub mod tls;
#[cfg(feature = "workload-api")]
pub mod workload_api;
pub mod x509;

pub use authorizer::Authorizer;
pub use bundle::{
    Bundle, BundleDocumentError, BundleError, BundleSet, JwtAuthority, JwtBundle, X509Bundle,
};
pub use id::{SpiffeId, SpiffeIdError, TrustDomain};
pub use jwt::{JwtError, JwtSigner, JwtSvid, JwtSvidError};
pub use key::{KeyError, KeyType, PrivateKey, PublicKey};
pub use x509::{
    CaParams, IssuedX509Svid, SvidParams, SvidUsage, VerifiedChain, X509Authority, X509Signer,
    X509Svid, X509SvidError, verify_chain,
};
