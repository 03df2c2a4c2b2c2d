//! Workload API messages into this crate's types, with the checks go-spiffe makes (checklist
//! §2.8): no I/O here, so every rule is unit-tested on hand-made messages.

use std::collections::HashMap;
use std::time::SystemTime;

use serde_json::{Map, Number, Value};
use sigil_proto::workload::{
    JwtBundlesResponse, JwtsvidResponse, ValidateJwtsvidResponse, X509BundlesResponse,
    X509svidResponse,
};
use zeroize::Zeroize;

use super::{ValidatedJwtSvid, WorkloadApiError, X509Context, drop_duplicate_hints};
use crate::bundle::{Bundle, BundleSet, JwtBundle, X509Bundle};
use crate::id::{SpiffeId, TrustDomain};
use crate::jwt::{JwtSvid, danger};
use crate::x509::X509Svid;

/// A `FetchX509SVID` message. The private keys in the message are wiped once read.
pub(crate) fn x509_context(
    mut response: X509svidResponse,
) -> Result<X509Context, WorkloadApiError> {
    let result = read_x509_context(&response);
    for svid in &mut response.svids {
        svid.x509_svid_key.zeroize();
    }
    result
}

fn read_x509_context(response: &X509svidResponse) -> Result<X509Context, WorkloadApiError> {
    if response.svids.is_empty() {
        return Err(WorkloadApiError::NoSvids);
    }
    let mut svids = Vec::with_capacity(response.svids.len());
    let mut bundles = BundleSet::new();
    for (index, item) in response.svids.iter().enumerate() {
        let field_id = spiffe_id(&item.spiffe_id, || format!("svids[{index}].spiffe_id"))?;
        let svid = X509Svid::parse_from_der(&item.x509_svid, &item.x509_svid_key)
            .map_err(|error| WorkloadApiError::X509Svid {
                index,
                spiffe_id: item.spiffe_id.clone(),
                error,
            })?
            .with_hint(item.hint.clone());
        if svid.spiffe_id() != &field_id {
            return Err(WorkloadApiError::SpiffeIdMismatch {
                index,
                field: item.spiffe_id.clone(),
                svid: svid.spiffe_id().to_string(),
            });
        }
        let trust_domain = field_id.trust_domain();
        let own = x509_bundle(trust_domain.clone(), &item.bundle)?;
        if own.is_empty() {
            return Err(WorkloadApiError::EmptyBundle {
                index,
                trust_domain: trust_domain.to_string(),
            });
        }
        bundles.insert(bundle_of(own));
        svids.push(svid);
    }
    let svids = drop_duplicate_hints(svids, X509Svid::hint);
    // A federated entry never replaces the bundle an SVID came with for its own trust domain:
    // that one is authoritative for it.
    let mut federated = Vec::new();
    for (key, der) in sorted(&response.federated_bundles) {
        let trust_domain = map_key("federated_bundles", key)?;
        let bundle = x509_bundle(trust_domain.clone(), der)?;
        if bundles.get(trust_domain.as_str()).is_none() {
            bundles.insert(bundle_of(bundle));
            federated.push(trust_domain);
        }
    }
    Ok(X509Context {
        svids,
        bundles,
        federated,
        crls: response.crl.clone(),
    })
}

/// A `FetchX509Bundles` message: the X.509 bundle of every trust domain in it.
pub(crate) fn x509_bundles(response: &X509BundlesResponse) -> Result<BundleSet, WorkloadApiError> {
    if response.bundles.is_empty() {
        return Err(WorkloadApiError::NoBundles {
            rpc: "FetchX509Bundles",
        });
    }
    let mut set = BundleSet::new();
    for (key, der) in sorted(&response.bundles) {
        let trust_domain = map_key("bundles", key)?;
        set.insert(bundle_of(x509_bundle(trust_domain, der)?));
    }
    Ok(set)
}

/// A `FetchJWTBundles` message: the JWT bundle (JWKS) of every trust domain in it.
pub(crate) fn jwt_bundles(response: &JwtBundlesResponse) -> Result<BundleSet, WorkloadApiError> {
    if response.bundles.is_empty() {
        return Err(WorkloadApiError::NoBundles {
            rpc: "FetchJWTBundles",
        });
    }
    let mut set = BundleSet::new();
    for (key, jwks) in sorted(&response.bundles) {
        let trust_domain = map_key("bundles", key)?;
        let jwt = JwtBundle::from_jwks(trust_domain.clone(), jwks).map_err(|error| {
            WorkloadApiError::Bundle {
                trust_domain: trust_domain.to_string(),
                error,
            }
        })?;
        let mut bundle = Bundle::new(trust_domain);
        *bundle.jwt_mut() = jwt;
        set.insert(bundle);
    }
    Ok(set)
}

/// A `FetchJWTSVID` answer. The tokens are parsed without their signatures (the agent is
/// trusted) but must be current, for `audience`, and of `requested` when one was asked for.
pub(crate) fn jwt_svids<A: AsRef<str>>(
    response: JwtsvidResponse,
    audience: &[A],
    requested: Option<&SpiffeId>,
    now: SystemTime,
) -> Result<Vec<JwtSvid>, WorkloadApiError> {
    if response.svids.is_empty() {
        return Err(WorkloadApiError::NoSvids);
    }
    let mut svids = Vec::with_capacity(response.svids.len());
    for (index, mut item) in response.svids.into_iter().enumerate() {
        let parsed = danger::parse_insecure(&item.svid, audience, now);
        item.svid.zeroize();
        let svid = parsed
            .map_err(|error| WorkloadApiError::JwtSvid { index, error })?
            .with_hint(item.hint);
        if svid.spiffe_id().as_str() != item.spiffe_id {
            return Err(WorkloadApiError::SpiffeIdMismatch {
                index,
                field: item.spiffe_id,
                svid: svid.spiffe_id().to_string(),
            });
        }
        if let Some(requested) = requested.filter(|r| *r != svid.spiffe_id()) {
            return Err(WorkloadApiError::UnexpectedSpiffeId {
                requested: requested.to_string(),
                returned: svid.spiffe_id().to_string(),
            });
        }
        svids.push(svid);
    }
    Ok(drop_duplicate_hints(svids, JwtSvid::hint))
}

/// A `ValidateJWTSVID` answer. As go-spiffe does, the token is parsed again here (without the
/// signature, which the agent checked) and must name the subject the agent returned.
pub(crate) fn validated_jwt_svid(
    response: ValidateJwtsvidResponse,
    audience: &str,
    token: &str,
    now: SystemTime,
) -> Result<ValidatedJwtSvid, WorkloadApiError> {
    let spiffe_id = spiffe_id(&response.spiffe_id, || "spiffe_id".to_owned())?;
    let parsed = danger::parse_insecure(token, &[audience], now)
        .map_err(|error| WorkloadApiError::JwtSvid { index: 0, error })?;
    if parsed.spiffe_id() != &spiffe_id {
        return Err(WorkloadApiError::SpiffeIdMismatch {
            index: 0,
            field: response.spiffe_id,
            svid: parsed.spiffe_id().to_string(),
        });
    }
    let claims = response
        .claims
        .map(|claims| struct_to_json(claims.fields))
        .unwrap_or_default();
    Ok(ValidatedJwtSvid { spiffe_id, claims })
}

fn spiffe_id(value: &str, field: impl Fn() -> String) -> Result<SpiffeId, WorkloadApiError> {
    value
        .parse()
        .map_err(|error| WorkloadApiError::InvalidSpiffeId {
            field: field(),
            value: value.to_owned(),
            error,
        })
}

fn map_key(field: &'static str, key: &str) -> Result<TrustDomain, WorkloadApiError> {
    TrustDomain::from_name_or_id(key).map_err(|error| WorkloadApiError::InvalidTrustDomain {
        field,
        key: key.to_owned(),
        error,
    })
}

fn x509_bundle(trust_domain: TrustDomain, der: &[u8]) -> Result<X509Bundle, WorkloadApiError> {
    X509Bundle::from_der(trust_domain.clone(), der).map_err(|error| WorkloadApiError::Bundle {
        trust_domain: trust_domain.to_string(),
        error,
    })
}

fn bundle_of(x509: X509Bundle) -> Bundle {
    let mut bundle = Bundle::new(x509.trust_domain().clone());
    *bundle.x509_mut() = x509;
    bundle
}

/// Map entries in key order, so which of two bad entries is reported does not depend on
/// hashing.
fn sorted(map: &HashMap<String, Vec<u8>>) -> Vec<(&String, &Vec<u8>)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by_key(|(key, _)| *key);
    entries
}

/// `google.protobuf.Struct` as JSON. Whole numbers within ±2^53 become JSON integers (claims
/// like `exp` and `iat` are integers; a Struct can only carry doubles).
fn struct_to_json(
    fields: impl IntoIterator<Item = (String, prost_types::Value)>,
) -> Map<String, Value> {
    fields
        .into_iter()
        .map(|(name, value)| (name, value_to_json(value)))
        .collect()
}

fn value_to_json(value: prost_types::Value) -> Value {
    use prost_types::value::Kind;
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() <= EXACT => {
            // Exact: a whole number of magnitude at most 2^53 converts without loss.
            #[allow(clippy::cast_possible_truncation)]
            Value::Number(Number::from(n as i64))
        }
        Some(Kind::NumberValue(n)) => Number::from_f64(n).map_or(Value::Null, Value::Number),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s.fields)),
        Some(Kind::ListValue(list)) => {
            Value::Array(list.values.into_iter().map(value_to_json).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use sigil_proto::workload::{Jwtsvid, X509svid};

    use super::*;
    use crate::jwt::{Algorithm, JwtSvidError, JwtSvidParams, PrivateKeySigner, mint};
    use crate::key::{KeyType, PrivateKey};
    use crate::x509::{CaParams, SvidParams, X509Authority, X509SvidError};

    struct Ca {
        authority: X509Authority,
    }

    impl Ca {
        fn new(trust_domain: &str) -> Self {
            let now = SystemTime::now();
            let params = CaParams::new(
                TrustDomain::new(trust_domain).unwrap(),
                now - Duration::from_secs(60),
                now + Duration::from_secs(3600),
            );
            let key = PrivateKey::generate(KeyType::EcP256).unwrap();
            Self {
                authority: X509Authority::self_signed(Arc::new(key), &params).unwrap(),
            }
        }

        fn svid(&self, id: &str, hint: &str) -> X509svid {
            let now = SystemTime::now();
            let key = PrivateKey::generate(KeyType::EcP256).unwrap();
            let params = SvidParams::new(
                id.parse().unwrap(),
                now - Duration::from_secs(60),
                now + Duration::from_secs(600),
            );
            let issued = self
                .authority
                .sign_public_key(&key.public_key(), &params)
                .unwrap();
            X509svid {
                spiffe_id: id.to_owned(),
                x509_svid: issued.chain_der(),
                x509_svid_key: key.pkcs8_der().to_vec(),
                bundle: self.authority.certificate().to_vec(),
                hint: hint.to_owned(),
            }
        }
    }

    fn response(svids: Vec<X509svid>) -> X509svidResponse {
        X509svidResponse {
            svids,
            crl: vec![],
            federated_bundles: HashMap::new(),
        }
    }

    #[test]
    fn an_x509_response_becomes_a_context_with_own_and_federated_bundles() {
        let a = Ca::new("a.test");
        let b = Ca::new("b.test");
        let mut message = response(vec![
            a.svid("spiffe://a.test/web", "web"),
            a.svid("spiffe://a.test/db", "web"),
            a.svid("spiffe://a.test/x", ""),
            a.svid("spiffe://a.test/y", ""),
        ]);
        message
            .federated_bundles
            .insert("spiffe://b.test".into(), b.authority.certificate().to_vec());
        // A federated entry for the SVIDs' own domain does not replace their bundle.
        message
            .federated_bundles
            .insert("a.test".into(), b.authority.certificate().to_vec());
        let context = x509_context(message).unwrap();
        let ids: Vec<&str> = context
            .svids()
            .iter()
            .map(|s| s.spiffe_id().as_str())
            .collect();
        assert_eq!(
            ids,
            [
                "spiffe://a.test/web",
                "spiffe://a.test/x",
                "spiffe://a.test/y"
            ]
        );
        assert_eq!(context.default_svid().hint(), Some("web"));
        assert_eq!(context.svids()[1].hint(), None);
        assert_eq!(context.bundles().len(), 2);
        assert_eq!(
            context
                .bundles()
                .get("a.test")
                .unwrap()
                .x509()
                .authorities(),
            [a.authority.certificate().clone()]
        );
        assert_eq!(
            context.federated_trust_domains(),
            [TrustDomain::new("b.test").unwrap()]
        );
    }

    #[test]
    fn bad_x509_responses_are_refused_with_the_reason() {
        let a = Ca::new("a.test");
        assert!(matches!(
            x509_context(response(vec![])),
            Err(WorkloadApiError::NoSvids)
        ));

        let mut bad_key = a.svid("spiffe://a.test/web", "");
        bad_key.x509_svid_key = b"not a key".to_vec();
        assert!(matches!(
            x509_context(response(vec![bad_key])),
            Err(WorkloadApiError::X509Svid {
                index: 0,
                error: X509SvidError::PrivateKeyParse,
                ..
            })
        ));

        // Another SVID's key: parses, but is not the leaf's.
        let mut swapped = a.svid("spiffe://a.test/web", "");
        swapped.x509_svid_key = a.svid("spiffe://a.test/other", "").x509_svid_key;
        let error =
            x509_context(response(vec![a.svid("spiffe://a.test/ok", ""), swapped])).unwrap_err();
        assert!(
            matches!(
                error,
                WorkloadApiError::X509Svid {
                    index: 1,
                    error: X509SvidError::KeyMismatch,
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            "svids[1] (spiffe://a.test/web): leaf certificate does not match private key"
        );

        let mut lying = a.svid("spiffe://a.test/web", "");
        lying.spiffe_id = "spiffe://a.test/admin".into();
        assert!(matches!(
            x509_context(response(vec![lying])),
            Err(WorkloadApiError::SpiffeIdMismatch { .. })
        ));

        let mut no_bundle = a.svid("spiffe://a.test/web", "");
        no_bundle.bundle.clear();
        assert!(matches!(
            x509_context(response(vec![no_bundle])),
            Err(WorkloadApiError::EmptyBundle { .. })
        ));

        let mut bad_federated = response(vec![a.svid("spiffe://a.test/web", "")]);
        bad_federated
            .federated_bundles
            .insert("spiffe://b.test".into(), b"junk".to_vec());
        assert!(matches!(
            x509_context(bad_federated),
            Err(WorkloadApiError::Bundle { .. })
        ));

        let mut bad_key_name = response(vec![a.svid("spiffe://a.test/web", "")]);
        bad_key_name
            .federated_bundles
            .insert("spiffe://B.test".into(), vec![]);
        assert!(matches!(
            x509_context(bad_key_name),
            Err(WorkloadApiError::InvalidTrustDomain { .. })
        ));
    }

    #[test]
    fn bundle_responses_need_a_bundle_and_readable_keys() {
        let a = Ca::new("a.test");
        let empty = X509BundlesResponse {
            crl: vec![],
            bundles: HashMap::new(),
        };
        assert!(matches!(
            x509_bundles(&empty),
            Err(WorkloadApiError::NoBundles { .. })
        ));
        let one = X509BundlesResponse {
            crl: vec![],
            bundles: [("a.test".to_owned(), a.authority.certificate().to_vec())].into(),
        };
        assert_eq!(x509_bundles(&one).unwrap().len(), 1);

        let jwks = JwtBundlesResponse {
            bundles: [(
                "spiffe://a.test".to_owned(),
                br#"{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}"#.to_vec(),
            )]
            .into(),
        };
        // A key without a kid fails the whole bundle (checklist §2.6).
        assert!(matches!(
            jwt_bundles(&jwks),
            Err(WorkloadApiError::Bundle { .. })
        ));
    }

    fn token(id: &str, audience: &[&str]) -> String {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let signer = PrivateKeySigner::new("kid-1", key, Algorithm::Es256).unwrap();
        let now = SystemTime::now();
        let params = JwtSvidParams::new(
            id.parse().unwrap(),
            audience.iter().copied(),
            now,
            now + Duration::from_secs(300),
        );
        mint(&signer, params).unwrap().token().to_owned()
    }

    #[test]
    fn jwt_svids_are_held_to_the_audience_and_the_requested_id() {
        let now = SystemTime::now();
        let item = |id: &str, aud: &[&str], hint: &str| Jwtsvid {
            spiffe_id: id.to_owned(),
            svid: token(id, aud),
            hint: hint.to_owned(),
        };
        let ok = JwtsvidResponse {
            svids: vec![
                item("spiffe://a.test/web", &["db"], "h"),
                item("spiffe://a.test/web2", &["db"], "h"),
            ],
        };
        let svids = jwt_svids(ok, &["db"], None, now).unwrap();
        assert_eq!(svids.len(), 1);
        assert_eq!(svids[0].hint(), Some("h"));

        let wrong_audience = JwtsvidResponse {
            svids: vec![item("spiffe://a.test/web", &["other"], "")],
        };
        assert!(matches!(
            jwt_svids(wrong_audience, &["db"], None, now),
            Err(WorkloadApiError::JwtSvid {
                error: JwtSvidError::AudienceMismatch { .. },
                ..
            })
        ));

        let other_id = JwtsvidResponse {
            svids: vec![item("spiffe://a.test/web", &["db"], "")],
        };
        let requested: SpiffeId = "spiffe://a.test/db".parse().unwrap();
        assert!(matches!(
            jwt_svids(other_id, &["db"], Some(&requested), now),
            Err(WorkloadApiError::UnexpectedSpiffeId { .. })
        ));

        assert!(matches!(
            jwt_svids(JwtsvidResponse { svids: vec![] }, &["db"], None, now),
            Err(WorkloadApiError::NoSvids)
        ));
    }

    #[test]
    fn struct_claims_become_json_with_integer_times() {
        use prost_types::value::Kind;
        let number = |n| prost_types::Value {
            kind: Some(Kind::NumberValue(n)),
        };
        let fields = [
            ("exp".to_owned(), number(1_700_000_000.0)),
            ("ratio".to_owned(), number(0.5)),
            (
                "aud".to_owned(),
                prost_types::Value {
                    kind: Some(Kind::ListValue(prost_types::ListValue {
                        values: vec![prost_types::Value {
                            kind: Some(Kind::StringValue("db".into())),
                        }],
                    })),
                },
            ),
        ];
        assert_eq!(
            Value::Object(struct_to_json(fields)),
            serde_json::json!({"exp": 1_700_000_000, "ratio": 0.5, "aud": ["db"]})
        );
    }
}
