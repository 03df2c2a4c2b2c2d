//! JWT-SVIDs: round trips for every algorithm, a table of bad tokens each with its exact error,
//! and cross-checks against independent implementations (the `spiffe` crate and
//! `jsonwebtoken`), both ways.

// Test helpers and fixtures outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P521_SHA512_ASN1_SIGNING, EcdsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use serde_json::{Value, json};
use sigil_spiffe::jwt::{self, Algorithm, JwtSigner, JwtSvidParams, PrivateKeySigner, danger};
use sigil_spiffe::key::EcCurve;
use sigil_spiffe::{
    Bundle, BundleSet, JwtAuthority, JwtSvid, JwtSvidError, KeyType, PrivateKey, PublicKey,
    SpiffeId, SpiffeIdError,
};

const TD: &str = "example.org";
const SUB: &str = "spiffe://example.org/workload";

/// Keys are generated once per test binary: RSA generation is slow.
static P256: LazyLock<PrivateKey> =
    LazyLock::new(|| PrivateKey::generate(KeyType::EcP256).unwrap());
static P256_OTHER: LazyLock<PrivateKey> =
    LazyLock::new(|| PrivateKey::generate(KeyType::EcP256).unwrap());
static P384: LazyLock<PrivateKey> =
    LazyLock::new(|| PrivateKey::generate(KeyType::EcP384).unwrap());
static P521: LazyLock<PrivateKey> = LazyLock::new(|| {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P521_SHA512_ASN1_SIGNING, &SystemRandom::new())
        .unwrap();
    PrivateKey::from_pkcs8_der(doc.as_ref()).unwrap()
});
static RSA: LazyLock<PrivateKey> =
    LazyLock::new(|| PrivateKey::generate(KeyType::Rsa2048).unwrap());

fn key_for(alg: Algorithm) -> &'static PrivateKey {
    match alg.curve() {
        Some(EcCurve::P256) => &P256,
        Some(EcCurve::P384) => &P384,
        Some(EcCurve::P521) => &P521,
        None => &RSA,
    }
}

/// The kid each test key is published under.
fn kid_for(alg: Algorithm) -> &'static str {
    match alg.curve() {
        Some(EcCurve::P256) => "kid-p256",
        Some(EcCurve::P384) => "kid-p384",
        Some(EcCurve::P521) => "kid-p521",
        None => "kid-rsa",
    }
}

fn copy(key: &PrivateKey) -> PrivateKey {
    PrivateKey::from_pkcs8_der(key.pkcs8_der()).unwrap()
}

fn signer(alg: Algorithm) -> PrivateKeySigner {
    PrivateKeySigner::new(kid_for(alg), copy(key_for(alg)), alg).unwrap()
}

/// One bundle for example.org with all four test keys, one for other.org with P256_OTHER.
fn bundles() -> BundleSet {
    let mut bundle = Bundle::new(TD.parse().unwrap());
    for alg in [
        Algorithm::Es256,
        Algorithm::Es384,
        Algorithm::Es512,
        Algorithm::Rs256,
    ] {
        bundle
            .jwt_mut()
            .add_authority(JwtAuthority::new(kid_for(alg), key_for(alg).public_key()).unwrap());
    }
    let mut other = Bundle::new("other.org".parse().unwrap());
    other
        .jwt_mut()
        .add_authority(JwtAuthority::new("kid-other", P256_OTHER.public_key()).unwrap());
    [bundle, other].into_iter().collect()
}

const NOW: u64 = 1_800_000_000;

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs arbitrary header and claims JSON with a signer's key, whatever the header says.
fn craft(signer: &dyn JwtSigner, header: &str, claims: &str) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let signature = signer.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64(signature))
}

fn good_claims() -> Value {
    json!({"sub": SUB, "aud": ["audience"], "exp": NOW + 300, "iat": NOW})
}

fn claims_with(f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let Value::Object(mut claims) = good_claims() else {
        unreachable!()
    };
    f(&mut claims);
    Value::Object(claims).to_string()
}

const ES256_HEADER: &str = r#"{"alg":"ES256","kid":"kid-p256","typ":"JWT"}"#;

fn validate(token: &str) -> Result<JwtSvid, JwtSvidError> {
    JwtSvid::parse_and_validate(token, &bundles(), &["audience"], at(NOW))
}

#[test]
fn every_algorithm_round_trips() {
    let bundles = bundles();
    for alg in Algorithm::ALL {
        let svid = jwt::mint(
            &signer(alg),
            JwtSvidParams::new(
                SUB.parse().unwrap(),
                ["audience", "other"],
                at(NOW),
                at(NOW + 300),
            )
            .with_claim("jti", json!("id-1")),
        )
        .unwrap();
        let parsed =
            JwtSvid::parse_and_validate(svid.token(), &bundles, &["other"], at(NOW + 1)).unwrap();
        assert_eq!(parsed.spiffe_id().as_str(), SUB, "{alg}");
        assert_eq!(parsed.audience(), ["audience", "other"]);
        assert_eq!(parsed.expiry(), at(NOW + 300));
        assert_eq!(parsed.algorithm(), alg);
        assert_eq!(parsed.key_id(), kid_for(alg));
        assert_eq!(parsed.claims()["jti"], "id-1");
        assert_eq!(parsed.claims(), svid.claims());
        assert_eq!(parsed.token(), svid.token());
        // The signature length is the fixed r || s for ECDSA, the modulus size for RSA.
        let signature = URL_SAFE_NO_PAD
            .decode(svid.token().rsplit('.').next().unwrap())
            .unwrap();
        let expected = alg.curve().map_or(256, |c| 2 * c.coordinate_len());
        assert_eq!(signature.len(), expected, "{alg}");
    }
}

#[test]
fn header_typ_may_be_jwt_jose_or_absent() {
    let claims = good_claims().to_string();
    for header in [
        r#"{"alg":"ES256","kid":"kid-p256","typ":"JWT"}"#,
        r#"{"alg":"ES256","kid":"kid-p256","typ":"JOSE"}"#,
        r#"{"kid":"kid-p256","alg":"ES256"}"#,
    ] {
        let token = craft(&signer(Algorithm::Es256), header, &claims);
        assert_eq!(
            validate(&token).unwrap().spiffe_id().as_str(),
            SUB,
            "{header}"
        );
    }
}

#[test]
fn bad_tokens_fail_with_the_check_that_names_them() {
    let es256 = signer(Algorithm::Es256);
    let rs256 = signer(Algorithm::Rs256);
    let good = craft(&es256, ES256_HEADER, &good_claims().to_string());
    assert!(validate(&good).is_ok());
    let (good_input, good_signature) = good.rsplit_once('.').unwrap();
    let claims = good_claims().to_string();
    let another_p256 =
        PrivateKeySigner::new("kid-p256", copy(&P256_OTHER), Algorithm::Es256).unwrap();
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some("kid-p256".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &good_claims(),
        &jsonwebtoken::EncodingKey::from_secret(b"secret"),
    )
    .unwrap();

    let cases: Vec<(&str, String, JwtSvidError)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(r#"{"alg":"none","kid":"kid-p256"}"#),
                b64(&claims)
            ),
            JwtSvidError::UnsupportedAlgorithm("none".into()),
        ),
        (
            "HS256 from jsonwebtoken",
            hs256,
            JwtSvidError::UnsupportedAlgorithm("HS256".into()),
        ),
        (
            "EdDSA",
            craft(&es256, r#"{"alg":"EdDSA","kid":"kid-p256"}"#, &claims),
            JwtSvidError::UnsupportedAlgorithm("EdDSA".into()),
        ),
        (
            "lower-case alg",
            craft(&es256, r#"{"alg":"es256","kid":"kid-p256"}"#, &claims),
            JwtSvidError::UnsupportedAlgorithm("es256".into()),
        ),
        (
            "missing alg",
            craft(&es256, r#"{"kid":"kid-p256","typ":"JWT"}"#, &claims),
            JwtSvidError::MissingAlgorithm,
        ),
        (
            "alg not a string",
            craft(&es256, r#"{"alg":["ES256"],"kid":"kid-p256"}"#, &claims),
            JwtSvidError::HeaderParameterType("alg"),
        ),
        (
            "missing kid",
            craft(&es256, r#"{"alg":"ES256","typ":"JWT"}"#, &claims),
            JwtSvidError::MissingKeyId,
        ),
        (
            "empty kid",
            craft(&es256, r#"{"alg":"ES256","kid":""}"#, &claims),
            JwtSvidError::MissingKeyId,
        ),
        (
            "unknown kid",
            craft(&es256, r#"{"alg":"ES256","kid":"noKey"}"#, &claims),
            JwtSvidError::NoAuthority {
                key_id: "noKey".into(),
                trust_domain: TD.into(),
            },
        ),
        (
            "extra header parameter",
            craft(
                &es256,
                r#"{"alg":"ES256","kid":"kid-p256","typ":"JWT","jku":"https://x"}"#,
                &claims,
            ),
            JwtSvidError::UnexpectedHeaderParameter("jku".into()),
        ),
        (
            "crit header",
            craft(
                &es256,
                r#"{"alg":"ES256","crit":["exp"],"kid":"kid-p256"}"#,
                &claims,
            ),
            JwtSvidError::UnexpectedHeaderParameter("crit".into()),
        ),
        (
            "typ wrong",
            craft(
                &es256,
                r#"{"alg":"ES256","kid":"kid-p256","typ":"invalid"}"#,
                &claims,
            ),
            JwtSvidError::InvalidType("invalid".into()),
        ),
        (
            "typ lower case",
            craft(
                &es256,
                r#"{"alg":"ES256","kid":"kid-p256","typ":"jwt"}"#,
                &claims,
            ),
            JwtSvidError::InvalidType("jwt".into()),
        ),
        (
            "header not an object",
            craft(&es256, r#"["ES256"]"#, &claims),
            JwtSvidError::InvalidHeader(
                "invalid type: sequence, expected a jose header object at line 1 column 0".into(),
            ),
        ),
        (
            "missing sub",
            craft(
                &es256,
                ES256_HEADER,
                &claims_with(|c| drop(c.remove("sub"))),
            ),
            JwtSvidError::MissingSubject,
        ),
        (
            "invalid sub",
            craft(
                &es256,
                ES256_HEADER,
                &claims_with(|c| drop(c.insert("sub".into(), json!("invalid subject")))),
            ),
            JwtSvidError::InvalidSubject(SpiffeIdError::WrongScheme),
        ),
        (
            "sub with upper-case trust domain",
            craft(
                &es256,
                ES256_HEADER,
                &claims_with(|c| drop(c.insert("sub".into(), json!("spiffe://Example.org/w")))),
            ),
            JwtSvidError::InvalidSubject(SpiffeIdError::BadTrustDomainChar {
                found: 'E',
                position: 0,
            }),
        ),
        (
            "sub not a string",
            craft(
                &es256,
                ES256_HEADER,
                &claims_with(|c| drop(c.insert("sub".into(), json!(["x"])))),
            ),
            JwtSvidError::InvalidClaim {
                claim: "sub",
                reason: "must be a string",
            },
        ),
        (
            "missing exp",
            craft(
                &es256,
                ES256_HEADER,
                &claims_with(|c| drop(c.remove("exp"))),
            ),
            JwtSvidError::MissingExpiry,
        ),
        (
            "exp not an integer",
            craft(
                &es256,
                ES256_HEADER,
                &claims_with(|c| drop(c.insert("exp".into(), json!("tomorrow")))),
            ),
            JwtSvidError::InvalidClaim {
                claim: "exp",
                reason: "must be a non-negative integer",
            },
        ),
        (
            "expired beyond the leeway",
            craft(
                &es256,
                ES256_HEADER,
                &claims_with(|c| {
                    c.insert("exp".into(), json!(NOW - 60));
                    c.insert("iat".into(), json!(NOW - 360));
                }),
            ),
            JwtSvidError::Expired {
                expiry: NOW - 60,
                now: NOW,
                leeway: 60,
            },
        ),
        (
            "nbf in the future",
            craft(
                &es256,
                ES256_HEADER,
                &claims_with(|c| drop(c.insert("nbf".into(), json!(NOW + 61)))),
            ),
            JwtSvidError::NotYetValid {
                not_before: NOW + 61,
                now: NOW,
                leeway: 60,
            },
        ),
        (
            "iat in the future",
            craft(
                &es256,
                ES256_HEADER,
                &claims_with(|c| drop(c.insert("iat".into(), json!(NOW + 61)))),
            ),
            JwtSvidError::IssuedInFuture {
                issued_at: NOW + 61,
                now: NOW,
                leeway: 60,
            },
        ),
        (
            "missing aud",
            craft(
                &es256,
                ES256_HEADER,
                &claims_with(|c| drop(c.remove("aud"))),
            ),
            JwtSvidError::MissingAudience,
        ),
        (
            "empty aud array",
            craft(
                &es256,
                ES256_HEADER,
                &claims_with(|c| drop(c.insert("aud".into(), json!([])))),
            ),
            JwtSvidError::EmptyAudience,
        ),
        (
            "aud not strings",
            craft(
                &es256,
                ES256_HEADER,
                &claims_with(|c| drop(c.insert("aud".into(), json!([1])))),
            ),
            JwtSvidError::InvalidClaim {
                claim: "aud",
                reason: "must be a string or an array of strings",
            },
        ),
        (
            "wrong aud",
            craft(
                &es256,
                ES256_HEADER,
                &claims_with(|c| drop(c.insert("aud".into(), json!("another")))),
            ),
            JwtSvidError::AudienceMismatch {
                actual: vec!["another".into()],
                expected: vec!["audience".into()],
            },
        ),
        (
            "claims not an object",
            craft(&es256, ES256_HEADER, "[1,2]"),
            JwtSvidError::InvalidClaims(
                "invalid type: sequence, expected a json object at line 1 column 0".into(),
            ),
        ),
        (
            "no bundle for the trust domain",
            craft(
                &es256,
                ES256_HEADER,
                &claims_with(|c| drop(c.insert("sub".into(), json!("spiffe://another.domain/w")))),
            ),
            JwtSvidError::NoBundle("another.domain".into()),
        ),
        (
            "kid of another trust domain",
            craft(&es256, r#"{"alg":"ES256","kid":"kid-other"}"#, &claims),
            JwtSvidError::NoAuthority {
                key_id: "kid-other".into(),
                trust_domain: TD.into(),
            },
        ),
        (
            "signature by another key",
            craft(&another_p256, ES256_HEADER, &claims),
            JwtSvidError::InvalidSignature,
        ),
        (
            "RSA key signs, kid names an EC key",
            craft(&rs256, ES256_HEADER, &claims),
            JwtSvidError::InvalidSignature,
        ),
        (
            "RS256 with a kid naming an EC key",
            craft(&rs256, r#"{"alg":"RS256","kid":"kid-p256"}"#, &claims),
            JwtSvidError::KeyMismatch {
                key_id: "kid-p256".into(),
                key: "EC P-256",
                algorithm: Algorithm::Rs256,
            },
        ),
        (
            "ES384 with a kid naming a P-256 key",
            craft(
                &signer(Algorithm::Es384),
                r#"{"alg":"ES384","kid":"kid-p256"}"#,
                &claims,
            ),
            JwtSvidError::KeyMismatch {
                key_id: "kid-p256".into(),
                key: "EC P-256",
                algorithm: Algorithm::Es384,
            },
        ),
        (
            "claims changed after signing",
            format!(
                "{}.{}.{good_signature}",
                b64(ES256_HEADER),
                b64(claims_with(|c| drop(
                    c.insert("sub".into(), json!("spiffe://example.org/admin"))
                )))
            ),
            JwtSvidError::InvalidSignature,
        ),
        (
            "garbage",
            "invalid token".into(),
            JwtSvidError::NotCompact { parts: 1 },
        ),
        (
            "empty",
            String::new(),
            JwtSvidError::NotCompact { parts: 1 },
        ),
        (
            "truncated to two parts",
            good_input.to_owned(),
            JwtSvidError::NotCompact { parts: 2 },
        ),
        (
            "truncated by one character",
            good[..good.len() - 1].to_owned(),
            JwtSvidError::InvalidEncoding { part: "signature" },
        ),
        (
            "truncated by two characters",
            good[..good.len() - 2].to_owned(),
            JwtSvidError::InvalidSignature,
        ),
        (
            "four parts",
            format!("{good}.AAAA"),
            JwtSvidError::NotCompact { parts: 4 },
        ),
        (
            "five parts (JWE)",
            "a.b.c.d.e".into(),
            JwtSvidError::NotCompact { parts: 5 },
        ),
        (
            "JSON serialization",
            json!({
                "payload": b64(&claims),
                "signatures": [{"protected": b64(ES256_HEADER), "signature": good_signature}],
            })
            .to_string(),
            JwtSvidError::JsonSerialization,
        ),
        (
            "padded base64",
            format!("{}=.{}.{good_signature}", b64(ES256_HEADER), b64(&claims)),
            JwtSvidError::InvalidEncoding { part: "header" },
        ),
        (
            "standard base64 alphabet in the header",
            format!(
                "{}+.{}.{good_signature}",
                &b64(ES256_HEADER)[1..],
                b64(&claims)
            ),
            JwtSvidError::InvalidEncoding { part: "header" },
        ),
        (
            "standard base64 alphabet in the claims",
            format!(
                "{}.{}/.{good_signature}",
                b64(ES256_HEADER),
                &b64(&claims)[1..]
            ),
            JwtSvidError::InvalidEncoding { part: "claims" },
        ),
        (
            "huge signature",
            format!("{good_input}.{}", "A".repeat(2000)),
            JwtSvidError::SignatureTooLong,
        ),
        (
            "too long",
            format!("{good_input}.{}", "A".repeat(70_000)),
            JwtSvidError::TooLong {
                len: good_input.len() + 1 + 70_000,
            },
        ),
    ];
    for (name, token, expected) in cases {
        assert_eq!(
            validate(&token).map(|s| s.spiffe_id().clone()),
            Err(expected),
            "{name}"
        );
    }
}

#[test]
fn expected_audience_must_be_named() {
    let token = jwt::mint(
        &signer(Algorithm::Es256),
        JwtSvidParams::new(SUB.parse().unwrap(), ["audience"], at(NOW), at(NOW + 60)),
    )
    .unwrap();
    let none: [&str; 0] = [];
    for expected in [&none[..], &[""][..]] {
        assert_eq!(
            JwtSvid::parse_and_validate(token.token(), &bundles(), expected, at(NOW)).unwrap_err(),
            JwtSvidError::NoExpectedAudience
        );
    }
    // Any one of the expected audiences is enough.
    assert!(
        JwtSvid::parse_and_validate(token.token(), &bundles(), &["x", "audience"], at(NOW)).is_ok()
    );
}

#[test]
fn insecure_parse_checks_everything_but_the_key() {
    let unknown = PrivateKeySigner::new(
        "kid-unknown",
        PrivateKey::generate(KeyType::EcP256).unwrap(),
        Algorithm::Es256,
    )
    .unwrap();
    let token = jwt::mint(
        &unknown,
        JwtSvidParams::new(
            "spiffe://nowhere.test/w".parse().unwrap(),
            ["audience"],
            at(NOW),
            at(NOW + 60),
        ),
    )
    .unwrap();
    assert_eq!(
        validate(token.token()).unwrap_err(),
        JwtSvidError::NoBundle("nowhere.test".into())
    );
    let parsed = danger::parse_insecure(token.token(), &["audience"], at(NOW)).unwrap();
    assert_eq!(parsed.spiffe_id().as_str(), "spiffe://nowhere.test/w");
    assert!(matches!(
        danger::parse_insecure(token.token(), &["audience"], at(NOW + 120)),
        Err(JwtSvidError::Expired { .. })
    ));
    assert!(matches!(
        danger::parse_insecure(token.token(), &["other"], at(NOW)),
        Err(JwtSvidError::AudienceMismatch { .. })
    ));
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","kid":"k"}"#),
        b64(good_claims().to_string())
    );
    assert_eq!(
        danger::parse_insecure(&none, &["audience"], at(NOW)).unwrap_err(),
        JwtSvidError::UnsupportedAlgorithm("none".into())
    );
}

#[test]
fn weak_or_malformed_authority_keys_are_refused() {
    let claims = good_claims().to_string();
    let mut bundle = Bundle::new(TD.parse().unwrap());
    // A 1024-bit modulus (the top byte set, so it really has 1024 bits).
    let weak = PublicKey::Rsa {
        n: vec![0xc5; 128].into(),
        e: vec![1, 0, 1].into(),
    };
    bundle
        .jwt_mut()
        .add_authority(JwtAuthority::new("weak", weak).unwrap());
    let bad_point = PublicKey::Ec {
        curve: EcCurve::P256,
        point: vec![4; 65].into(),
    };
    bundle
        .jwt_mut()
        .add_authority(JwtAuthority::new("bad-point", bad_point).unwrap());
    let set: BundleSet = [bundle].into_iter().collect();
    let cases = [
        (
            craft(
                &signer(Algorithm::Rs256),
                r#"{"alg":"RS256","kid":"weak"}"#,
                &claims,
            ),
            "weak",
        ),
        (
            craft(
                &signer(Algorithm::Es256),
                r#"{"alg":"ES256","kid":"bad-point"}"#,
                &claims,
            ),
            "bad-point",
        ),
    ];
    for (token, kid) in cases {
        assert_eq!(
            JwtSvid::parse_and_validate(&token, &set, &["audience"], at(NOW)).unwrap_err(),
            JwtSvidError::InvalidAuthorityKey(kid.into())
        );
    }
}

#[test]
fn authorities_compare_by_key_not_by_cache() {
    let authority = JwtAuthority::new("kid-p256", P256.public_key()).unwrap();
    let fresh = authority.clone();
    let mut bundle = Bundle::new(TD.parse().unwrap());
    bundle.jwt_mut().add_authority(authority);
    let set: BundleSet = [bundle.clone()].into_iter().collect();
    let token = craft(
        &signer(Algorithm::Es256),
        ES256_HEADER,
        &good_claims().to_string(),
    );
    JwtSvid::parse_and_validate(&token, &set, &["audience"], at(NOW)).unwrap();
    // The authority in `set` has parsed its key now; equality must not notice.
    assert_eq!(
        set.get(TD).unwrap().jwt().authority("kid-p256").unwrap(),
        &fresh
    );
    assert_eq!(set.get(TD).unwrap(), &bundle);
    assert_ne!(
        fresh,
        JwtAuthority::new("kid-p256", P256_OTHER.public_key()).unwrap()
    );
}

#[test]
fn mint_refuses_signers_that_return_der_ecdsa() {
    /// A backend that forgets to convert its DER signatures.
    struct DerSigner;
    impl JwtSigner for DerSigner {
        fn key_id(&self) -> &str {
            "kid"
        }
        fn algorithm(&self) -> Algorithm {
            Algorithm::Es256
        }
        fn sign(&self, _: &[u8]) -> Result<Vec<u8>, jwt::JwtError> {
            Ok(vec![0x30; 71])
        }
    }
    let err = jwt::mint(
        &DerSigner,
        JwtSvidParams::new(SUB.parse().unwrap(), ["a"], at(NOW), at(NOW + 60)),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "signer returned a 71-byte signature; ES256 needs 64 bytes (r || s)"
    );
}

// ---- cross-checks with independent implementations ----

fn real_now() -> SystemTime {
    SystemTime::now()
}

/// A token that is valid at the real current time (the `spiffe` crate reads the clock).
fn mint_now(alg: Algorithm, audience: &[&str]) -> JwtSvid {
    let now = real_now();
    jwt::mint(
        &signer(alg),
        JwtSvidParams::new(
            SUB.parse().unwrap(),
            audience.iter().copied(),
            now,
            now + Duration::from_secs(300),
        ),
    )
    .unwrap()
}

#[test]
fn the_spiffe_crate_validates_our_tokens() {
    let td = spiffe::TrustDomain::new(TD).unwrap();
    let algs = [
        Algorithm::Es256,
        Algorithm::Es384,
        Algorithm::Rs256,
        Algorithm::Rs384,
        Algorithm::Rs512,
        Algorithm::Ps256,
        Algorithm::Ps384,
        Algorithm::Ps512,
    ];
    // The JWKS is our own writer's output (the FetchJWTBundles form).
    let jwks = bundles().require(TD).unwrap().jwt().to_jwks();
    let mut set = spiffe::JwtBundleSet::new();
    set.add_bundle(spiffe::JwtBundle::from_jwt_authorities(td, jwks.as_bytes()).unwrap());
    for alg in algs {
        let ours = mint_now(alg, &["audience"]);
        let theirs = spiffe::JwtSvid::parse_and_validate(ours.token(), &set, &["audience"])
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(theirs.spiffe_id().to_string(), SUB);
        assert_eq!(theirs.audience(), ["audience"]);
        assert_eq!(theirs.key_id(), kid_for(alg));
        assert_eq!(
            theirs.expiry().unix_timestamp() as u64,
            ours.expiry().duration_since(UNIX_EPOCH).unwrap().as_secs()
        );
        // It does check: the wrong audience and a foreign signature fail there too.
        assert!(spiffe::JwtSvid::parse_and_validate(ours.token(), &set, &["other"]).is_err());
    }
    let now = real_now();
    let forged = jwt::mint(
        &PrivateKeySigner::new("kid-p256", copy(&P256_OTHER), Algorithm::Es256).unwrap(),
        JwtSvidParams::new(
            SUB.parse().unwrap(),
            ["audience"],
            now,
            now + Duration::from_secs(60),
        ),
    )
    .unwrap();
    assert!(spiffe::JwtSvid::parse_and_validate(forged.token(), &set, &["audience"]).is_err());
}

/// jsonwebtoken's key for `kid`, read by jsonwebtoken from the SPIFFE bundle document that
/// our writer produces (x509-svid and jwt-svid entries side by side).
fn decoding_key(bundles: &BundleSet, kid: &str) -> jsonwebtoken::DecodingKey {
    let document = bundles.require(TD).unwrap().to_document().unwrap();
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&document).unwrap();
    let jwk = set
        .find(kid)
        .unwrap_or_else(|| panic!("no {kid} in {document}"));
    jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap()
}

fn jsonwebtoken_alg(alg: Algorithm) -> Option<jsonwebtoken::Algorithm> {
    // jsonwebtoken 11 has no ES512.
    match alg {
        Algorithm::Es512 => None,
        other => Some(other.as_str().parse().unwrap()),
    }
}

#[test]
fn jsonwebtoken_validates_our_tokens() {
    for alg in Algorithm::ALL {
        let Some(their_alg) = jsonwebtoken_alg(alg) else {
            continue;
        };
        let ours = mint_now(alg, &["audience", "second"]);
        let key = decoding_key(&bundles(), kid_for(alg));
        let mut validation = jsonwebtoken::Validation::new(their_alg);
        validation.set_audience(&["second"]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Value>(ours.token(), &key, &validation)
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(data.claims, Value::Object(ours.claims().clone()), "{alg}");
        assert_eq!(data.header.kid.as_deref(), Some(kid_for(alg)));
        assert_eq!(data.header.typ.as_deref(), Some("JWT"));
        validation.set_audience(&["other"]);
        assert!(jsonwebtoken::decode::<Value>(ours.token(), &key, &validation).is_err());
        if alg == Algorithm::Es256 {
            let mut other = Bundle::new(TD.parse().unwrap());
            other
                .jwt_mut()
                .add_authority(JwtAuthority::new("k", P256_OTHER.public_key()).unwrap());
            let other = decoding_key(&[other].into_iter().collect(), "k");
            validation.set_audience(&["second"]);
            assert!(jsonwebtoken::decode::<Value>(ours.token(), &other, &validation).is_err());
        }
    }
}

#[test]
fn we_validate_tokens_signed_by_jsonwebtoken() {
    let now = NOW;
    let claims = json!({"sub": SUB, "aud": "audience", "exp": now + 300, "iat": now, "jti": "x"});
    for alg in Algorithm::ALL {
        let Some(their_alg) = jsonwebtoken_alg(alg) else {
            continue;
        };
        let key = key_for(alg);
        let encoding = match alg.curve() {
            Some(_) => jsonwebtoken::EncodingKey::from_ec_der(key.pkcs8_der()),
            None => jsonwebtoken::EncodingKey::from_rsa_pem(key.to_pem().as_bytes()).unwrap(),
        };
        let mut header = jsonwebtoken::Header::new(their_alg);
        header.kid = Some(kid_for(alg).into());
        let token = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
        let ours = validate(&token).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(ours.spiffe_id().as_str(), SUB);
        assert_eq!(ours.audience(), ["audience"]);
        assert_eq!(ours.algorithm(), alg);
        assert_eq!(Value::Object(ours.claims().clone()), claims);
    }
    // Its HMAC tokens are refused by name.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("kid-p256".into());
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"k"),
    )
    .unwrap();
    assert_eq!(
        validate(&token).unwrap_err(),
        JwtSvidError::UnsupportedAlgorithm("HS256".into())
    );
}

// ---- properties ----

fn audience_value() -> impl Strategy<Value = String> {
    // Printable ASCII (quotes and backslashes exercise JSON escaping) and some non-ASCII.
    prop_oneof!["[ -~]{1,24}", "[a-zé✓\\u{10348}]{1,8}",]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn audiences_paths_and_kids_round_trip(
        audience in prop::collection::vec(audience_value(), 1..5),
        segments in prop::collection::vec("[A-Za-z0-9_-][A-Za-z0-9._-]{0,12}", 0..4),
        kid in "[ -~]{1,16}",
        lifetime in 1u64..100_000,
    ) {
        let id = SpiffeId::from_segments(&TD.parse().unwrap(), &segments).unwrap();
        let signer = PrivateKeySigner::new(kid.clone(), copy(&P256), Algorithm::Es256).unwrap();
        let svid = jwt::mint(
            &signer,
            JwtSvidParams::new(id.clone(), audience.clone(), at(NOW), at(NOW + lifetime)),
        ).unwrap();
        let mut bundle = Bundle::new(TD.parse().unwrap());
        bundle.jwt_mut().add_authority(JwtAuthority::new(kid.clone(), P256.public_key()).unwrap());
        let set: BundleSet = [bundle].into_iter().collect();
        let expected = [audience.last().unwrap().as_str()];
        let parsed = JwtSvid::parse_and_validate(svid.token(), &set, &expected, at(NOW)).unwrap();
        prop_assert_eq!(parsed.spiffe_id(), &id);
        prop_assert_eq!(parsed.audience(), &audience[..]);
        prop_assert_eq!(parsed.key_id(), kid.as_str());
        prop_assert_eq!(parsed.expiry(), at(NOW + lifetime));
        let insecure = danger::parse_insecure(svid.token(), &expected, at(NOW)).unwrap();
        prop_assert_eq!(insecure.claims(), parsed.claims());
        // And expired exactly at exp + leeway.
        let late = at(NOW + lifetime + jwt::DEFAULT_LEEWAY.as_secs());
        let expired = matches!(
            JwtSvid::parse_and_validate(svid.token(), &set, &expected, late),
            Err(JwtSvidError::Expired { .. })
        );
        prop_assert!(expired);
    }
}
