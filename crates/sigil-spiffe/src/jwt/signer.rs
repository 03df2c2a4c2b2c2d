//! Signing JWT-SVIDs through a trait, so that keys can live outside process memory (a KMS, a
//! TPM) as well as in a [`PrivateKey`].

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::EcdsaKeyPair;

use super::{Algorithm, JwtError};
use crate::key::{KeyPair, PrivateKey, PublicKey};

/// Something that signs JWS signing inputs with one key.
///
/// `sign` receives the ASCII bytes `base64url(header) "." base64url(claims)` and returns the
/// raw JWS signature: for ES256/ES384/ES512 the fixed-width `r || s` (RFC 7518 §3.4), not
/// ASN.1 DER; for RS*/PS* the RSA signature as long as the modulus. A backend whose key store
/// returns DER ECDSA signatures must convert them; [`mint`](super::mint) refuses an ECDSA
/// signature of the wrong length.
pub trait JwtSigner: Send + Sync {
    /// The key ID written into the token header (`kid`); the bundle publishes the public key
    /// under the same ID.
    fn key_id(&self) -> &str;

    /// The algorithm written into the header (`alg`); it must match the key.
    fn algorithm(&self) -> Algorithm;

    /// Signs `message` and returns the raw JWS signature.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, JwtError>;
}

/// A [`JwtSigner`] over a [`PrivateKey`] held in memory.
///
/// `Debug` shows the key ID and algorithm only.
pub struct PrivateKeySigner {
    key_id: String,
    algorithm: Algorithm,
    key: PrivateKey,
    /// The ECDSA key again, parsed for fixed-width `r || s` signatures: the `PrivateKey`'s own
    /// pair produces ASN.1 signatures for X.509.
    fixed_ecdsa: Option<EcdsaKeyPair>,
    rng: SystemRandom,
}

impl PrivateKeySigner {
    /// A signer for `key` under `key_id` with `algorithm`. The key must suit the algorithm:
    /// ES256, ES384 and ES512 need an EC key on P-256, P-384 and P-521 respectively; RS* and
    /// PS* need an RSA key of at least 2048 bits. Ed25519 keys cannot sign JWT-SVIDs.
    pub fn new(
        key_id: impl Into<String>,
        key: PrivateKey,
        algorithm: Algorithm,
    ) -> Result<Self, JwtError> {
        let key_id = key_id.into();
        if key_id.is_empty() {
            return Err(JwtError::EmptyKeyId);
        }
        if !algorithm.accepts_key(&key.public_key()) {
            return Err(JwtError::KeyMismatch {
                key: key.family(),
                algorithm,
            });
        }
        let fixed_ecdsa = match (key.pair(), algorithm.ecdsa_signing()) {
            (KeyPair::Ec(..), Some(signing)) => Some(
                EcdsaKeyPair::from_pkcs8(signing, key.pkcs8_der()).map_err(|_| {
                    JwtError::KeyMismatch {
                        key: key.family(),
                        algorithm,
                    }
                })?,
            ),
            (KeyPair::Rsa(pair), None) => {
                let bits = pair.public_modulus_len() * 8;
                if bits < 2048 {
                    return Err(JwtError::WeakRsaKey { bits });
                }
                None
            }
            // accepts_key above admits only EC keys for ES* and RSA keys for RS*/PS*.
            _ => {
                return Err(JwtError::KeyMismatch {
                    key: key.family(),
                    algorithm,
                });
            }
        };
        Ok(Self {
            key_id,
            algorithm,
            key,
            fixed_ecdsa,
            rng: SystemRandom::new(),
        })
    }

    /// A signer with the key's default algorithm ([`Algorithm::default_for`]): ES256, ES384
    /// or ES512 by curve, RS256 for RSA.
    pub fn with_default_algorithm(
        key_id: impl Into<String>,
        key: PrivateKey,
    ) -> Result<Self, JwtError> {
        let algorithm = Algorithm::default_for(&key.public_key())
            .ok_or(JwtError::UnsupportedKey(key.family()))?;
        Self::new(key_id, key, algorithm)
    }

    /// The private key.
    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }

    /// The public key, as published in the bundle.
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }
}

impl JwtSigner for PrivateKeySigner {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, JwtError> {
        if let Some(pair) = &self.fixed_ecdsa {
            let signature = pair
                .sign(&self.rng, message)
                .map_err(|_| JwtError::Signing)?;
            return Ok(signature.as_ref().to_vec());
        }
        match (self.key.pair(), self.algorithm.rsa_signing()) {
            (KeyPair::Rsa(pair), Some(encoding)) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(encoding, &self.rng, message, &mut signature)
                    .map_err(|_| JwtError::Signing)?;
                Ok(signature)
            }
            // `new` builds `fixed_ecdsa` for every ES* signer and admits RS*/PS* only with RSA.
            _ => Err(JwtError::Signing),
        }
    }
}

impl fmt::Debug for PrivateKeySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKeySigner")
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm)
            .field("key", &self.key)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyType;

    #[test]
    fn the_key_must_suit_the_algorithm() {
        let p256 = || PrivateKey::generate(KeyType::EcP256).unwrap();
        for alg in Algorithm::ALL
            .into_iter()
            .filter(|a| *a != Algorithm::Es256)
        {
            let err = PrivateKeySigner::new("k", p256(), alg).unwrap_err();
            assert!(
                matches!(err, JwtError::KeyMismatch { key: "EC P-256", algorithm } if algorithm == alg),
                "{err}"
            );
        }
        let err = PrivateKeySigner::new("", p256(), Algorithm::Es256).unwrap_err();
        assert!(matches!(err, JwtError::EmptyKeyId));
        let rsa = PrivateKey::generate(KeyType::Rsa2048).unwrap();
        let err = PrivateKeySigner::new("k", rsa, Algorithm::Es256).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the signing key is RSA, which cannot sign ES256"
        );
    }

    #[test]
    fn ed25519_keys_cannot_sign_jwt_svids() {
        let doc =
            aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let key = PrivateKey::from_pkcs8_der(doc.as_ref()).unwrap();
        let err = PrivateKeySigner::with_default_algorithm("k", key).unwrap_err();
        assert_eq!(err.to_string(), "Ed25519 keys cannot sign jwt-svids");
    }

    #[test]
    fn ecdsa_signatures_are_fixed_width() {
        for (key_type, len) in [(KeyType::EcP256, 64), (KeyType::EcP384, 96)] {
            let signer = PrivateKeySigner::with_default_algorithm(
                "k",
                PrivateKey::generate(key_type).unwrap(),
            )
            .unwrap();
            // DER signatures vary in length and start with 0x30; fixed ones never vary.
            for _ in 0..8 {
                assert_eq!(signer.sign(b"message").unwrap().len(), len);
            }
        }
    }

    #[test]
    fn debug_shows_no_key_material() {
        let signer = PrivateKeySigner::with_default_algorithm(
            "kid-1",
            PrivateKey::generate(KeyType::EcP256).unwrap(),
        )
        .unwrap();
        assert_eq!(
            format!("{signer:?}"),
            "PrivateKeySigner { key_id: \"kid-1\", algorithm: Es256, key: PrivateKey(EC P-256, <redacted>) }"
        );
    }
}
