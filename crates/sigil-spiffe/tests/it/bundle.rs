//! Bundle encodings: the checklist §2.6 cases, round trips, and cross-checks against the
//! `spiffe` crate, `jsonwebtoken` and a document written by hand from the spec.

// Helpers outside `#[test]` functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use proptest::prelude::*;
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};
use sigil_spiffe::{
    Bundle, BundleDocumentError, BundleSet, JwtAuthority, JwtBundle, KeyType, PrivateKey,
    PublicKey, TrustDomain, X509Bundle,
};

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

/// A self-signed CA certificate for `key`, made by rcgen from the key's PKCS#8.
fn ca_for(key: &PrivateKey) -> CertificateDer<'static> {
    let pair = rcgen::KeyPair::try_from(key.pkcs8_der()).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://example.org".try_into().unwrap(),
    )];
    params.self_signed(&pair).unwrap().der().clone()
}

struct Fixture {
    /// CA keys: P-256, P-384, RSA-2048.
    ca_keys: Vec<PrivateKey>,
    cas: Vec<CertificateDer<'static>>,
    /// JWT keys: P-256, P-384, RSA-2048.
    jwt_keys: Vec<PrivateKey>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let types = [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048];
        let ca_keys: Vec<_> = types
            .iter()
            .map(|t| PrivateKey::generate(*t).unwrap())
            .collect();
        let cas = ca_keys.iter().map(ca_for).collect();
        let jwt_keys = types
            .iter()
            .map(|t| PrivateKey::generate(*t).unwrap())
            .collect();
        Fixture {
            ca_keys,
            cas,
            jwt_keys,
        }
    })
}

/// A JWK written by hand from a public key (independent of the crate's JWK writer).
fn jwk(key_use: Option<&str>, kid: Option<&str>, key: &PublicKey) -> Value {
    let mut obj = serde_json::Map::new();
    if let Some(u) = key_use {
        obj.insert("use".into(), u.into());
    }
    if let Some(k) = kid {
        obj.insert("kid".into(), k.into());
    }
    match key {
        PublicKey::Ec { curve, point } => {
            let len = curve.coordinate_len();
            obj.insert("kty".into(), "EC".into());
            obj.insert("crv".into(), curve.jwk_name().into());
            obj.insert(
                "x".into(),
                URL_SAFE_NO_PAD.encode(&point[1..1 + len]).into(),
            );
            obj.insert("y".into(), URL_SAFE_NO_PAD.encode(&point[1 + len..]).into());
        }
        PublicKey::Rsa { n, e } => {
            obj.insert("kty".into(), "RSA".into());
            obj.insert("n".into(), URL_SAFE_NO_PAD.encode(n).into());
            obj.insert("e".into(), URL_SAFE_NO_PAD.encode(e).into());
        }
        PublicKey::Ed25519(_) => unreachable!("not used in these tests"),
    }
    Value::Object(obj)
}

/// An x509-svid JWK for CA `i` of the fixture.
fn x509_jwk(i: usize) -> Value {
    let f = fixture();
    let mut v = jwk(Some("x509-svid"), None, &f.ca_keys[i].public_key());
    v["x5c"] = json!([STANDARD.encode(&f.cas[i])]);
    v
}

/// A jwt-svid JWK for JWT key `i` of the fixture.
fn jwt_jwk(i: usize, kid: &str) -> Value {
    jwk(
        Some("jwt-svid"),
        Some(kid),
        &fixture().jwt_keys[i].public_key(),
    )
}

fn parse(doc: &Value) -> Result<Bundle, BundleDocumentError> {
    Bundle::from_document(td(), doc.to_string().as_bytes())
}

/// What a bundle should look like after one trip through a document.
fn after_trip(bundle: &Bundle) -> Bundle {
    let mut expected = bundle.clone();
    expected.set_refresh_hint(
        bundle
            .refresh_hint()
            .map(|h| Duration::from_secs(h.as_secs() + u64::from(h.subsec_nanos() > 0))),
    );
    expected
}

enum Expect {
    Ok(fn(&Bundle)),
    Err(&'static str),
}

#[test]
fn checklist_2_6_cases() {
    let f = fixture();
    // A standard-base64 certificate re-spelled in the base64url alphabet.
    let std_b64 = STANDARD.encode(&f.cas[1]);
    let url_b64 = URL_SAFE.encode(&f.cas[1]);
    assert_ne!(
        std_b64, url_b64,
        "precondition: the DER needs a + or / in base64"
    );
    let mut url_entry = x509_jwk(1);
    url_entry["x5c"] = json!([url_b64]);
    let mut two_certs = x509_jwk(1);
    two_certs["x5c"] = json!([STANDARD.encode(&f.cas[1]), STANDARD.encode(&f.cas[0])]);
    let mut mismatch = jwk(Some("x509-svid"), None, &f.ca_keys[0].public_key());
    mismatch["x5c"] = json!([STANDARD.encode(&f.cas[1])]);
    let mut with_kid = x509_jwk(0);
    with_kid["kid"] = json!("tolerated");
    let mut no_x5c = x509_jwk(0);
    no_x5c.as_object_mut().unwrap().remove("x5c");
    let mut empty_x5c = x509_jwk(0);
    empty_x5c["x5c"] = json!([]);
    let mut unknown_kty = jwt_jwk(0, "k");
    unknown_kty["kty"] = json!("oct");
    let mut no_use = jwt_jwk(0, "k");
    no_use.as_object_mut().unwrap().remove("use");
    let mut upper_use = x509_jwk(0);
    upper_use["use"] = json!("X509-SVID");
    let mut wit = jwt_jwk(2, "wit-kid");
    wit["use"] = json!("wit-svid");

    let cases: Vec<(&str, Value, Expect)> = vec![
        (
            "1 x509-svid P-384 + 1 jwt-svid P-256",
            json!({"keys": [x509_jwk(1), jwt_jwk(0, "C6vs25welZOx6WksNYfbMfiw9l96pMnD")]}),
            Expect::Ok(|b| {
                assert_eq!(b.x509().authorities(), &fixture().cas[1..2]);
                assert_eq!(
                    b.jwt()
                        .authority("C6vs25welZOx6WksNYfbMfiw9l96pMnD")
                        .unwrap()
                        .public_key(),
                    &fixture().jwt_keys[0].public_key()
                );
                assert_eq!((b.sequence(), b.refresh_hint()), (None, None));
            }),
        ),
        (
            "1 x509 + 6 jwt + hint 60 + sequence 1",
            json!({"keys": [x509_jwk(0), jwt_jwk(0, "a"), jwt_jwk(1, "b"), jwt_jwk(2, "c"),
                            jwt_jwk(0, "d"), jwt_jwk(1, "e"), jwt_jwk(2, "f")],
                   "spiffe_refresh_hint": 60, "spiffe_sequence": 1}),
            Expect::Ok(|b| {
                assert_eq!(b.x509().authorities().len(), 1);
                assert_eq!(b.jwt().authorities().len(), 6);
                assert_eq!(b.refresh_hint(), Some(Duration::from_secs(60)));
                assert_eq!(b.sequence(), Some(1));
            }),
        ),
        (
            "jwt-svid without kid fails the whole bundle",
            json!({"keys": [x509_jwk(0), jwk(Some("jwt-svid"), None, &f.jwt_keys[0].public_key())]}),
            Expect::Err("keys[1]: jwt-svid entry has no kid"),
        ),
        (
            "jwt-svid with an empty kid",
            json!({"keys": [jwt_jwk(0, "")]}),
            Expect::Err("keys[0]: jwt-svid entry has no kid"),
        ),
        (
            "no keys member",
            json!({"spiffe_sequence": 1}),
            Expect::Err("no keys member"),
        ),
        (
            "keys is null",
            json!({"keys": null}),
            Expect::Err("no keys member"),
        ),
        (
            "keys is not an array",
            json!({"keys": {}}),
            Expect::Err("keys: expected an array"),
        ),
        (
            "empty keys: every key revoked",
            json!({"keys": []}),
            Expect::Ok(|b| assert!(b.x509().is_empty() && b.jwt().is_empty())),
        ),
        (
            "two certificates in x5c: x5c[0] is used (spec), go-spiffe would fail",
            json!({"keys": [two_certs]}),
            Expect::Ok(|b| assert_eq!(b.x509().authorities(), &fixture().cas[1..2])),
        ),
        (
            "wit-svid entries are ignored",
            json!({"keys": [x509_jwk(0), wit, jwt_jwk(1, "j")]}),
            Expect::Ok(|b| {
                assert_eq!(b.x509().authorities().len(), 1);
                assert_eq!(b.jwt().authorities().len(), 1);
                assert!(b.jwt().authority("wit-kid").is_none());
            }),
        ),
        (
            "x5c in the base64url alphabet",
            json!({"keys": [url_entry]}),
            Expect::Err("keys[0].x5c[0]: not standard base64"),
        ),
        (
            "x5c certificate key differs from the JWK",
            json!({"keys": [mismatch]}),
            Expect::Err("keys[0]: x5c[0] certificate key does not match the JWK key parameters"),
        ),
        (
            "x5c holding something that is not a certificate",
            json!({"keys": [{"use": "x509-svid", "kty": "EC", "x5c": ["MAMCAQE="]}]}),
            Expect::Err("keys[0].x5c[0]: cannot parse certificate: not a DER X.509 certificate"),
        ),
        (
            "x5c is not an array",
            json!({"keys": [{"use": "x509-svid", "kty": "EC", "x5c": "MII"}]}),
            Expect::Err("keys[0].x5c: expected an array of strings"),
        ),
        (
            "missing or empty x5c, unknown kty, missing or differently cased use: skipped",
            json!({"keys": [no_x5c, empty_x5c, unknown_kty, no_use, upper_use, "x"]}),
            Expect::Err("keys[5]: expected a JSON object"),
        ),
        (
            "the same without the non-object element",
            json!({"keys": [with_kid, no_x5c_again(), empty_x5c_again(), unknown_kty_again(),
                            no_use_again(), upper_use_again()]}),
            Expect::Ok(|b| {
                assert_eq!(b.x509().authorities(), &fixture().cas[0..1]);
                assert!(b.jwt().is_empty());
            }),
        ),
        (
            "unknown top-level and JWK members are tolerated",
            json!({"keys": [{"use": "jwt-svid", "kid": "k", "alg": "ES256", "ext": true,
                             "kty": "EC", "crv": "P-256",
                             "x": jwt_jwk(0, "k")["x"], "y": jwt_jwk(0, "k")["y"]}],
                   "spiffe_sequence": 3, "future_member": {"a": [1]}}),
            Expect::Ok(|b| {
                assert_eq!(b.jwt().authorities().len(), 1);
                assert_eq!(b.sequence(), Some(3));
            }),
        ),
        (
            "duplicate kid",
            json!({"keys": [jwt_jwk(0, "same"), jwt_jwk(1, "same")]}),
            Expect::Err("keys[1]: duplicate kid \"same\""),
        ),
        (
            "negative sequence",
            json!({"keys": [], "spiffe_sequence": -1}),
            Expect::Err("spiffe_sequence: expected an unsigned 64-bit integer"),
        ),
        (
            "fractional refresh hint",
            json!({"keys": [], "spiffe_refresh_hint": 1.5}),
            Expect::Err("spiffe_refresh_hint: expected an unsigned 64-bit integer"),
        ),
        (
            "largest sequence",
            json!({"keys": [], "spiffe_sequence": u64::MAX}),
            Expect::Ok(|b| assert_eq!(b.sequence(), Some(u64::MAX))),
        ),
        (
            "not an object",
            json!([1]),
            Expect::Err("document: expected a JSON object"),
        ),
    ];
    for (name, doc, expect) in cases {
        match (parse(&doc), expect) {
            (Ok(bundle), Expect::Ok(check)) => check(&bundle),
            (Err(err), Expect::Err(message)) => assert_eq!(err.to_string(), message, "{name}"),
            (Ok(bundle), Expect::Err(message)) => {
                panic!("{name}: expected {message:?}, got {bundle:?}")
            }
            (Err(err), Expect::Ok(_)) => panic!("{name}: unexpected error {err}"),
        }
    }
}

fn no_x5c_again() -> Value {
    let mut v = x509_jwk(0);
    v.as_object_mut().unwrap().remove("x5c");
    v
}
fn empty_x5c_again() -> Value {
    let mut v = x509_jwk(1);
    v["x5c"] = json!([]);
    v
}
fn unknown_kty_again() -> Value {
    let mut v = jwt_jwk(0, "k1");
    v["kty"] = json!("oct");
    v
}
fn no_use_again() -> Value {
    let mut v = jwt_jwk(0, "k2");
    v.as_object_mut().unwrap().remove("use");
    v
}
fn upper_use_again() -> Value {
    let mut v = x509_jwk(2);
    v["use"] = json!("X509-SVID");
    v
}

#[test]
fn raw_json_errors() {
    let err = Bundle::from_document(td(), b"").unwrap_err().to_string();
    assert!(err.starts_with("unable to parse JSON: EOF"), "{err}");
    let err = Bundle::from_document(td(), br#"{"keys":[],"keys":null}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("duplicate member \"keys\""), "{err}");
    let doc = format!(
        r#"{{"keys":[{{"use":"jwt-svid","kid":"a","kid":"b","kty":"EC","crv":"P-256","x":{},"y":{}}}]}}"#,
        jwt_jwk(0, "a")["x"],
        jwt_jwk(0, "a")["y"]
    );
    let err = Bundle::from_document(td(), doc.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(err.contains("duplicate member \"kid\""), "{err}");
}

fn full_bundle() -> Bundle {
    let f = fixture();
    let mut bundle = Bundle::new(td());
    for ca in &f.cas {
        bundle.x509_mut().add_authority(ca.clone());
    }
    for (i, key) in f.jwt_keys.iter().enumerate() {
        bundle
            .jwt_mut()
            .add_authority(JwtAuthority::new(format!("kid-{i}"), key.public_key()).unwrap());
    }
    bundle.set_sequence(Some(42));
    bundle.set_refresh_hint(Some(Duration::from_millis(1500)));
    bundle
}

#[test]
fn document_round_trips_and_rounds_the_hint_up() {
    let bundle = full_bundle();
    let doc = bundle.to_document().unwrap();
    let again = Bundle::from_document(td(), doc.as_bytes()).unwrap();
    assert_eq!(again, after_trip(&bundle));
    assert_eq!(again.refresh_hint(), Some(Duration::from_secs(2)));
    assert_eq!(again.to_document().unwrap(), doc);

    let value: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(value["spiffe_refresh_hint"], 2);
    assert_eq!(value["spiffe_sequence"], 42);
    let keys = value["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 6);
    for key in keys {
        match key["use"].as_str().unwrap() {
            // Item 19: no kid, exactly one standard-base64 certificate.
            "x509-svid" => {
                assert!(key.get("kid").is_none());
                let x5c = key["x5c"].as_array().unwrap();
                assert_eq!(x5c.len(), 1);
                let der = STANDARD.decode(x5c[0].as_str().unwrap()).unwrap();
                assert!(fixture().cas.iter().any(|c| c.as_ref() == der));
            }
            // Item 31: kid set.
            "jwt-svid" => {
                assert!(key["kid"].as_str().unwrap().starts_with("kid-"));
                assert!(key.get("x5c").is_none());
            }
            other => panic!("unexpected use {other}"),
        }
    }

    let mut whole = bundle;
    whole.set_refresh_hint(Some(Duration::from_secs(60)));
    let doc = whole.to_document().unwrap();
    assert_eq!(Bundle::from_document(td(), doc.as_bytes()).unwrap(), whole);
}

#[test]
fn writing_a_non_certificate_authority_fails() {
    let mut bundle = Bundle::new(td());
    bundle
        .x509_mut()
        .add_authority(CertificateDer::from(vec![0x30, 0x00]));
    assert_eq!(
        bundle.to_document().unwrap_err().to_string(),
        "x509 authorities[0]: cannot parse certificate: not a DER X.509 certificate"
    );
}

#[test]
fn jwks_form_of_the_workload_api() {
    let f = fixture();
    let jwks = json!({"keys": [
        jwk(None, Some("a"), &f.jwt_keys[0].public_key()),
        jwk(Some("enc"), Some("b"), &f.jwt_keys[1].public_key()),
        jwk(Some("jwt-svid"), Some("c"), &f.jwt_keys[2].public_key()),
        {"kty": "oct", "kid": "d", "k": "AAAA"},
    ]});
    let bundle = JwtBundle::from_jwks(td(), jwks.to_string().as_bytes()).unwrap();
    let kids: Vec<_> = bundle.authorities().map(|a| a.key_id()).collect();
    assert_eq!(kids, ["a", "b", "c"]);
    let again = JwtBundle::from_jwks(td(), bundle.to_jwks().as_bytes()).unwrap();
    assert_eq!(again, bundle);
    let written: Value = serde_json::from_str(&bundle.to_jwks()).unwrap();
    assert!(
        written["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("use").is_none())
    );

    let no_kid = json!({"keys": [jwk(None, Some("a"), &f.jwt_keys[0].public_key()),
                                 jwk(None, None, &f.jwt_keys[1].public_key())]});
    assert_eq!(
        JwtBundle::from_jwks(td(), no_kid.to_string().as_bytes())
            .unwrap_err()
            .to_string(),
        "keys[1]: jwt-svid entry has no kid"
    );
    assert_eq!(
        JwtBundle::from_jwks(td(), b"{}").unwrap_err().to_string(),
        "no keys member"
    );
}

#[test]
fn jwks_vector_from_the_spiffe_crate_docs() {
    // The P-256 key in the spiffe crate's `from_jwt_authorities` example (go-spiffe test data).
    let jwks = br#"{"keys":[{"kty":"EC","kid":"C6vs25welZOx6WksNYfbMfiw9l96pMnD","crv":"P-256",
        "x":"ngLYQnlfF6GsojUwqtcEE3WgTNG2RUlsGhK73RNEl5k",
        "y":"tKbiDSUSsQ3F1P7wteeHNXIcU-cx6CgSbroeQrQHTLM"}]}"#;
    let bundle = JwtBundle::from_jwks(td(), jwks).unwrap();
    let authority = bundle
        .authority("C6vs25welZOx6WksNYfbMfiw9l96pMnD")
        .unwrap();
    match authority.public_key() {
        PublicKey::Ec { point, .. } => {
            assert_eq!(
                &point[1..33],
                URL_SAFE_NO_PAD
                    .decode("ngLYQnlfF6GsojUwqtcEE3WgTNG2RUlsGhK73RNEl5k")
                    .unwrap()
            );
        }
        other => panic!("unexpected key {other:?}"),
    }
}

#[test]
fn x509_der_and_pem_forms() {
    let f = fixture();
    let bundle = X509Bundle::from_authorities(td(), f.cas.iter().cloned());
    let der = bundle.to_der();
    assert_eq!(X509Bundle::from_der(td(), &der).unwrap(), bundle);
    assert_eq!(
        X509Bundle::from_pem(td(), bundle.to_pem().as_bytes()).unwrap(),
        bundle
    );
    // Cross-check: the spiffe crate splits our concatenated DER into the same certificates.
    let theirs =
        spiffe::X509Bundle::parse_from_der(spiffe::TrustDomain::new("example.org").unwrap(), &der)
            .unwrap();
    let theirs: Vec<&[u8]> = theirs.authorities().iter().map(|c| c.as_bytes()).collect();
    let ours: Vec<&[u8]> = bundle.authorities().iter().map(|c| c.as_ref()).collect();
    assert_eq!(theirs, ours);
}

#[test]
fn spiffe_crate_sees_the_same_keys() {
    let bundle = full_bundle();
    let doc: Value = serde_json::from_str(&bundle.to_document().unwrap()).unwrap();
    let their_td = spiffe::TrustDomain::new("example.org").unwrap();

    // JWT: the spiffe crate has no SPIFFE-bundle-document parser; its JWKS parser wants the
    // jwt-svid entries selected first (its docs say so).
    let jwt_keys: Vec<Value> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["use"] == "jwt-svid")
        .cloned()
        .collect();
    let filtered = json!({ "keys": jwt_keys }).to_string();
    for jwks in [filtered, bundle.jwt().to_jwks()] {
        let theirs =
            spiffe::JwtBundle::from_jwt_authorities(their_td.clone(), jwks.as_bytes()).unwrap();
        let their_kids: BTreeSet<&str> = theirs.jwt_authorities().map(|a| a.key_id()).collect();
        let our_kids: BTreeSet<&str> = bundle.jwt().authorities().map(|a| a.key_id()).collect();
        assert_eq!(their_kids, our_kids);
    }

    // X.509: certificates taken out of x5c by jsonwebtoken's JWK model, loaded by the spiffe
    // crate, are our authorities byte for byte.
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(doc).unwrap();
    let certs: Vec<Vec<u8>> = set
        .keys
        .iter()
        .filter_map(|k| k.common.x509_chain.as_ref())
        .map(|chain| STANDARD.decode(&chain[0]).unwrap())
        .collect();
    let refs: Vec<&[u8]> = certs.iter().map(Vec::as_slice).collect();
    let theirs = spiffe::X509Bundle::from_x509_authorities(their_td, &refs).unwrap();
    let theirs: Vec<&[u8]> = theirs.authorities().iter().map(|c| c.as_bytes()).collect();
    let ours: Vec<&[u8]> = bundle
        .x509()
        .authorities()
        .iter()
        .map(|c| c.as_ref())
        .collect();
    assert_eq!(theirs, ours);
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signs a JWT-SVID with jsonwebtoken and the fixture key `i`.
fn sign(i: usize, kid: &str) -> (String, jsonwebtoken::Algorithm) {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let key = &fixture().jwt_keys[i];
    let (alg, encoding) = match i {
        0 => (Algorithm::ES256, EncodingKey::from_ec_der(key.pkcs8_der())),
        1 => (Algorithm::ES384, EncodingKey::from_ec_der(key.pkcs8_der())),
        _ => (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(key.to_pem().as_bytes()).unwrap(),
        ),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    // exp an hour ahead: far from any leeway, so the test does not depend on timing.
    let claims = json!({"sub": "spiffe://example.org/workload", "aud": ["svc"],
                        "exp": now() + 3600});
    (
        jsonwebtoken::encode(&header, &claims, &encoding).unwrap(),
        alg,
    )
}

#[test]
fn jsonwebtoken_verifies_with_our_jwks() {
    let bundle = full_bundle();
    let doc = bundle.to_document().unwrap();
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&doc).unwrap();
    for i in 0..3 {
        let kid = format!("kid-{i}");
        let (token, alg) = sign(i, &kid);
        let jwk = set.find(&kid).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.set_audience(&["svc"]);
        let data = jsonwebtoken::decode::<Value>(&token, &decoding, &validation).unwrap();
        assert_eq!(data.claims["sub"], "spiffe://example.org/workload");
        // Negative control: another of our keys of the same family must not verify it.
        if i < 2 {
            let other = set.find(&format!("kid-{}", 1 - i)).unwrap();
            let other = jsonwebtoken::DecodingKey::from_jwk(other).unwrap();
            assert!(jsonwebtoken::decode::<Value>(&token, &other, &validation).is_err());
        }
    }
}

#[test]
fn spiffe_crate_validates_tokens_against_our_jwks() {
    let bundle = full_bundle();
    let their_td = spiffe::TrustDomain::new("example.org").unwrap();
    let theirs =
        spiffe::JwtBundle::from_jwt_authorities(their_td, bundle.jwt().to_jwks().as_bytes())
            .unwrap();
    let mut set = spiffe::JwtBundleSet::new();
    set.add_bundle(theirs);
    for i in 0..3 {
        let (token, _) = sign(i, &format!("kid-{i}"));
        let svid = spiffe::JwtSvid::parse_and_validate(&token, &set, &["svc"]).unwrap();
        assert_eq!(svid.key_id(), format!("kid-{i}"));
    }
    // A token whose kid names a different key of ours fails.
    let (token, _) = sign(0, "kid-1");
    assert!(spiffe::JwtSvid::parse_and_validate(&token, &set, &["svc"]).is_err());
}

#[test]
fn hand_written_document_from_the_spec_skeleton() {
    // Checklist §3.3 skeleton, filled with keys that rcgen made and encoded here.
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let jwt_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (ca_raw, jwt_raw) = (ca_key.public_key_raw(), jwt_key.public_key_raw());
    let b = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let doc = format!(
        r#"{{"keys":[{{"use":"x509-svid","kty":"EC","crv":"P-384","x":"{}","y":"{}","x5c":["{}"]}},
         {{"use":"jwt-svid","kty":"EC","kid":"C6vs25welZOx6WksNYfbMfiw9l96pMnD","crv":"P-256","x":"{}","y":"{}"}}],
 "spiffe_refresh_hint":60,"spiffe_sequence":1}}"#,
        b(&ca_raw[1..49]),
        b(&ca_raw[49..]),
        STANDARD.encode(ca.der()),
        b(&jwt_raw[1..33]),
        b(&jwt_raw[33..]),
    );
    let bundle = Bundle::from_document(td(), doc.as_bytes()).unwrap();
    assert_eq!(bundle.x509().authorities(), std::slice::from_ref(ca.der()));
    let authority = bundle
        .jwt()
        .authority("C6vs25welZOx6WksNYfbMfiw9l96pMnD")
        .unwrap();
    match authority.public_key() {
        PublicKey::Ec { point, .. } => assert_eq!(&point[..], jwt_raw),
        other => panic!("unexpected key {other:?}"),
    }
    assert_eq!(bundle.refresh_hint(), Some(Duration::from_secs(60)));
    assert_eq!(bundle.sequence(), Some(1));
}

#[test]
fn bundle_map() {
    let f = fixture();
    let one = json!({"keys": [x509_jwk(0)], "spiffe_refresh_hint": 30});
    let two = json!({"keys": [jwt_jwk(1, "k")], "spiffe_sequence": 7});
    let map = json!({"trust_domains": {"example.org": one, "other.test": two}});
    let set = BundleSet::from_bundle_map(map.to_string().as_bytes()).unwrap();
    assert_eq!(set.len(), 2);
    let a = set.require("example.org").unwrap();
    assert_eq!(a.x509().authorities(), &f.cas[0..1]);
    // Per-bundle hints never reach the caller (item 41).
    assert_eq!(a.refresh_hint(), None);
    assert_eq!(set.require("other.test").unwrap().sequence(), Some(7));

    let written = set.to_bundle_map().unwrap();
    assert_eq!(BundleSet::from_bundle_map(written.as_bytes()).unwrap(), set);
    let value: Value = serde_json::from_str(&written).unwrap();
    assert!(
        value["trust_domains"]["example.org"]
            .get("spiffe_refresh_hint")
            .is_none()
    );

    assert_eq!(
        BundleSet::from_bundle_map(br#"{"trust_domains":{}}"#)
            .unwrap()
            .len(),
        0
    );
    let cases: [(&[u8], &str); 5] = [
        (br#"{}"#, "no trust_domains member"),
        (
            br#"{"trust_domains":{"a.test":{"keys":[]},"a.test":{"keys":[]}}}"#,
            "duplicate member \"a.test\"",
        ),
        (
            br#"{"trust_domains":{"a.test":{"keys":[]},"spiffe://a.test":{"keys":[]}}}"#,
            "trust_domains: duplicate trust domain \"a.test\"",
        ),
        (
            br#"{"trust_domains":{"A.test":{"keys":[]}}}"#,
            "trust_domains: invalid trust domain \"A.test\"",
        ),
        (
            br#"{"trust_domains":{"a.test":{}}}"#,
            "trust_domains[\"a.test\"]: no keys member",
        ),
    ];
    for (input, expected) in cases {
        let err = BundleSet::from_bundle_map(input).unwrap_err().to_string();
        assert!(err.contains(expected), "{err} does not contain {expected}");
    }
    let err = BundleSet::from_bundle_map(
        br#"{"trust_domains":{"a.test":{"keys":[{"use":"jwt-svid","kty":"EC"}]}}}"#,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "trust_domains[\"a.test\"].keys[0]: jwt-svid entry has no kid"
    );
}

/// A bundle from fixture indices, kids, sequence and hint.
fn build(
    cas: &[usize],
    jwt: &[(usize, String)],
    sequence: Option<u64>,
    hint: Option<(u64, u32)>,
) -> Bundle {
    let f = fixture();
    let mut bundle = Bundle::new(td());
    for &i in cas {
        bundle.x509_mut().add_authority(f.cas[i].clone());
    }
    for (i, kid) in jwt {
        bundle
            .jwt_mut()
            .add_authority(JwtAuthority::new(kid.clone(), f.jwt_keys[*i].public_key()).unwrap());
    }
    bundle.set_sequence(sequence);
    bundle.set_refresh_hint(hint.map(|(s, n)| Duration::new(s, n)));
    bundle
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let words = prop_oneof![
        Just("keys"),
        Just("use"),
        Just("kty"),
        Just("kid"),
        Just("x5c"),
        Just("crv"),
        Just("x"),
        Just("y"),
        Just("n"),
        Just("e"),
        Just("x509-svid"),
        Just("jwt-svid"),
        Just("EC"),
        Just("RSA"),
        Just("OKP"),
        Just("P-256"),
        Just("Ed25519"),
        Just("spiffe_sequence"),
        Just("spiffe_refresh_hint"),
        Just("trust_domains"),
        Just("example.org"),
        Just("AAAA"),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        words.clone().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    let key = prop_oneof![words.prop_map(str::to_owned), ".{0,6}"];
    leaf.prop_recursive(4, 64, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every parser on `bytes`: no panic, and what parses writes back and re-parses equal.
fn check_all_parsers(bytes: &[u8]) {
    if let Ok(bundle) = Bundle::from_document(td(), bytes) {
        let doc = bundle.to_document().unwrap();
        assert_eq!(Bundle::from_document(td(), doc.as_bytes()).unwrap(), bundle);
    }
    if let Ok(bundle) = JwtBundle::from_jwks(td(), bytes) {
        assert_eq!(
            JwtBundle::from_jwks(td(), bundle.to_jwks().as_bytes()).unwrap(),
            bundle
        );
    }
    if let Ok(set) = BundleSet::from_bundle_map(bytes) {
        let map = set.to_bundle_map().unwrap();
        assert_eq!(BundleSet::from_bundle_map(map.as_bytes()).unwrap(), set);
    }
    if let Ok(bundle) = X509Bundle::from_der(td(), bytes) {
        assert_eq!(
            X509Bundle::from_der(td(), &bundle.to_der()).unwrap(),
            bundle
        );
    }
    if let Ok(bundle) = X509Bundle::from_pem(td(), bytes) {
        assert_eq!(
            X509Bundle::from_pem(td(), bundle.to_pem().as_bytes()).unwrap(),
            bundle
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_bundles_round_trip(
        cas in proptest::collection::vec(0usize..3, 0..5),
        jwt in proptest::collection::vec((0usize..3, "[A-Za-z0-9_-]{1,12}"), 0..5),
        sequence in proptest::option::of(any::<u64>()),
        hint in proptest::option::of((0u64..u64::MAX / 2, 0u32..1_000_000_000)),
    ) {
        // Distinct kids: the document rejects a kid used twice.
        let jwt: Vec<_> = jwt.into_iter().enumerate()
            .map(|(n, (i, kid))| (i, format!("{kid}.{n}"))).collect();
        let bundle = build(&cas, &jwt, sequence, hint);
        let doc = bundle.to_document().unwrap();
        let again = Bundle::from_document(td(), doc.as_bytes()).unwrap();
        prop_assert_eq!(&again, &after_trip(&bundle));
        prop_assert_eq!(again.to_document().unwrap(), doc);
        let jwks = bundle.jwt().to_jwks();
        prop_assert_eq!(&JwtBundle::from_jwks(td(), jwks.as_bytes()).unwrap(), bundle.jwt());
        let set: BundleSet = [again].into_iter().collect();
        let map = set.to_bundle_map().unwrap();
        let mut expected = after_trip(&bundle);
        expected.set_refresh_hint(None);
        let parsed = BundleSet::from_bundle_map(map.as_bytes()).unwrap();
        prop_assert_eq!(parsed.get("example.org"), Some(&expected));
    }

    #[test]
    fn random_json_never_panics(value in arbitrary_json(), wrap in 0u8..3) {
        let value = match wrap {
            0 => value,
            1 => json!({"keys": [value]}),
            _ => json!({"trust_domains": {"example.org": {"keys": [value]}}}),
        };
        check_all_parsers(value.to_string().as_bytes());
    }

}

proptest! {
    // Cheap cases, and the member combinations that matter are sparse: run more of them.
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_jwk_members_never_panic(
        kid in proptest::option::of(prop::sample::select(vec!["k", ""])),
        crv in prop::sample::select(vec!["P-256", "P-384", "P-521", "Ed25519", "X25519"]),
        params in proptest::collection::vec(
            proptest::option::of(prop_oneof![
                prop::sample::select(vec!["", "AA", "AAAA", "AQAB", "AQ", "_w"])
                    .prop_map(str::to_owned),
                "[A-Za-z0-9_-]{0,4}",
                "[A-Za-z0-9_=+/-]{0,120}",
            ]),
            4,
        ),
        x5c in proptest::option::of(proptest::collection::vec("[A-Za-z0-9+/=]{0,40}", 0..3)),
    ) {
        // Every use and kty with the same random members: the combinations are sparse
        // otherwise.
        for key_use in ["x509-svid", "jwt-svid", "wit-svid"] {
            for kty in ["EC", "RSA", "OKP", "oct"] {
                let mut jwk = serde_json::Map::new();
                jwk.insert("use".into(), key_use.into());
                if let Some(kid) = kid {
                    jwk.insert("kid".into(), kid.into());
                }
                jwk.insert("kty".into(), kty.into());
                jwk.insert("crv".into(), crv.into());
                for (name, value) in ["x", "y", "n", "e"].into_iter().zip(&params) {
                    if let Some(value) = value {
                        jwk.insert(name.into(), value.clone().into());
                    }
                }
                if let Some(x5c) = &x5c {
                    jwk.insert("x5c".into(), json!(x5c));
                }
                let doc = json!({"keys": [Value::Object(jwk)]});
                check_all_parsers(doc.to_string().as_bytes());
            }
        }
    }

    #[test]
    fn mutated_documents_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = full_bundle().to_document().unwrap().into_bytes();
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let end = cut.index(bytes.len() + 1);
        check_all_parsers(&bytes[..end]);
    }
}

#[test]
fn ed25519_and_p521_authorities_round_trip_as_okp_and_ec() {
    let mut bundle = Bundle::new(td());
    let mut raws = Vec::new();
    for alg in [&rcgen::PKCS_ED25519, &rcgen::PKCS_ECDSA_P521_SHA512] {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        bundle
            .x509_mut()
            .add_authority(params.self_signed(&key).unwrap().der().clone());
        raws.push(key.public_key_raw().to_vec());
    }
    let doc = bundle.to_document().unwrap();
    assert_eq!(Bundle::from_document(td(), doc.as_bytes()).unwrap(), bundle);
    let value: Value = serde_json::from_str(&doc).unwrap();
    let (okp, ec) = (&value["keys"][0], &value["keys"][1]);
    assert_eq!(
        (okp["kty"].as_str(), okp["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    assert_eq!(
        URL_SAFE_NO_PAD.decode(okp["x"].as_str().unwrap()).unwrap(),
        raws[0]
    );
    assert_eq!(
        (ec["kty"].as_str(), ec["crv"].as_str()),
        (Some("EC"), Some("P-521"))
    );
    // RFC 7518 §6.2.1.2: P-521 coordinates are 66 bytes, leading zeros kept.
    let x = URL_SAFE_NO_PAD.decode(ec["x"].as_str().unwrap()).unwrap();
    assert_eq!(x, raws[1][1..67]);
    // jsonwebtoken's JWK model reads both.
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(value).unwrap();
    assert_eq!(set.keys.len(), 2);
}
