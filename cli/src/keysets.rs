//! A Land's signed key sets as files: `efa keys new-set` writes (or publishes) the next set,
//! `efa keys sign-set` adds a signature of another key holder (for a threshold above 1),
//! `efa keys publish-set` hands it to the hub. The file is JSON: the set's body as signed
//! (a JSON string) and the signatures in base64.

use base64::prelude::{Engine, BASE64_STANDARD};
use efa_domain::model::keyset::{KeySet, KeySetSignature, SignedKeySet};
use efa_domain::signing::SigningKey;
use serde::{Deserialize, Serialize};

/// Why a key-set file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeySetFileError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a signed key set.
    #[error("{path}: not a signed key set: {why}")]
    Format {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// The set breaks a rule.
    #[error(transparent)]
    Domain(#[from] efa_domain::Error),
}

#[derive(Serialize, Deserialize)]
struct File {
    body: String,
    signatures: Vec<FileSignature>,
}

#[derive(Serialize, Deserialize)]
struct FileSignature {
    key: String,
    signature: String,
}

/// Largest key-set file read.
const MAX_FILE: u64 = 256 * 1024;

/// Signs `set` with `signers` (keys of the Land's current set, or a federation root key).
pub fn sign(set: &KeySet, signers: &[&SigningKey]) -> Result<SignedKeySet, KeySetFileError> {
    Ok(set.sign(signers)?)
}

/// Adds `signer`'s signature to a signed set (replacing an earlier one of the same key).
pub fn add_signature(signed: &mut SignedKeySet, signer: &SigningKey) -> Result<(), KeySetFileError> {
    let set = signed.peek()?;
    let fresh = set.sign(&[signer])?;
    if fresh.body != signed.body {
        return Err(KeySetFileError::Format {
            path: String::new(),
            why: "the body is not in the canonical form this efa writes; sign it with the efa that created it".into(),
        });
    }
    let key = signer.verifying_key().to_text();
    signed.signatures.retain(|s| s.key != key);
    signed.signatures.extend(fresh.signatures);
    Ok(())
}

/// Writes a signed set to `path` (replacing it).
pub fn write(path: &std::path::Path, signed: &SignedKeySet) -> Result<(), KeySetFileError> {
    let io = |source| KeySetFileError::Io { path: path.display().to_string(), source };
    let file = File {
        body: String::from_utf8_lossy(&signed.body).into_owned(),
        signatures: signed
            .signatures
            .iter()
            .map(|s| FileSignature { key: s.key.clone(), signature: BASE64_STANDARD.encode(&s.signature) })
            .collect(),
    };
    let text = serde_json::to_string_pretty(&file).map_err(|e| io(std::io::Error::other(e)))?;
    std::fs::write(path, text + "\n").map_err(io)
}

/// Reads a signed set from `path`.
pub fn read(path: &std::path::Path) -> Result<SignedKeySet, KeySetFileError> {
    let p = path.display().to_string();
    let io = |source| KeySetFileError::Io { path: p.clone(), source };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE {
        return Err(KeySetFileError::Format { path: p, why: format!("{len} bytes, at most {MAX_FILE}") });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let file: File =
        serde_json::from_str(&text).map_err(|e| KeySetFileError::Format { path: p.clone(), why: e.to_string() })?;
    let signatures = file
        .signatures
        .into_iter()
        .map(|s| {
            let signature = BASE64_STANDARD
                .decode(s.signature.trim())
                .map_err(|e| KeySetFileError::Format { path: p.clone(), why: format!("a signature: {e}") })?;
            Ok(KeySetSignature { key: s.key, signature })
        })
        .collect::<Result<_, KeySetFileError>>()?;
    let signed = SignedKeySet { body: file.body.into_bytes(), signatures };
    signed.peek()?;
    Ok(signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_signed_by_two_holders_round_trips_through_its_file() {
        let (a, b) = (SigningKey::generate(), SigningKey::generate());
        let set = KeySet {
            land: "05".parse().unwrap(),
            version: 2,
            expires_ms: 1,
            keys: vec![a.verifying_key().to_text(), b.verifying_key().to_text()],
            threshold: 2,
            revoked: vec![],
        };
        let mut signed = sign(&set, &[&a]).unwrap();
        add_signature(&mut signed, &b).unwrap();
        add_signature(&mut signed, &b).unwrap();
        assert_eq!(signed.signatures.len(), 2, "one signature per key");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("set.json");
        write(&path, &signed).unwrap();
        assert_eq!(read(&path).unwrap(), signed);
        std::fs::write(&path, "{\"body\": \"{}\", \"signatures\": []}").unwrap();
        assert!(read(&path).is_err());
    }
}
