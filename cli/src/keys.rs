//! Release signing key files: created readable by their owner only, and refused when
//! others can read them, as ssh does with private keys.

use efa_domain::signing::SigningKey;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a signing key.
    #[error("{path}: {source}")]
    Invalid {
        /// The key file.
        path: String,
        /// What is wrong with it.
        source: efa_domain::Error,
    },
    /// Others may read the secret key.
    #[error(
        "{path} is readable by other users (mode {mode:o}); a release signing key must be private. \
         Run `chmod 600 {path}` and, if others may have read it, create a new key and tell your Kommunen"
    )]
    TooOpen {
        /// The key file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The file exists; a signing key is never overwritten.
    #[error("{path} exists; refusing to overwrite a signing key")]
    Exists {
        /// The key file.
        path: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io { path: path.display().to_string(), source }
}

/// Reads a Land's signing key, refusing a file that group or others can read.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyFileError> {
    if let Some(mode) = readable_by_others(path).map_err(io(path))? {
        return Err(KeyFileError::TooOpen { path: path.display().to_string(), mode });
    }
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    SigningKey::from_text(&text).map_err(|source| KeyFileError::Invalid { path: path.display().to_string(), source })
}

/// Writes a new signing key readable by its owner only (0600, whatever the umask).
pub fn write_signing_key(path: &Path, key: &SigningKey) -> Result<(), KeyFileError> {
    write_private(path, &key.to_text()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyFileError::Exists { path: path.display().to_string() }
        } else {
            io(path)(e)
        }
    })
}

/// Creates a private key file holding `text`: readable by its owner only (0600, whatever
/// the umask), on disk before it returns, never over an existing file (`AlreadyExists`).
/// Release keys and witness keys are written this way.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// The permission bits of a key file that group or others may read (`None`: private).
pub fn readable_by_others(path: &Path) -> std::io::Result<Option<u32>> {
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    Ok((mode & 0o077 != 0).then_some(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("land-05.sign");
        let key = SigningKey::generate();
        write_signing_key(&path, &key).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read_signing_key(&path).unwrap().verifying_key(), key.verifying_key());
        assert!(matches!(write_signing_key(&path, &key), Err(KeyFileError::Exists { .. })));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_signing_key(&path).err().unwrap().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
