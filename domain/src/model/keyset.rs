//! A Land's release keys as signed key-set metadata, published in the hub's transparency
//! log (in the spirit of TUF's root metadata): each set has a version, an expiry, the keys
//! and a threshold, and is signed by `threshold` keys of the set before it (or, for any
//! version, by a federation root key that nodes pin once). Nodes follow rotations and
//! revocations from the log instead of hand-editing `[trust]`.
//!
//! Which keys count for a release is decided by its place in the log: the set in force is
//! the newest one logged before the release's leaf. A key dropped from a set (rotated out
//! or `revoked`) signs nothing logged after that set; releases logged before keep their
//! signatures.

use super::ids::LandCode;
use crate::error::{Error, Result};
use crate::signing::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Domain separation of key-set signatures from release and snapshot signatures.
const CONTEXT: &[u8] = b"efa-keyset-v1\n";
/// Most keys in one set.
pub const MAX_KEYS: usize = 16;
/// Most signatures on one set.
pub const MAX_SIGNATURES: usize = 32;
/// Largest encoded set body.
pub const MAX_BODY: usize = 16 * 1024;

/// The content of a key set; its JSON encoding is what is signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySet {
    /// The Land whose release keys these are.
    pub land: LandCode,
    /// 1 for the first set, then each successor + 1.
    pub version: u64,
    /// After this moment (ms since the Unix epoch) nodes warn that the Land's keys are stale.
    pub expires_ms: i64,
    /// Release signing keys (`efa-ed25519-public:…`).
    pub keys: Vec<String>,
    /// Signatures of this set's keys the next set needs.
    pub threshold: u32,
    /// Keys withdrawn because they may be compromised (for the record; a key not in `keys`
    /// counts for nothing logged after this set either way).
    #[serde(default)]
    pub revoked: Vec<String>,
}

/// One signature on a key set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySetSignature {
    /// The signing key (`efa-ed25519-public:…`).
    pub key: String,
    /// Ed25519 over `efa-keyset-v1\n` followed by the body.
    pub signature: Vec<u8>,
}

/// A key set as published: the exact body bytes and the signatures over them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedKeySet {
    /// The JSON of the [`KeySet`], as signed.
    pub body: Vec<u8>,
    /// Signatures by keys of the previous set or a federation root key.
    pub signatures: Vec<KeySetSignature>,
}

impl KeySet {
    /// Checks the set on its own: keys valid and distinct, threshold in range, revoked
    /// keys not kept.
    pub fn validate(&self) -> Result<()> {
        if self.keys.is_empty() || self.keys.len() > MAX_KEYS {
            return Err(Error::invalid("keys", format!("1 to {MAX_KEYS} keys, not {}", self.keys.len())));
        }
        let keys = parse_keys(&self.keys)?;
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].contains(k) {
                return Err(Error::invalid("keys", format!("{} is listed twice", self.keys[i].trim())));
            }
        }
        if self.threshold == 0 || self.threshold as usize > self.keys.len() {
            return Err(Error::invalid(
                "threshold",
                format!("must be 1 to the number of keys ({}), not {}", self.keys.len(), self.threshold),
            ));
        }
        if self.version == 0 {
            return Err(Error::invalid("version", "key sets count from 1"));
        }
        let revoked = parse_keys(&self.revoked)?;
        if let Some(k) = revoked.iter().find(|r| keys.contains(r)) {
            return Err(Error::invalid("revoked", format!("{} is revoked and kept at once", k.to_text())));
        }
        Ok(())
    }

    /// The keys, parsed.
    pub fn verifying_keys(&self) -> Vec<VerifyingKey> {
        self.keys.iter().filter_map(|k| VerifyingKey::from_text(k).ok()).collect()
    }

    /// Signs the set with `signers` (keys of the previous set, or a federation root key).
    pub fn sign(&self, signers: &[&SigningKey]) -> Result<SignedKeySet> {
        self.validate()?;
        let body = serde_json::to_vec(self).map_err(|e| Error::invalid("key set", e.to_string()))?;
        let message = [CONTEXT, &body].concat();
        let signatures = signers
            .iter()
            .map(|s| KeySetSignature { key: s.verifying_key().to_text(), signature: s.sign(&message) })
            .collect();
        Ok(SignedKeySet { body, signatures })
    }
}

fn parse_keys(keys: &[String]) -> Result<Vec<VerifyingKey>> {
    keys.iter().map(|k| VerifyingKey::from_text(k)).collect()
}

impl SignedKeySet {
    /// The set inside, parsed and validated, without checking who signed it.
    pub fn peek(&self) -> Result<KeySet> {
        if self.body.len() > MAX_BODY {
            return Err(Error::invalid("key set", format!("{} bytes, at most {MAX_BODY}", self.body.len())));
        }
        if self.signatures.len() > MAX_SIGNATURES {
            return Err(Error::invalid(
                "key set",
                format!("{} signatures, at most {MAX_SIGNATURES}", self.signatures.len()),
            ));
        }
        let set: KeySet = serde_json::from_slice(&self.body)
            .map_err(|e| Error::invalid("key set", format!("does not parse: {e}")))?;
        set.validate()?;
        Ok(set)
    }

    /// How many distinct keys of `keys` validly signed the body.
    fn signed_by(&self, keys: &[VerifyingKey]) -> usize {
        let message = [CONTEXT, &self.body].concat();
        let mut counted: Vec<&VerifyingKey> = Vec::new();
        for sig in &self.signatures {
            let Ok(k) = VerifyingKey::from_text(&sig.key) else { continue };
            if let Some(known) = keys.iter().find(|x| **x == k) {
                if !counted.contains(&known) && known.verify(&message, &sig.signature) {
                    counted.push(known);
                }
            }
        }
        counted.len()
    }

    /// Accepts this set as the successor of `previous` for `land`: the next version, signed
    /// by `previous.threshold` of its keys or by one of `roots` (federation root keys). The
    /// first set of a Land needs one of `roots`, or, where a party pinned the Land's keys by
    /// hand before, `first_anchors`: as many of them as the set's own threshold.
    pub fn accept(
        &self,
        land: &LandCode,
        previous: Option<&KeySet>,
        roots: &[VerifyingKey],
        first_anchors: &[VerifyingKey],
    ) -> Result<KeySet> {
        let set = self.peek()?;
        if &set.land != land {
            return Err(Error::invalid("key set", format!("is for Land {}, not {land}", set.land)));
        }
        let want = previous.map_or(1, |p| p.version + 1);
        if set.version != want {
            return Err(Error::invalid("version", format!("{} where {want} comes next", set.version)));
        }
        if self.signed_by(roots) >= 1 {
            return Ok(set);
        }
        match previous {
            Some(p) => {
                let got = self.signed_by(&p.verifying_keys());
                if got < p.threshold as usize {
                    return Err(Error::PermissionDenied(format!(
                        "key set {} of Land {land} is signed by {got} of the {} keys of set {} it needs (threshold {}), and by no federation root key",
                        set.version,
                        p.keys.len(),
                        p.version,
                        p.threshold
                    )));
                }
            }
            None => {
                let got = self.signed_by(first_anchors);
                if first_anchors.is_empty() || got < (set.threshold as usize).min(first_anchors.len()) {
                    return Err(Error::PermissionDenied(format!(
                        "the first key set of Land {land} must be signed by a federation root key or by the Land's keys pinned before ({got} valid signatures of {} pinned keys)",
                        first_anchors.len()
                    )));
                }
            }
        }
        Ok(set)
    }
}

/// The keys in force for a release logged at leaf `release_index`, given a Land's accepted
/// sets with their leaf indexes (in log order): the newest set logged before it. `None`
/// when no set was logged before the release (the party falls back to keys pinned by hand).
pub fn keys_at(sets: &[(u64, KeySet)], release_index: u64) -> Option<Vec<VerifyingKey>> {
    sets.iter().rev().find(|(i, _)| *i < release_index).map(|(_, s)| s.verifying_keys())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(version: u64, keys: &[&SigningKey], threshold: u32, revoked: &[&SigningKey]) -> KeySet {
        KeySet {
            land: "05".parse().unwrap(),
            version,
            expires_ms: 2_000_000_000_000,
            keys: keys.iter().map(|k| k.verifying_key().to_text()).collect(),
            threshold,
            revoked: revoked.iter().map(|k| k.verifying_key().to_text()).collect(),
        }
    }

    #[test]
    fn rotation_needs_the_threshold_of_the_previous_set_or_a_root() {
        let (a, b, c, d) =
            (SigningKey::generate(), SigningKey::generate(), SigningKey::generate(), SigningKey::generate());
        let root = SigningKey::generate();
        let nrw: LandCode = "05".parse().unwrap();
        let pinned = [a.verifying_key()];
        // v1: signed by the key pinned before; accepted.
        let v1 = set(1, &[&a, &b], 2, &[]).sign(&[&a]).unwrap().accept(&nrw, None, &[], &pinned).unwrap();
        // v2 drops a (revoked) and adds c: needs both a and b.
        let v2 = set(2, &[&b, &c], 1, &[&a]);
        let e = v2.sign(&[&b]).unwrap().accept(&nrw, Some(&v1), &[], &pinned).unwrap_err();
        assert!(e.to_string().contains("signed by 1 of the 2 keys"), "{e}");
        let v2 = v2.sign(&[&a, &b]).unwrap().accept(&nrw, Some(&v1), &[], &pinned).unwrap();
        // The same signature twice counts once.
        let mut twice = set(3, &[&d], 1, &[]).sign(&[&b]).unwrap();
        twice.signatures.push(twice.signatures[0].clone());
        assert!(twice.accept(&nrw, Some(&v2), &[], &[]).is_ok(), "threshold 1");
        // A root key signs any version; a stranger none; a skipped version is refused.
        let stranger = set(3, &[&d], 1, &[]).sign(&[&d]).unwrap();
        assert!(stranger.accept(&nrw, Some(&v2), &[], &[]).is_err());
        assert!(stranger.accept(&nrw, Some(&v2), &[root.verifying_key()], &[]).is_err(), "not signed by the root");
        let by_root = set(3, &[&d], 1, &[]).sign(&[&root]).unwrap();
        assert!(by_root.accept(&nrw, Some(&v2), &[root.verifying_key()], &[]).is_ok());
        assert!(set(4, &[&d], 1, &[]).sign(&[&c]).unwrap().accept(&nrw, Some(&v2), &[], &[]).is_err(), "v3 skipped");
        // Another Land's set, a tampered body: refused.
        let mut other = set(3, &[&d], 1, &[]);
        other.land = "09".parse().unwrap();
        assert!(other.sign(&[&c]).unwrap().accept(&nrw, Some(&v2), &[], &[]).is_err());
        let mut tampered = set(3, &[&d], 1, &[]).sign(&[&c]).unwrap();
        tampered.body =
            String::from_utf8(tampered.body).unwrap().replace("\"threshold\":1", "\"threshold\": 1").into_bytes();
        assert!(tampered.accept(&nrw, Some(&v2), &[], &[]).is_err());
    }

    #[test]
    fn the_set_in_force_is_the_newest_logged_before_the_release() {
        let (a, b) = (SigningKey::generate(), SigningKey::generate());
        let sets = vec![(10, set(1, &[&a], 1, &[])), (20, set(2, &[&b], 1, &[&a]))];
        assert_eq!(keys_at(&sets, 5), None);
        assert_eq!(keys_at(&sets, 15), Some(vec![a.verifying_key()]));
        assert_eq!(keys_at(&sets, 20), Some(vec![a.verifying_key()]), "the set's own leaf is not before it");
        assert_eq!(keys_at(&sets, 21), Some(vec![b.verifying_key()]), "a is revoked from leaf 20 on");
    }

    #[test]
    fn malformed_sets_are_refused() {
        let a = SigningKey::generate();
        let mut s = set(1, &[&a], 2, &[]);
        assert!(s.validate().is_err(), "threshold above the keys");
        s.threshold = 1;
        s.revoked = vec![a.verifying_key().to_text()];
        assert!(s.validate().is_err(), "revoked and kept");
        let junk = SignedKeySet { body: b"{\"land\":\"05\"}".to_vec(), signatures: vec![] };
        assert!(junk.peek().is_err());
        let big = SignedKeySet { body: vec![b' '; MAX_BODY + 1], signatures: vec![] };
        assert!(big.peek().is_err());
    }
}
