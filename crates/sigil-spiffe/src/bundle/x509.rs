//! The binary and PEM encodings of X.509 bundles: concatenated DER (the Workload API's
//! `bundle` and `federated_bundles` fields, SPIFFE_Workload_API.md §5.2) and PEM
//! `CERTIFICATE` blocks (bundle files on disk).
//!
//! Every certificate is parsed with x509-parser on the way in, so a bundle read here holds only
//! whole certificates; duplicates are dropped, first occurrence kept (checklist §2.6).

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::X509Bundle;
use super::document::BundleDocumentError;
use crate::id::TrustDomain;
use crate::pem::{self, PemError};

impl X509Bundle {
    /// Reads concatenated DER certificates. Empty input is an empty bundle; bytes that do not
    /// form a whole certificate (including trailing garbage) are an error naming the offset.
    pub fn from_der(trust_domain: TrustDomain, der: &[u8]) -> Result<Self, BundleDocumentError> {
        let mut bundle = Self::new(trust_domain);
        let mut rest = der;
        while !rest.is_empty() {
            let offset = der.len() - rest.len();
            let (after, _) =
                X509Certificate::from_der(rest).map_err(|_| BundleDocumentError::Certificate {
                    at: format!("DER bundle at byte {offset}"),
                    reason: "not a DER X.509 certificate".into(),
                })?;
            let (cert, after_cert) = rest.split_at(rest.len() - after.len());
            bundle.add_authority(CertificateDer::from(cert.to_vec()));
            rest = after_cert;
        }
        Ok(bundle)
    }

    /// The authorities as concatenated DER.
    pub fn to_der(&self) -> Vec<u8> {
        self.authorities()
            .iter()
            .flat_map(|cert| cert.as_ref().iter().copied())
            .collect()
    }

    /// Reads PEM `CERTIFICATE` blocks. Empty (or all-whitespace) input is an empty bundle;
    /// input without PEM blocks is "no PEM blocks found"; a block that is not a certificate's
    /// DER is "cannot parse certificate". Blocks of other types are skipped.
    pub fn from_pem(trust_domain: TrustDomain, pem: &[u8]) -> Result<Self, BundleDocumentError> {
        if pem.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::new(trust_domain));
        }
        let certs = pem::certificates(pem).map_err(|e| match e {
            PemError::NoBlocks => BundleDocumentError::NoPemBlocks,
            PemError::NoCertificates => BundleDocumentError::NoPemCertificates,
            PemError::Malformed(reason) => BundleDocumentError::MalformedPem(reason),
        })?;
        let mut bundle = Self::new(trust_domain);
        for (i, cert) in certs.into_iter().enumerate() {
            match X509Certificate::from_der(cert.as_ref()) {
                Ok(([], _)) => bundle.add_authority(cert),
                _ => {
                    return Err(BundleDocumentError::Certificate {
                        at: format!("PEM certificate {i}"),
                        reason: "not a DER X.509 certificate".into(),
                    });
                }
            }
        }
        Ok(bundle)
    }

    /// The authorities as PEM `CERTIFICATE` blocks.
    pub fn to_pem(&self) -> String {
        pem::encode_certificates(self.authorities())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::new("example.org").unwrap()
    }

    fn ca() -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn der_splits_concatenated_certificates_and_deduplicates() {
        let (a, b) = (ca(), ca());
        let der = [a.as_ref(), b.as_ref(), a.as_ref()].concat();
        let bundle = X509Bundle::from_der(td(), &der).unwrap();
        assert_eq!(bundle.authorities(), &[a.clone(), b.clone()]);
        assert_eq!(bundle.to_der(), [a.as_ref(), b.as_ref()].concat());
        assert!(X509Bundle::from_der(td(), &[]).unwrap().is_empty());
    }

    #[test]
    fn der_rejects_garbage_and_names_the_offset() {
        let a = ca();
        let der = [a.as_ref(), b"junk"].concat();
        let err = X509Bundle::from_der(td(), &der).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "DER bundle at byte {}: cannot parse certificate: not a DER X.509 certificate",
                a.len()
            )
        );
        // A truncated certificate is not split into something smaller.
        assert!(X509Bundle::from_der(td(), &a[..a.len() - 1]).is_err());
    }

    #[test]
    fn pem_cases_of_go_spiffe() {
        let (a, b) = (ca(), ca());
        let pem = X509Bundle::from_authorities(td(), [a.clone(), b.clone()]).to_pem();
        let bundle = X509Bundle::from_pem(td(), pem.as_bytes()).unwrap();
        assert_eq!(bundle.authorities().len(), 2);
        assert!(X509Bundle::from_pem(td(), b"").unwrap().is_empty());
        assert!(X509Bundle::from_pem(td(), b" \n").unwrap().is_empty());
        assert_eq!(
            X509Bundle::from_pem(td(), b"not pem").unwrap_err(),
            BundleDocumentError::NoPemBlocks
        );
        let corrupt = pem::encode("CERTIFICATE", b"\x30\x03\x02\x01\x01");
        let err = X509Bundle::from_pem(td(), corrupt.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("cannot parse certificate"),
            "{err}"
        );
    }
}
