//! The agent's own identity on disk: its X.509-SVID, the SVID's key and the last bundle of the
//! trust domain, kept in `data_dir` so a restart reuses them instead of attesting again.
//!
//! Files are replaced atomically (written beside, then renamed), and the key file is created
//! with mode 0600, so a crash leaves either the old identity or the new one, and the key is
//! never readable by others, not even for a moment.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls::pki_types::UnixTime;
use sigil_spiffe::{
    Bundle, BundleSet, PrivateKey, SvidUsage, TrustDomain, X509Svid, X509SvidError, verify_chain,
};

const SVID_FILE: &str = "agent_svid.pem";
const KEY_FILE: &str = "agent_key.pem";
const BUNDLE_FILE: &str = "bundle.json";

/// Why the stored identity cannot be used.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file holds something else than expected.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The stored SVID has expired (or no longer chains to the stored bundle).
    #[error("the stored agent SVID ({id}) cannot be used any more: {reason}")]
    Expired {
        /// The agent ID it names.
        id: String,
        /// Why.
        reason: X509SvidError,
    },
}

/// The agent's SVID and its trust domain's bundle, as stored.
#[derive(Debug)]
pub struct StoredIdentity {
    /// The agent's SVID and key.
    pub svid: X509Svid,
    /// The last bundle of the trust domain the agent knew.
    pub bundle: Bundle,
}

/// Reads the stored identity from `data_dir`. `Ok(None)` when there is none (first start);
/// an error when there is one that cannot be used (expired, damaged).
pub fn load(
    data_dir: &Path,
    trust_domain: &TrustDomain,
) -> Result<Option<StoredIdentity>, IdentityError> {
    let svid_path = data_dir.join(SVID_FILE);
    let key_path = data_dir.join(KEY_FILE);
    let bundle_path = data_dir.join(BUNDLE_FILE);
    if !svid_path.exists() && !key_path.exists() {
        return Ok(None);
    }
    let svid_pem = read(&svid_path)?;
    let key_pem = read(&key_path)?;
    let key = PrivateKey::from_pem(&key_pem).map_err(|e| malformed(&key_path, e))?;
    let chain = sigil_spiffe::pem::certificates(&svid_pem).map_err(|e| malformed(&svid_path, e))?;
    let svid = X509Svid::new(chain, key).map_err(|e| malformed(&svid_path, e))?;
    let bundle = load_bundle(&bundle_path, trust_domain)?;
    let bundles: BundleSet = [bundle.clone()].into_iter().collect();
    if let Err(reason) = verify_chain(svid.cert_chain(), &bundles, now(), SvidUsage::ClientAuth) {
        return Err(IdentityError::Expired {
            id: svid.spiffe_id().to_string(),
            reason,
        });
    }
    Ok(Some(StoredIdentity { svid, bundle }))
}

/// Reads a stored bundle document.
pub fn load_bundle(path: &Path, trust_domain: &TrustDomain) -> Result<Bundle, IdentityError> {
    let document = read(path)?;
    Bundle::from_document(trust_domain.clone(), &document).map_err(|e| malformed(path, e))
}

/// Stores the agent's SVID and key.
pub fn store_svid(data_dir: &Path, svid: &X509Svid) -> Result<(), IdentityError> {
    let key = svid.private_key().to_pem();
    write_atomic(&data_dir.join(KEY_FILE), key.as_bytes(), 0o600)?;
    write_atomic(
        &data_dir.join(SVID_FILE),
        svid.chain_pem().as_bytes(),
        0o644,
    )
}

/// Stores the trust domain's bundle.
pub fn store_bundle(data_dir: &Path, bundle: &Bundle) -> Result<(), IdentityError> {
    let path = data_dir.join(BUNDLE_FILE);
    let document = bundle.to_document().map_err(|e| malformed(&path, e))?;
    write_atomic(&path, document.as_bytes(), 0o644)
}

/// Creates `data_dir` (mode 0700) if it does not exist.
pub fn prepare_data_dir(data_dir: &Path) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: data_dir.to_owned(),
        source,
    };
    if !data_dir.exists() {
        std::fs::create_dir_all(data_dir).map_err(io)?;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    Ok(())
}

fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)
}

fn read(path: &Path) -> Result<Vec<u8>, IdentityError> {
    std::fs::read(path).map_err(|source| IdentityError::Io {
        path: path.to_owned(),
        source,
    })
}

fn malformed(path: &Path, reason: impl std::fmt::Display) -> IdentityError {
    IdentityError::Malformed {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

pub(crate) fn now() -> UnixTime {
    UnixTime::since_unix_epoch(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}
