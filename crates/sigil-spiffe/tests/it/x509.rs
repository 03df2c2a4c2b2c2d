//! X.509-SVIDs: bad certificates built with rcgen, our issuer cross-checked by the `spiffe`
//! crate and the `openssl` command, and certificates made by openssl read by us.

// Test helpers outside `#[test]` functions unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use sigil_spiffe::x509::{
    CaParams, SvidParams, SvidUsage, X509Authority, X509Signer, X509Svid, X509SvidError,
    create_csr, profile, verify_chain, verify_chain_with_bundle,
};
use sigil_spiffe::{Bundle, BundleSet, KeyType, PrivateKey, SpiffeId, TrustDomain, X509Bundle};

const TD: &str = "example.org";
/// A fixed "now": 2027-01-15T08:00:00Z. Nothing here reads the clock.
const NOW_SECS: u64 = 1_800_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

fn unix(t: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(t.duration_since(UNIX_EPOCH).unwrap())
}

fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

fn td() -> TrustDomain {
    TrustDomain::new(TD).unwrap()
}

fn id(path: &str) -> SpiffeId {
    format!("spiffe://{TD}{path}").parse().unwrap()
}

fn key(kt: KeyType) -> Arc<PrivateKey> {
    Arc::new(PrivateKey::generate(kt).unwrap())
}

fn root(kt: KeyType) -> (Arc<PrivateKey>, X509Authority) {
    let k = key(kt);
    let ca = X509Authority::self_signed(
        k.clone(),
        &CaParams::new(td(), now() - hours(1), now() + hours(48)),
    )
    .unwrap();
    (k, ca)
}

fn bundle_set(authorities: &[&CertificateDer<'static>]) -> BundleSet {
    let x509 = X509Bundle::from_authorities(td(), authorities.iter().map(|c| (*c).clone()));
    let mut bundle = Bundle::new(td());
    *bundle.x509_mut() = x509;
    [bundle].into_iter().collect()
}

/// Issues a workload SVID under `ca` and returns it joined to its key.
fn issue(ca: &X509Authority, kt: KeyType, path: &str) -> X509Svid {
    let k = PrivateKey::generate(kt).unwrap();
    let csr = create_csr(&k, &id(path)).unwrap();
    let issued = ca
        .sign_csr(
            &csr,
            &SvidParams::new(id(path), now() - Duration::from_secs(10), now() + hours(1)),
        )
        .unwrap();
    X509Svid::new(issued.into_cert_chain(), k).unwrap()
}

// ---------- rcgen-built certificates for the bad-certificate table ----------

struct TestCa {
    key: KeyPair,
    params: CertificateParams,
    der: CertificateDer<'static>,
}

/// The parameters of a well-formed CA certificate of the test trust domain, valid a day
/// either side of now; tests then break one rule at a time.
fn well_formed_ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.subject_alt_names = vec![SanType::URI(format!("spiffe://{TD}").try_into().unwrap())];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = (now() - hours(24)).into();
    params.not_after = (now() + hours(24)).into();
    params
}

impl TestCa {
    fn new(customize: impl FnOnce(&mut CertificateParams)) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = well_formed_ca_params("test root");
        customize(&mut params);
        let der = params.self_signed(&key).unwrap().der().clone();
        Self { key, params, der }
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    /// A CA signed by this one.
    fn sub_ca(&self, customize: impl FnOnce(&mut CertificateParams)) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = well_formed_ca_params("test intermediate");
        params.use_authority_key_identifier_extension = true;
        customize(&mut params);
        let der = params
            .signed_by(&key, &self.issuer())
            .unwrap()
            .der()
            .clone();
        Self { key, params, der }
    }

    /// A leaf in the SPIRE profile, customized, with its PKCS#8 key.
    fn leaf(
        &self,
        customize: impl FnOnce(&mut CertificateParams),
    ) -> (CertificateDer<'static>, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "SPIFFE");
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{TD}/workload").try_into().unwrap(),
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = (now() - hours(1)).into();
        params.not_after = (now() + hours(1)).into();
        params.use_authority_key_identifier_extension = true;
        customize(&mut params);
        let der = params
            .signed_by(&key, &self.issuer())
            .unwrap()
            .der()
            .clone();
        (der, key.serialize_der())
    }
}

/// The chain verifies now against a bundle of these authorities.
fn assert_verifies(chain: &[CertificateDer<'static>], authorities: &[&CertificateDer<'static>]) {
    verify_chain(
        chain,
        &bundle_set(authorities),
        unix(now()),
        SvidUsage::ServerAuth,
    )
    .unwrap();
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

fn concat(chain: &[&CertificateDer<'_>]) -> Vec<u8> {
    chain.iter().flat_map(|c| c.as_ref().to_vec()).collect()
}

#[test]
fn well_formed_rcgen_svid_parses_and_verifies() {
    let ca = TestCa::new(|_| {});
    let (leaf, key) = ca.leaf(|_| {});
    let svid = X509Svid::parse_from_der(leaf.as_ref(), &key).unwrap();
    assert_eq!(svid.spiffe_id(), &id("/workload"));
    assert_eq!(svid.cert_chain().len(), 1);
    let chain = [leaf.clone()];
    let verified = verify_chain(
        &chain,
        &bundle_set(&[&ca.der]),
        unix(now()),
        SvidUsage::ClientAuth,
    )
    .unwrap();
    assert_eq!(verified.spiffe_id(), &id("/workload"));
    assert_eq!(verified.leaf(), &leaf);
}

/// Each bad leaf or chain, with the rule it breaks. Every case goes through both the parser
/// (`X509Svid::parse_from_der`) and the verifier (`verify_chain`), which must agree.
#[test]
fn bad_certificates_are_refused_with_the_rule_they_break() {
    let ca = TestCa::new(|_| {});
    // SAN: `SEQUENCE { [6] "spiffe://example.org/w" }`, not critical.
    let san_value = {
        let u = b"spiffe://example.org/w";
        let mut v = vec![0x30, (u.len() + 2) as u8, 0x86, u.len() as u8];
        v.extend_from_slice(u);
        v
    };
    type Case = (
        &'static str,
        Box<dyn Fn(&mut CertificateParams)>,
        X509SvidError,
    );
    let cases: Vec<Case> = vec![
        (
            "no URI SAN",
            Box::new(|p| {
                p.subject_alt_names = vec![SanType::DnsName("a.test".try_into().unwrap())]
            }),
            X509SvidError::NoUriSan,
        ),
        (
            "no SAN at all",
            Box::new(|p| p.subject_alt_names.clear()),
            X509SvidError::NoUriSan,
        ),
        (
            "two URI SANs",
            Box::new(|p| p.subject_alt_names.push(uri("https://example.org/x"))),
            X509SvidError::MultipleUriSans,
        ),
        (
            "root-path leaf ID",
            Box::new(|p| p.subject_alt_names = vec![uri("spiffe://example.org")]),
            X509SvidError::LeafRootId,
        ),
        (
            "not a SPIFFE ID",
            Box::new(|p| p.subject_alt_names = vec![uri("sparfe://example.org/w")]),
            X509SvidError::InvalidSpiffeId(sigil_spiffe::SpiffeIdError::WrongScheme),
        ),
        (
            "leaf with CA:true",
            Box::new(|p| {
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            }),
            X509SvidError::LeafIsCa,
        ),
        (
            "leaf without basic constraints",
            Box::new(|p| p.is_ca = IsCa::NoCa),
            X509SvidError::LeafNoBasicConstraints,
        ),
        (
            "leaf without key usage",
            Box::new(|p| p.key_usages.clear()),
            X509SvidError::LeafNoKeyUsage,
        ),
        (
            "leaf with keyCertSign",
            Box::new(|p| p.key_usages.push(KeyUsagePurpose::KeyCertSign)),
            X509SvidError::LeafKeyCertSign,
        ),
        (
            "leaf with cRLSign",
            Box::new(|p| p.key_usages.push(KeyUsagePurpose::CrlSign)),
            X509SvidError::LeafCrlSign,
        ),
        (
            "leaf without digitalSignature",
            Box::new(|p| p.key_usages = vec![KeyUsagePurpose::KeyEncipherment]),
            X509SvidError::LeafNoDigitalSignature,
        ),
        (
            "EKU serverAuth only",
            Box::new(|p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]),
            X509SvidError::LeafExtendedKeyUsage,
        ),
        (
            "empty subject, non-critical SAN",
            Box::new(move |p| {
                p.distinguished_name = DistinguishedName::new();
                p.subject_alt_names.clear();
                p.custom_extensions.push(CustomExtension::from_oid_content(
                    &[2, 5, 29, 17],
                    san_value.clone(),
                ));
            }),
            X509SvidError::EmptySubjectSanNotCritical,
        ),
    ];
    let bundles = bundle_set(&[&ca.der]);
    for (name, customize, expected) in cases {
        let (leaf, key) = ca.leaf(|p| customize(p));
        assert_eq!(
            X509Svid::parse_from_der(leaf.as_ref(), &key).unwrap_err(),
            expected,
            "parse: {name}"
        );
        let chain = [leaf];
        assert_eq!(
            verify_chain(&chain, &bundles, unix(now()), SvidUsage::ServerAuth).unwrap_err(),
            expected,
            "verify: {name}"
        );
    }

    // An empty subject with a critical SAN (what rcgen writes) is fine.
    let (leaf, key) = ca.leaf(|p| p.distinguished_name = DistinguishedName::new());
    X509Svid::parse_from_der(leaf.as_ref(), &key).unwrap();
}

#[test]
fn bad_intermediates_are_refused() {
    let ca = TestCa::new(|_| {});
    let cases: Vec<(&str, TestCa, X509SvidError)> = vec![
        (
            "intermediate without CA flag",
            ca.sub_ca(|p| p.is_ca = IsCa::ExplicitNoCa),
            X509SvidError::SigningNotCa,
        ),
        (
            "intermediate without basic constraints",
            ca.sub_ca(|p| p.is_ca = IsCa::NoCa),
            X509SvidError::SigningNotCa,
        ),
        (
            "intermediate without keyCertSign",
            ca.sub_ca(|p| p.key_usages = vec![KeyUsagePurpose::CrlSign]),
            X509SvidError::SigningNoKeyCertSign,
        ),
        (
            "intermediate ID with a path",
            ca.sub_ca(|p| p.subject_alt_names = vec![uri("spiffe://example.org/ca")]),
            X509SvidError::SigningIdHasPath,
        ),
        (
            "intermediate with two URI SANs",
            ca.sub_ca(|p| p.subject_alt_names.push(uri("https://x.test"))),
            X509SvidError::MultipleUriSans,
        ),
    ];
    let bundles = bundle_set(&[&ca.der]);
    for (name, inter, expected) in cases {
        let (leaf, key) = inter.leaf(|_| {});
        let der = concat(&[&leaf, &inter.der]);
        assert_eq!(
            X509Svid::parse_from_der(&der, &key).unwrap_err(),
            expected,
            "parse: {name}"
        );
        let chain = [leaf, inter.der.clone()];
        assert_eq!(
            verify_chain(&chain, &bundles, unix(now()), SvidUsage::ClientAuth).unwrap_err(),
            expected,
            "verify: {name}"
        );
    }
    // A good intermediate without any URI SAN (an upstream PKI's CA) is accepted.
    let inter = ca.sub_ca(|p| p.subject_alt_names.clear());
    let (leaf, key) = inter.leaf(|_| {});
    X509Svid::parse_from_der(&concat(&[&leaf, &inter.der]), &key).unwrap();
    let chain = [leaf, inter.der.clone()];
    verify_chain(&chain, &bundles, unix(now()), SvidUsage::ClientAuth).unwrap();
}

#[test]
fn parse_errors_name_what_is_missing() {
    let ca = TestCa::new(|_| {});
    let (leaf, key) = ca.leaf(|_| {});
    let other_key = KeyPair::generate().unwrap().serialize_der();
    assert_eq!(
        X509Svid::parse_from_der(leaf.as_ref(), &other_key).unwrap_err(),
        X509SvidError::KeyMismatch
    );
    assert_eq!(
        X509Svid::parse_from_der(b"", &key).unwrap_err(),
        X509SvidError::EmptyChain
    );
    assert_eq!(
        X509Svid::parse_from_der(b"not DER", &key).unwrap_err(),
        X509SvidError::CertificateParse { index: 0 }
    );
    let mut trailing = leaf.as_ref().to_vec();
    trailing.extend_from_slice(b"\x30\x03junk");
    assert_eq!(
        X509Svid::parse_from_der(&trailing, &key).unwrap_err(),
        X509SvidError::CertificateParse { index: 1 }
    );
    assert_eq!(
        X509Svid::parse_from_der(leaf.as_ref(), b"nope").unwrap_err(),
        X509SvidError::PrivateKeyParse
    );

    let cert_pem = sigil_spiffe::pem::encode("CERTIFICATE", leaf.as_ref());
    let key_pem = sigil_spiffe::pem::encode("PRIVATE KEY", &key);
    // One blob, either order; or two blobs.
    let a = X509Svid::from_pem(format!("{cert_pem}{key_pem}").as_bytes()).unwrap();
    let b = X509Svid::from_pem(format!("{key_pem}{cert_pem}").as_bytes()).unwrap();
    let c = X509Svid::from_pem_parts(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap();
    assert_eq!(a.cert_chain(), b.cert_chain());
    assert_eq!(b.cert_chain(), c.cert_chain());
    assert_eq!(c.private_key().pkcs8_der(), &key[..]);
    assert_eq!(
        X509Svid::from_pem(key_pem.as_bytes()).unwrap_err(),
        X509SvidError::NoCertificates
    );
    assert_eq!(
        X509Svid::from_pem(cert_pem.as_bytes()).unwrap_err(),
        X509SvidError::NoPrivateKey
    );
    assert_eq!(
        X509Svid::from_pem(b"hello").unwrap_err(),
        X509SvidError::NoPemBlocks
    );
    assert_eq!(
        X509Svid::from_pem_parts(cert_pem.as_bytes(), b"hello").unwrap_err(),
        X509SvidError::NoPemBlocks
    );
    // An `EC PRIVATE KEY` block is not PKCS#8 and is skipped, as go-spiffe does.
    let sec1 = sigil_spiffe::pem::encode("EC PRIVATE KEY", &[0x30, 0x00]);
    assert_eq!(
        X509Svid::from_pem(format!("{cert_pem}{sec1}").as_bytes()).unwrap_err(),
        X509SvidError::NoPrivateKey
    );
    let bad_key = sigil_spiffe::pem::encode("PRIVATE KEY", b"junk");
    assert_eq!(
        X509Svid::from_pem(format!("{cert_pem}{bad_key}").as_bytes()).unwrap_err(),
        X509SvidError::PrivateKeyParse
    );
    let bad_cert = sigil_spiffe::pem::encode("CERTIFICATE", b"junk");
    assert_eq!(
        X509Svid::from_pem(format!("{bad_cert}{key_pem}").as_bytes()).unwrap_err(),
        X509SvidError::CertificateParse { index: 0 }
    );
}

#[test]
fn verification_failures() {
    let (_, ca) = root(KeyType::EcP256);
    let (_, other) = root(KeyType::EcP256);
    let svid = issue(&ca, KeyType::EcP256, "/w");
    let chain = svid.cert_chain();
    let good = bundle_set(&[ca.certificate()]);
    let at = |t: SystemTime| unix(t);

    let verified = verify_chain(chain, &good, at(now()), SvidUsage::ServerAuth).unwrap();
    assert_eq!(verified.spiffe_id(), &id("/w"));
    assert_eq!(verified.not_after(), svid.not_after());

    // Expired one second after notAfter (and still valid at notAfter itself).
    verify_chain(chain, &good, at(svid.not_after()), SvidUsage::ServerAuth).unwrap();
    assert!(matches!(
        verify_chain(
            chain,
            &good,
            at(svid.not_after() + Duration::from_secs(1)),
            SvidUsage::ServerAuth
        ),
        Err(X509SvidError::Chain(webpki::Error::CertExpired { .. }))
    ));
    assert!(matches!(
        verify_chain(chain, &good, at(now() - hours(2)), SvidUsage::ServerAuth),
        Err(X509SvidError::Chain(webpki::Error::CertNotValidYet { .. }))
    ));
    // A bundle of the right trust domain holding another CA (our CAs never share a name)...
    assert_eq!(
        verify_chain(
            chain,
            &bundle_set(&[other.certificate()]),
            at(now()),
            SvidUsage::ClientAuth
        )
        .unwrap_err(),
        X509SvidError::Chain(webpki::Error::UnknownIssuer)
    );
    // ...or another CA with the very same name (built with rcgen).
    let twin_a = TestCa::new(|_| {});
    let twin_b = TestCa::new(|_| {});
    let (leaf, _) = twin_a.leaf(|_| {});
    assert_eq!(
        verify_chain(
            &[leaf],
            &bundle_set(&[&twin_b.der]),
            at(now()),
            SvidUsage::ClientAuth
        )
        .unwrap_err(),
        X509SvidError::Chain(webpki::Error::InvalidSignatureForPublicKey)
    );
    // No bundle for the trust domain, even though another trust domain's bundle holds our CA:
    // bundles are never pooled (checklist item 42).
    let elsewhere = TrustDomain::new("elsewhere.test").unwrap();
    let mut foreign = Bundle::new(elsewhere.clone());
    *foreign.x509_mut() = X509Bundle::from_authorities(elsewhere, [ca.certificate().clone()]);
    let foreign: BundleSet = [foreign].into_iter().collect();
    let err = verify_chain(chain, &foreign, at(now()), SvidUsage::ClientAuth).unwrap_err();
    assert_eq!(err, X509SvidError::NoBundle(TD.into()));
    assert_eq!(
        err.to_string(),
        "no X.509 bundle found for trust domain: \"example.org\""
    );
    // An empty bundle trusts nothing.
    assert_eq!(
        verify_chain(chain, &bundle_set(&[]), at(now()), SvidUsage::ClientAuth).unwrap_err(),
        X509SvidError::EmptyBundle(TD.into())
    );
    assert_eq!(
        verify_chain(&[], &good, at(now()), SvidUsage::ClientAuth).unwrap_err(),
        X509SvidError::EmptyChain
    );
    // The single-bundle form refuses a bundle of another trust domain.
    let foreign_bundle = X509Bundle::from_authorities(
        TrustDomain::new("elsewhere.test").unwrap(),
        [ca.certificate().clone()],
    );
    assert_eq!(
        verify_chain_with_bundle(chain, &foreign_bundle, at(now()), SvidUsage::ServerAuth)
            .unwrap_err(),
        X509SvidError::NoBundle(TD.into())
    );
    let own = X509Bundle::from_authorities(td(), [ca.certificate().clone()]);
    verify_chain_with_bundle(chain, &own, at(now()), SvidUsage::ServerAuth).unwrap();
}

#[test]
fn bundle_anchor_cache_follows_the_authorities() {
    let (_, ca) = root(KeyType::EcP256);
    let (_, other) = root(KeyType::EcP256);
    let svid = issue(&ca, KeyType::EcP256, "/w");
    let mut bundle = X509Bundle::from_authorities(td(), [other.certificate().clone()]);
    let twin = bundle.clone();
    assert!(
        verify_chain_with_bundle(
            svid.cert_chain(),
            &bundle,
            unix(now()),
            SvidUsage::ServerAuth
        )
        .is_err()
    );
    // The cache was filled by the failed attempt; it must not hide a new authority.
    bundle.add_authority(ca.certificate().clone());
    verify_chain_with_bundle(
        svid.cert_chain(),
        &bundle,
        unix(now()),
        SvidUsage::ServerAuth,
    )
    .unwrap();
    bundle.remove_authority(ca.certificate());
    assert!(
        verify_chain_with_bundle(
            svid.cert_chain(),
            &bundle,
            unix(now()),
            SvidUsage::ServerAuth
        )
        .is_err()
    );
    // Equality ignores whether the cache is filled.
    assert_eq!(bundle, twin);
    assert_eq!(bundle.trust_anchors().len(), 1);
}

#[test]
fn issued_chains_with_an_intermediate_verify_against_the_root_or_the_intermediate() {
    for kt in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
        let (_, upstream) = root(kt);
        let inter = X509Authority::intermediate(
            key(kt),
            &CaParams::new(td(), now() - hours(1), now() + hours(24)),
            &upstream,
        )
        .unwrap();
        assert_eq!(inter.chain(), &[inter.certificate().clone()]);
        let svid = issue(&inter, kt, "/db");
        assert_eq!(svid.cert_chain().len(), 2);
        for anchor in [upstream.certificate(), inter.certificate()] {
            for usage in [SvidUsage::ServerAuth, SvidUsage::ClientAuth] {
                let v = verify_chain(
                    svid.cert_chain(),
                    &bundle_set(&[anchor]),
                    unix(now()),
                    usage,
                )
                .unwrap();
                assert_eq!(v.spiffe_id(), &id("/db"));
            }
        }
    }
}

#[test]
fn issuance_caps_ttl_and_ignores_what_the_csr_asks_for() {
    let (_, ca) = root(KeyType::EcP256);
    let k = PrivateKey::generate(KeyType::EcP256).unwrap();
    // The CSR asks for another trust domain's ID; the caller's ID wins.
    let csr = create_csr(&k, &"spiffe://evil.test/admin".parse().unwrap()).unwrap();
    let mut params = SvidParams::new(id("/web"), now(), now() + hours(1000));
    params.dns_names = vec!["web.example.org".into()];
    let issued = ca.sign_csr(&csr, &params).unwrap();
    assert!(issued.capped());
    assert_eq!(issued.not_after(), ca.not_after());
    assert_eq!(issued.spiffe_id(), &id("/web"));
    let svid = X509Svid::new(issued.cert_chain().to_vec(), k).unwrap();
    assert_eq!(svid.not_after(), ca.not_after());

    let uncapped = ca
        .sign_csr(&csr, &SvidParams::new(id("/web"), now(), now() + hours(1)))
        .unwrap();
    assert!(!uncapped.capped());
    assert_eq!(uncapped.not_after(), now() + hours(1));

    // Different serials for the same key.
    let a = x509_parser::parse_x509_certificate(issued.leaf())
        .unwrap()
        .1
        .raw_serial()
        .to_vec();
    let b = x509_parser::parse_x509_certificate(uncapped.leaf())
        .unwrap()
        .1
        .raw_serial()
        .to_vec();
    assert_ne!(a, b);

    // Refusals.
    let p = |path: &str| SvidParams::new(id(path), now(), now() + hours(1));
    assert_eq!(
        ca.sign_csr(b"\x30\x03\x02\x01\x00", &p("/w")).unwrap_err(),
        X509SvidError::CsrMalformed
    );
    assert_eq!(
        ca.sign_csr(b"", &p("/w")).unwrap_err(),
        X509SvidError::CsrMalformed
    );
    let mut tampered = csr.clone();
    let last = tampered.len() - 3;
    tampered[last] ^= 0x01;
    assert_eq!(
        ca.sign_csr(&tampered, &p("/w")).unwrap_err(),
        X509SvidError::CsrSignature
    );
    // The same checks without signing: the CSR's key, or the same refusals.
    assert_eq!(
        sigil_spiffe::x509::csr_public_key(&csr).unwrap(),
        sigil_spiffe::PublicKey::from_spki_der(
            x509_parser::parse_x509_certificate(issued.leaf())
                .unwrap()
                .1
                .public_key()
                .raw
        )
        .unwrap()
    );
    assert_eq!(
        sigil_spiffe::x509::csr_public_key(&tampered).unwrap_err(),
        X509SvidError::CsrSignature
    );
    assert_eq!(
        sigil_spiffe::x509::csr_public_key(b"").unwrap_err(),
        X509SvidError::CsrMalformed
    );
    assert_eq!(
        ca.sign_csr(&csr, &SvidParams::new(td().id(), now(), now() + hours(1)))
            .unwrap_err(),
        X509SvidError::LeafRootId
    );
    assert!(matches!(
        ca.sign_csr(
            &csr,
            &SvidParams::new(
                "spiffe://evil.test/w".parse().unwrap(),
                now(),
                now() + hours(1)
            )
        ),
        Err(X509SvidError::WrongTrustDomain { .. })
    ));
    assert!(matches!(
        ca.sign_csr(&csr, &SvidParams::new(id("/w"), now(), now())),
        Err(X509SvidError::InvalidValidity(_))
    ));
    assert_eq!(
        ca.sign_csr(
            &csr,
            &SvidParams::new(id("/w"), ca.not_after(), ca.not_after() + hours(1))
        )
        .unwrap_err(),
        X509SvidError::AuthorityNotValid
    );
    let mut bad_dns = p("/w");
    bad_dns.dns_names = vec!["not a name".into()];
    assert_eq!(
        ca.sign_csr(&csr, &bad_dns).unwrap_err(),
        X509SvidError::InvalidDnsName("not a name".into())
    );
}

#[test]
fn sign_public_key_works_for_every_key_type() {
    let (_, ca) = root(KeyType::EcP256);
    for kt in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
        let k = PrivateKey::generate(kt).unwrap();
        let issued = ca
            .sign_public_key(
                &k.public_key(),
                &SvidParams::new(id("/pk"), now(), now() + hours(1)),
            )
            .unwrap();
        let svid = X509Svid::new(issued.into_cert_chain(), k).unwrap();
        verify_chain(
            svid.cert_chain(),
            &bundle_set(&[ca.certificate()]),
            unix(now()),
            SvidUsage::ClientAuth,
        )
        .unwrap();
    }
}

#[test]
fn produced_certificates_follow_the_profile() {
    let (_, ca) = root(KeyType::EcP256);
    let (_, cert) = x509_parser::parse_x509_certificate(ca.certificate()).unwrap();
    assert_eq!(
        profile::check_signing_der(ca.certificate()).unwrap(),
        Some(td().id())
    );
    assert!(
        cert.name_constraints().unwrap().is_none(),
        "no name constraints, ever"
    );
    let ku = cert.key_usage().unwrap().unwrap();
    assert!(ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign());
    assert!(cert.basic_constraints().unwrap().unwrap().value.ca);
    let serial_hex: String = cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        cert.subject().to_string(),
        format!("C=US, O=SPIFFE, serialNumber={serial_hex}")
    );

    let svid = issue(&ca, KeyType::EcP256, "/w");
    let (_, leaf) = x509_parser::parse_x509_certificate(svid.leaf()).unwrap();
    let ku = leaf.key_usage().unwrap().unwrap();
    assert!(
        ku.critical
            && ku.value.digital_signature()
            && ku.value.key_encipherment()
            && ku.value.key_agreement()
    );
    assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign());
    assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    // AKI of the leaf is the SKI of the CA.
    let ski = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        });
    let aki = leaf
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        });
    assert!(ski.is_some());
    assert_eq!(ski, aki);
}

#[test]
fn authority_reloads_from_its_certificate() {
    let (k, ca) = root(KeyType::EcP384);
    let again = X509Authority::from_certificate(k, vec![ca.certificate().clone()]).unwrap();
    assert!(again.chain().is_empty(), "a root sends no chain");
    assert_eq!(again.not_after(), ca.not_after());
    let svid = issue(&again, KeyType::EcP256, "/w");
    assert_verifies(svid.cert_chain(), &[ca.certificate()]);
    // The wrong key is refused.
    assert_eq!(
        X509Authority::from_certificate(key(KeyType::EcP384), vec![ca.certificate().clone()])
            .unwrap_err(),
        X509SvidError::SignerMismatch
    );
    // A leaf is not a CA.
    let leaf = svid.leaf().clone();
    assert_eq!(
        X509Authority::from_certificate(key(KeyType::EcP256), vec![leaf]).unwrap_err(),
        X509SvidError::SigningNotCa
    );
    // An intermediate reloaded keeps sending itself.
    let ik = key(KeyType::EcP256);
    let inter = X509Authority::intermediate(
        ik.clone(),
        &CaParams::new(td(), now() - hours(1), now() + hours(100)),
        &ca,
    )
    .unwrap();
    assert_eq!(
        inter.not_after(),
        ca.not_after(),
        "intermediate capped to its upstream"
    );
    let reloaded = X509Authority::from_certificate(ik, inter.chain().to_vec()).unwrap();
    assert_eq!(reloaded.chain(), inter.chain());
    let svid = issue(&reloaded, KeyType::EcP256, "/w");
    assert_verifies(svid.cert_chain(), &[ca.certificate()]);
}

// ---------- cross-checks with the `spiffe` crate ----------

#[test]
fn spiffe_crate_parses_our_svids_and_bundles() {
    for kt in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
        let (_, root_ca) = root(kt);
        let inter = X509Authority::intermediate(
            key(kt),
            &CaParams::new(td(), now() - hours(1), now() + hours(24)),
            &root_ca,
        )
        .unwrap();
        for ca in [&root_ca, &inter] {
            let svid = issue(ca, kt, "/ns/default/sa/web");
            let theirs =
                spiffe::X509Svid::parse_from_der(&svid.chain_der(), svid.private_key().pkcs8_der())
                    .unwrap_or_else(|e| panic!("{kt}: spiffe refused our SVID: {e}"));
            assert_eq!(
                theirs.spiffe_id().to_string(),
                "spiffe://example.org/ns/default/sa/web"
            );
            assert_eq!(theirs.cert_chain().len(), svid.cert_chain().len());
            for (a, b) in theirs.cert_chain().iter().zip(svid.cert_chain()) {
                assert_eq!(a.as_bytes(), b.as_ref());
            }
        }
        let bundle_der = concat(&[root_ca.certificate(), inter.certificate()]);
        let theirs =
            spiffe::X509Bundle::parse_from_der(spiffe::TrustDomain::new(TD).unwrap(), &bundle_der)
                .unwrap();
        assert_eq!(theirs.authorities().len(), 2);
    }
}

// ---------- cross-checks with the `openssl` command ----------

fn openssl(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!("cannot run `openssl` ({e}): install it (Debian: apt-get install openssl); CI has it")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn write_pem(dir: &Path, name: &str, certs: &[&CertificateDer<'_>]) {
    let pem: String = certs
        .iter()
        .map(|c| sigil_spiffe::pem::encode("CERTIFICATE", c.as_ref()))
        .collect();
    std::fs::write(dir.join(name), pem).unwrap();
}

/// openssl checks validity against the real clock, so these chains are issued around the
/// real current time (the only place the clock is read, and only to feed openssl).
fn real_now() -> SystemTime {
    SystemTime::now()
}

#[test]
fn openssl_verifies_our_chains() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = real_now();
    for kt in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
        let root_ca =
            X509Authority::self_signed(key(kt), &CaParams::new(td(), t - hours(1), t + hours(48)))
                .unwrap();
        let inter = X509Authority::intermediate(
            key(kt),
            &CaParams::new(td(), t - hours(1), t + hours(24)),
            &root_ca,
        )
        .unwrap();
        let k = PrivateKey::generate(kt).unwrap();
        let issued = inter
            .sign_csr(
                &create_csr(&k, &id("/w")).unwrap(),
                &SvidParams::new(id("/w"), t - hours(1), t + hours(1)),
            )
            .unwrap();
        write_pem(d, "root.pem", &[root_ca.certificate()]);
        write_pem(d, "inter.pem", &[inter.certificate()]);
        write_pem(d, "leaf.pem", &[issued.leaf()]);

        let (ok, out) = openssl(
            &[
                "verify",
                "-CAfile",
                "root.pem",
                "-untrusted",
                "inter.pem",
                "leaf.pem",
            ],
            d,
        );
        assert!(ok && out.contains("leaf.pem: OK"), "{kt}: {out}");
        // The intermediate as the only anchor, as when an upstream CA's intermediate is trusted.
        let (ok, out) = openssl(
            &[
                "verify",
                "-partial_chain",
                "-CAfile",
                "inter.pem",
                "leaf.pem",
            ],
            d,
        );
        assert!(ok && out.contains("leaf.pem: OK"), "{kt}: {out}");
        // And it fails against another root.
        let other =
            X509Authority::self_signed(key(kt), &CaParams::new(td(), t - hours(1), t + hours(48)))
                .unwrap();
        write_pem(d, "other.pem", &[other.certificate()]);
        let (ok, out) = openssl(
            &[
                "verify",
                "-CAfile",
                "other.pem",
                "-untrusted",
                "inter.pem",
                "leaf.pem",
            ],
            d,
        );
        assert!(!ok, "{kt}: openssl accepted a chain to another root: {out}");

        let (ok, text) = openssl(&["x509", "-in", "leaf.pem", "-noout", "-text"], d);
        assert!(ok, "{text}");
        for needle in [
            "URI:spiffe://example.org/w",
            "CA:FALSE",
            "Digital Signature, Key Encipherment, Key Agreement",
            "TLS Web Server Authentication, TLS Web Client Authentication",
        ] {
            assert!(
                text.contains(needle),
                "{kt}: leaf lacks {needle:?}:\n{text}"
            );
        }
        let (ok, text) = openssl(&["x509", "-in", "root.pem", "-noout", "-text"], d);
        assert!(ok, "{text}");
        for needle in [
            "URI:spiffe://example.org",
            "CA:TRUE",
            "Certificate Sign, CRL Sign",
        ] {
            assert!(text.contains(needle), "{kt}: CA lacks {needle:?}:\n{text}");
        }
        assert!(!text.contains("Name Constraints"), "{text}");
    }
}

#[test]
fn we_read_and_sign_under_openssl_made_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // An upstream CA made by openssl, with the trust domain's ID.
    let (ok, out) = openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/O=Upstream/CN=ca",
            "-addext",
            "subjectAltName=critical,URI:spiffe://example.org",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        d,
    );
    assert!(ok, "{out}");
    // A leaf SVID signed by it with openssl.
    std::fs::write(
        d.join("leaf.ext"),
        "subjectAltName=URI:spiffe://example.org/openssl\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    let (ok, out) = openssl(
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/O=Workload",
        ],
        d,
    );
    assert!(ok, "{out}");
    let (ok, out) = openssl(
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.pem",
        ],
        d,
    );
    assert!(ok, "{out}");
    let read = |n: &str| std::fs::read(d.join(n)).unwrap();

    // Our parser reads openssl's SVID (cert and key in two files, PKCS#8 key).
    let svid = X509Svid::from_pem_parts(&read("leaf.pem"), &read("leaf.key")).unwrap();
    assert_eq!(svid.spiffe_id(), &id("/openssl"));
    let ca_der = sigil_spiffe::pem::certificates(&read("ca.pem"))
        .unwrap()
        .remove(0);
    let verified = verify_chain(
        svid.cert_chain(),
        &bundle_set(&[&ca_der]),
        unix(real_now()),
        SvidUsage::ServerAuth,
    )
    .unwrap();
    assert_eq!(verified.spiffe_id(), &id("/openssl"));

    // The openssl CA as our upstream: load it with its key, issue an intermediate and a leaf,
    // and let openssl verify the result.
    let ca_key = Arc::new(PrivateKey::from_pem(&read("ca.key")).unwrap());
    let upstream = X509Authority::from_certificate(ca_key, vec![ca_der.clone()]).unwrap();
    let t = real_now();
    let inter = X509Authority::intermediate(
        key(KeyType::EcP256),
        &CaParams::new(td(), t - hours(1), t + hours(12)),
        &upstream,
    )
    .unwrap();
    let k = PrivateKey::generate(KeyType::EcP256).unwrap();
    let issued = inter
        .sign_public_key(
            &k.public_key(),
            &SvidParams::new(id("/ours"), t - hours(1), t + hours(1)),
        )
        .unwrap();
    let ours = X509Svid::new(issued.into_cert_chain(), k).unwrap();
    verify_chain(
        ours.cert_chain(),
        &bundle_set(&[&ca_der]),
        unix(t),
        SvidUsage::ClientAuth,
    )
    .unwrap();
    write_pem(d, "inter.pem", &[inter.certificate()]);
    write_pem(d, "ours.pem", &[ours.leaf()]);
    let (ok, out) = openssl(
        &[
            "verify",
            "-CAfile",
            "ca.pem",
            "-untrusted",
            "inter.pem",
            "ours.pem",
        ],
        d,
    );
    assert!(ok && out.contains("ours.pem: OK"), "{out}");
}

#[test]
fn signer_trait_is_the_only_way_to_the_key() {
    // A signer that is not a PrivateKey (as a KMS-backed one would be) issues verifiable SVIDs.
    struct Remote(PrivateKey);
    impl X509Signer for Remote {
        fn algorithm(&self) -> sigil_spiffe::x509::SignatureAlgorithm {
            self.0.algorithm()
        }
        fn subject_public_key_info(&self) -> Vec<u8> {
            self.0.subject_public_key_info()
        }
        fn sign(&self, message: &[u8]) -> Result<Vec<u8>, sigil_spiffe::KeyError> {
            self.0.sign(message)
        }
    }
    let remote = Arc::new(Remote(PrivateKey::generate(KeyType::EcP256).unwrap()));
    let ca = X509Authority::self_signed(
        remote,
        &CaParams::new(td(), now() - hours(1), now() + hours(2)),
    )
    .unwrap();
    let svid = issue(&ca, KeyType::EcP256, "/w");
    assert_verifies(svid.cert_chain(), &[ca.certificate()]);
}

/// Speed rests on path building never trying a wrong key: leaf + intermediate must cost exactly
/// two signature checks, which holds only if the root and the intermediate have distinct names.
#[test]
fn chain_verification_checks_exactly_two_signatures() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rustls_pki_types::{AlgorithmIdentifier, InvalidSignature, SignatureVerificationAlgorithm};

    #[derive(Debug)]
    struct Counting(AtomicUsize);
    impl SignatureVerificationAlgorithm for Counting {
        fn verify_signature(
            &self,
            key: &[u8],
            msg: &[u8],
            sig: &[u8],
        ) -> Result<(), InvalidSignature> {
            self.0.fetch_add(1, Ordering::SeqCst);
            webpki::aws_lc_rs::ECDSA_P256_SHA256.verify_signature(key, msg, sig)
        }
        fn public_key_alg_id(&self) -> AlgorithmIdentifier {
            webpki::aws_lc_rs::ECDSA_P256_SHA256.public_key_alg_id()
        }
        fn signature_alg_id(&self) -> AlgorithmIdentifier {
            webpki::aws_lc_rs::ECDSA_P256_SHA256.signature_alg_id()
        }
    }

    let (_, root_ca) = root(KeyType::EcP256);
    // Same subject options as the root: only the serialNumber attribute tells them apart.
    let inter = X509Authority::intermediate(
        key(KeyType::EcP256),
        &CaParams::new(td(), now() - hours(1), now() + hours(24)),
        &root_ca,
    )
    .unwrap();
    let svid = issue(&inter, KeyType::EcP256, "/w");
    let bundles = bundle_set(&[root_ca.certificate()]);
    let anchors = bundles.get(TD).unwrap().x509().trust_anchors();
    let counting = Counting(AtomicUsize::new(0));
    let algs: [&dyn SignatureVerificationAlgorithm; 1] = [&counting];
    let ee = webpki::EndEntityCert::try_from(svid.leaf()).unwrap();
    ee.verify_for_usage(
        &algs,
        anchors,
        &svid.cert_chain()[1..],
        unix(now()),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .unwrap();
    assert_eq!(counting.0.load(Ordering::SeqCst), 2);
}

#[test]
fn verify_end_entity_takes_the_parts_rustls_hands_over() {
    let (_, root_ca) = root(KeyType::EcP256);
    let inter = X509Authority::intermediate(
        key(KeyType::EcP256),
        &CaParams::new(td(), now() - hours(1), now() + hours(24)),
        &root_ca,
    )
    .unwrap();
    let svid = issue(&inter, KeyType::EcP256, "/w");
    let bundles = bundle_set(&[root_ca.certificate()]);
    let (leaf, rest) = svid.cert_chain().split_first().unwrap();
    let v = sigil_spiffe::x509::verify_end_entity(
        leaf,
        rest,
        &bundles,
        unix(now()),
        SvidUsage::ClientAuth,
    )
    .unwrap();
    assert_eq!(v.spiffe_id(), &id("/w"));
    // Without the intermediate the path cannot be built.
    assert_eq!(
        sigil_spiffe::x509::verify_end_entity(
            leaf,
            &[],
            &bundles,
            unix(now()),
            SvidUsage::ClientAuth
        )
        .unwrap_err(),
        X509SvidError::Chain(webpki::Error::UnknownIssuer)
    );
}

#[test]
fn an_upstream_ca_without_spiffe_id_signs_our_intermediate_but_no_svid() {
    let upstream = TestCa::new(|p| p.subject_alt_names.clear());
    let upstream_key = Arc::new(PrivateKey::from_pkcs8_der(&upstream.key.serialize_der()).unwrap());
    let upstream =
        X509Authority::from_certificate(upstream_key, vec![upstream.der.clone()]).unwrap();
    assert_eq!(upstream.trust_domain(), None);
    let k = PrivateKey::generate(KeyType::EcP256).unwrap();
    assert_eq!(
        upstream
            .sign_public_key(
                &k.public_key(),
                &SvidParams::new(id("/w"), now(), now() + hours(1))
            )
            .unwrap_err(),
        X509SvidError::AuthorityWithoutTrustDomain
    );
    let inter = X509Authority::intermediate(
        key(KeyType::EcP256),
        &CaParams::new(td(), now() - hours(1), now() + hours(12)),
        &upstream,
    )
    .unwrap();
    assert_eq!(inter.trust_domain(), Some(&td()));
    let svid = issue(&inter, KeyType::EcP256, "/w");
    assert_verifies(svid.cert_chain(), &[upstream.certificate()]);
}
