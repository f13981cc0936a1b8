//! Operator tokens for the dashboard.
//!
//! A token is 32 random bytes shown once as `efa-op-<64 hex>`. The hub keeps only its
//! SHA-256 with the operator name in `data_dir/operator-tokens.json` (mode 0600, replaced
//! atomically), so a copy of the data dir does not hand out dashboard access.

use efa_domain::authz::Identity;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// File name under the hub's data dir.
pub const TOKENS_FILE: &str = "operator-tokens.json";
const PREFIX: &str = "efa-op-";

/// Why a token could not be issued, listed, revoked or checked.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file (or its directory) could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The token file or its directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The token file is not the JSON this hub writes; it is left as it is.
    #[error("{path} is not a valid token file: {source}")]
    Corrupt {
        /// The token file.
        path: PathBuf,
        /// Where parsing failed.
        source: serde_json::Error,
    },
    /// The operator name is not usable in an `efa://operator/<name>` identity.
    #[error("{0}")]
    InvalidOperator(String),
}

/// One stored token: who it belongs to and the SHA-256 of the token text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    /// The operator's name, as in `efa://operator/<name>`.
    pub operator: String,
    /// SHA-256 of the full token text, 64 lowercase hex digits.
    pub sha256: String,
    /// When it was issued, ms since the Unix epoch.
    pub created_at_ms: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<StoredToken>,
}

/// The token file of a hub whose data dir is `data_dir`.
pub fn tokens_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKENS_FILE)
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Checks an operator name with the same rule as `efa://operator/<name>` identities.
pub fn operator_identity(name: &str) -> Result<Identity, TokenError> {
    match Identity::parse_uri(&format!("efa://operator/{name}")) {
        Ok(id @ Identity::Operator(_)) => Ok(id),
        Ok(_) => Err(TokenError::InvalidOperator(format!("{name:?} is not an operator name"))),
        Err(e) => Err(TokenError::InvalidOperator(e.to_string())),
    }
}

fn load(path: &Path) -> Result<TokenFile, TokenError> {
    match std::fs::read(path) {
        Ok(bytes) => parse(path, &bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
        Err(source) => Err(TokenError::Io { path: path.to_path_buf(), source }),
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<TokenFile, TokenError> {
    serde_json::from_slice(bytes).map_err(|source| TokenError::Corrupt { path: path.to_path_buf(), source })
}

/// Writes the file via a temp file, fsync and rename, readable by the owner only.
fn save(path: &Path, file: &TokenFile) -> Result<(), TokenError> {
    use std::io::Write;
    let io = |source| TokenError::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp).map_err(io)?;
    let json = serde_json::to_vec_pretty(file).expect("token file serializes");
    f.write_all(&json).and_then(|_| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Creates a token for `operator`, stores its hash under `data_dir` and returns the token.
/// The token itself is not stored: show it to the operator once.
pub fn issue(data_dir: &Path, operator: &str) -> Result<String, TokenError> {
    operator_identity(operator)?;
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let token = format!("{PREFIX}{}", hex::encode(bytes));
    let path = tokens_path(data_dir);
    let mut file = load(&path)?;
    file.tokens.push(StoredToken {
        operator: operator.to_string(),
        sha256: hash(&token),
        created_at_ms: efa_domain::now_ms(),
    });
    save(&path, &file)?;
    Ok(token)
}

/// Tokens stored under `data_dir` (hashes only).
pub fn list(data_dir: &Path) -> Result<Vec<StoredToken>, TokenError> {
    Ok(load(&tokens_path(data_dir))?.tokens)
}

/// Removes every token of `operator`; returns how many were removed.
pub fn revoke(data_dir: &Path, operator: &str) -> Result<usize, TokenError> {
    let path = tokens_path(data_dir);
    let mut file = load(&path)?;
    let before = file.tokens.len();
    file.tokens.retain(|t| t.operator != operator);
    let removed = before - file.tokens.len();
    if removed > 0 {
        save(&path, &file)?;
    }
    Ok(removed)
}

/// The token store the dashboard checks on each request. It re-reads the file, so tokens
/// issued or revoked with `efa-hub token` take effect without a restart.
#[derive(Clone, Debug)]
pub(crate) struct TokenStore {
    path: PathBuf,
}

impl TokenStore {
    /// The store of the token file under `data_dir`; the file need not exist yet.
    pub fn new(data_dir: &Path) -> Self {
        TokenStore { path: tokens_path(data_dir) }
    }

    /// The operator identity a token belongs to, or `None` for an unknown token.
    pub async fn verify(&self, token: &str) -> Result<Option<Identity>, TokenError> {
        if !token.starts_with(PREFIX) || token.len() > 128 {
            return Ok(None);
        }
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(TokenError::Io { path: self.path.clone(), source }),
        };
        let file = parse(&self.path, &bytes)?;
        let digest = hash(token);
        match file.tokens.iter().find(|t| t.sha256 == digest) {
            Some(t) => operator_identity(&t.operator).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn issued_tokens_verify_and_only_their_hash_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let token = issue(dir.path(), "bund").unwrap();
        assert!(token.starts_with("efa-op-") && token.len() == 7 + 64, "{token}");
        let stored = std::fs::read_to_string(tokens_path(dir.path())).unwrap();
        assert!(!stored.contains(&token[7..]), "the token itself must not be stored");
        assert!(stored.contains(&hash(&token)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(tokens_path(dir.path())).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let store = TokenStore::new(dir.path());
        assert_eq!(store.verify(&token).await.unwrap(), Some(Identity::Operator("bund".into())));
        assert_eq!(store.verify("efa-op-0000").await.unwrap(), None);
        assert_eq!(store.verify("").await.unwrap(), None);

        let second = issue(dir.path(), "nrw-aufsicht").unwrap();
        assert_ne!(token, second);
        assert_eq!(list(dir.path()).unwrap().len(), 2);
        assert_eq!(revoke(dir.path(), "bund").unwrap(), 1);
        assert_eq!(store.verify(&token).await.unwrap(), None);
        assert!(store.verify(&second).await.unwrap().is_some());
    }

    #[test]
    fn operator_names_follow_the_identity_rule() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "a b", "../x", "ä"] {
            assert!(matches!(issue(dir.path(), bad), Err(TokenError::InvalidOperator(_))), "{bad:?}");
        }
    }
}
