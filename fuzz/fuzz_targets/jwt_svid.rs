//! Fuzzes JWT-SVID parsing: arbitrary input must never panic the validator or the unverified
//! parser, and anything the validator accepts must be accepted unchanged by the parser.
#![no_main]

use std::sync::LazyLock;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use sigil_spiffe::jwt::{JwtSvidParams, PrivateKeySigner, danger, mint};
use sigil_spiffe::{Bundle, BundleSet, JwtAuthority, JwtSvid, KeyType, PrivateKey};

/// A fixed bundle for `example.org` with one EC key, and a valid token under it that the
/// fuzzer can start from (`-dict` or a seed corpus can add it).
static FIXTURE: LazyLock<(BundleSet, String)> = LazyLock::new(|| {
    let signer = PrivateKeySigner::with_default_algorithm(
        "kid",
        PrivateKey::generate(KeyType::EcP256).expect("key generation"),
    )
    .expect("signer");
    let mut bundle = Bundle::new("example.org".parse().expect("trust domain"));
    bundle
        .jwt_mut()
        .add_authority(JwtAuthority::new("kid", signer.public_key()).expect("authority"));
    let token = mint(
        &signer,
        JwtSvidParams::new(
            "spiffe://example.org/w".parse().expect("id"),
            ["aud"],
            UNIX_EPOCH + Duration::from_secs(1_000),
            UNIX_EPOCH + Duration::from_secs(1_000_000),
        ),
    )
    .expect("mint");
    ([bundle].into_iter().collect(), token.token().to_owned())
});

fuzz_target!(|data: &[u8]| {
    let (bundles, seed) = &*FIXTURE;
    let now = UNIX_EPOCH + Duration::from_secs(2_000);
    // Half the inputs replace the tail of a valid token (the seed is ASCII, so any cut is a
    // char boundary), so that the fuzzer reaches the claim and signature checks, not only the
    // base64 layer.
    let token = match data.split_first() {
        Some((first, rest)) if first & 1 == 1 => {
            let cut = rest.len().min(seed.len());
            format!("{}{}", &seed[..seed.len() - cut], String::from_utf8_lossy(rest))
        }
        _ => String::from_utf8_lossy(data).into_owned(),
    };
    let validated = JwtSvid::parse_and_validate(&token, bundles, &["aud"], now);
    let unverified = danger::parse_insecure(&token, &["aud"], now);
    if let Ok(svid) = validated {
        let unverified = unverified.expect("a validated token must also parse unverified");
        assert_eq!(svid.claims(), unverified.claims());
        assert_eq!(svid.token(), token);
    }
});
