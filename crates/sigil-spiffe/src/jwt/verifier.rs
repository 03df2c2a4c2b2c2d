//! Parsed public keys for JWT-SVID verification, cached inside each bundle's `JwtAuthority`.
//!
//! Parsing a public key into aws-lc's form costs about as much as a fifth of an ECDSA
//! verification, so it is done once per (authority, algorithm) and reused. An EC key serves
//! exactly one algorithm; an RSA key may be used with any of RS256..PS512, each of which
//! needs its own parsed key because aws-lc binds the padding and hash at parse time.

use std::fmt;
use std::sync::{Arc, OnceLock};

use aws_lc_rs::signature::{ParsedPublicKey, RsaPublicKeyComponents};

use super::Algorithm;
use crate::key::PublicKey;

/// RSA moduli outside this range (in bits) are refused, as aws-lc's JWS parameters do.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// Lazily parsed verification keys, one slot per algorithm of the key's family. Clones share
/// the cache, so a cloned bundle does not parse again.
#[derive(Clone, Default)]
pub(crate) struct VerifierCache(Arc<[OnceLock<Option<ParsedPublicKey>>; 6]>);

impl VerifierCache {
    /// The parsed key for `alg`, parsing it on first use; `None` when the key is malformed or,
    /// for RSA, outside 2048..=8192 bits. The caller has checked `alg.accepts_key(key)`.
    pub(crate) fn verifier(&self, key: &PublicKey, alg: Algorithm) -> Option<&ParsedPublicKey> {
        self.0[alg.slot()].get_or_init(|| parse(key, alg)).as_ref()
    }
}

fn parse(key: &PublicKey, alg: Algorithm) -> Option<ParsedPublicKey> {
    match key {
        PublicKey::Ec { point, .. } => ParsedPublicKey::new(alg.verification(), point).ok(),
        PublicKey::Rsa { n, e } => {
            let bits = n
                .first()
                .map_or(0, |&top| n.len() * 8 - top.leading_zeros() as usize);
            if !RSA_BITS.contains(&bits) {
                return None;
            }
            let components = RsaPublicKeyComponents {
                n: &n[..],
                e: &e[..],
            };
            components
                .to_parsed_public_key(alg.rsa_verification()?)
                .ok()
        }
        PublicKey::Ed25519(_) => None,
    }
}

/// The cache is derived from the public key it sits beside, so it takes no part in equality.
impl PartialEq for VerifierCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for VerifierCache {}

impl fmt::Debug for VerifierCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VerifierCache")
    }
}
