//! `[ca.upstream]`: loading an upstream CA (a certificate file and its key file) that signs
//! the server's intermediate CAs instead of a self-signed root.
//!
//! - `cert_file` holds the upstream CA certificate first, optionally followed by its chain
//!   toward a root, each certificate signed by the next.
//! - `key_file` holds the upstream CA's private key: PKCS#8 (`PRIVATE KEY`), SEC1
//!   (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`), unencrypted, and not readable by group
//!   or others.
//! - The bundle publishes one root: the last certificate of the file when it is self-signed,
//!   otherwise the upstream certificate itself (a trust anchor need not be self-signed; this
//!   keeps the bundle's trust to what the operator handed us rather than guessing a root we
//!   were not given). A self-signed root at the end of the chain is not sent with SVIDs:
//!   peers have it in the bundle.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_P521_SHA512_ASN1_SIGNING,
    EcdsaKeyPair, RsaKeyPair,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::{PemObject, SectionKind};
use sigil_spiffe::x509::{X509Authority, X509SvidError};
use sigil_spiffe::{PrivateKey, pem};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use super::authority::Upstream;

/// Why `[ca.upstream]` could not be loaded. Every message names the file at fault.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A file could not be read (missing, unreadable).
    #[error("ca.upstream: cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// `cert_file` holds no `CERTIFICATE` PEM block.
    #[error("ca.upstream cert_file {}: {reason}", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// What the PEM reader found.
        reason: pem::PemError,
    },
    /// A certificate of `cert_file` is not DER X.509.
    #[error("ca.upstream cert_file {}: certificate {index} is malformed", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Its place in the file, from 0.
        index: usize,
    },
    /// A certificate of the chain is not signed by the one after it.
    #[error(
        "ca.upstream cert_file {}: certificate {index} is not signed by certificate {}; \
         list the upstream CA first, then each issuer in order",
        path.display(), index + 1
    )]
    BrokenChain {
        /// The file.
        path: PathBuf,
        /// The certificate whose issuer does not follow it.
        index: usize,
    },
    /// A certificate of the chain has expired.
    #[error(
        "ca.upstream cert_file {}: certificate {index} expired at {not_after} (unix seconds)",
        path.display()
    )]
    Expired {
        /// The file.
        path: PathBuf,
        /// Its place in the file, from 0.
        index: usize,
        /// Its end of validity.
        not_after: i64,
    },
    /// A certificate of the chain is not valid yet.
    #[error(
        "ca.upstream cert_file {}: certificate {index} is not valid before {not_before} \
         (unix seconds)",
        path.display()
    )]
    NotYetValid {
        /// The file.
        path: PathBuf,
        /// Its place in the file, from 0.
        index: usize,
        /// Its start of validity.
        not_before: i64,
    },
    /// The upstream certificate cannot sign certificates.
    #[error("ca.upstream cert_file {}: not a CA certificate: {reason}", path.display())]
    NotCa {
        /// The file.
        path: PathBuf,
        /// Which rule it breaks.
        reason: X509SvidError,
    },
    /// The key file can be read by group or others.
    #[error(
        "ca.upstream key_file {} has mode {mode:o}; keys must not be readable by group or \
         others (want 0600)",
        path.display()
    )]
    InsecureKey {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file is encrypted.
    #[error(
        "ca.upstream key_file {}: encrypted keys are not supported; write it unencrypted \
         (mode 0600), e.g. `openssl pkcs8 -topk8 -nocrypt`",
        path.display()
    )]
    EncryptedKey {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key block.
    #[error(
        "ca.upstream key_file {}: no private key found: expected a PEM block PRIVATE KEY \
         (PKCS#8), EC PRIVATE KEY (SEC1) or RSA PRIVATE KEY (PKCS#1)",
        path.display()
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key block does not hold a key of a supported type.
    #[error(
        "ca.upstream key_file {}: cannot read the {kind} key: not an RSA (2048 to 8192 bits), \
         ECDSA P-256/P-384/P-521 or Ed25519 key",
        path.display()
    )]
    BadKey {
        /// The file.
        path: PathBuf,
        /// The PEM block type read.
        kind: &'static str,
    },
    /// The key is not the certificate's.
    #[error(
        "ca.upstream key_file {} does not hold the key of the certificate in {}",
        key.display(), cert.display()
    )]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// The certificate could not be made into a signing authority.
    #[error("ca.upstream cert_file {}: {source}", path.display())]
    Authority {
        /// The file.
        path: PathBuf,
        /// The error.
        source: X509SvidError,
    },
}

/// Loads the upstream CA of `cert_file` and `key_file`, checked at `now`.
pub fn load(cert_file: &Path, key_file: &Path, now: SystemTime) -> Result<Upstream, UpstreamError> {
    let chain = read_chain(cert_file, now)?;
    let key = read_key(key_file)?;

    // Publish the self-signed root that ends the file, and keep it out of the chain sent with
    // SVIDs; otherwise the upstream certificate itself is the trust anchor.
    let mut sent = chain;
    let root = match sent.last() {
        Some(last) if sent.len() > 1 && is_self_signed(last) => sent.pop(),
        _ => sent.first().cloned(),
    }
    .ok_or_else(|| UpstreamError::NoCertificate {
        path: cert_file.to_owned(),
        reason: pem::PemError::NoCertificates,
    })?;

    let authority = X509Authority::from_certificate(Arc::new(key), sent).map_err(|e| match e {
        X509SvidError::SignerMismatch => UpstreamError::KeyMismatch {
            key: key_file.to_owned(),
            cert: cert_file.to_owned(),
        },
        X509SvidError::SigningNotCa | X509SvidError::SigningNoKeyCertSign => UpstreamError::NotCa {
            path: cert_file.to_owned(),
            reason: e,
        },
        source => UpstreamError::Authority {
            path: cert_file.to_owned(),
            source,
        },
    })?;
    Ok(Upstream {
        authority: Arc::new(authority),
        root,
    })
}

/// Whether `cert` (a CA the journal resumed) fits the configured upstream: signed by the
/// upstream CA's key, or, without an upstream, self-signed.
pub fn fits(cert: &CertificateDer<'_>, upstream: Option<&Upstream>) -> bool {
    match upstream {
        None => is_self_signed(cert),
        Some(upstream) => match (
            X509Certificate::from_der(cert),
            X509Certificate::from_der(upstream.authority.certificate()),
        ) {
            (Ok(([], cert)), Ok(([], issuer))) => {
                cert.verify_signature(Some(issuer.public_key())).is_ok()
            }
            _ => false,
        },
    }
}

/// The certificates of `path`, in order, each valid at `now` and signed by the next.
fn read_chain(path: &Path, now: SystemTime) -> Result<Vec<CertificateDer<'static>>, UpstreamError> {
    let bytes = fs::read(path).map_err(|source| UpstreamError::Read {
        path: path.to_owned(),
        source,
    })?;
    let chain = pem::certificates(&bytes).map_err(|reason| UpstreamError::NoCertificate {
        path: path.to_owned(),
        reason,
    })?;
    let parsed = chain
        .iter()
        .enumerate()
        .map(|(index, der)| match X509Certificate::from_der(der) {
            Ok(([], cert)) => Ok(cert),
            _ => Err(UpstreamError::Malformed {
                path: path.to_owned(),
                index,
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    for (index, cert) in parsed.iter().enumerate() {
        let validity = cert.validity();
        if validity.not_after.timestamp() < now {
            return Err(UpstreamError::Expired {
                path: path.to_owned(),
                index,
                not_after: validity.not_after.timestamp(),
            });
        }
        if validity.not_before.timestamp() > now {
            return Err(UpstreamError::NotYetValid {
                path: path.to_owned(),
                index,
                not_before: validity.not_before.timestamp(),
            });
        }
    }
    for (index, pair) in parsed.windows(2).enumerate() {
        if pair[0]
            .verify_signature(Some(pair[1].public_key()))
            .is_err()
        {
            return Err(UpstreamError::BrokenChain {
                path: path.to_owned(),
                index,
            });
        }
    }
    Ok(chain)
}

fn is_self_signed(der: &CertificateDer<'_>) -> bool {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => cert.subject() == cert.issuer() && cert.verify_signature(None).is_ok(),
        _ => false,
    }
}

/// The private key of `path`: refused when group or others may read it, or when encrypted.
fn read_key(path: &Path) -> Result<PrivateKey, UpstreamError> {
    let read_error = |source| UpstreamError::Read {
        path: path.to_owned(),
        source,
    };
    let mode = fs::metadata(path).map_err(read_error)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(UpstreamError::InsecureKey {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    let bytes = Zeroizing::new(fs::read(path).map_err(read_error)?);
    let mut sections = <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes);
    let found = sections.find_map(|section| match section {
        Ok((kind @ (SectionKind::PrivateKey | SectionKind::EcPrivateKey), der)) => {
            Some((kind, Zeroizing::new(der)))
        }
        Ok((kind @ SectionKind::RsaPrivateKey, der)) => Some((kind, Zeroizing::new(der))),
        _ => None,
    });
    let Some((kind, der)) = found else {
        // The PEM reader skips block types it does not know, such as this one.
        let encrypted = bytes
            .windows(b"ENCRYPTED PRIVATE KEY".len())
            .any(|w| w == b"ENCRYPTED PRIVATE KEY")
            || bytes
                .windows(b"Proc-Type: 4,ENCRYPTED".len())
                .any(|w| w == b"Proc-Type: 4,ENCRYPTED");
        return Err(if encrypted {
            UpstreamError::EncryptedKey {
                path: path.to_owned(),
            }
        } else {
            UpstreamError::NoKey {
                path: path.to_owned(),
            }
        });
    };
    let (name, pkcs8) = match kind {
        SectionKind::EcPrivateKey => ("EC PRIVATE KEY", sec1_to_pkcs8(&der)),
        SectionKind::RsaPrivateKey => ("RSA PRIVATE KEY", pkcs1_to_pkcs8(&der)),
        _ => ("PRIVATE KEY", Some(der)),
    };
    let bad_key = || UpstreamError::BadKey {
        path: path.to_owned(),
        kind: name,
    };
    let pkcs8 = pkcs8.ok_or_else(bad_key)?;
    PrivateKey::from_pkcs8_der(&pkcs8).map_err(|_| bad_key())
}

/// A SEC1 (RFC 5915) EC key re-encoded as PKCS#8, trying each curve we sign with.
fn sec1_to_pkcs8(der: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    [
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &ECDSA_P384_SHA384_ASN1_SIGNING,
        &ECDSA_P521_SHA512_ASN1_SIGNING,
    ]
    .into_iter()
    .find_map(|algorithm| EcdsaKeyPair::from_private_key_der(algorithm, der).ok())
    .and_then(|pair| pair.to_pkcs8v1().ok())
    .map(|doc| Zeroizing::new(doc.as_ref().to_vec()))
}

/// A PKCS#1 RSA key re-encoded as PKCS#8.
fn pkcs1_to_pkcs8(der: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let pair = RsaKeyPair::from_der(der).ok()?;
    let doc = pair.as_der().ok()?;
    Some(Zeroizing::new(doc.as_ref().to_vec()))
}
