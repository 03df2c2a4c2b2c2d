//! X.509-SVID chain verification against the bundle of the leaf's own trust domain
//! (X509-SVID.md §5, checklist items 10, 17, 18, 42 and §2.4).
//!
//! Order: the leaf's SPIFFE profile first (a CA leaf or a leaf without a SPIFFE ID is refused
//! before any chain building), then the signing profile of every other certificate, then the
//! bundle of the leaf's trust domain only, then RFC 5280 path validation by rustls-webpki with
//! the bundle's authorities as trust anchors and the rest of the chain as intermediates. No DNS
//! name is checked: SPIFFE authenticates the ID, and the caller authorizes it.

use std::time::SystemTime;

use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::bundle::{BundleSet, X509Bundle};
use crate::id::SpiffeId;
use crate::x509::svid::unix_to_system;
use crate::x509::{X509SvidError, profile};

/// Which end of TLS the peer's SVID authenticates. SVID leaves carry both EKUs when they carry
/// any (X509-SVID.md §4.4), so both choices accept a conforming SVID; the choice picks the EKU
/// that rustls-webpki requires if present.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SvidUsage {
    /// The peer is a TLS server (a client verifying the server's chain).
    ServerAuth,
    /// The peer is a TLS client (a server verifying the client's chain).
    ClientAuth,
}

impl SvidUsage {
    fn key_usage(self) -> KeyUsage {
        match self {
            Self::ServerAuth => KeyUsage::server_auth(),
            Self::ClientAuth => KeyUsage::client_auth(),
        }
    }
}

/// A chain that verified: the peer's SPIFFE ID and its leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedChain<'a> {
    spiffe_id: SpiffeId,
    leaf: &'a CertificateDer<'a>,
    not_after: SystemTime,
}

impl<'a> VerifiedChain<'a> {
    /// The SPIFFE ID of the leaf, now authenticated.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &'a CertificateDer<'a> {
        self.leaf
    }

    /// When the leaf expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Takes the SPIFFE ID out.
    pub fn into_spiffe_id(self) -> SpiffeId {
        self.spiffe_id
    }
}

/// Verifies an X.509-SVID chain (leaf first, then intermediates, as TLS presents it) against
/// the bundle of the leaf's trust domain in `bundles`, at `now`.
///
/// There is no fallback to any other bundle: no bundle for the trust domain is
/// [`X509SvidError::NoBundle`], and an empty one is [`X509SvidError::EmptyBundle`].
pub fn verify_chain<'a>(
    chain: &'a [CertificateDer<'a>],
    bundles: &BundleSet,
    now: UnixTime,
    usage: SvidUsage,
) -> Result<VerifiedChain<'a>, X509SvidError> {
    let (leaf, intermediates) = chain.split_first().ok_or(X509SvidError::EmptyChain)?;
    verify_end_entity(leaf, intermediates, bundles, now, usage)
}

/// [`verify_chain`] with the leaf and the intermediates apart, as rustls's
/// `ServerCertVerifier` and `ClientCertVerifier` receive them (no copy of the chain needed).
pub fn verify_end_entity<'a>(
    end_entity: &'a CertificateDer<'a>,
    intermediates: &'a [CertificateDer<'a>],
    bundles: &BundleSet,
    now: UnixTime,
    usage: SvidUsage,
) -> Result<VerifiedChain<'a>, X509SvidError> {
    let checked = check_profiles(end_entity, intermediates)?;
    let trust_domain = checked.spiffe_id.trust_domain_name();
    let bundle = bundles
        .get(trust_domain)
        .ok_or_else(|| X509SvidError::NoBundle(trust_domain.to_owned()))?;
    build_path(
        end_entity,
        intermediates,
        checked,
        bundle.x509(),
        now,
        usage,
    )
}

/// Like [`verify_chain`], with a single bundle: the leaf must belong to the bundle's trust
/// domain (for example an `https_spiffe` bundle endpoint's own trust domain).
pub fn verify_chain_with_bundle<'a>(
    chain: &'a [CertificateDer<'a>],
    bundle: &X509Bundle,
    now: UnixTime,
    usage: SvidUsage,
) -> Result<VerifiedChain<'a>, X509SvidError> {
    let (leaf, intermediates) = chain.split_first().ok_or(X509SvidError::EmptyChain)?;
    let checked = check_profiles(leaf, intermediates)?;
    if checked.spiffe_id.trust_domain_name() != bundle.trust_domain().as_str() {
        return Err(X509SvidError::NoBundle(
            checked.spiffe_id.trust_domain_name().to_owned(),
        ));
    }
    build_path(leaf, intermediates, checked, bundle, now, usage)
}

struct Checked {
    spiffe_id: SpiffeId,
    not_after: SystemTime,
}

fn check_profiles(
    leaf_der: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<Checked, X509SvidError> {
    let leaf = profile::parse_one(leaf_der, 0)?;
    let spiffe_id = profile::check_leaf(&leaf)?;
    for (i, der) in intermediates.iter().enumerate() {
        profile::check_signing(&profile::parse_one(der, i + 1)?)?;
    }
    Ok(Checked {
        spiffe_id,
        not_after: unix_to_system(leaf.validity().not_after.timestamp()),
    })
}

fn build_path<'a>(
    leaf: &'a CertificateDer<'a>,
    intermediates: &'a [CertificateDer<'a>],
    checked: Checked,
    bundle: &X509Bundle,
    now: UnixTime,
    usage: SvidUsage,
) -> Result<VerifiedChain<'a>, X509SvidError> {
    let anchors = bundle.trust_anchors();
    if anchors.is_empty() {
        // Checklist item 37: a bundle without usable authorities trusts nothing.
        return Err(X509SvidError::EmptyBundle(
            bundle.trust_domain().to_string(),
        ));
    }
    let end_entity = EndEntityCert::try_from(leaf).map_err(X509SvidError::Chain)?;
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            anchors,
            intermediates,
            now,
            usage.key_usage(),
            None,
            None,
        )
        .map_err(X509SvidError::Chain)?;
    Ok(VerifiedChain {
        spiffe_id: checked.spiffe_id,
        leaf,
        not_after: checked.not_after,
    })
}
