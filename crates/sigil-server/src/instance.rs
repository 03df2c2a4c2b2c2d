//! The server instance's identity: a random ID made at its first start and kept in its data
//! directory. Servers sharing one datastore share the trust domain and the server SPIFFE ID;
//! the instance ID is what keeps their CA journals and published authorities apart.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// The file in the data directory that holds the instance ID.
pub const INSTANCE_FILE: &str = "instance_id";

/// Why the instance ID could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The file could not be read or written.
    #[error("instance id file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file holds something else than an ID this build writes.
    #[error(
        "instance id file {} does not hold a 32-digit lowercase hex id; \
         restore it, or delete it to make this a new server instance",
        path.display()
    )]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// No randomness.
    #[error("cannot generate an instance id: no randomness")]
    Random,
}

/// The instance ID of the server whose data directory is `data_dir`, and whether it was made
/// just now (a server that never ran here before).
pub fn load_or_create(data_dir: &Path) -> Result<(String, bool), InstanceError> {
    let path = data_dir.join(INSTANCE_FILE);
    let io_error = |source| InstanceError::Io {
        path: path.clone(),
        source,
    };
    match fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if is_instance_id(id) {
                Ok((id.to_owned(), false))
            } else {
                Err(InstanceError::Malformed { path })
            }
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 16];
            SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| InstanceError::Random)?;
            let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            // create_new: two servers started on one data directory do not both win.
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io_error)?;
            file.write_all(format!("{id}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io_error)?;
            Ok((id, true))
        }
        Err(error) => Err(io_error(error)),
    }
}

fn is_instance_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn an_instance_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (first, new) = load_or_create(dir.path()).unwrap();
        assert!(new);
        assert!(is_instance_id(&first), "{first}");
        let mode = fs::metadata(dir.path().join(INSTANCE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(dir.path()).unwrap(), (first.clone(), false));
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap().0, first);
    }

    #[test]
    fn a_damaged_instance_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INSTANCE_FILE);
        fs::write(&path, "not an id\n").unwrap();
        let error = load_or_create(dir.path()).unwrap_err();
        assert!(error.to_string().contains("32-digit"), "{error}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "not an id\n");
    }
}
