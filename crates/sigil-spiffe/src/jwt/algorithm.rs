//! The JWS algorithms a JWT-SVID may be signed with (JWT-SVID.md §3, checklist item 23).

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::signature::{
    self, EcdsaSigningAlgorithm, RsaEncoding, RsaParameters, VerificationAlgorithm,
};

use super::JwtError;
use crate::key::{EcCurve, PublicKey};

/// A JWS `alg` value allowed in a JWT-SVID.
///
/// The list is closed: `none`, the HMAC algorithms (`HS*`), `EdDSA` and anything else are
/// refused wherever an algorithm is read (JWT-SVID.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// ECDSA on P-384 with SHA-384.
    Es384,
    /// ECDSA on P-521 with SHA-512.
    Es512,
    /// RSASSA-PSS with SHA-256 (MGF1 with SHA-256, salt as long as the hash).
    Ps256,
    /// RSASSA-PSS with SHA-384.
    Ps384,
    /// RSASSA-PSS with SHA-512.
    Ps512,
}

impl Algorithm {
    /// Every allowed algorithm.
    pub const ALL: [Self; 9] = [
        Self::Rs256,
        Self::Rs384,
        Self::Rs512,
        Self::Es256,
        Self::Es384,
        Self::Es512,
        Self::Ps256,
        Self::Ps384,
        Self::Ps512,
    ];

    /// The JWS name, e.g. `ES256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::Es512 => "ES512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
        }
    }

    /// Reads a JWS name; the match is case-sensitive, as JWS names are (RFC 7515 §4.1.1).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.as_str() == name)
    }

    /// The algorithm Sigil signs with by default for a key: ES256, ES384 or ES512 by curve,
    /// RS256 for RSA. `None` for keys that cannot sign JWT-SVIDs (Ed25519).
    pub fn default_for(key: &PublicKey) -> Option<Self> {
        match key {
            PublicKey::Ec { curve, .. } => Some(Self::for_curve(*curve)),
            PublicKey::Rsa { .. } => Some(Self::Rs256),
            PublicKey::Ed25519(_) => None,
        }
    }

    /// True when a key of this type may produce or verify signatures of this algorithm: the
    /// curve must match for ECDSA, and RS*/PS* need an RSA key.
    pub fn accepts_key(self, key: &PublicKey) -> bool {
        match (self.curve(), key) {
            (
                Some(curve),
                PublicKey::Ec {
                    curve: key_curve, ..
                },
            ) => curve == *key_curve,
            (None, PublicKey::Rsa { .. }) => true,
            _ => false,
        }
    }

    /// The curve of an ECDSA algorithm; `None` for the RSA algorithms.
    pub fn curve(self) -> Option<EcCurve> {
        match self {
            Self::Es256 => Some(EcCurve::P256),
            Self::Es384 => Some(EcCurve::P384),
            Self::Es512 => Some(EcCurve::P521),
            _ => None,
        }
    }

    /// The key family this algorithm needs, for messages.
    pub fn key_family(self) -> &'static str {
        match self.curve() {
            Some(EcCurve::P256) => "EC P-256",
            Some(EcCurve::P384) => "EC P-384",
            Some(EcCurve::P521) => "EC P-521",
            None => "RSA",
        }
    }

    pub(crate) fn for_curve(curve: EcCurve) -> Self {
        match curve {
            EcCurve::P256 => Self::Es256,
            EcCurve::P384 => Self::Es384,
            EcCurve::P521 => Self::Es512,
        }
    }

    /// A small index, distinct per algorithm of one key family, for the verifier cache.
    pub(crate) fn slot(self) -> usize {
        match self {
            Self::Rs256 | Self::Es256 => 0,
            Self::Rs384 | Self::Es384 => 1,
            Self::Rs512 | Self::Es512 => 2,
            Self::Ps256 => 3,
            Self::Ps384 => 4,
            Self::Ps512 => 5,
        }
    }

    /// ECDSA signatures in JWS are the fixed-width `r || s`, not ASN.1 (RFC 7518 §3.4).
    pub(crate) fn ecdsa_signing(self) -> Option<&'static EcdsaSigningAlgorithm> {
        match self {
            Self::Es256 => Some(&signature::ECDSA_P256_SHA256_FIXED_SIGNING),
            Self::Es384 => Some(&signature::ECDSA_P384_SHA384_FIXED_SIGNING),
            Self::Es512 => Some(&signature::ECDSA_P521_SHA512_FIXED_SIGNING),
            _ => None,
        }
    }

    /// PSS uses a salt as long as the hash (RFC 7518 §3.5), which is what aws-lc-rs does.
    pub(crate) fn rsa_signing(self) -> Option<&'static dyn RsaEncoding> {
        match self {
            Self::Rs256 => Some(&signature::RSA_PKCS1_SHA256),
            Self::Rs384 => Some(&signature::RSA_PKCS1_SHA384),
            Self::Rs512 => Some(&signature::RSA_PKCS1_SHA512),
            Self::Ps256 => Some(&signature::RSA_PSS_SHA256),
            Self::Ps384 => Some(&signature::RSA_PSS_SHA384),
            Self::Ps512 => Some(&signature::RSA_PSS_SHA512),
            _ => None,
        }
    }

    /// The verification algorithm; RSA moduli below 2048 bits are refused by it.
    pub(crate) fn verification(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Self::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
            Self::Es384 => &signature::ECDSA_P384_SHA384_FIXED,
            Self::Es512 => &signature::ECDSA_P521_SHA512_FIXED,
            Self::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Self::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Self::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Self::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
            Self::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
            Self::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
        }
    }

    pub(crate) fn rsa_verification(self) -> Option<&'static RsaParameters> {
        match self {
            Self::Rs256 => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
            Self::Rs384 => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
            Self::Rs512 => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
            Self::Ps256 => Some(&signature::RSA_PSS_2048_8192_SHA256),
            Self::Ps384 => Some(&signature::RSA_PSS_2048_8192_SHA384),
            Self::Ps512 => Some(&signature::RSA_PSS_2048_8192_SHA512),
            _ => None,
        }
    }
}

impl FromStr for Algorithm {
    type Err = JwtError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s).ok_or_else(|| JwtError::UnsupportedAlgorithm(s.to_owned()))
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_others_are_refused_by_name() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.as_str().parse::<Algorithm>().unwrap(), alg);
            assert_eq!(alg.to_string(), alg.as_str());
        }
        for bad in [
            "none", "HS256", "HS384", "HS512", "EdDSA", "es256", "ES256K", "", "RS1",
        ] {
            let err = bad.parse::<Algorithm>().unwrap_err();
            assert!(matches!(&err, JwtError::UnsupportedAlgorithm(name) if name == bad));
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn key_compatibility_follows_the_curve_and_family() {
        let p256 = PublicKey::Ec {
            curve: EcCurve::P256,
            point: vec![4; 65].into(),
        };
        let rsa = PublicKey::Rsa {
            n: vec![0xff; 256].into(),
            e: vec![1, 0, 1].into(),
        };
        let ed = PublicKey::Ed25519(vec![0; 32].into());
        assert!(Algorithm::Es256.accepts_key(&p256));
        assert!(!Algorithm::Es384.accepts_key(&p256));
        assert!(!Algorithm::Rs256.accepts_key(&p256));
        for alg in Algorithm::ALL {
            assert_eq!(alg.accepts_key(&rsa), alg.curve().is_none(), "{alg}");
            assert!(!alg.accepts_key(&ed));
        }
        assert_eq!(Algorithm::default_for(&p256), Some(Algorithm::Es256));
        assert_eq!(Algorithm::default_for(&rsa), Some(Algorithm::Rs256));
        assert_eq!(Algorithm::default_for(&ed), None);
    }
}
