//! Release signatures: each Land signs release manifests with its own Ed25519 key,
//! separate from its TLS key. Nodes verify against keys they pin per Land.
//!
//! Key files hold one line: `efa-ed25519-secret:<base64 seed>` or
//! `efa-ed25519-public:<base64 key>`. The public form is what a node's trust config lists.

use crate::error::{Error, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, Verifier};

const SECRET_PREFIX: &str = "efa-ed25519-secret:";
const PUBLIC_PREFIX: &str = "efa-ed25519-public:";

/// A Land's release signing key.
pub struct SigningKey(ed25519_dalek::SigningKey);

/// A public key a node trusts for a Land.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyingKey(ed25519_dalek::VerifyingKey);

impl SigningKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        SigningKey(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng))
    }

    /// The key file line `efa-ed25519-secret:<base64 seed>`, newline-terminated.
    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}\n", B64.encode(self.0.to_bytes()))
    }

    /// Reads a key file line written by [`to_text`](Self::to_text); surrounding whitespace is ignored.
    pub fn from_text(s: &str) -> Result<Self> {
        let b64 = s
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| Error::invalid("signing key", format!("must start with {SECRET_PREFIX}")))?;
        let bytes: [u8; 32] = B64
            .decode(b64)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| Error::invalid("signing key", "is not 32 bytes of base64"))?;
        Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&bytes)))
    }

    /// The public half, for nodes to pin.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key())
    }

    /// The 64-byte Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.0.sign(message).to_bytes().to_vec()
    }
}

impl VerifyingKey {
    /// The form trust configs list: `efa-ed25519-public:<base64 key>`, no newline.
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_PREFIX}{}", B64.encode(self.0.to_bytes()))
    }

    /// Reads the [`to_text`](Self::to_text) form; fails on a bad prefix, length or curve point.
    pub fn from_text(s: &str) -> Result<Self> {
        let b64 = s
            .trim()
            .strip_prefix(PUBLIC_PREFIX)
            .ok_or_else(|| Error::invalid("public key", format!("must start with {PUBLIC_PREFIX}")))?;
        let bytes: [u8; 32] = B64
            .decode(b64)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| Error::invalid("public key", "is not 32 bytes of base64"))?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(VerifyingKey)
            .map_err(|_| Error::invalid("public key", "is not a valid Ed25519 point"))
    }

    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.0.verify(message, &sig).is_ok()
    }
}

/// True if any of `keys` signed `message`.
pub fn verify_any(keys: &[VerifyingKey], message: &[u8], signature: &[u8]) -> bool {
    keys.iter().any(|k| k.verify(message, signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_text_round_trip() {
        let key = SigningKey::generate();
        let again = SigningKey::from_text(&key.to_text()).unwrap();
        let public = VerifyingKey::from_text(&key.verifying_key().to_text()).unwrap();
        let sig = again.sign(b"manifest");
        assert!(public.verify(b"manifest", &sig));
        assert!(!public.verify(b"manifest!", &sig));
        assert!(!public.verify(b"manifest", &sig[..10]));
        let other = SigningKey::generate().verifying_key();
        assert!(!verify_any(std::slice::from_ref(&other), b"manifest", &sig));
        assert!(verify_any(&[other, public], b"manifest", &sig));
    }
}
