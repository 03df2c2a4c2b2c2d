//! X.509-SVID benchmarks: chain verification against raw ECDSA P-256 verification, and SVID
//! issuance for a CSR.
//!
//! Run: `cargo bench -p sigil-spiffe --bench x509`. The goal is verification of leaf +
//! intermediate (two signatures) in at most 2.5x one raw aws-lc-rs ECDSA P-256 verification.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ParsedPublicKey, UnparsedPublicKey};
use criterion::{Criterion, criterion_group, criterion_main};
use rustls_pki_types::UnixTime;
use sigil_spiffe::x509::{
    CaParams, SvidParams, SvidUsage, X509Authority, X509Signer, create_csr, verify_chain,
};
use sigil_spiffe::{Bundle, BundleSet, KeyType, PrivateKey, TrustDomain, X509Bundle};

fn bench(c: &mut Criterion) {
    let td = TrustDomain::new("example.org").expect("valid trust domain");
    let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let hour = Duration::from_secs(3600);
    let key = || Arc::new(PrivateKey::generate(KeyType::EcP256).expect("key generation"));

    let root =
        X509Authority::self_signed(key(), &CaParams::new(td.clone(), t - hour, t + 48 * hour))
            .expect("root CA");
    let inter = X509Authority::intermediate(
        key(),
        &CaParams::new(td.clone(), t - hour, t + 24 * hour),
        &root,
    )
    .expect("intermediate CA");
    let leaf_key = PrivateKey::generate(KeyType::EcP256).expect("key generation");
    let id = td.id_with_path("/bench/workload").expect("valid id");
    let csr = create_csr(&leaf_key, &id).expect("csr");
    let params = SvidParams::new(id, t - hour, t + hour);
    let issued = inter.sign_csr(&csr, &params).expect("issue");
    let chain = issued.cert_chain().to_vec();
    assert_eq!(chain.len(), 2);

    let mut bundle = Bundle::new(td.clone());
    *bundle.x509_mut() = X509Bundle::from_authorities(td, [root.certificate().clone()]);
    let bundles: BundleSet = [bundle].into_iter().collect();
    let now = UnixTime::since_unix_epoch(
        t.duration_since(SystemTime::UNIX_EPOCH)
            .expect("after epoch"),
    );
    verify_chain(&chain, &bundles, now, SvidUsage::ServerAuth).expect("chain verifies");

    // Raw ECDSA P-256 over a message the size of a TBSCertificate.
    let message = vec![0x5a_u8; 400];
    let signature = leaf_key.sign(&message).expect("sign");
    let sigil_spiffe::PublicKey::Ec { point: public, .. } = leaf_key.public_key() else {
        unreachable!("generated as a P-256 key")
    };
    let unparsed = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public.to_vec());
    unparsed.verify(&message, &signature).expect("raw verify");
    let parsed = ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &public[..]).expect("parse key");

    let mut group = c.benchmark_group("x509");
    group.bench_function("ecdsa_p256_verify_unparsed_key", |b| {
        b.iter(|| black_box(&unparsed).verify(black_box(&message), black_box(&signature)))
    });
    group.bench_function("ecdsa_p256_verify_parsed_key", |b| {
        b.iter(|| black_box(&parsed).verify_sig(black_box(&message), black_box(&signature)))
    });
    group.bench_function("verify_chain_leaf_plus_intermediate", |b| {
        b.iter(|| {
            verify_chain(
                black_box(&chain),
                black_box(&bundles),
                now,
                SvidUsage::ServerAuth,
            )
        })
    });
    group.bench_function("sign_csr_p256", |b| {
        b.iter(|| inter.sign_csr(black_box(&csr), black_box(&params)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
