//! The JSON encodings of bundles: the SPIFFE bundle document (an RFC 7517 JWK Set with SPIFFE
//! members), the Workload API's plain JWKS of JWT keys, and the bundle map of several trust
//! domains (SPIFFE_Trust_Domain_and_Bundle.md §4 and §5, checklist §1.4 and §3.3-3.4).
//!
//! Reading follows the spec where go-spiffe is stricter, and is stricter where the spec leaves
//! room for two readers to disagree:
//! - `keys` MUST be present (`[]` means every key is revoked); unknown top-level members and
//!   unknown JWK members are ignored (item 34).
//! - An element whose `use` is missing, not a string or unknown is ignored (item 38). `use`
//!   is case-sensitive. `wit-svid` elements (Incubating) are ignored too: Sigil issues no
//!   WIT-SVIDs, so they are dropped on read and never written.
//! - An unknown `kty` (or an unknown curve of a known `kty`) skips the element, as the spec
//!   says; go-jose fails the whole document instead.
//! - `x509-svid`: a missing or empty `x5c` skips the element; when `x5c` holds several
//!   certificates only `x5c[0]` is used, as the spec says (item 20); go-spiffe fails the whole
//!   bundle. `x5c[0]` must be standard base64 (RFC 7517 §4.7, not base64url) of one DER
//!   certificate whose public key equals the JWK's key parameters: a mismatch fails the
//!   document, since a reader using the parameters and one using the certificate would trust
//!   different keys. A `kid` on an `x509-svid` element is tolerated and ignored.
//! - `jwt-svid`: a missing or empty `kid` fails the whole document, as in go-spiffe; so does a
//!   `kid` used twice, which would let a later key shadow an earlier one.
//! - Duplicate object members are rejected everywhere (see the `json` module).
//!
//! Writing emits `x509-svid` elements with the key parameters of the certificate, exactly one
//! `x5c` and no `kid` (item 19), and `jwt-svid` elements with `kid` (item 31). The refresh hint
//! is written in whole seconds, rounded up.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::CertificateDer;
use serde_json::{Map, Value};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::jwk::{join, optional_str, read_public_key, write_public_key};
use super::{Bundle, BundleSet, JwtAuthority, JwtBundle, json};
use crate::id::{SpiffeIdError, TrustDomain};
use crate::key::PublicKey;

/// Why a bundle in one of its encodings (bundle document, JWKS, bundle map, DER, PEM) could
/// not be read or written. `at` names the offending member, e.g. `keys[2].x5c[0]`.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BundleDocumentError {
    /// The input is not JSON, or has a duplicate object member.
    #[error("unable to parse JSON: {0}")]
    Json(String),
    /// A required member is absent (`keys`, `trust_domains`, `kty` parameters).
    #[error("{}no {member} member", loc(.at))]
    MissingMember {
        /// Where the member was expected; empty at the top level.
        at: String,
        /// The member's name.
        member: &'static str,
    },
    /// A member has the wrong JSON type.
    #[error("{at}: expected {expected}")]
    WrongType {
        /// The member.
        at: String,
        /// What it should have been.
        expected: &'static str,
    },
    /// A member is not in the base64 alphabet it must use.
    #[error("{at}: not {encoding}")]
    Base64 {
        /// The member.
        at: String,
        /// `standard base64` (for `x5c`) or `unpadded base64url` (key parameters).
        encoding: &'static str,
    },
    /// The key parameters do not form a usable public key.
    #[error("{at}: invalid key: {reason}")]
    InvalidKey {
        /// The JWK.
        at: String,
        /// The check that failed.
        reason: &'static str,
    },
    /// A `jwt-svid` key (or any key of a JWKS) without a `kid`.
    #[error("{at}: jwt-svid entry has no kid")]
    MissingKeyId {
        /// The JWK.
        at: String,
    },
    /// Two JWT keys with the same `kid`.
    #[error("{at}: duplicate kid {kid:?}")]
    DuplicateKeyId {
        /// The second JWK with this key ID.
        at: String,
        /// The key ID.
        kid: String,
    },
    /// A certificate (in `x5c`, DER or PEM input, or a bundle being written) cannot be read.
    #[error("{at}: cannot parse certificate: {reason}")]
    Certificate {
        /// The member or position of the certificate.
        at: String,
        /// The check that failed.
        reason: String,
    },
    /// The `x5c` certificate's public key differs from the JWK key parameters.
    #[error("{at}: x5c[0] certificate key does not match the JWK key parameters")]
    KeyMismatch {
        /// The JWK.
        at: String,
    },
    /// A bundle map key that is not a trust domain name.
    #[error("trust_domains: invalid trust domain {name:?}")]
    InvalidTrustDomain {
        /// The key as written.
        name: String,
        /// Why it is not a trust domain.
        #[source]
        source: SpiffeIdError,
    },
    /// A trust domain named twice in a bundle map (item 40).
    #[error("trust_domains: duplicate trust domain {0:?}")]
    DuplicateTrustDomain(String),
    /// Non-empty PEM input without any PEM block.
    #[error("no PEM blocks found")]
    NoPemBlocks,
    /// PEM input with blocks, none of them `CERTIFICATE`.
    #[error("no certificates found: expected PEM blocks of type CERTIFICATE")]
    NoPemCertificates,
    /// A malformed PEM block.
    #[error("malformed PEM: {0}")]
    MalformedPem(String),
}

fn loc(at: &str) -> String {
    if at.is_empty() {
        String::new()
    } else {
        format!("{at}: ")
    }
}

impl Bundle {
    /// Reads a SPIFFE bundle document (a JWK Set with `spiffe_sequence` and
    /// `spiffe_refresh_hint`) as the bundle of `trust_domain`; see the module docs for what is
    /// skipped and what fails.
    pub fn from_document(
        trust_domain: TrustDomain,
        document: &[u8],
    ) -> Result<Self, BundleDocumentError> {
        let value = json::parse(document).map_err(|e| BundleDocumentError::Json(e.to_string()))?;
        bundle_from_value(trust_domain, &value, "")
    }

    /// Writes the SPIFFE bundle document. Fails only when an X.509 authority is not a
    /// certificate whose public key a JWK can express (RSA, EC P-256/384/521, Ed25519).
    pub fn to_document(&self) -> Result<String, BundleDocumentError> {
        Ok(bundle_to_value(self, true)?.to_string())
    }
}

impl JwtBundle {
    /// Reads the Workload API's JWKS of JWT keys (`FetchJWTBundles`). `use` is ignored; every
    /// key needs a `kid`; keys of an unknown `kty` are skipped.
    pub fn from_jwks(trust_domain: TrustDomain, jwks: &[u8]) -> Result<Self, BundleDocumentError> {
        let value = json::parse(jwks).map_err(|e| BundleDocumentError::Json(e.to_string()))?;
        let keys = keys_member(&value, "")?;
        let mut bundle = Self::new(trust_domain);
        for (i, key) in keys.iter().enumerate() {
            let at = format!("keys[{i}]");
            let jwk = as_object(key, &at)?;
            let kid = required_kid(jwk, &at)?;
            if let Some(public_key) = read_public_key(jwk, &at)? {
                add_jwt(&mut bundle, kid, public_key, &at)?;
            }
        }
        Ok(bundle)
    }

    /// Writes the Workload API's JWKS: `{"keys":[...]}` with `kty`, `kid` and the key
    /// parameters, and no `use` (as SPIRE sends it).
    pub fn to_jwks(&self) -> String {
        let keys = self
            .authorities()
            .map(|authority| Value::Object(jwt_jwk(authority, false)))
            .collect::<Vec<_>>();
        let mut doc = Map::new();
        doc.insert("keys".into(), Value::Array(keys));
        Value::Object(doc).to_string()
    }
}

impl BundleSet {
    /// Reads a SPIFFE bundle map, `{"trust_domains": {"<name>": <bundle document>, ...}}`
    /// (§5). Duplicate trust domains are rejected, including a bare name and its
    /// `spiffe://` form. Per-bundle refresh hints are dropped: only the map's own schedule
    /// may decide when it is fetched again (item 41).
    pub fn from_bundle_map(map: &[u8]) -> Result<Self, BundleDocumentError> {
        let value = json::parse(map).map_err(|e| BundleDocumentError::Json(e.to_string()))?;
        let top = as_object(&value, "")?;
        let domains = match top.get("trust_domains") {
            None | Some(Value::Null) => {
                return Err(BundleDocumentError::MissingMember {
                    at: String::new(),
                    member: "trust_domains",
                });
            }
            Some(v) => as_object(v, "trust_domains")?,
        };
        let mut set = Self::new();
        for (name, bundle) in domains {
            let trust_domain = map_key(name)?;
            if set.get(trust_domain.as_str()).is_some() {
                return Err(BundleDocumentError::DuplicateTrustDomain(
                    trust_domain.to_string(),
                ));
            }
            let mut bundle =
                bundle_from_value(trust_domain, bundle, &format!("trust_domains[{name:?}]"))?;
            bundle.set_refresh_hint(None);
            set.insert(bundle);
        }
        Ok(set)
    }

    /// Writes the bundle map with bare trust-domain names as keys, in name order, and no
    /// per-bundle refresh hints (§5: they SHOULD be omitted).
    pub fn to_bundle_map(&self) -> Result<String, BundleDocumentError> {
        let mut domains = Map::new();
        let sorted: BTreeMap<&str, &Bundle> = self
            .iter()
            .map(|b| (b.trust_domain().as_str(), b))
            .collect();
        for (name, bundle) in sorted {
            domains.insert(name.to_owned(), bundle_to_value(bundle, false)?);
        }
        let mut top = Map::new();
        top.insert("trust_domains".into(), Value::Object(domains));
        Ok(Value::Object(top).to_string())
    }
}

/// A bundle map key: a bare name, or (leniently, as the spiffe crate reads them, crates.md
/// pitfall 3) `spiffe://` and a bare name; a path after it is refused as a bad character.
fn map_key(name: &str) -> Result<TrustDomain, BundleDocumentError> {
    TrustDomain::new(name.strip_prefix("spiffe://").unwrap_or(name)).map_err(|source| {
        BundleDocumentError::InvalidTrustDomain {
            name: name.to_owned(),
            source,
        }
    })
}

fn as_object<'a>(
    value: &'a Value,
    at: &str,
) -> Result<&'a Map<String, Value>, BundleDocumentError> {
    value
        .as_object()
        .ok_or_else(|| BundleDocumentError::WrongType {
            at: if at.is_empty() { "document" } else { at }.to_owned(),
            expected: "a JSON object",
        })
}

fn keys_member<'a>(value: &'a Value, at: &str) -> Result<&'a [Value], BundleDocumentError> {
    let obj = as_object(value, at)?;
    match obj.get("keys") {
        // go-spiffe reads `"keys": null` as absent too ("no authorities found").
        None | Some(Value::Null) => Err(BundleDocumentError::MissingMember {
            at: at.to_owned(),
            member: "keys",
        }),
        Some(Value::Array(keys)) => Ok(keys),
        Some(_) => Err(BundleDocumentError::WrongType {
            at: join(at, "keys"),
            expected: "an array",
        }),
    }
}

fn required_kid<'a>(jwk: &'a Map<String, Value>, at: &str) -> Result<&'a str, BundleDocumentError> {
    optional_str(jwk, at, "kid")?
        .filter(|kid| !kid.is_empty())
        .ok_or_else(|| BundleDocumentError::MissingKeyId { at: at.to_owned() })
}

fn add_jwt(
    bundle: &mut JwtBundle,
    kid: &str,
    public_key: PublicKey,
    at: &str,
) -> Result<(), BundleDocumentError> {
    if bundle.authority(kid).is_some() {
        return Err(BundleDocumentError::DuplicateKeyId {
            at: at.to_owned(),
            kid: kid.to_owned(),
        });
    }
    let authority = JwtAuthority::new(kid, public_key)
        .map_err(|_| BundleDocumentError::MissingKeyId { at: at.to_owned() })?;
    bundle.add_authority(authority);
    Ok(())
}

/// Reads an optional unsigned integer member; `null` counts as absent.
fn optional_u64(
    obj: &Map<String, Value>,
    at: &str,
    name: &'static str,
) -> Result<Option<u64>, BundleDocumentError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| BundleDocumentError::WrongType {
                at: join(at, name),
                expected: "an unsigned 64-bit integer",
            }),
    }
}

fn bundle_from_value(
    trust_domain: TrustDomain,
    value: &Value,
    at: &str,
) -> Result<Bundle, BundleDocumentError> {
    let keys = keys_member(value, at)?;
    let obj = as_object(value, at)?;
    let mut bundle = Bundle::new(trust_domain);
    for (i, key) in keys.iter().enumerate() {
        let at = format!("{}[{i}]", join(at, "keys"));
        let jwk = as_object(key, &at)?;
        let key_use = match jwk.get("use") {
            Some(Value::String(key_use)) => key_use.as_str(),
            _ => continue,
        };
        match key_use {
            "x509-svid" => {
                if let Some(cert) = read_x509_entry(jwk, &at)? {
                    bundle.x509_mut().add_authority(cert);
                }
            }
            "jwt-svid" => {
                let kid = required_kid(jwk, &at)?;
                if let Some(public_key) = read_public_key(jwk, &at)? {
                    add_jwt(bundle.jwt_mut(), kid, public_key, &at)?;
                }
            }
            // Missing, unknown and `wit-svid` uses: ignored (module docs).
            _ => {}
        }
    }
    bundle.set_sequence(optional_u64(obj, at, "spiffe_sequence")?);
    bundle.set_refresh_hint(optional_u64(obj, at, "spiffe_refresh_hint")?.map(Duration::from_secs));
    Ok(bundle)
}

fn read_x509_entry(
    jwk: &Map<String, Value>,
    at: &str,
) -> Result<Option<CertificateDer<'static>>, BundleDocumentError> {
    let x5c = match jwk.get("x5c") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(x5c)) => x5c,
        Some(_) => {
            return Err(BundleDocumentError::WrongType {
                at: join(at, "x5c"),
                expected: "an array of strings",
            });
        }
    };
    // Only x5c[0] is used, per the spec (module docs); the rest is not looked at.
    let Some(first) = x5c.first() else {
        return Ok(None);
    };
    let at0 = format!("{at}.x5c[0]");
    let text = first
        .as_str()
        .ok_or_else(|| BundleDocumentError::WrongType {
            at: at0.clone(),
            expected: "a string",
        })?;
    let der = STANDARD
        .decode(text)
        .map_err(|_| BundleDocumentError::Base64 {
            at: at0.clone(),
            encoding: "standard base64",
        })?;
    let cert_key = certificate_key(&der, &at0)?;
    let Some(jwk_key) = read_public_key(jwk, at)? else {
        return Ok(None);
    };
    if jwk_key != cert_key {
        return Err(BundleDocumentError::KeyMismatch { at: at.to_owned() });
    }
    Ok(Some(CertificateDer::from(der)))
}

/// The public key of one whole DER certificate.
pub(crate) fn certificate_key(der: &[u8], at: &str) -> Result<PublicKey, BundleDocumentError> {
    let cert_err = |reason: String| BundleDocumentError::Certificate {
        at: at.to_owned(),
        reason,
    };
    let (rest, cert) = X509Certificate::from_der(der)
        .map_err(|_| cert_err("not a DER X.509 certificate".into()))?;
    if !rest.is_empty() {
        return Err(cert_err("trailing bytes after the certificate".into()));
    }
    PublicKey::from_spki(cert.public_key()).map_err(|e| cert_err(e.to_string()))
}

fn jwt_jwk(authority: &JwtAuthority, with_use: bool) -> Map<String, Value> {
    let mut jwk = Map::new();
    if with_use {
        jwk.insert("use".into(), "jwt-svid".into());
    }
    jwk.insert("kid".into(), authority.key_id().into());
    write_public_key(authority.public_key(), &mut jwk);
    jwk
}

fn bundle_to_value(bundle: &Bundle, with_hint: bool) -> Result<Value, BundleDocumentError> {
    let mut keys =
        Vec::with_capacity(bundle.x509().authorities().len() + bundle.jwt().authorities().len());
    for (i, cert) in bundle.x509().authorities().iter().enumerate() {
        let key = certificate_key(cert, &format!("x509 authorities[{i}]"))?;
        let mut jwk = Map::new();
        jwk.insert("use".into(), "x509-svid".into());
        write_public_key(&key, &mut jwk);
        // Exactly one certificate, standard base64, and no kid (X509-SVID.md §6, item 19).
        jwk.insert(
            "x5c".into(),
            Value::Array(vec![Value::String(STANDARD.encode(cert))]),
        );
        keys.push(Value::Object(jwk));
    }
    for authority in bundle.jwt().authorities() {
        keys.push(Value::Object(jwt_jwk(authority, true)));
    }
    let mut doc = Map::new();
    doc.insert("keys".into(), Value::Array(keys));
    if let Some(sequence) = bundle.sequence() {
        doc.insert("spiffe_sequence".into(), sequence.into());
    }
    if let (true, Some(hint)) = (with_hint, bundle.refresh_hint()) {
        // An integer number of seconds (§4.1.2), rounded up so a consumer never polls sooner
        // than asked.
        let secs = hint
            .as_secs()
            .saturating_add(u64::from(hint.subsec_nanos() > 0));
        doc.insert("spiffe_refresh_hint".into(), secs.into());
    }
    Ok(Value::Object(doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_hint_rounds_up_and_saturates() {
        let td = TrustDomain::new("example.org").unwrap();
        for (hint, written) in [
            (Duration::ZERO, 0),
            (Duration::from_nanos(1), 1),
            (Duration::from_secs(60), 60),
            (Duration::new(60, 1), 61),
            (Duration::new(u64::MAX, 5), u64::MAX),
        ] {
            let mut bundle = Bundle::new(td.clone());
            bundle.set_refresh_hint(Some(hint));
            let doc = bundle.to_document().unwrap();
            assert_eq!(
                doc,
                format!(r#"{{"keys":[],"spiffe_refresh_hint":{written}}}"#)
            );
            let again = Bundle::from_document(td.clone(), doc.as_bytes()).unwrap();
            assert_eq!(again.refresh_hint(), Some(Duration::from_secs(written)));
        }
    }

    #[test]
    fn messages_name_the_member() {
        let missing = BundleDocumentError::MissingMember {
            at: String::new(),
            member: "keys",
        };
        assert_eq!(missing.to_string(), "no keys member");
        let nested = BundleDocumentError::MissingMember {
            at: "trust_domains[\"a\"]".into(),
            member: "keys",
        };
        assert_eq!(nested.to_string(), "trust_domains[\"a\"]: no keys member");
        let err = Bundle::from_document(
            TrustDomain::new("example.org").unwrap(),
            br#"{"keys":[{"use":"x509-svid","kty":"EC","x5c":["!!"]}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "keys[0].x5c[0]: not standard base64");
    }

    #[test]
    fn empty_bundle_writes_an_empty_key_list() {
        let td = TrustDomain::new("example.org").unwrap();
        let bundle = Bundle::new(td.clone());
        assert_eq!(bundle.to_document().unwrap(), r#"{"keys":[]}"#);
        assert_eq!(JwtBundle::new(td).to_jwks(), r#"{"keys":[]}"#);
        assert_eq!(
            BundleSet::new().to_bundle_map().unwrap(),
            r#"{"trust_domains":{}}"#
        );
    }
}
