//! PEM: reading certificate blocks and writing any DER as a PEM block (RFC 7468).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::{PemObject, SectionKind};

/// Why PEM input could not be read.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// The input holds no PEM block at all.
    #[error("no PEM blocks found")]
    NoBlocks,
    /// The input has PEM blocks, but none of type `CERTIFICATE`.
    #[error("no certificates found: expected PEM blocks of type CERTIFICATE")]
    NoCertificates,
    /// A block is malformed (bad base64, a missing end line).
    #[error("malformed PEM: {0}")]
    Malformed(String),
}

/// Reads every `CERTIFICATE` block in order. Blocks of other types are skipped, but input with
/// PEM blocks and no certificate is an error, and so is input with no PEM block at all.
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let mut certs = Vec::new();
    let mut any_block = false;
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        let (kind, der) = item.map_err(|e| PemError::Malformed(e.to_string()))?;
        any_block = true;
        if kind == SectionKind::Certificate {
            certs.push(CertificateDer::from(der));
        }
    }
    match (any_block, certs.is_empty()) {
        (false, _) => Err(PemError::NoBlocks),
        (true, true) => Err(PemError::NoCertificates),
        (true, false) => Ok(certs),
    }
}

/// Writes one PEM block with 64-character lines.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// Writes certificates as consecutive `CERTIFICATE` blocks.
pub fn encode_certificates<'a>(certs: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> String {
    certs
        .into_iter()
        .map(|cert| encode("CERTIFICATE", cert.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x01];
        let pem = encode_certificates([&CertificateDer::from(der.clone())]);
        assert_eq!(certificates(pem.as_bytes()).unwrap()[0].as_ref(), &der[..]);
        assert_eq!(certificates(b"hello").unwrap_err(), PemError::NoBlocks);
        assert_eq!(certificates(b"").unwrap_err(), PemError::NoBlocks);
        let key = encode("PRIVATE KEY", &der);
        assert_eq!(
            certificates(key.as_bytes()).unwrap_err(),
            PemError::NoCertificates
        );
        let long = encode("CERTIFICATE", &[7u8; 200]);
        assert!(long.lines().all(|l| l.len() <= 64));
    }
}
