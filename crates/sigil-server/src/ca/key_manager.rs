//! Key managers: where the CA's private keys live. The CA asks for a key by ID (one per
//! authority slot) and gets a signer; it never reads key bytes itself.
//!
//! - [`MemoryKeyManager`]: keys live only in the process; a restart makes new authorities.
//! - [`DiskKeyManager`]: keys are PKCS#8 files in `<data_dir>/keys/`, mode 0600 in a 0700
//!   directory, written atomically (temporary file, fsync, rename, fsync of the directory), so
//!   a crash never leaves a half-written key and a restarted server keeps its authorities.
//!
//! Backends that keep keys outside the process (KMS, HSM, TPM) will return signers that hold a
//! handle instead of key bytes; the trait is the seam for them.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sigil_spiffe::{KeyError, KeyType, PrivateKey};

/// Why a key could not be made, stored or loaded.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum KeyManagerError {
    /// A key ID outside `a-z 0-9 - _` (it names a file).
    #[error("key id {0:?} may hold only lowercase letters, digits, '-' and '_'")]
    BadKeyId(String),
    /// Generating the key failed.
    #[error("cannot generate a {key_type} key: {source}")]
    Generate {
        /// The type asked for.
        key_type: KeyType,
        /// Why.
        source: KeyError,
    },
    /// A stored key file is not a PKCS#8 key.
    #[error("key file {path} is not a usable PKCS#8 key: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        source: KeyError,
    },
    /// Reading or writing a key file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A key file or directory is readable by others than the server's user.
    #[error(
        "{path} has mode {mode:o}; keys must not be readable by group or others (want 0600/0700)"
    )]
    Permissions {
        /// The file or directory.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
}

/// The name of a key slot, such as `x509-ca-a` or `jwt-b`. It becomes a file name, so it is
/// restricted to `a-z 0-9 - _`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// Checks a key ID.
    pub fn new(id: &str) -> Result<Self, KeyManagerError> {
        let valid = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(id.to_owned()))
        } else {
            Err(KeyManagerError::BadKeyId(id.to_owned()))
        }
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

/// Where the CA's keys live.
pub trait KeyManager: Send + Sync + fmt::Debug {
    /// Makes a new key for `id`, replacing any key it had, and returns it.
    fn generate(&self, id: &KeyId, key_type: KeyType) -> Result<Arc<PrivateKey>, KeyManagerError>;

    /// The key stored under `id`, if any.
    fn get(&self, id: &KeyId) -> Result<Option<Arc<PrivateKey>>, KeyManagerError>;
}

/// Keys in process memory only.
#[derive(Debug, Default)]
pub struct MemoryKeyManager {
    keys: Mutex<HashMap<KeyId, Arc<PrivateKey>>>,
}

impl MemoryKeyManager {
    /// An empty key manager.
    pub fn new() -> Self {
        Self::default()
    }
}

impl KeyManager for MemoryKeyManager {
    fn generate(&self, id: &KeyId, key_type: KeyType) -> Result<Arc<PrivateKey>, KeyManagerError> {
        let key = Arc::new(
            PrivateKey::generate(key_type)
                .map_err(|source| KeyManagerError::Generate { key_type, source })?,
        );
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id.clone(), key.clone());
        Ok(key)
    }

    fn get(&self, id: &KeyId) -> Result<Option<Arc<PrivateKey>>, KeyManagerError> {
        Ok(self
            .keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(id)
            .cloned())
    }
}

/// Keys as PKCS#8 DER files under `<data_dir>/keys/`, one per key ID.
#[derive(Debug)]
pub struct DiskKeyManager {
    dir: PathBuf,
    /// Loaded keys, so that signing never touches the disk.
    cache: Mutex<HashMap<KeyId, Arc<PrivateKey>>>,
}

impl DiskKeyManager {
    /// Opens (creating it 0700 if missing) the key directory `<data_dir>/keys`. A directory
    /// readable by group or others is refused rather than silently tightened: someone made it
    /// that way, and the operator should know.
    pub fn open(data_dir: &Path) -> Result<Self, KeyManagerError> {
        let dir = data_dir.join("keys");
        match fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
        {
            Ok(()) => {}
            Err(source) => {
                return Err(KeyManagerError::Io {
                    action: "cannot create key directory",
                    path: dir,
                    source,
                });
            }
        }
        check_private(&dir)?;
        Ok(Self {
            dir,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn path(&self, id: &KeyId) -> PathBuf {
        self.dir.join(format!("{id}.pkcs8"))
    }
}

impl KeyManager for DiskKeyManager {
    fn generate(&self, id: &KeyId, key_type: KeyType) -> Result<Arc<PrivateKey>, KeyManagerError> {
        let key = PrivateKey::generate(key_type)
            .map_err(|source| KeyManagerError::Generate { key_type, source })?;
        write_atomically(&self.dir, &self.path(id), key.pkcs8_der())?;
        let key = Arc::new(key);
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id.clone(), key.clone());
        Ok(key)
    }

    fn get(&self, id: &KeyId) -> Result<Option<Arc<PrivateKey>>, KeyManagerError> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(key) = cache.get(id) {
            return Ok(Some(key.clone()));
        }
        let path = self.path(id);
        let der = match fs::read(&path) {
            Ok(der) => zeroize::Zeroizing::new(der),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(KeyManagerError::Io {
                    action: "cannot read key file",
                    path,
                    source,
                });
            }
        };
        check_private(&path)?;
        let key = PrivateKey::from_pkcs8_der(&der)
            .map_err(|source| KeyManagerError::Corrupt { path, source })?;
        let key = Arc::new(key);
        cache.insert(id.clone(), key.clone());
        Ok(Some(key))
    }
}

/// Refuses a file or directory that group or others can read, write or enter.
fn check_private(path: &Path) -> Result<(), KeyManagerError> {
    let mode = fs::metadata(path)
        .map_err(|source| KeyManagerError::Io {
            action: "cannot inspect",
            path: path.to_owned(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(KeyManagerError::Permissions {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// Writes `bytes` to `path` so that readers see either the old file or the whole new one:
/// a 0600 temporary file in the same directory, fsync, rename over, fsync the directory.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), KeyManagerError> {
    let io_error = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| KeyManagerError::Io {
            action,
            path,
            source,
        }
    };
    let temporary = path.with_extension("pkcs8.tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(io_error("cannot create key file", &temporary))?;
    // The mode given to open() applies only when the file is created; a temporary file left
    // over from a crash keeps its old mode, so set it explicitly.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_error("cannot set the mode of", &temporary))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error("cannot write key file", &temporary))?;
    drop(file);
    fs::rename(&temporary, path).map_err(io_error("cannot move key file into place", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("cannot sync key directory", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> KeyId {
        KeyId::new(s).unwrap()
    }

    #[test]
    fn key_ids_are_file_safe() {
        assert!(KeyId::new("x509-ca-a").is_ok());
        for bad in ["", "../x", "a/b", "A", "a.b", &"a".repeat(65)] {
            assert!(KeyId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_keys_live_in_the_process() {
        let km = MemoryKeyManager::new();
        assert!(km.get(&id("jwt-a")).unwrap().is_none());
        let key = km.generate(&id("jwt-a"), KeyType::EcP256).unwrap();
        let again = km.get(&id("jwt-a")).unwrap().unwrap();
        assert_eq!(key.public_key(), again.public_key());
        let replaced = km.generate(&id("jwt-a"), KeyType::EcP384).unwrap();
        assert_ne!(replaced.public_key(), key.public_key());
    }

    #[test]
    fn disk_keys_survive_a_restart_and_are_private() {
        let data = tempfile::tempdir().unwrap();
        let public = {
            let km = DiskKeyManager::open(data.path()).unwrap();
            km.generate(&id("x509-ca-a"), KeyType::EcP256)
                .unwrap()
                .public_key()
        };
        let dir_mode = fs::metadata(data.path().join("keys"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let file = data.path().join("keys/x509-ca-a.pkcs8");
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!data.path().join("keys/x509-ca-a.pkcs8.tmp").exists());

        let km = DiskKeyManager::open(data.path()).unwrap();
        let loaded = km.get(&id("x509-ca-a")).unwrap().unwrap();
        assert_eq!(loaded.public_key(), public);
        assert!(km.get(&id("x509-ca-b")).unwrap().is_none());
    }

    #[test]
    fn every_key_type_round_trips_through_disk() {
        let data = tempfile::tempdir().unwrap();
        let km = DiskKeyManager::open(data.path()).unwrap();
        for (name, key_type) in [
            ("p256", KeyType::EcP256),
            ("p384", KeyType::EcP384),
            ("rsa", KeyType::Rsa2048),
        ] {
            let key = km.generate(&id(name), key_type).unwrap();
            let fresh = DiskKeyManager::open(data.path()).unwrap();
            assert_eq!(
                fresh.get(&id(name)).unwrap().unwrap().public_key(),
                key.public_key()
            );
        }
    }

    #[test]
    fn unsafe_modes_and_corrupt_files_are_refused_by_name() {
        let data = tempfile::tempdir().unwrap();
        let km = DiskKeyManager::open(data.path()).unwrap();
        km.generate(&id("k"), KeyType::EcP256).unwrap();
        let file = data.path().join("keys/k.pkcs8");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let error = DiskKeyManager::open(data.path())
            .unwrap()
            .get(&id("k"))
            .unwrap_err();
        assert!(
            matches!(error, KeyManagerError::Permissions { mode: 0o644, .. }),
            "{error}"
        );

        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&file, b"not a key").unwrap();
        let error = DiskKeyManager::open(data.path())
            .unwrap()
            .get(&id("k"))
            .unwrap_err();
        assert!(
            error.to_string().contains("is not a usable PKCS#8 key"),
            "{error}"
        );

        fs::set_permissions(data.path().join("keys"), fs::Permissions::from_mode(0o755)).unwrap();
        let error = DiskKeyManager::open(data.path()).unwrap_err();
        assert!(
            matches!(error, KeyManagerError::Permissions { .. }),
            "{error}"
        );
    }
}
