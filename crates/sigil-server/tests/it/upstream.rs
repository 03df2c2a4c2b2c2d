//! `[ca.upstream]` loading: upstream CAs made by the `openssl` command and by our own issuer
//! load, sign our intermediates, and the SVIDs under them verify against the bundle (with the
//! SPIFFE library's verifier and with `openssl verify`); every bad file gets an error naming
//! it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, UnixTime};
use sigil_server::ca::{CaSettings, CertificateAuthority, MemoryKeyManager, Upstream, upstream};
use sigil_spiffe::x509::{CaParams, SvidUsage, X509Authority, create_csr, verify_chain};
use sigil_spiffe::{BundleSet, KeyType, PrivateKey, SpiffeId, TrustDomain, pem};

const HOUR: Duration = Duration::from_secs(3600);

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn workload() -> SpiffeId {
    "spiffe://example.org/web".parse().unwrap()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA `NAME.pem` / `NAME.key` (PKCS#8, 0600) made by `openssl req -x509`.
fn openssl_ca(dir: &Path, name: &str, key: &[&str], extensions: &[&str]) -> (PathBuf, PathBuf) {
    let cert = format!("{name}.pem");
    let key_file = format!("{name}.key");
    let subject = format!("/O=Upstream/CN={name}");
    let mut args = vec!["req", "-x509", "-newkey"];
    args.extend_from_slice(key);
    args.extend_from_slice(&[
        "-nodes", "-keyout", &key_file, "-out", &cert, "-days", "30", "-subj", &subject,
    ]);
    for extension in extensions {
        args.extend_from_slice(&["-addext", extension]);
    }
    openssl(dir, &args);
    let key_path = dir.join(&key_file);
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).unwrap();
    (dir.join(cert), key_path)
}

const CA_EXTENSIONS: &[&str] = &[
    "basicConstraints=critical,CA:TRUE",
    "keyUsage=critical,keyCertSign,cRLSign",
];
const EC: &[&str] = &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

fn write_key(path: &Path, contents: &[u8]) {
    fs::write(path, contents).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// A CA of ours for `upstream`, an SVID it signs, and the SVID verified against its bundle.
/// Returns the CA's bundle roots and the SVID chain.
fn sign_under(upstream: Upstream) -> (Vec<CertificateDer<'static>>, Vec<CertificateDer<'static>>) {
    let now = SystemTime::now();
    let (ca, _) = CertificateAuthority::start(
        CaSettings {
            trust_domain: td(),
            key_type: KeyType::EcP256,
            ttl: 24 * HOUR,
        },
        Arc::new(MemoryKeyManager::new()),
        Some(upstream.clone()),
        None,
        now,
    )
    .unwrap();
    assert!(upstream::fits(
        ca.active_x509().unwrap().certificate(),
        Some(&upstream)
    ));
    assert!(!upstream::fits(
        ca.active_x509().unwrap().certificate(),
        None
    ));
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let issued = ca
        .sign_x509_svid(
            &create_csr(&key, &workload()).unwrap(),
            workload(),
            vec![],
            HOUR,
            now,
        )
        .unwrap();
    let bundles: BundleSet = [ca.bundle()].into_iter().collect();
    let unix_now = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap());
    let verified = verify_chain(
        issued.cert_chain(),
        &bundles,
        unix_now,
        SvidUsage::ClientAuth,
    )
    .unwrap();
    assert_eq!(verified.spiffe_id(), &workload());
    (
        ca.bundle().x509().authorities().to_vec(),
        issued.cert_chain().to_vec(),
    )
}

/// `openssl verify` of the SVID chain against `roots`; `partial` when the anchor is not
/// self-signed.
fn openssl_verify(
    dir: &Path,
    roots: &[CertificateDer<'_>],
    chain: &[CertificateDer<'_>],
    partial: bool,
) {
    fs::write(dir.join("bundle.pem"), pem::encode_certificates(roots)).unwrap();
    fs::write(dir.join("leaf.pem"), pem::encode_certificates(&chain[..1])).unwrap();
    fs::write(
        dir.join("untrusted.pem"),
        pem::encode_certificates(&chain[1..]),
    )
    .unwrap();
    let mut args = vec![
        "verify",
        "-CAfile",
        "bundle.pem",
        "-untrusted",
        "untrusted.pem",
    ];
    if partial {
        args.push("-partial_chain");
    }
    args.push("leaf.pem");
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("leaf.pem: OK"));
}

fn der_of(path: &Path) -> Vec<CertificateDer<'static>> {
    pem::certificates(&fs::read(path).unwrap()).unwrap()
}

#[test]
fn an_openssl_upstream_signs_our_intermediate_and_svids_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_ca(dir.path(), "up", EC, CA_EXTENSIONS);
    let upstream = upstream::load(&cert, &key, SystemTime::now()).unwrap();
    let root = der_of(&cert);
    assert_eq!(upstream.root, root[0]);
    let (roots, chain) = sign_under(upstream);
    assert_eq!(roots, root, "the bundle holds the upstream root only");
    assert_eq!(
        chain.len(),
        2,
        "leaf and our intermediate; the root is not sent"
    );
    openssl_verify(dir.path(), &roots, &chain, false);
}

#[test]
fn sec1_and_pkcs1_keys_load() {
    let dir = tempfile::tempdir().unwrap();
    // EC: the same CA with its key rewritten as SEC1 `EC PRIVATE KEY`.
    let (cert, key) = openssl_ca(dir.path(), "ec", EC, CA_EXTENSIONS);
    openssl(dir.path(), &["ec", "-in", "ec.key", "-out", "ec-sec1.key"]);
    let sec1 = dir.path().join("ec-sec1.key");
    fs::set_permissions(&sec1, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        fs::read_to_string(&sec1)
            .unwrap()
            .contains("BEGIN EC PRIVATE KEY")
    );
    drop(key);
    let (roots, chain) = sign_under(upstream::load(&cert, &sec1, SystemTime::now()).unwrap());
    openssl_verify(dir.path(), &roots, &chain, false);

    // RSA: PKCS#1 `RSA PRIVATE KEY`.
    let (cert, _) = openssl_ca(dir.path(), "rsa", &["rsa:2048"], CA_EXTENSIONS);
    openssl(
        dir.path(),
        &[
            "rsa",
            "-in",
            "rsa.key",
            "-traditional",
            "-out",
            "rsa-pkcs1.key",
        ],
    );
    let pkcs1 = dir.path().join("rsa-pkcs1.key");
    fs::set_permissions(&pkcs1, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        fs::read_to_string(&pkcs1)
            .unwrap()
            .contains("BEGIN RSA PRIVATE KEY")
    );
    let (roots, chain) = sign_under(upstream::load(&cert, &pkcs1, SystemTime::now()).unwrap());
    openssl_verify(dir.path(), &roots, &chain, false);
}

/// A root and an upstream intermediate it signs, by openssl: `inter.pem` holds the
/// intermediate, `chain.pem` the intermediate then the root.
fn openssl_chain(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (root, _) = openssl_ca(dir, "root", EC, CA_EXTENSIONS);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-nodes",
            "-keyout",
            "inter.key",
            "-out",
            "inter.csr",
            "-subj",
            "/O=Upstream/CN=inter",
        ],
    );
    fs::write(
        dir.join("inter.ext"),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "inter.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-days",
            "20",
            "-extfile",
            "inter.ext",
            "-out",
            "inter.pem",
        ],
    );
    let key = dir.join("inter.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let chain = dir.join("chain.pem");
    let mut both = fs::read(dir.join("inter.pem")).unwrap();
    both.extend(fs::read(&root).unwrap());
    fs::write(&chain, both).unwrap();
    (dir.join("inter.pem"), chain, key)
}

#[test]
fn with_a_chain_the_bundle_holds_its_self_signed_root() {
    let dir = tempfile::tempdir().unwrap();
    let (inter, chain_file, key) = openssl_chain(dir.path());
    let upstream = upstream::load(&chain_file, &key, SystemTime::now()).unwrap();
    let root = der_of(&dir.path().join("root.pem"));
    assert_eq!(upstream.root, root[0]);
    let (roots, chain) = sign_under(upstream);
    assert_eq!(roots, root);
    assert_eq!(
        chain.len(),
        3,
        "leaf, our intermediate, the upstream; not the root"
    );
    assert_eq!(chain[2], der_of(&inter)[0]);
    openssl_verify(dir.path(), &roots, &chain, false);
}

#[test]
fn without_its_root_the_upstream_itself_is_the_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let (inter, _, key) = openssl_chain(dir.path());
    let upstream = upstream::load(&inter, &key, SystemTime::now()).unwrap();
    assert_eq!(upstream.root, der_of(&inter)[0]);
    let (roots, chain) = sign_under(upstream);
    assert_eq!(roots, der_of(&inter));
    // openssl wants a self-signed anchor unless told to accept a partial chain.
    openssl_verify(dir.path(), &roots, &chain, true);
}

#[test]
fn an_upstream_made_by_our_own_issuer_loads() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let (cert, key) = own_ca(
        dir.path(),
        "own",
        KeyType::EcP384,
        now - HOUR,
        now + 100 * HOUR,
    );
    let (roots, chain) = sign_under(upstream::load(&cert, &key, now).unwrap());
    assert_eq!(roots, der_of(&cert));
    openssl_verify(dir.path(), &roots, &chain, false);
}

/// Writes a CA of our own issuer valid over `[not_before, not_after]` and its key.
fn own_ca(
    dir: &Path,
    name: &str,
    key_type: KeyType,
    not_before: SystemTime,
    not_after: SystemTime,
) -> (PathBuf, PathBuf) {
    // The authority takes the key; a copy parsed from its PKCS#8 goes to the key file.
    let key = PrivateKey::generate(key_type).unwrap();
    let params = CaParams::new(td(), not_before, not_after);
    let authority = X509Authority::self_signed(
        Arc::new(PrivateKey::from_pkcs8_der(key.pkcs8_der()).unwrap()),
        &params,
    )
    .unwrap();
    let cert = dir.join(format!("{name}.pem"));
    fs::write(&cert, pem::encode_certificates([authority.certificate()])).unwrap();
    let key_file = dir.join(format!("{name}.key"));
    write_key(&key_file, key.to_pem().as_bytes());
    (cert, key_file)
}

#[test]
fn bad_upstream_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let now = SystemTime::now();
    let (good_cert, good_key) = openssl_ca(d, "good", EC, CA_EXTENSIONS);
    let (other_cert, other_key) = openssl_ca(d, "other", EC, CA_EXTENSIONS);
    let (leaf_cert, leaf_key) = openssl_ca(
        d,
        "leaf",
        EC,
        &[
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature",
        ],
    );
    let (no_sign_cert, no_sign_key) = openssl_ca(
        d,
        "nosign",
        EC,
        &[
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=critical,digitalSignature",
        ],
    );
    let (expired_cert, expired_key) =
        own_ca(d, "expired", KeyType::EcP256, now - 48 * HOUR, now - HOUR);
    let (future_cert, future_key) =
        own_ca(d, "future", KeyType::EcP256, now + HOUR, now + 48 * HOUR);

    let write = |name: &str, contents: &[u8]| {
        let path = d.join(name);
        write_key(&path, contents);
        path
    };
    let empty = write("empty.pem", b"");
    let key_only = write("key-only.pem", &fs::read(&good_key).unwrap());
    let malformed = write(
        "malformed.pem",
        pem::encode("CERTIFICATE", b"not a certificate").as_bytes(),
    );
    let mut broken = fs::read(&good_cert).unwrap();
    broken.extend(fs::read(&other_cert).unwrap());
    let broken = write("broken.pem", &broken);
    let insecure = write("insecure.key", &fs::read(&good_key).unwrap());
    fs::set_permissions(&insecure, fs::Permissions::from_mode(0o644)).unwrap();
    openssl(
        d,
        &[
            "pkcs8",
            "-topk8",
            "-in",
            "good.key",
            "-out",
            "encrypted.key",
            "-passout",
            "pass:secret",
            "-v2",
            "aes-256-cbc",
        ],
    );
    let encrypted = d.join("encrypted.key");
    fs::set_permissions(&encrypted, fs::Permissions::from_mode(0o600)).unwrap();
    let cert_as_key = write("cert-as-key.key", &fs::read(&good_cert).unwrap());
    let junk_key = write(
        "junk.key",
        pem::encode("PRIVATE KEY", b"not a key at all").as_bytes(),
    );
    let junk_ec_key = write(
        "junk-ec.key",
        pem::encode("EC PRIVATE KEY", b"not a key at all").as_bytes(),
    );
    let missing = d.join("missing.pem");

    let cases: Vec<(&str, &Path, &Path, String)> = vec![
        (
            "missing cert",
            &missing,
            &good_key,
            format!(
                "ca.upstream: cannot read {}: No such file",
                missing.display()
            ),
        ),
        (
            "missing key",
            &good_cert,
            &missing,
            format!(
                "ca.upstream: cannot read {}: No such file",
                missing.display()
            ),
        ),
        (
            "empty cert",
            &empty,
            &good_key,
            format!(
                "ca.upstream cert_file {}: no PEM blocks found",
                empty.display()
            ),
        ),
        (
            "key as cert",
            &key_only,
            &good_key,
            format!(
                "ca.upstream cert_file {}: no certificates found",
                key_only.display()
            ),
        ),
        (
            "malformed cert",
            &malformed,
            &good_key,
            format!(
                "ca.upstream cert_file {}: certificate 0 is malformed",
                malformed.display()
            ),
        ),
        (
            "broken chain",
            &broken,
            &good_key,
            format!(
                "ca.upstream cert_file {}: certificate 0 is not signed by certificate 1",
                broken.display()
            ),
        ),
        (
            "not a ca",
            &leaf_cert,
            &leaf_key,
            format!(
                "ca.upstream cert_file {}: not a CA certificate",
                leaf_cert.display()
            ),
        ),
        (
            "no keyCertSign",
            &no_sign_cert,
            &no_sign_key,
            format!(
                "ca.upstream cert_file {}: not a CA certificate",
                no_sign_cert.display()
            ),
        ),
        (
            "expired",
            &expired_cert,
            &expired_key,
            format!(
                "ca.upstream cert_file {}: certificate 0 expired at ",
                expired_cert.display()
            ),
        ),
        (
            "not yet valid",
            &future_cert,
            &future_key,
            format!(
                "ca.upstream cert_file {}: certificate 0 is not valid before ",
                future_cert.display()
            ),
        ),
        (
            "key mismatch",
            &good_cert,
            &other_key,
            format!(
                "ca.upstream key_file {} does not hold the key of the certificate in {}",
                other_key.display(),
                good_cert.display()
            ),
        ),
        (
            "insecure key",
            &good_cert,
            &insecure,
            format!(
                "ca.upstream key_file {} has mode 644; keys must not be readable by group or others",
                insecure.display()
            ),
        ),
        (
            "encrypted key",
            &good_cert,
            &encrypted,
            format!(
                "ca.upstream key_file {}: encrypted keys are not supported",
                encrypted.display()
            ),
        ),
        (
            "no key",
            &good_cert,
            &cert_as_key,
            format!(
                "ca.upstream key_file {}: no private key found",
                cert_as_key.display()
            ),
        ),
        (
            "junk pkcs8",
            &good_cert,
            &junk_key,
            format!(
                "ca.upstream key_file {}: cannot read the PRIVATE KEY key",
                junk_key.display()
            ),
        ),
        (
            "junk sec1",
            &good_cert,
            &junk_ec_key,
            format!(
                "ca.upstream key_file {}: cannot read the EC PRIVATE KEY key",
                junk_ec_key.display()
            ),
        ),
    ];
    for (name, cert, key, expected) in cases {
        let error = upstream::load(cert, key, now)
            .err()
            .unwrap_or_else(|| panic!("{name}: loaded"));
        let message = error.to_string();
        assert!(
            message.starts_with(&expected),
            "{name}: {message}\nexpected: {expected}"
        );
        // Nothing secret leaks: no key bytes in any message.
        assert!(!message.contains("BEGIN"), "{name}: {message}");
    }
    // The good pair loads, so the failures above are the files' doing.
    upstream::load(&good_cert, &good_key, now).unwrap();
}

#[test]
fn a_ca_made_without_the_upstream_does_not_fit_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_ca(dir.path(), "up", EC, CA_EXTENSIONS);
    let upstream = upstream::load(&cert, &key, SystemTime::now()).unwrap();
    let now = SystemTime::now();
    let (own, _) = CertificateAuthority::start(
        CaSettings {
            trust_domain: td(),
            key_type: KeyType::EcP256,
            ttl: 24 * HOUR,
        },
        Arc::new(MemoryKeyManager::new()),
        None,
        None,
        now,
    )
    .unwrap();
    let active = own.active_x509().unwrap().certificate();
    assert!(upstream::fits(active, None));
    assert!(!upstream::fits(active, Some(&upstream)));
}
