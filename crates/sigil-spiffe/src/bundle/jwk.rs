//! JSON Web Key parameters (RFC 7517, RFC 7518 §6, RFC 8037) for the public keys a SPIFFE
//! bundle carries: `EC` (P-256, P-384, P-521), `RSA` and `OKP` (Ed25519).
//!
//! Reading validates the parameters before a key is accepted: EC coordinates have the curve's
//! full length and name a point on the curve, RSA moduli are 2048 to 8192 bits (what aws-lc-rs
//! can verify), Ed25519 keys are 32 bytes. An unknown `kty` or curve is not an error: the
//! caller skips the element (SPIFFE_Trust_Domain_and_Bundle.md §4.2, checklist item 38).

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1, ECDSA_P521_SHA512_ASN1, ED25519,
    ParsedPublicKey, VerificationAlgorithm,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::document::BundleDocumentError;
use crate::key::{EcCurve, PublicKey};

/// Reads a string member; `Ok(None)` when absent.
pub(crate) fn optional_str<'a>(
    obj: &'a Map<String, Value>,
    at: &str,
    name: &'static str,
) -> Result<Option<&'a str>, BundleDocumentError> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(BundleDocumentError::WrongType {
            at: join(at, name),
            expected: "a string",
        }),
    }
}

/// Reads a string member that must be present.
fn required_str<'a>(
    obj: &'a Map<String, Value>,
    at: &str,
    name: &'static str,
) -> Result<&'a str, BundleDocumentError> {
    optional_str(obj, at, name)?.ok_or_else(|| BundleDocumentError::MissingMember {
        at: at.to_owned(),
        member: name,
    })
}

/// Reads a required base64url (RFC 7515 §2: no padding) member.
fn required_b64url(
    obj: &Map<String, Value>,
    at: &str,
    name: &'static str,
) -> Result<Vec<u8>, BundleDocumentError> {
    let text = required_str(obj, at, name)?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| BundleDocumentError::Base64 {
            at: join(at, name),
            encoding: "unpadded base64url",
        })
}

/// `at.name`, or `name` at the top level.
pub(crate) fn join(at: &str, name: &str) -> String {
    if at.is_empty() {
        name.to_owned()
    } else {
        format!("{at}.{name}")
    }
}

/// Reads the key parameters of the JWK object at `at`. `Ok(None)`: a `kty` or curve this
/// crate does not know, which the caller skips; a missing `kty` is treated the same way,
/// since the spec says to ignore elements it cannot use rather than fail the bundle.
pub(crate) fn read_public_key(
    obj: &Map<String, Value>,
    at: &str,
) -> Result<Option<PublicKey>, BundleDocumentError> {
    let Some(kty) = optional_str(obj, at, "kty")? else {
        return Ok(None);
    };
    match kty {
        "EC" => {
            let crv = required_str(obj, at, "crv")?;
            let Some(curve) = EcCurve::from_jwk_name(crv) else {
                return Ok(None);
            };
            let x = required_b64url(obj, at, "x")?;
            let y = required_b64url(obj, at, "y")?;
            let len = curve.coordinate_len();
            // RFC 7518 §6.2.1.2-3: each coordinate is the full field size, leading zeros kept.
            if x.len() != len || y.len() != len {
                return Err(BundleDocumentError::InvalidKey {
                    at: at.to_owned(),
                    reason: "EC coordinate length does not match the curve",
                });
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let algorithm: &'static dyn VerificationAlgorithm = match curve {
                EcCurve::P256 => &ECDSA_P256_SHA256_ASN1,
                EcCurve::P384 => &ECDSA_P384_SHA384_ASN1,
                EcCurve::P521 => &ECDSA_P521_SHA512_ASN1,
            };
            // aws-lc checks that the point lies on the curve and is not the identity.
            ParsedPublicKey::new(algorithm, &point).map_err(|_| {
                BundleDocumentError::InvalidKey {
                    at: at.to_owned(),
                    reason: "EC point is not on the curve",
                }
            })?;
            Ok(Some(PublicKey::Ec {
                curve,
                point: point.into(),
            }))
        }
        "RSA" => {
            let n = required_b64url(obj, at, "n")?;
            let e = required_b64url(obj, at, "e")?;
            let n = strip_leading_zeros(&n);
            let e = strip_leading_zeros(&e);
            // After stripping, the first byte (if any) is non-zero; an all-zero or empty
            // modulus has no bits at all.
            let bits = n
                .first()
                .map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
            if !(2048..=8192).contains(&bits) {
                return Err(BundleDocumentError::InvalidKey {
                    at: at.to_owned(),
                    reason: "RSA modulus must be 2048 to 8192 bits",
                });
            }
            // An even modulus or exponent, or an exponent below 3, is never a usable RSA key.
            let odd = |v: &[u8]| v.last().is_some_and(|b| b & 1 == 1);
            if !odd(n) || !odd(e) || e.len() > 8 || e == [1] {
                return Err(BundleDocumentError::InvalidKey {
                    at: at.to_owned(),
                    reason: "RSA modulus or exponent is malformed",
                });
            }
            Ok(Some(PublicKey::Rsa {
                n: n.into(),
                e: e.into(),
            }))
        }
        "OKP" => {
            if required_str(obj, at, "crv")? != "Ed25519" {
                return Ok(None);
            }
            let x = required_b64url(obj, at, "x")?;
            if x.len() != 32 || ParsedPublicKey::new(&ED25519, &x).is_err() {
                return Err(BundleDocumentError::InvalidKey {
                    at: at.to_owned(),
                    reason: "Ed25519 key is not a valid 32-byte key",
                });
            }
            Ok(Some(PublicKey::Ed25519(x.into())))
        }
        _ => Ok(None),
    }
}

/// Writes `kty` and the key parameters of a public key into a JWK object.
pub(crate) fn write_public_key(key: &PublicKey, obj: &mut Map<String, Value>) {
    let b64 = |bytes: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(bytes));
    match key {
        PublicKey::Ec { curve, point } => {
            let len = curve.coordinate_len();
            // `PublicKey::Ec` always holds an uncompressed point `04 || x || y` of the curve's
            // size (checked where it is built); `get` keeps a malformed one from panicking.
            let x = point.get(1..1 + len).unwrap_or_default();
            let y = point.get(1 + len..).unwrap_or_default();
            obj.insert("kty".into(), "EC".into());
            obj.insert("crv".into(), curve.jwk_name().into());
            obj.insert("x".into(), b64(x));
            obj.insert("y".into(), b64(y));
        }
        PublicKey::Rsa { n, e } => {
            obj.insert("kty".into(), "RSA".into());
            obj.insert("n".into(), b64(n));
            obj.insert("e".into(), b64(e));
        }
        PublicKey::Ed25519(x) => {
            obj.insert("kty".into(), "OKP".into());
            obj.insert("crv".into(), "Ed25519".into());
            obj.insert("x".into(), b64(x));
        }
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{KeyType, PrivateKey};

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn generated_keys_round_trip() {
        for key_type in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
            let key = PrivateKey::generate(key_type).unwrap().public_key();
            let mut obj = Map::new();
            write_public_key(&key, &mut obj);
            assert_eq!(read_public_key(&obj, "keys[0]").unwrap(), Some(key));
        }
    }

    #[test]
    fn point_off_the_curve_is_rejected() {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap().public_key();
        let mut obj = Map::new();
        write_public_key(&key, &mut obj);
        let mut y = URL_SAFE_NO_PAD.decode(obj["y"].as_str().unwrap()).unwrap();
        y[31] ^= 1;
        obj.insert("y".into(), URL_SAFE_NO_PAD.encode(&y).into());
        assert_eq!(
            read_public_key(&obj, "keys[1]").unwrap_err().to_string(),
            "keys[1]: invalid key: EC point is not on the curve"
        );
    }

    #[test]
    fn parameters_are_checked_and_named() {
        let cases = [
            (
                serde_json::json!({"kty":"EC","crv":"P-256","x":"AA","y":"AA"}),
                "keys[0]: invalid key: EC coordinate length does not match the curve",
            ),
            (
                serde_json::json!({"kty":"EC","crv":"P-256","x":"a+b/","y":"AA"}),
                "keys[0].x: not unpadded base64url",
            ),
            (
                serde_json::json!({"kty":"EC","crv":"P-256","x":"AA=="}),
                "keys[0].x: not unpadded base64url",
            ),
            (
                serde_json::json!({"kty":"EC","x":"AA"}),
                "keys[0]: no crv member",
            ),
            (
                serde_json::json!({"kty":"EC","crv":7}),
                "keys[0].crv: expected a string",
            ),
            (
                serde_json::json!({"kty":"RSA","n":"AQAB","e":"AQAB"}),
                "keys[0]: invalid key: RSA modulus must be 2048 to 8192 bits",
            ),
            (
                serde_json::json!({"kty":"RSA","n":"","e":"AQAB"}),
                "keys[0]: invalid key: RSA modulus must be 2048 to 8192 bits",
            ),
            (
                serde_json::json!({"kty":"RSA","n":"AAAA","e":""}),
                "keys[0]: invalid key: RSA modulus must be 2048 to 8192 bits",
            ),
            (
                serde_json::json!({"kty":"OKP","crv":"Ed25519","x":"AAAA"}),
                "keys[0]: invalid key: Ed25519 key is not a valid 32-byte key",
            ),
        ];
        for (jwk, expected) in cases {
            let err = read_public_key(&object(jwk), "keys[0]").unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
    }

    #[test]
    fn unknown_kty_and_curve_are_skipped() {
        for jwk in [
            serde_json::json!({"kty":"oct","k":"AAAA"}),
            serde_json::json!({"kty":"EC","crv":"secp256k1","x":"AA","y":"AA"}),
            serde_json::json!({"kty":"OKP","crv":"X25519","x":"AA"}),
            serde_json::json!({"crv":"P-256"}),
        ] {
            assert_eq!(read_public_key(&object(jwk), "keys[0]").unwrap(), None);
        }
    }
}
