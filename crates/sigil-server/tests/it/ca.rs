//! The CA's whole rotation cycle under a forced clock, restarts from the journal, upstream
//! authorities, and lifetime capping. SVIDs and tokens are checked with the SPIFFE library's
//! own verifiers against the bundle the CA publishes.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::UnixTime;
use sigil_server::ca::{
    CaEvent, CaSettings, CertificateAuthority, DiskKeyManager, KeyManager, MemoryKeyManager,
    Upstream,
};
use sigil_spiffe::x509::{CaParams, SvidUsage, X509Authority, create_csr, verify_chain};
use sigil_spiffe::{BundleSet, JwtSvid, KeyType, PrivateKey, SpiffeId, TrustDomain};

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn settings(ttl: Duration) -> CaSettings {
    CaSettings {
        trust_domain: td(),
        key_type: KeyType::EcP256,
        ttl,
    }
}

/// A new CA with in-memory keys, started at `t0`, and what its start did.
fn fresh_ca(ttl: Duration) -> (CertificateAuthority, Vec<CaEvent>) {
    CertificateAuthority::start(
        settings(ttl),
        Arc::new(MemoryKeyManager::new()),
        None,
        None,
        t0(),
    )
    .unwrap()
}

fn workload() -> SpiffeId {
    "spiffe://example.org/web".parse().unwrap()
}

fn unix(t: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(t.duration_since(UNIX_EPOCH).unwrap())
}

/// Signs an SVID with the CA at `now` and verifies it against the CA's own bundle.
fn sign_and_verify(
    ca: &CertificateAuthority,
    ttl: Duration,
    now: SystemTime,
) -> (bool, SystemTime) {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let csr = create_csr(&key, &workload()).unwrap();
    let issued = ca
        .sign_x509_svid(&csr, workload(), vec![], ttl, now)
        .unwrap();
    let bundles: BundleSet = [ca.bundle()].into_iter().collect();
    let verified = verify_chain(
        issued.cert_chain(),
        &bundles,
        unix(now),
        SvidUsage::ClientAuth,
    )
    .unwrap();
    assert_eq!(verified.spiffe_id(), &workload());
    (issued.capped(), issued.not_after())
}

fn mint_and_validate(ca: &CertificateAuthority, now: SystemTime) -> String {
    let (svid, _) = ca
        .mint_jwt_svid(workload(), &["aud".to_owned()], 5 * MINUTE, now)
        .unwrap();
    let bundles: BundleSet = [ca.bundle()].into_iter().collect();
    let validated = JwtSvid::parse_and_validate(svid.token(), &bundles, &["aud"], now).unwrap();
    validated.key_id().to_owned()
}

fn kinds(events: &[CaEvent]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e {
            CaEvent::X509Prepared { .. } => "x509 prepared",
            CaEvent::X509Activated { .. } => "x509 activated",
            CaEvent::X509Retired => "x509 retired",
            CaEvent::JwtPrepared { .. } => "jwt prepared",
            CaEvent::JwtActivated { .. } => "jwt activated",
            CaEvent::JwtRetired { .. } => "jwt retired",
            CaEvent::ActivationAwaitsPublication => "awaits publication",
        })
        .collect()
}

#[test]
fn the_whole_rotation_cycle_under_a_forced_clock() {
    let ttl = 6 * HOUR;
    let (mut ca, events) = fresh_ca(ttl);
    assert_eq!(
        kinds(&events),
        [
            "x509 prepared",
            "x509 activated",
            "jwt prepared",
            "jwt activated"
        ]
    );
    assert_eq!(ca.sequence(), 1);
    let first_ca = ca.active_x509().unwrap().certificate().clone();
    let first_kid = mint_and_validate(&ca, t0());
    assert_eq!(
        ca.bundle().x509().authorities(),
        std::slice::from_ref(&first_ca)
    );

    // Before half-life: nothing happens, the bundle does not change.
    assert!(ca.rotate(t0() + 2 * HOUR + 50 * MINUTE).unwrap().is_empty());
    assert_eq!(ca.sequence(), 1);

    // Half-life: the next authorities are prepared and published, but do not sign yet.
    let t = t0() + 3 * HOUR + MINUTE;
    assert_eq!(
        kinds(&ca.rotate(t).unwrap()),
        ["x509 prepared", "jwt prepared"]
    );
    assert_eq!(ca.sequence(), 2);
    let bundle = ca.bundle();
    assert_eq!(bundle.x509().authorities().len(), 2);
    assert_eq!(bundle.jwt().authorities().len(), 2);
    assert_eq!(bundle.sequence(), Some(2));
    assert_eq!(ca.active_x509().unwrap().certificate(), &first_ca);
    assert_eq!(mint_and_validate(&ca, t), first_kid);
    // Rotating again in the same phase changes nothing.
    assert!(ca.rotate(t + MINUTE).unwrap().is_empty());

    // A sixth of the life left: the prepared ones sign; the old ones stay in the bundle.
    let t = t0() + 5 * HOUR;
    assert_eq!(
        kinds(&ca.rotate(t).unwrap()),
        ["x509 activated", "jwt activated"]
    );
    assert_eq!(
        ca.sequence(),
        2,
        "activation does not change the bundle's content"
    );
    let second_ca = ca.active_x509().unwrap().certificate().clone();
    assert_ne!(second_ca, first_ca);
    assert_eq!(ca.bundle().x509().authorities().len(), 2);
    let second_kid = mint_and_validate(&ca, t);
    assert_ne!(second_kid, first_kid);
    // A token signed by the old key still validates against the bundle while it is there.
    sign_and_verify(&ca, HOUR, t);

    // The old ones expire and leave the bundle (just before the new ones reach half-life).
    let t = t0() + 6 * HOUR + Duration::from_secs(30);
    assert_eq!(
        kinds(&ca.rotate(t).unwrap()),
        ["x509 retired", "jwt retired"]
    );
    assert_eq!(ca.sequence(), 3);
    assert_eq!(ca.bundle().x509().authorities(), [second_ca]);
    assert_eq!(ca.bundle().jwt().authorities().len(), 1);

    // Many more cycles: never more than two authorities of a kind, and always able to sign.
    let mut t = t;
    let end = t + 10 * ttl;
    while t < end {
        ca.rotate(t).unwrap();
        let bundle = ca.bundle();
        assert!((1..=2).contains(&bundle.x509().authorities().len()));
        assert!((1..=2).contains(&bundle.jwt().authorities().len()));
        sign_and_verify(&ca, 10 * MINUTE, t);
        mint_and_validate(&ca, t);
        t += 10 * MINUTE;
    }
    // Ten lifetimes: about two bundle changes each (prepare, retire).
    assert!(
        (20..=24).contains(&ca.sequence()),
        "sequence {}",
        ca.sequence()
    );
}

#[test]
fn with_several_servers_an_authority_signs_only_once_its_bundle_is_published() {
    let ttl = 6 * HOUR;
    let (mut ca, _) = fresh_ca(ttl);
    ca.require_publication();
    let first = ca.active_x509().unwrap().certificate().clone();
    // Prepared at half-life; the database is down, so nothing is published.
    let t = t0() + 3 * HOUR + MINUTE;
    assert_eq!(
        kinds(&ca.rotate(t).unwrap()),
        ["x509 prepared", "jwt prepared"]
    );
    // Due to sign, but other servers do not have it: the first one signs on.
    let t = t0() + 5 * HOUR;
    assert_eq!(kinds(&ca.rotate(t).unwrap()), ["awaits publication"]);
    assert_eq!(ca.active_x509().unwrap().certificate(), &first);
    sign_and_verify(&ca, 10 * MINUTE, t);
    // Published: the next step activates it.
    ca.mark_published(ca.sequence());
    assert_eq!(
        kinds(&ca.rotate(t + MINUTE).unwrap()),
        ["x509 activated", "jwt activated"]
    );
    assert_ne!(ca.active_x509().unwrap().certificate(), &first);

    // A server that missed the half-life step prepares at the due time and waits too.
    let (mut ca, _) = fresh_ca(ttl);
    ca.require_publication();
    let first = ca.active_x509().unwrap().certificate().clone();
    assert_eq!(
        kinds(&ca.rotate(t0() + 5 * HOUR).unwrap()),
        ["x509 prepared", "jwt prepared", "awaits publication"]
    );
    assert_eq!(ca.active_x509().unwrap().certificate(), &first);
    ca.mark_published(ca.sequence());
    assert_eq!(
        kinds(&ca.rotate(t0() + 5 * HOUR + MINUTE).unwrap()),
        ["x509 activated", "jwt activated"]
    );

    // Never published: once the active one expires, the next signs anyway (nothing else can).
    let (mut ca, _) = fresh_ca(ttl);
    ca.require_publication();
    ca.rotate(t0() + 3 * HOUR + MINUTE).unwrap();
    let events = kinds(&ca.rotate(t0() + 6 * HOUR + MINUTE).unwrap());
    assert!(events.contains(&"x509 activated"), "{events:?}");
    sign_and_verify(&ca, 10 * MINUTE, t0() + 6 * HOUR + MINUTE);

    // One server (no gate): activation is on time, as before.
    let (mut ca, _) = fresh_ca(ttl);
    ca.rotate(t0() + 3 * HOUR + MINUTE).unwrap();
    assert_eq!(
        kinds(&ca.rotate(t0() + 5 * HOUR).unwrap()),
        ["x509 activated", "jwt activated"]
    );
}

#[test]
fn no_svid_outlives_its_authority() {
    let ttl = 6 * HOUR;
    let (ca, _) = fresh_ca(ttl);
    let ca_end = ca.active_x509().unwrap().not_after();
    let t = t0() + 5 * HOUR;
    let (capped, not_after) = sign_and_verify(&ca, 2 * HOUR, t);
    assert!(capped);
    assert_eq!(not_after, ca_end);
    let (capped, _) = sign_and_verify(&ca, 10 * MINUTE, t);
    assert!(!capped);

    let (svid, capped) = ca
        .mint_jwt_svid(workload(), &["aud".to_owned()], 2 * HOUR, t)
        .unwrap();
    assert!(capped);
    assert!(svid.expiry() <= t0() + ttl);
}

#[test]
fn a_restarted_server_keeps_its_authorities() {
    let data = tempfile::tempdir().unwrap();
    let ttl = 6 * HOUR;
    let key_manager =
        || -> Arc<dyn KeyManager> { Arc::new(DiskKeyManager::open(data.path()).unwrap()) };
    let (mut ca, _) =
        CertificateAuthority::start(settings(ttl), key_manager(), None, None, t0()).unwrap();
    let t = t0() + 3 * HOUR + MINUTE;
    ca.rotate(t).unwrap();
    let journal = ca.journal();
    let bundle = ca.bundle();
    let active = ca.active_x509().unwrap().certificate().clone();
    drop(ca);

    let (restarted, events) =
        CertificateAuthority::start(settings(ttl), key_manager(), None, Some(&journal), t).unwrap();
    assert!(events.is_empty(), "nothing was due: {events:?}");
    assert_eq!(restarted.bundle(), bundle);
    assert_eq!(restarted.active_x509().unwrap().certificate(), &active);
    // It signs with the same key: the SVID verifies against the bundle from before.
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let issued = restarted
        .sign_x509_svid(
            &create_csr(&key, &workload()).unwrap(),
            workload(),
            vec![],
            HOUR,
            t,
        )
        .unwrap();
    let before: BundleSet = [bundle].into_iter().collect();
    verify_chain(issued.cert_chain(), &before, unix(t), SvidUsage::ServerAuth).unwrap();

    // And the rotation goes on from where it was.
    let mut restarted = restarted;
    assert_eq!(
        kinds(&restarted.rotate(t0() + 5 * HOUR).unwrap()),
        ["x509 activated", "jwt activated"]
    );
}

#[test]
fn a_server_down_past_every_expiry_starts_over() {
    let ttl = 6 * HOUR;
    let key_manager: Arc<dyn KeyManager> = Arc::new(MemoryKeyManager::new());
    let (ca, _) =
        CertificateAuthority::start(settings(ttl), key_manager.clone(), None, None, t0()).unwrap();
    let journal = ca.journal();
    let sequence = ca.sequence();
    let later = t0() + 100 * HOUR;
    let (ca, events) =
        CertificateAuthority::start(settings(ttl), key_manager, None, Some(&journal), later)
            .unwrap();
    assert_eq!(
        kinds(&events),
        [
            "x509 retired",
            "x509 prepared",
            "x509 activated",
            "jwt retired",
            "jwt prepared",
            "jwt activated"
        ]
    );
    assert_eq!(ca.bundle().x509().authorities().len(), 1);
    assert_eq!(ca.sequence(), sequence + 1);
    sign_and_verify(&ca, HOUR, later);
}

#[test]
fn a_journal_naming_a_lost_key_is_refused() {
    let ttl = 6 * HOUR;
    let (ca, _) = fresh_ca(ttl);
    let journal = ca.journal();
    let error = CertificateAuthority::start(
        settings(ttl),
        Arc::new(MemoryKeyManager::new()),
        None,
        Some(&journal),
        t0(),
    )
    .err()
    .unwrap();
    assert!(
        error
            .to_string()
            .contains("the key manager does not have it"),
        "{error}"
    );
    let error = CertificateAuthority::start(
        settings(ttl),
        Arc::new(MemoryKeyManager::new()),
        None,
        Some(b"{not json"),
        t0(),
    )
    .err()
    .unwrap();
    assert!(
        error.to_string().starts_with("ca journal is unreadable"),
        "{error}"
    );
}

#[test]
fn with_an_upstream_ca_the_bundle_holds_its_root_and_svids_chain_to_it() {
    let root_key = Arc::new(PrivateKey::generate(KeyType::EcP384).unwrap());
    let root = X509Authority::self_signed(
        root_key,
        &CaParams::new(td(), t0() - HOUR, t0() + 1000 * HOUR),
    )
    .unwrap();
    let upstream = Upstream {
        root: root.certificate().clone(),
        authority: Arc::new(root),
    };
    let root_cert = upstream.root.clone();
    let (ca, _) = CertificateAuthority::start(
        settings(6 * HOUR),
        Arc::new(MemoryKeyManager::new()),
        Some(upstream),
        None,
        t0(),
    )
    .unwrap();
    assert_eq!(ca.bundle().x509().authorities(), [root_cert]);
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let issued = ca
        .sign_x509_svid(
            &create_csr(&key, &workload()).unwrap(),
            workload(),
            vec![],
            HOUR,
            t0(),
        )
        .unwrap();
    assert_eq!(issued.cert_chain().len(), 2, "leaf and our intermediate");
    let bundles: BundleSet = [ca.bundle()].into_iter().collect();
    verify_chain(
        issued.cert_chain(),
        &bundles,
        unix(t0()),
        SvidUsage::ServerAuth,
    )
    .unwrap();
}
