//! The X.509-SVID certificate profile (X509-SVID.md §2-§4, checklist items 11-18): the one set
//! of rules run on certificates others give us and on every certificate Sigil produces.
//!
//! Decisions beyond go-spiffe (which the checklist asks us to improve on, §2.4):
//! - the leaf's key usage extension must be critical (X509-SVID.md §4.3: MUST);
//! - a leaf's EKU, when present, must hold both serverAuth and clientAuth (§4.4: MUST). This is
//!   enforced when parsing too, not only when issuing: SPIRE and every conformant issuer set
//!   both, and a leaf that lacks one would fail half of mutual TLS anyway;
//! - a certificate with an empty subject must mark its SAN extension critical (RFC 5280
//!   §4.1.2.6), for signing certificates too.
//!
//! For signing certificates (intermediates in a chain, CA certificates we create) the key usage
//! criticality is not enforced: upstream CAs outside the trust domain are only bound by
//! RFC 5280, where it is a SHOULD. Every CA certificate Sigil creates marks it critical.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::id::SpiffeId;
use crate::x509::X509SvidError;

/// Checks one DER certificate against the leaf X.509-SVID profile and returns its SPIFFE ID.
pub fn check_leaf_der(der: &[u8]) -> Result<SpiffeId, X509SvidError> {
    let cert = parse_one(der, 0)?;
    check_leaf(&cert)
}

/// Checks one DER certificate against the signing-certificate profile and returns its SPIFFE
/// ID, if it has one.
pub fn check_signing_der(der: &[u8]) -> Result<Option<SpiffeId>, X509SvidError> {
    let cert = parse_one(der, 0)?;
    check_signing(&cert)
}

/// Parses exactly one DER certificate; `index` names its place in a chain for the error.
pub(crate) fn parse_one(der: &[u8], index: usize) -> Result<X509Certificate<'_>, X509SvidError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        _ => Err(X509SvidError::CertificateParse { index }),
    }
}

/// The leaf profile, in go-spiffe's order where it has one: the SPIFFE ID first, then the
/// basic constraints, then the key usages.
pub(crate) fn check_leaf(cert: &X509Certificate<'_>) -> Result<SpiffeId, X509SvidError> {
    // X509-SVID.md §2: exactly one URI SAN, a SPIFFE ID with a non-root path.
    let uri = single_uri_san(cert)?.ok_or(X509SvidError::NoUriSan)?;
    let id: SpiffeId = uri.parse().map_err(X509SvidError::InvalidSpiffeId)?;
    if id.is_root() {
        return Err(X509SvidError::LeafRootId);
    }
    check_empty_subject(cert)?;

    // §4.1: basic constraints present with cA=false.
    let bc = cert.basic_constraints().map_err(malformed)?;
    match bc {
        None => return Err(X509SvidError::LeafNoBasicConstraints),
        Some(bc) if bc.value.ca => return Err(X509SvidError::LeafIsCa),
        Some(_) => {}
    }

    // §4.3: key usage present and critical, digitalSignature, never keyCertSign or cRLSign.
    let ku = cert
        .key_usage()
        .map_err(malformed)?
        .ok_or(X509SvidError::LeafNoKeyUsage)?;
    if !ku.critical {
        return Err(X509SvidError::LeafKeyUsageNotCritical);
    }
    if ku.value.key_cert_sign() {
        return Err(X509SvidError::LeafKeyCertSign);
    }
    if ku.value.crl_sign() {
        return Err(X509SvidError::LeafCrlSign);
    }
    if !ku.value.digital_signature() {
        return Err(X509SvidError::LeafNoDigitalSignature);
    }

    // §4.4: when an EKU is present it must allow both ends of mutual TLS.
    if let Some(eku) = cert.extended_key_usage().map_err(malformed)?
        && !(eku.value.server_auth && eku.value.client_auth)
    {
        return Err(X509SvidError::LeafExtendedKeyUsage);
    }
    Ok(id)
}

/// The signing-certificate profile: cA=true, keyCertSign, and an ID without a path if it has
/// a SPIFFE ID at all (X509-SVID.md §3, §4.1, §4.3).
pub(crate) fn check_signing(cert: &X509Certificate<'_>) -> Result<Option<SpiffeId>, X509SvidError> {
    let bc = cert.basic_constraints().map_err(malformed)?;
    if !bc.is_some_and(|bc| bc.value.ca) {
        return Err(X509SvidError::SigningNotCa);
    }
    let ku = cert.key_usage().map_err(malformed)?;
    if !ku.is_some_and(|ku| ku.value.key_cert_sign()) {
        return Err(X509SvidError::SigningNoKeyCertSign);
    }
    check_empty_subject(cert)?;
    // A CA of another PKI (an upstream authority) may carry a non-SPIFFE URI; only a SPIFFE ID
    // is held to the no-path rule. More than one URI SAN is refused as for any SVID (§2).
    let Some(uri) = single_uri_san(cert)? else {
        return Ok(None);
    };
    if !uri.starts_with("spiffe://") {
        return Ok(None);
    }
    let id: SpiffeId = uri.parse().map_err(X509SvidError::InvalidSpiffeId)?;
    if !id.is_root() {
        return Err(X509SvidError::SigningIdHasPath);
    }
    Ok(Some(id))
}

/// The only URI SAN, if any; more than one is an error whatever their schemes (§2).
fn single_uri_san<'a>(cert: &'a X509Certificate<'_>) -> Result<Option<&'a str>, X509SvidError> {
    let Some(san) = cert.subject_alternative_name().map_err(malformed)? else {
        return Ok(None);
    };
    let mut uris = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
    let first = uris.next();
    if uris.next().is_some() {
        return Err(X509SvidError::MultipleUriSans);
    }
    Ok(first)
}

/// RFC 5280 §4.1.2.6: with an empty subject, the identity lives in a critical SAN.
fn check_empty_subject(cert: &X509Certificate<'_>) -> Result<(), X509SvidError> {
    if cert.subject().iter().next().is_some() {
        return Ok(());
    }
    match cert.subject_alternative_name().map_err(malformed)? {
        Some(san) if san.critical => Ok(()),
        _ => Err(X509SvidError::EmptySubjectSanNotCritical),
    }
}

fn malformed(error: x509_parser::error::X509Error) -> X509SvidError {
    X509SvidError::MalformedExtension(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_certificate() {
        assert_eq!(
            check_leaf_der(b"\x30\x03\x02\x01\x01").unwrap_err(),
            X509SvidError::CertificateParse { index: 0 }
        );
        assert_eq!(
            check_signing_der(b"").unwrap_err(),
            X509SvidError::CertificateParse { index: 0 }
        );
    }
}
