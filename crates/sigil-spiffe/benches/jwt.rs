//! JWT-SVID ES256 signing and full validation, next to the raw aws-lc-rs ECDSA P-256
//! operations they rest on, so the overhead of the JWT layer is visible in one run.

// A benchmark aborts on any setup failure; unwrap is the clearest way to say so.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    ParsedPublicKey,
};
use criterion::{Criterion, criterion_group, criterion_main};
use sigil_spiffe::jwt::{JwtSvidParams, PrivateKeySigner, mint};
use sigil_spiffe::{Bundle, BundleSet, JwtAuthority, JwtSvid, KeyType, PrivateKey};

fn jwt(c: &mut Criterion) {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let pkcs8 = key.pkcs8_der().to_vec();
    let signer = PrivateKeySigner::with_default_algorithm("kid-1", key).unwrap();

    let mut bundle = Bundle::new("example.org".parse().unwrap());
    bundle
        .jwt_mut()
        .add_authority(JwtAuthority::new("kid-1", signer.public_key()).unwrap());
    // Realistic neighbours: a bundle set with a few trust domains and keys.
    for n in 2..5 {
        bundle.jwt_mut().add_authority(
            JwtAuthority::new(
                format!("kid-{n}"),
                PrivateKey::generate(KeyType::EcP256).unwrap().public_key(),
            )
            .unwrap(),
        );
    }
    let mut bundles: BundleSet = [bundle].into_iter().collect();
    for td in ["a.test", "b.test", "c.test"] {
        bundles.insert(Bundle::new(td.parse().unwrap()));
    }

    let now = SystemTime::now();
    let params = JwtSvidParams::new(
        "spiffe://example.org/ns/default/sa/frontend"
            .parse()
            .unwrap(),
        ["spiffe://example.org/backend"],
        now,
        now + Duration::from_secs(300),
    );
    let svid = mint(&signer, params.clone()).unwrap();
    let token = svid.token().to_owned();
    let audience = ["spiffe://example.org/backend"];

    let mut group = c.benchmark_group("es256");
    group.bench_function("jwt_svid_sign", |b| {
        b.iter(|| mint(&signer, black_box(params.clone())).unwrap())
    });
    group.bench_function("jwt_svid_validate", |b| {
        b.iter(|| JwtSvid::parse_and_validate(black_box(&token), &bundles, &audience, now).unwrap())
    });

    // The raw operations, on the same signing input and signature length.
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).unwrap();
    let rng = SystemRandom::new();
    let (input, _) = token.rsplit_once('.').unwrap();
    let signature = pair.sign(&rng, input.as_bytes()).unwrap();
    let public = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key()).unwrap();
    group.bench_function("aws_lc_ecdsa_p256_sign", |b| {
        b.iter(|| pair.sign(&rng, black_box(input.as_bytes())).unwrap())
    });
    group.bench_function("aws_lc_ecdsa_p256_verify", |b| {
        b.iter(|| {
            public
                .verify_sig(black_box(input.as_bytes()), signature.as_ref())
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, jwt);
criterion_main!(benches);
