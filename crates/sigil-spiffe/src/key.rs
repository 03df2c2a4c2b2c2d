//! Private and public keys: generation, PKCS#8 and SubjectPublicKeyInfo encodings, all on
//! aws-lc-rs.
//!
//! A [`PrivateKey`] keeps its PKCS#8 bytes (zeroized on drop, never printed) beside the parsed
//! aws-lc key pair, so that signing does not re-parse and writing it out does not re-encode.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_P521_SHA512_ASN1_SIGNING,
    EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair as _, RsaKeyPair,
};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;
use zeroize::Zeroizing;

/// Why a key could not be made, read or used.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A key-type name that Sigil does not know.
    #[error("unknown key type {0:?}: expected ec-p256, ec-p384 or rsa-2048")]
    UnknownKeyType(String),
    /// The bytes are not an unencrypted PKCS#8 private key of a supported type.
    #[error(
        "cannot parse DER encoded private key: not unencrypted PKCS#8 for RSA, ECDSA or Ed25519"
    )]
    InvalidPkcs8,
    /// PEM input without a `PRIVATE KEY` block.
    #[error("no private key found: expected a PEM block of type PRIVATE KEY (PKCS#8)")]
    NoPrivateKey,
    /// Key generation failed inside the crypto library.
    #[error("key generation failed")]
    Generation,
    /// The SubjectPublicKeyInfo could not be read, or holds an unsupported key.
    #[error("unsupported or malformed public key: {0}")]
    InvalidPublicKey(&'static str),
    /// The key cannot produce the requested kind of signature.
    #[error("a {key} key cannot sign with {algorithm}")]
    WrongAlgorithm {
        /// The key's family.
        key: &'static str,
        /// The algorithm asked for.
        algorithm: &'static str,
    },
    /// The crypto library refused to sign.
    #[error("signing failed")]
    Signing,
}

/// The key types a Sigil CA or agent generates (the `key_type` config values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// ECDSA on NIST P-256 (`ec-p256`), the default.
    EcP256,
    /// ECDSA on NIST P-384 (`ec-p384`).
    EcP384,
    /// RSA with a 2048-bit modulus (`rsa-2048`).
    Rsa2048,
}

impl KeyType {
    /// The config name, e.g. `ec-p256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcP256 => "ec-p256",
            Self::EcP384 => "ec-p384",
            Self::Rsa2048 => "rsa-2048",
        }
    }
}

impl FromStr for KeyType {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ec-p256" => Ok(Self::EcP256),
            "ec-p384" => Ok(Self::EcP384),
            "rsa-2048" => Ok(Self::Rsa2048),
            other => Err(KeyError::UnknownKeyType(other.to_owned())),
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An elliptic curve for ECDSA keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EcCurve {
    /// NIST P-256 (`crv` = `P-256`).
    P256,
    /// NIST P-384 (`crv` = `P-384`).
    P384,
    /// NIST P-521 (`crv` = `P-521`).
    P521,
}

impl EcCurve {
    /// The JWK `crv` name.
    pub fn jwk_name(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::P521 => "P-521",
        }
    }

    /// Reads a JWK `crv` name.
    pub fn from_jwk_name(name: &str) -> Option<Self> {
        match name {
            "P-256" => Some(Self::P256),
            "P-384" => Some(Self::P384),
            "P-521" => Some(Self::P521),
            _ => None,
        }
    }

    /// Bytes in one field element (one coordinate, or half a fixed-size signature).
    pub fn coordinate_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
            Self::P521 => 66,
        }
    }

    fn asn1_signing(self) -> &'static EcdsaSigningAlgorithm {
        match self {
            Self::P256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
            Self::P384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
            Self::P521 => &ECDSA_P521_SHA512_ASN1_SIGNING,
        }
    }

    fn from_oid(oid: &x509_parser::der_parser::oid::Oid<'_>) -> Option<Self> {
        use x509_parser::oid_registry::{OID_EC_P256, OID_NIST_EC_P384, OID_NIST_EC_P521};
        if *oid == OID_EC_P256 {
            Some(Self::P256)
        } else if *oid == OID_NIST_EC_P384 {
            Some(Self::P384)
        } else if *oid == OID_NIST_EC_P521 {
            Some(Self::P521)
        } else {
            None
        }
    }
}

/// A private key held in memory: its PKCS#8 encoding and the parsed key pair.
///
/// `Debug` prints only the algorithm; the PKCS#8 bytes are zeroized when the key is dropped.
pub struct PrivateKey {
    pkcs8: Zeroizing<Vec<u8>>,
    pair: KeyPair,
}

/// The parsed key pair. Crate-visible so that signers (JWT, X.509) can reach the primitive.
pub(crate) enum KeyPair {
    Ec(EcdsaKeyPair, EcCurve),
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl PrivateKey {
    /// Generates a fresh key of `key_type`.
    pub fn generate(key_type: KeyType) -> Result<Self, KeyError> {
        let pkcs8 = match key_type {
            KeyType::EcP256 | KeyType::EcP384 => {
                let curve = if key_type == KeyType::EcP256 {
                    EcCurve::P256
                } else {
                    EcCurve::P384
                };
                let doc = EcdsaKeyPair::generate_pkcs8(curve.asn1_signing(), &SystemRandom::new())
                    .map_err(|_| KeyError::Generation)?;
                Zeroizing::new(doc.as_ref().to_vec())
            }
            KeyType::Rsa2048 => {
                let pair =
                    RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generation)?;
                let der = pair.as_der().map_err(|_| KeyError::Generation)?;
                Zeroizing::new(der.as_ref().to_vec())
            }
        };
        Self::from_pkcs8_der(&pkcs8)
    }

    /// Reads an unencrypted PKCS#8 private key (RSA, ECDSA P-256/P-384/P-521, or Ed25519).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair = if let Some((pair, curve)) = [EcCurve::P256, EcCurve::P384, EcCurve::P521]
            .into_iter()
            .find_map(|c| {
                EcdsaKeyPair::from_pkcs8(c.asn1_signing(), der)
                    .ok()
                    .map(|p| (p, c))
            }) {
            KeyPair::Ec(pair, curve)
        } else if let Ok(pair) = RsaKeyPair::from_pkcs8(der) {
            KeyPair::Rsa(pair)
        } else if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            KeyPair::Ed25519(pair)
        } else {
            return Err(KeyError::InvalidPkcs8);
        };
        Ok(Self {
            pkcs8: Zeroizing::new(der.to_vec()),
            pair,
        })
    }

    /// Reads the first `PRIVATE KEY` (PKCS#8) PEM block. Other PEM blocks, such as
    /// certificates or `EC PRIVATE KEY`, are skipped, as go-spiffe does.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|_| KeyError::NoPrivateKey)?;
        Self::from_pkcs8_der(der.secret_pkcs8_der())
    }

    /// The unencrypted PKCS#8 DER encoding (the Workload API's `x509_svid_key`).
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The PKCS#8 key as a `PRIVATE KEY` PEM block.
    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(crate::pem::encode("PRIVATE KEY", &self.pkcs8))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        match &self.pair {
            KeyPair::Ec(pair, curve) => PublicKey::Ec {
                curve: *curve,
                point: pair.public_key().as_ref().into(),
            },
            KeyPair::Rsa(pair) => {
                let public = pair.public_key();
                PublicKey::Rsa {
                    n: strip_leading_zeros(public.modulus().big_endian_without_leading_zero())
                        .into(),
                    e: strip_leading_zeros(public.exponent().big_endian_without_leading_zero())
                        .into(),
                }
            }
            KeyPair::Ed25519(pair) => PublicKey::Ed25519(pair.public_key().as_ref().into()),
        }
    }

    /// The key's family, for messages: `EC P-256`, `RSA`, `Ed25519`.
    pub fn family(&self) -> &'static str {
        match &self.pair {
            KeyPair::Ec(_, EcCurve::P256) => "EC P-256",
            KeyPair::Ec(_, EcCurve::P384) => "EC P-384",
            KeyPair::Ec(_, EcCurve::P521) => "EC P-521",
            KeyPair::Rsa(_) => "RSA",
            KeyPair::Ed25519(_) => "Ed25519",
        }
    }

    pub(crate) fn pair(&self) -> &KeyPair {
        &self.pair
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, <redacted>)", self.family())
    }
}

/// A public key in the forms SPIFFE needs: SPKI from certificates, JWK parameters in bundles.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum PublicKey {
    /// An ECDSA key: the uncompressed point `04 || x || y`.
    Ec {
        /// The curve.
        curve: EcCurve,
        /// The uncompressed SEC1 point.
        point: Box<[u8]>,
    },
    /// An RSA key: big-endian modulus and exponent without leading zeros.
    Rsa {
        /// The modulus.
        n: Box<[u8]>,
        /// The public exponent.
        e: Box<[u8]>,
    },
    /// An Ed25519 key (valid in X.509-SVIDs; never for JWT-SVIDs).
    Ed25519(Box<[u8]>),
}

impl PublicKey {
    /// Reads a DER SubjectPublicKeyInfo, as found in a certificate.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|_| KeyError::InvalidPublicKey("not a DER SubjectPublicKeyInfo"))?;
        if !rest.is_empty() {
            return Err(KeyError::InvalidPublicKey("trailing bytes after the key"));
        }
        Self::from_spki(&spki)
    }

    pub(crate) fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, KeyError> {
        use x509_parser::public_key::PublicKey as Parsed;
        match spki.parsed() {
            Ok(Parsed::EC(point)) => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .and_then(|oid| EcCurve::from_oid(&oid))
                    .ok_or(KeyError::InvalidPublicKey("unsupported elliptic curve"))?;
                let point = point.data();
                if point.len() != 1 + 2 * curve.coordinate_len() || point[0] != 4 {
                    return Err(KeyError::InvalidPublicKey("EC point is not uncompressed"));
                }
                Ok(Self::Ec {
                    curve,
                    point: point.into(),
                })
            }
            Ok(Parsed::RSA(rsa)) => Ok(Self::Rsa {
                n: strip_leading_zeros(rsa.modulus).into(),
                e: strip_leading_zeros(rsa.exponent).into(),
            }),
            Ok(Parsed::Unknown(raw))
                if spki.algorithm.algorithm == x509_parser::oid_registry::OID_SIG_ED25519 =>
            {
                if raw.len() != 32 {
                    return Err(KeyError::InvalidPublicKey("Ed25519 key is not 32 bytes"));
                }
                Ok(Self::Ed25519(raw.into()))
            }
            _ => Err(KeyError::InvalidPublicKey(
                "only RSA, ECDSA and Ed25519 keys are supported",
            )),
        }
    }

    /// The key's family, for messages.
    pub fn family(&self) -> &'static str {
        match self {
            Self::Ec {
                curve: EcCurve::P256,
                ..
            } => "EC P-256",
            Self::Ec {
                curve: EcCurve::P384,
                ..
            } => "EC P-384",
            Self::Ec {
                curve: EcCurve::P521,
                ..
            } => "EC P-521",
            Self::Rsa { .. } => "RSA",
            Self::Ed25519(_) => "Ed25519",
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.family())
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_types_round_trip_through_their_names() {
        for key_type in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
            assert_eq!(key_type.as_str().parse::<KeyType>().unwrap(), key_type);
        }
        assert_eq!(
            "ec-p521".parse::<KeyType>().unwrap_err().to_string(),
            "unknown key type \"ec-p521\": expected ec-p256, ec-p384 or rsa-2048"
        );
    }

    #[test]
    fn generated_keys_reload_from_pkcs8_and_pem() {
        for key_type in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
            let key = PrivateKey::generate(key_type).unwrap();
            let again = PrivateKey::from_pkcs8_der(key.pkcs8_der()).unwrap();
            assert_eq!(key.public_key(), again.public_key());
            let from_pem = PrivateKey::from_pem(key.to_pem().as_bytes()).unwrap();
            assert_eq!(key.public_key(), from_pem.public_key());
        }
    }

    #[test]
    fn debug_never_shows_key_material() {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        assert_eq!(format!("{key:?}"), "PrivateKey(EC P-256, <redacted>)");
    }

    #[test]
    fn garbage_is_not_a_key() {
        assert_eq!(
            PrivateKey::from_pkcs8_der(b"not a key").unwrap_err(),
            KeyError::InvalidPkcs8
        );
        assert_eq!(
            PrivateKey::from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .unwrap_err(),
            KeyError::NoPrivateKey
        );
        assert!(PublicKey::from_spki_der(b"\x30\x00").is_err());
    }
}
