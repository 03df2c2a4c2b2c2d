//! Fuzzes every bundle decoder: the SPIFFE bundle document, the Workload API JWKS, the bundle
//! map, and X.509 bundles as concatenated DER and as PEM. Whatever parses must write back and
//! re-parse to an equal value; nothing may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_spiffe::{Bundle, BundleSet, JwtBundle, TrustDomain, X509Bundle};

fuzz_target!(|data: &[u8]| {
    // A constant, valid name: the invariant is checked by the unit tests of `id`.
    let Ok(td) = TrustDomain::new("example.org") else {
        return;
    };
    if let Ok(bundle) = Bundle::from_document(td.clone(), data) {
        let doc = bundle.to_document().expect("a parsed bundle writes back");
        let again = Bundle::from_document(td.clone(), doc.as_bytes()).expect("re-parse");
        assert_eq!(again, bundle);
    }
    if let Ok(bundle) = JwtBundle::from_jwks(td.clone(), data) {
        let again = JwtBundle::from_jwks(td.clone(), bundle.to_jwks().as_bytes()).expect("re-parse");
        assert_eq!(again, bundle);
    }
    if let Ok(set) = BundleSet::from_bundle_map(data) {
        let map = set.to_bundle_map().expect("a parsed map writes back");
        let again = BundleSet::from_bundle_map(map.as_bytes()).expect("re-parse");
        assert_eq!(again, set);
    }
    if let Ok(bundle) = X509Bundle::from_der(td.clone(), data) {
        let again = X509Bundle::from_der(td.clone(), &bundle.to_der()).expect("re-parse");
        assert_eq!(again, bundle);
    }
    if let Ok(bundle) = X509Bundle::from_pem(td.clone(), data) {
        let again = X509Bundle::from_pem(td, bundle.to_pem().as_bytes()).expect("re-parse");
        assert_eq!(again, bundle);
    }
});
