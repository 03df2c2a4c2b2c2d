//! Trust bundles: the X.509 authorities and JWT keys of one trust domain, and a set of bundles
//! keyed by trust domain (SPIFFE_Trust_Domain_and_Bundle.md).
//!
//! A bundle never names its trust domain on the wire, so every type here carries it
//! (checklist item 33), and lookups always go by the trust domain of the SVID being checked,
//! never across bundles (item 42).
//!
//! The encodings live in submodules: the SPIFFE bundle document, the Workload API JWKS and the
//! bundle map in `document`, JWK key parameters in `jwk`, and concatenated DER and PEM for
//! X.509 bundles in `x509`.

mod document;
mod json;
mod jwk;
mod x509;

pub use document::BundleDocumentError;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls_pki_types::{CertificateDer, TrustAnchor};

use crate::id::TrustDomain;
use crate::jwt::{Algorithm, VerifierCache};
use crate::key::PublicKey;

/// Why a bundle could not be read, built or used.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// A JWT authority without a key ID.
    #[error("jwt authority key id cannot be empty")]
    EmptyKeyId,
    /// No bundle is known for the trust domain asked about.
    #[error("no bundle found for trust domain {0:?}")]
    NoBundle(String),
    /// A bundle was used for, or added under, another trust domain.
    #[error("bundle is for trust domain {bundle:?}, not {expected:?}")]
    TrustDomainMismatch {
        /// The bundle's own trust domain.
        bundle: String,
        /// The trust domain that was expected.
        expected: String,
    },
}

/// The X.509 authorities (CA certificates) of one trust domain.
///
/// The webpki trust anchors derived from the authorities are computed once, on first use by
/// chain verification, and dropped whenever the authorities change. Equality compares only the
/// trust domain and the authorities.
#[derive(Clone, Debug)]
pub struct X509Bundle {
    trust_domain: TrustDomain,
    authorities: Vec<CertificateDer<'static>>,
    /// Cache of `webpki::anchor_from_trusted_cert` over `authorities`; authorities that webpki
    /// cannot read are left out (they could never anchor a chain anyway).
    anchors: OnceLock<Arc<[TrustAnchor<'static>]>>,
}

impl X509Bundle {
    /// An empty bundle: every X.509-SVID of the trust domain is untrusted.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            authorities: Vec::new(),
            anchors: OnceLock::new(),
        }
    }

    /// A bundle of these authorities, de-duplicated, first occurrence kept.
    pub fn from_authorities(
        trust_domain: TrustDomain,
        authorities: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Self {
        let mut bundle = Self::new(trust_domain);
        for authority in authorities {
            bundle.add_authority(authority);
        }
        bundle
    }

    /// The trust domain the authorities belong to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The CA certificates, in the order they were added.
    pub fn authorities(&self) -> &[CertificateDer<'static>] {
        &self.authorities
    }

    /// Adds an authority unless an identical certificate is already there.
    pub fn add_authority(&mut self, authority: CertificateDer<'static>) {
        if !self.authorities.contains(&authority) {
            self.authorities.push(authority);
            self.anchors = OnceLock::new();
        }
    }

    /// Removes an authority; removing one that is absent does nothing.
    pub fn remove_authority(&mut self, authority: &CertificateDer<'_>) {
        self.authorities
            .retain(|a| a.as_ref() != authority.as_ref());
        self.anchors = OnceLock::new();
    }

    /// True when the bundle holds no authority.
    pub fn is_empty(&self) -> bool {
        self.authorities.is_empty()
    }

    /// The authorities as webpki trust anchors, parsed once and cached. Authorities that are
    /// not readable certificates are skipped.
    pub fn trust_anchors(&self) -> &[TrustAnchor<'static>] {
        self.anchors.get_or_init(|| {
            self.authorities
                .iter()
                .filter_map(|cert| webpki::anchor_from_trusted_cert(cert).ok())
                .map(|anchor| anchor.to_owned())
                .collect()
        })
    }
}

impl PartialEq for X509Bundle {
    fn eq(&self, other: &Self) -> bool {
        // The anchor cache is derived from the authorities, so it never decides equality.
        self.trust_domain == other.trust_domain && self.authorities == other.authorities
    }
}

impl Eq for X509Bundle {}

/// One JWT signing key of a trust domain, named by its key ID.
///
/// It keeps the key parsed for verification, per algorithm, on first use, so that validating
/// a JWT-SVID costs one signature check and not a key parse as well. Clones share that cache;
/// equality compares the key ID and public key only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtAuthority {
    key_id: String,
    public_key: PublicKey,
    verifiers: VerifierCache,
}

impl JwtAuthority {
    /// A JWT authority; the key ID must not be empty (JWT-SVID.md §4).
    pub fn new(key_id: impl Into<String>, public_key: PublicKey) -> Result<Self, BundleError> {
        let key_id = key_id.into();
        if key_id.is_empty() {
            return Err(BundleError::EmptyKeyId);
        }
        Ok(Self {
            key_id,
            public_key,
            verifiers: VerifierCache::default(),
        })
    }

    /// The key ID (`kid`).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// The key parsed for verifying `algorithm`, parsed once and cached; `None` if the key is
    /// malformed or (RSA) outside 2048..=8192 bits. The caller checks
    /// `algorithm.accepts_key(self.public_key())` first.
    pub(crate) fn verifier(
        &self,
        algorithm: Algorithm,
    ) -> Option<&aws_lc_rs::signature::ParsedPublicKey> {
        self.verifiers.verifier(&self.public_key, algorithm)
    }
}

/// The JWT signing keys of one trust domain, by key ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtBundle {
    trust_domain: TrustDomain,
    authorities: BTreeMap<String, JwtAuthority>,
}

impl JwtBundle {
    /// An empty bundle: every JWT-SVID of the trust domain is untrusted.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            authorities: BTreeMap::new(),
        }
    }

    /// The trust domain the keys belong to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Adds an authority; one with the same key ID is replaced.
    pub fn add_authority(&mut self, authority: JwtAuthority) {
        self.authorities.insert(authority.key_id.clone(), authority);
    }

    /// Removes the authority with this key ID; an absent one is ignored.
    pub fn remove_authority(&mut self, key_id: &str) {
        self.authorities.remove(key_id);
    }

    /// The authority with this key ID.
    pub fn authority(&self, key_id: &str) -> Option<&JwtAuthority> {
        self.authorities.get(key_id)
    }

    /// Every authority, ordered by key ID.
    pub fn authorities(&self) -> impl ExactSizeIterator<Item = &JwtAuthority> {
        self.authorities.values()
    }

    /// True when the bundle holds no key.
    pub fn is_empty(&self) -> bool {
        self.authorities.is_empty()
    }
}

/// The whole SPIFFE bundle of one trust domain: X.509 authorities, JWT authorities, and the
/// sequence number and refresh hint of the bundle document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    x509: X509Bundle,
    jwt: JwtBundle,
    sequence: Option<u64>,
    refresh_hint: Option<Duration>,
}

impl Bundle {
    /// An empty bundle for a trust domain.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            x509: X509Bundle::new(trust_domain.clone()),
            jwt: JwtBundle::new(trust_domain),
            sequence: None,
            refresh_hint: None,
        }
    }

    /// Joins an X.509 and a JWT bundle of the same trust domain.
    pub fn from_parts(x509: X509Bundle, jwt: JwtBundle) -> Result<Self, BundleError> {
        if x509.trust_domain != jwt.trust_domain {
            return Err(BundleError::TrustDomainMismatch {
                bundle: jwt.trust_domain.to_string(),
                expected: x509.trust_domain.to_string(),
            });
        }
        Ok(Self {
            x509,
            jwt,
            sequence: None,
            refresh_hint: None,
        })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        self.x509.trust_domain()
    }

    /// The X.509 authorities.
    pub fn x509(&self) -> &X509Bundle {
        &self.x509
    }

    /// The X.509 authorities, to change.
    pub fn x509_mut(&mut self) -> &mut X509Bundle {
        &mut self.x509
    }

    /// The JWT authorities.
    pub fn jwt(&self) -> &JwtBundle {
        &self.jwt
    }

    /// The JWT authorities, to change.
    pub fn jwt_mut(&mut self) -> &mut JwtBundle {
        &mut self.jwt
    }

    /// `spiffe_sequence`: increases whenever the content changes.
    pub fn sequence(&self) -> Option<u64> {
        self.sequence
    }

    /// Sets `spiffe_sequence`.
    pub fn set_sequence(&mut self, sequence: Option<u64>) {
        self.sequence = sequence;
    }

    /// `spiffe_refresh_hint`: how often consumers should fetch the bundle again.
    pub fn refresh_hint(&self) -> Option<Duration> {
        self.refresh_hint
    }

    /// Sets `spiffe_refresh_hint` (sent in whole seconds, rounded up).
    pub fn set_refresh_hint(&mut self, refresh_hint: Option<Duration>) {
        self.refresh_hint = refresh_hint;
    }
}

/// Bundles keyed by trust domain. Lookups never fall back to another trust domain's bundle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleSet {
    bundles: HashMap<TrustDomain, Bundle>,
}

impl BundleSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the bundle of its trust domain.
    pub fn insert(&mut self, bundle: Bundle) {
        self.bundles.insert(bundle.trust_domain().clone(), bundle);
    }

    /// Removes the bundle of a trust domain.
    pub fn remove(&mut self, trust_domain: &str) -> Option<Bundle> {
        self.bundles.remove(trust_domain)
    }

    /// The bundle of a trust domain, by name; no allocation.
    pub fn get(&self, trust_domain: &str) -> Option<&Bundle> {
        self.bundles.get(trust_domain)
    }

    /// The bundle of a trust domain, or an error that names it.
    pub fn require(&self, trust_domain: &str) -> Result<&Bundle, BundleError> {
        self.get(trust_domain)
            .ok_or_else(|| BundleError::NoBundle(trust_domain.to_owned()))
    }

    /// Every bundle, in no particular order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Bundle> {
        self.bundles.values()
    }

    /// The number of trust domains.
    pub fn len(&self) -> usize {
        self.bundles.len()
    }

    /// True when no bundle is held.
    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty()
    }
}

impl FromIterator<Bundle> for BundleSet {
    fn from_iter<I: IntoIterator<Item = Bundle>>(iter: I) -> Self {
        let mut set = Self::new();
        for bundle in iter {
            set.insert(bundle);
        }
        set
    }
}
