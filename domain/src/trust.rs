//! What a node checks before it trusts a release, as pure functions over plain data (in the
//! spirit of tough's `verify.rs`): the manifest is well-formed, signed by a key the node
//! pins for the manifest's Land, agrees with everything the hub claims about it, and comes
//! from the Land that publishes the service.
//!
//! The hub is not trusted here: it could alter a summary, swap manifests between releases
//! or sign nothing at all. Only the Land's signature over the exact manifest bytes counts.

use crate::bundle::{BundleLimits, Manifest};
use crate::model::ids::LandCode;
use crate::model::release::SignedRelease;
use crate::signing::{verify_any, VerifyingKey};

/// Why a release is not trusted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrustError {
    /// The manifest does not parse or breaks a bundle rule.
    #[error("manifest is invalid: {0}")]
    InvalidManifest(String),
    /// The node pins no key for the manifest's Land.
    #[error("no trusted signing key for Land {0}; add it under [trust] in the node config")]
    NoTrustedKey(LandCode),
    /// No pinned key of the Land verifies the signature.
    #[error("signature does not verify against the trusted keys of Land {0}")]
    BadSignature(LandCode),
    /// What the hub says about the release differs from the signed manifest.
    #[error("{0}")]
    Mismatch(String),
    /// The release is signed by another Land than the one that publishes the service.
    #[error("signed by Land {signed_by}, but this service is published by Land {pinned}")]
    WrongLand {
        /// The Land in the signed manifest.
        signed_by: LandCode,
        /// The Land pinned for the service.
        pinned: LandCode,
    },
}

/// Checks a release as the hub delivered it and returns its manifest. `trusted` returns the
/// keys the node pins for a Land.
pub fn verify_release(
    release: &SignedRelease,
    limits: &BundleLimits,
    trusted: impl Fn(&LandCode) -> Vec<VerifyingKey>,
) -> Result<Manifest, TrustError> {
    let manifest =
        Manifest::from_bytes(&release.manifest, limits).map_err(|e| TrustError::InvalidManifest(e.to_string()))?;
    let keys = trusted(&manifest.land);
    if keys.is_empty() {
        return Err(TrustError::NoTrustedKey(manifest.land));
    }
    if !verify_any(&keys, &release.manifest, &release.signature) {
        return Err(TrustError::BadSignature(manifest.land));
    }
    // The signature binds the manifest; the hub's description must match it exactly.
    let s = &release.summary;
    let same_version = manifest.semver().ok().as_ref() == Some(&s.version);
    if manifest.service_id != s.service_id || !same_version || manifest.channel != s.channel {
        return Err(TrustError::Mismatch(format!(
            "hub describes {} {} ({}), but the signed manifest is {} {} ({})",
            s.service_id, s.version, s.channel, manifest.service_id, manifest.version, manifest.channel
        )));
    }
    if manifest.land != s.land {
        return Err(TrustError::Mismatch(format!(
            "hub says Land {}, but the signed manifest says Land {}",
            s.land, manifest.land
        )));
    }
    if Manifest::content_digest(&release.manifest) != s.content_digest {
        return Err(TrustError::Mismatch("content digest does not match the signed manifest".into()));
    }
    Ok(manifest)
}

/// The Land that publishes a service is pinned on first sight: a later release signed by
/// another Land (whose key the node may trust for that Land's own services) is refused.
pub fn check_pinned_land(pinned: Option<&LandCode>, manifest: &Manifest) -> Result<(), TrustError> {
    match pinned {
        Some(pinned) if pinned != &manifest.land => {
            Err(TrustError::WrongLand { signed_by: manifest.land.clone(), pinned: pinned.clone() })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{BundlePath, Digest, FileEntry, MANIFEST_FORMAT};
    use crate::model::ids::Channel;
    use crate::model::release::ReleaseSummary;
    use crate::signing::SigningKey;

    fn signed(key: &SigningKey, land: &str) -> SignedRelease {
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            service_id: "wohngeld-nrw".parse().unwrap(),
            version: "1.0.0".into(),
            channel: Channel::stable(),
            land: land.parse().unwrap(),
            created_at_ms: 0,
            parameters: None,
            files: vec![FileEntry {
                path: BundlePath::parse("index.html", &BundleLimits::default()).unwrap(),
                size: 1,
                digest: Digest::of(b"x"),
                chunks: vec![],
            }],
        };
        let bytes = manifest.to_bytes();
        SignedRelease {
            summary: ReleaseSummary {
                service_id: manifest.service_id.clone(),
                version: "1.0.0".parse().unwrap(),
                channel: Channel::stable(),
                land: manifest.land.clone(),
                content_digest: Manifest::content_digest(&bytes),
                total_size: 1,
                file_count: 1,
                release_notes: String::new(),
                published_at_ms: 0,
                yank: None,
                rollout: None,
            },
            signature: key.sign(&bytes),
            manifest: bytes,
        }
    }

    #[test]
    fn each_way_a_hub_could_lie_is_caught() {
        let nrw = SigningKey::generate();
        let trust_nrw = |l: &LandCode| if l.as_str() == "05" { vec![nrw.verifying_key()] } else { vec![] };
        let limits = BundleLimits::default();
        let good = signed(&nrw, "05");
        assert!(verify_release(&good, &limits, trust_nrw).is_ok());

        type Tamper = fn(&mut SignedRelease);
        let cases: [(&str, Tamper, &str); 6] = [
            ("other version", |r| r.summary.version = "1.0.1".parse().unwrap(), "hub describes"),
            ("other land", |r| r.summary.land = "09".parse().unwrap(), "hub says Land 09"),
            ("other digest", |r| r.summary.content_digest = Digest::of(b"y"), "content digest"),
            ("flipped byte", |r| r.manifest[10] ^= 1, "manifest"),
            ("short signature", |r| r.signature.truncate(10), "signature does not verify"),
            ("foreign signature", |r| r.signature = SigningKey::generate().sign(&r.manifest), "does not verify"),
        ];
        for (name, tamper, expect) in cases {
            let mut r = good.clone();
            tamper(&mut r);
            let err = verify_release(&r, &limits, trust_nrw).unwrap_err().to_string();
            assert!(err.contains(expect), "{name}: {err}");
        }
        let by = SigningKey::generate();
        let err = verify_release(&signed(&by, "09"), &limits, trust_nrw).unwrap_err();
        assert_eq!(err, TrustError::NoTrustedKey("09".parse().unwrap()));
    }

    #[test]
    fn a_service_stays_with_the_land_first_seen() {
        let m =
            Manifest::from_bytes(&signed(&SigningKey::generate(), "05").manifest, &BundleLimits::default()).unwrap();
        assert!(check_pinned_land(None, &m).is_ok());
        assert!(check_pinned_land(Some(&"05".parse().unwrap()), &m).is_ok());
        let err = check_pinned_land(Some(&"09".parse().unwrap()), &m).unwrap_err().to_string();
        assert!(err.contains("published by Land 09"), "{err}");
    }
}
