//! Fuzzes X.509-SVID parsing (DER and PEM), chain verification against a fixed bundle, and CSR
//! signing. Nothing may panic; whatever parses must survive a DER round trip unchanged.

#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use rustls_pki_types::{CertificateDer, UnixTime};
use sigil_spiffe::x509::{
    CaParams, SvidParams, SvidUsage, X509Authority, X509Svid, profile, verify_chain,
};
use sigil_spiffe::{Bundle, BundleSet, KeyType, PrivateKey, TrustDomain, X509Bundle};

const NOW: u64 = 1_800_000_000;

struct Fixture {
    ca: X509Authority,
    bundles: BundleSet,
    params: SvidParams,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let td = TrustDomain::new("example.org").expect("valid trust domain");
        let t = UNIX_EPOCH + Duration::from_secs(NOW);
        let day = Duration::from_secs(86_400);
        let key = Arc::new(PrivateKey::generate(KeyType::EcP256).expect("key generation"));
        let ca = X509Authority::self_signed(key, &CaParams::new(td.clone(), t - day, t + day))
            .expect("fixture CA");
        let mut bundle = Bundle::new(td.clone());
        *bundle.x509_mut() = X509Bundle::from_authorities(td.clone(), [ca.certificate().clone()]);
        let params = SvidParams::new(td.id_with_path("/fuzz").expect("valid id"), t, t + day);
        Fixture {
            ca,
            bundles: [bundle].into_iter().collect(),
            params,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    // The first two bytes choose where the chain ends and the key begins.
    let (chain_der, key_der) = match data {
        [a, b, rest @ ..] => {
            let split = usize::from(u16::from_le_bytes([*a, *b])) % (rest.len() + 1);
            rest.split_at(split)
        }
        _ => (data, &[][..]),
    };

    if let Ok(svid) = X509Svid::parse_from_der(chain_der, key_der) {
        let again = X509Svid::parse_from_der(&svid.chain_der(), svid.private_key().pkcs8_der())
            .expect("a parsed SVID re-parses from its own DER");
        assert_eq!(again.spiffe_id(), svid.spiffe_id());
        assert_eq!(again.cert_chain(), svid.cert_chain());
        assert_eq!(again.not_after(), svid.not_after());
        let pem = format!("{}{}", svid.chain_pem(), &*svid.private_key().to_pem());
        let from_pem = X509Svid::from_pem(pem.as_bytes()).expect("a parsed SVID re-parses from PEM");
        assert_eq!(from_pem.cert_chain(), svid.cert_chain());
    }
    let _ = X509Svid::from_pem(data);
    let _ = X509Svid::from_pem_parts(chain_der, key_der);
    let _ = profile::check_leaf_der(data);
    let _ = profile::check_signing_der(data);

    // Chain verification: the input as one certificate, and split in two.
    let now = UnixTime::since_unix_epoch(Duration::from_secs(NOW));
    let one = [CertificateDer::from(data)];
    let _ = verify_chain(&one, &fx.bundles, now, SvidUsage::ServerAuth);
    let two = [CertificateDer::from(chain_der), CertificateDer::from(key_der)];
    let _ = verify_chain(&two, &fx.bundles, now, SvidUsage::ClientAuth);

    // CSR signing: whatever is signed must be a valid SVID for the caller's ID.
    if let Ok(issued) = fx.ca.sign_csr(data, &fx.params) {
        assert_eq!(issued.spiffe_id(), &fx.params.spiffe_id);
        let chain = issued.cert_chain().to_vec();
        verify_chain(&chain, &fx.bundles, now, SvidUsage::ServerAuth)
            .expect("an SVID we issued verifies against our bundle");
    }
});
