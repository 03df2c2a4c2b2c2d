//! The X.509-SVID a workload holds: SPIFFE ID, certificate chain (leaf first) and private key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::{PemObject, SectionKind};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::id::SpiffeId;
use crate::key::{KeyError, PrivateKey, PublicKey};
use crate::pem::{self, PemError};
use crate::x509::{X509SvidError, profile};

/// An X.509-SVID with its private key, checked against the SPIFFE profile: the leaf is a valid
/// SVID leaf, every other certificate a valid signing certificate, and the key is the leaf's.
///
/// Parsing does not look at the clock and does not verify the chain; use
/// [`verify_chain`](crate::x509::verify_chain) for that.
#[derive(Debug)]
pub struct X509Svid {
    spiffe_id: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKey,
    not_after: SystemTime,
    hint: Option<String>,
}

impl X509Svid {
    /// Checks a chain (leaf first) and its private key, e.g. a freshly issued SVID joined to
    /// the key the agent generated.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKey,
    ) -> Result<Self, X509SvidError> {
        let (spiffe_id, not_after) = check_chain(&chain, &key)?;
        Ok(Self {
            spiffe_id,
            chain,
            key,
            not_after,
            hint: None,
        })
    }

    /// Reads the Workload API form: `x509_svid` (concatenated DER certificates, leaf first)
    /// and `x509_svid_key` (unencrypted PKCS#8 DER) (checklist item 58).
    pub fn parse_from_der(chain_der: &[u8], key_der: &[u8]) -> Result<Self, X509SvidError> {
        let chain = split_der_chain(chain_der)?;
        let key =
            PrivateKey::from_pkcs8_der(key_der).map_err(|_| X509SvidError::PrivateKeyParse)?;
        Self::new(chain, key)
    }

    /// Reads certificates and a `PRIVATE KEY` (PKCS#8) block from one PEM blob, in any order.
    /// Other blocks (`EC PRIVATE KEY`, PKCS#1) are skipped, as go-spiffe does (§2.3).
    pub fn from_pem(pem: &[u8]) -> Result<Self, X509SvidError> {
        Self::from_pem_parts(pem, pem)
    }

    /// Reads the certificates from one PEM blob and the key from another (a `svid.pem` and a
    /// `svid.key` file). Either blob may also hold the other kind of block.
    pub fn from_pem_parts(certs_pem: &[u8], key_pem: &[u8]) -> Result<Self, X509SvidError> {
        let chain = pem::certificates(certs_pem).map_err(|error| match error {
            PemError::NoBlocks => X509SvidError::NoPemBlocks,
            PemError::NoCertificates => X509SvidError::NoCertificates,
            other => X509SvidError::MalformedPem(other.to_string()),
        })?;
        let key = key_from_pem(key_pem)?;
        Self::new(chain, key)
    }

    /// The SPIFFE ID of the leaf.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The chain, leaf first, then the intermediates.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        // `new` refuses an empty chain, so index 0 exists.
        &self.chain[0]
    }

    /// The private key of the leaf.
    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }

    /// When the leaf expires (its `notAfter`).
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The Workload API's `hint` for this SVID, an operator's label telling several apart;
    /// `None` when empty or not set.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Attaches a hint (the empty string clears it).
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        let hint = hint.into();
        self.hint = (!hint.is_empty()).then_some(hint);
        self
    }

    /// The chain as concatenated DER, the Workload API's `x509_svid` field.
    pub fn chain_der(&self) -> Vec<u8> {
        self.chain
            .iter()
            .flat_map(|c| c.as_ref().iter().copied())
            .collect()
    }

    /// The chain as consecutive `CERTIFICATE` PEM blocks (`svid.0.pem`).
    pub fn chain_pem(&self) -> String {
        pem::encode_certificates(&self.chain)
    }
}

/// Splits concatenated DER certificates. Empty input is an empty chain.
pub(crate) fn split_der_chain(
    mut der: &[u8],
) -> Result<Vec<CertificateDer<'static>>, X509SvidError> {
    let mut chain = Vec::new();
    while !der.is_empty() {
        let Ok((rest, _)) = X509Certificate::from_der(der) else {
            return Err(X509SvidError::CertificateParse { index: chain.len() });
        };
        let (cert, _) = der.split_at(der.len() - rest.len());
        chain.push(CertificateDer::from(cert.to_vec()));
        der = rest;
    }
    if chain.is_empty() {
        return Err(X509SvidError::EmptyChain);
    }
    Ok(chain)
}

/// The whole profile of an SVID chain plus the key match. Returns the ID and the leaf expiry.
fn check_chain(
    chain: &[CertificateDer<'_>],
    key: &PrivateKey,
) -> Result<(SpiffeId, SystemTime), X509SvidError> {
    let (leaf_der, rest) = chain.split_first().ok_or(X509SvidError::EmptyChain)?;
    let leaf = profile::parse_one(leaf_der, 0)?;
    let spiffe_id = profile::check_leaf(&leaf)?;
    for (i, der) in rest.iter().enumerate() {
        profile::check_signing(&profile::parse_one(der, i + 1)?)?;
    }
    let leaf_key = PublicKey::from_spki(leaf.public_key())
        .map_err(|e| X509SvidError::UnsupportedPublicKey(e.to_string()))?;
    if leaf_key != key.public_key() {
        return Err(X509SvidError::KeyMismatch);
    }
    Ok((
        spiffe_id,
        unix_to_system(leaf.validity().not_after.timestamp()),
    ))
}

fn key_from_pem(pem: &[u8]) -> Result<PrivateKey, X509SvidError> {
    let mut any_block = false;
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        let (kind, der) = item.map_err(|e| X509SvidError::MalformedPem(e.to_string()))?;
        // The block may be a private key: wipe the decoded bytes when done.
        let der = zeroize::Zeroizing::new(der);
        any_block = true;
        if kind == SectionKind::PrivateKey {
            return PrivateKey::from_pkcs8_der(&der).map_err(|e| match e {
                KeyError::InvalidPkcs8 => X509SvidError::PrivateKeyParse,
                other => X509SvidError::Key(other),
            });
        }
    }
    Err(if any_block {
        X509SvidError::NoPrivateKey
    } else {
        X509SvidError::NoPemBlocks
    })
}

pub(crate) fn unix_to_system(seconds: i64) -> SystemTime {
    if seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_convert_both_sides_of_the_epoch() {
        assert_eq!(unix_to_system(0), UNIX_EPOCH);
        assert_eq!(unix_to_system(90), UNIX_EPOCH + Duration::from_secs(90));
        assert_eq!(unix_to_system(-90), UNIX_EPOCH - Duration::from_secs(90));
    }

    #[test]
    fn der_chains_split_and_report_the_bad_index() {
        assert_eq!(split_der_chain(b"").unwrap_err(), X509SvidError::EmptyChain);
        assert_eq!(
            split_der_chain(b"\x01\x02").unwrap_err(),
            X509SvidError::CertificateParse { index: 0 }
        );
    }

    #[test]
    fn key_pem_errors_distinguish_no_blocks_from_no_key() {
        assert_eq!(
            key_from_pem(b"plain text").unwrap_err(),
            X509SvidError::NoPemBlocks
        );
        let cert_only = pem::encode("CERTIFICATE", b"\x30\x00");
        assert_eq!(
            key_from_pem(cert_only.as_bytes()).unwrap_err(),
            X509SvidError::NoPrivateKey
        );
        let key = PrivateKey::generate(crate::key::KeyType::EcP256).unwrap();
        let parsed = key_from_pem(key.to_pem().as_bytes()).unwrap();
        assert_eq!(parsed.public_key(), key.public_key());
    }
}
