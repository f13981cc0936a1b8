//! Releases and the update-policy decision a node makes when it sees one.

use super::ids::{Channel, LandCode, ServiceId};
use crate::bundle::Digest;
use serde::{Deserialize, Serialize};

/// A published release. Immutable except for the yank marker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The service released.
    pub service_id: ServiceId,
    /// Its version, unique per service.
    pub version: semver::Version,
    /// The channel it was published on.
    pub channel: Channel,
    /// The Land that signed it.
    pub land: LandCode,
    /// SHA-256 of the signed manifest bytes.
    pub content_digest: Digest,
    /// Sum of the file sizes, in bytes.
    pub total_size: u64,
    /// Number of files in the manifest.
    pub file_count: u32,
    /// Notes for Kommunen; may be empty.
    pub release_notes: String,
    /// When the hub accepted it, ms since the Unix epoch.
    pub published_at_ms: i64,
    /// The exact manifest bytes the Land signed.
    pub manifest: Vec<u8>,
    /// Ed25519 signature over `manifest`, stored as received.
    pub signature: Vec<u8>,
    /// Set once the Land yanked it; `None` while it may be deployed.
    pub yank: Option<Yank>,
}

/// What the catalog says about a release without its manifest: what the hub lists and
/// announces on event streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseSummary {
    /// The service.
    pub service_id: ServiceId,
    /// Its version.
    pub version: semver::Version,
    /// Its channel.
    pub channel: Channel,
    /// The Land that signed it.
    pub land: LandCode,
    /// Digest of the signed manifest bytes.
    pub content_digest: Digest,
    /// Sum of the file sizes.
    pub total_size: u64,
    /// Number of files.
    pub file_count: u32,
    /// Notes for Kommunen.
    pub release_notes: String,
    /// When the hub accepted it.
    pub published_at_ms: i64,
    /// Set once the Land yanked it.
    pub yank: Option<Yank>,
    /// With a rollout plan: where the Kommune that asks stands in it (set per Kommune by
    /// the hub; `None` without a plan, or for callers that are no Kommune).
    pub rollout: Option<super::rollout::Position>,
}

impl Release {
    /// The release without its manifest.
    pub fn summary(&self) -> ReleaseSummary {
        ReleaseSummary {
            service_id: self.service_id.clone(),
            version: self.version.clone(),
            channel: self.channel.clone(),
            land: self.land.clone(),
            content_digest: self.content_digest,
            total_size: self.total_size,
            file_count: self.file_count,
            release_notes: self.release_notes.clone(),
            published_at_ms: self.published_at_ms,
            yank: self.yank.clone(),
            rollout: None,
        }
    }
}

/// A release as a node fetches it: what the hub says about it, and the signed manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRelease {
    /// What the hub says; a node trusts it only where the signed manifest agrees.
    pub summary: ReleaseSummary,
    /// The exact manifest bytes the Land signed.
    pub manifest: Vec<u8>,
    /// Ed25519 signature over `manifest`.
    pub signature: Vec<u8>,
}

/// A Land's withdrawal of a release from new deployments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Yank {
    /// Why, as the Land gave it; nodes report it to their operators.
    pub reason: String,
    /// When it was yanked, ms since the Unix epoch.
    pub at_ms: i64,
    /// A recall: the Land asks Kommunen that run it to stop serving it. Nodes say so and
    /// report the release retired once their operator confirms (`efa-node retire`);
    /// nothing stops on its own.
    pub recall: bool,
}

/// How a node reacts to a new release of a subscribed service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdatePolicy {
    /// Deploy every newer, non-yanked release automatically.
    Auto,
    /// Deploy automatically only patch releases of the running major.minor; ask for the rest.
    PatchOnly,
    /// Every release waits for the Kommune's approval.
    Manual,
}

impl UpdatePolicy {
    /// Every policy, in the order the CLIs list them.
    pub const ALL: [UpdatePolicy; 3] = [UpdatePolicy::Auto, UpdatePolicy::PatchOnly, UpdatePolicy::Manual];

    /// The name used in node configs and on the command line, e.g. `patch_only`.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdatePolicy::Auto => "auto",
            UpdatePolicy::PatchOnly => "patch_only",
            UpdatePolicy::Manual => "manual",
        }
    }
}

impl std::fmt::Display for UpdatePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for UpdatePolicy {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        UpdatePolicy::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            crate::Error::invalid("policy", format!("{} is not one of auto, patch_only, manual", crate::error::echo(s)))
        })
    }
}

/// What a node should do with a release it has just learned about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateDecision {
    /// Deploy it now.
    Deploy,
    /// Keep it pending until the Kommune approves it.
    AwaitApproval,
    /// Nothing to do, with the reason (already running, older, yanked...).
    Ignore(&'static str),
}

impl UpdatePolicy {
    /// The policy rule. A node never moves to a lower or equal version on its own, and never
    /// auto-deploys a yanked release. Patch-only deploys a release automatically only when it
    /// keeps major.minor of what runs; a first install always needs approval under it.
    pub fn decide(
        self,
        running: Option<&semver::Version>,
        candidate: &semver::Version,
        yanked: bool,
    ) -> UpdateDecision {
        if yanked {
            return UpdateDecision::Ignore("release is yanked");
        }
        if let Some(running) = running {
            if candidate <= running {
                return UpdateDecision::Ignore("not newer than the running version");
            }
        }
        match self {
            UpdatePolicy::Manual => UpdateDecision::AwaitApproval,
            UpdatePolicy::Auto => UpdateDecision::Deploy,
            UpdatePolicy::PatchOnly => match running {
                Some(r) if r.major == candidate.major && r.minor == candidate.minor && candidate.pre.is_empty() => {
                    UpdateDecision::Deploy
                }
                _ => UpdateDecision::AwaitApproval,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use UpdateDecision::*;

    fn v(s: &str) -> semver::Version {
        s.parse().unwrap()
    }

    #[test]
    fn auto_deploys_anything_newer() {
        assert_eq!(UpdatePolicy::Auto.decide(None, &v("1.0.0"), false), Deploy);
        assert_eq!(UpdatePolicy::Auto.decide(Some(&v("1.0.0")), &v("2.0.0"), false), Deploy);
    }

    #[test]
    fn no_policy_downgrades_or_redeploys() {
        for p in [UpdatePolicy::Auto, UpdatePolicy::PatchOnly, UpdatePolicy::Manual] {
            assert!(matches!(p.decide(Some(&v("1.2.0")), &v("1.1.9"), false), Ignore(_)));
            assert!(matches!(p.decide(Some(&v("1.2.0")), &v("1.2.0"), false), Ignore(_)));
        }
    }

    #[test]
    fn yanked_releases_are_never_deployed() {
        assert!(matches!(UpdatePolicy::Auto.decide(None, &v("1.0.0"), true), Ignore(_)));
    }

    #[test]
    fn patch_only_deploys_patches_and_asks_for_the_rest() {
        let p = UpdatePolicy::PatchOnly;
        assert_eq!(p.decide(Some(&v("1.2.0")), &v("1.2.5"), false), Deploy);
        assert_eq!(p.decide(Some(&v("1.2.0")), &v("1.3.0"), false), AwaitApproval);
        assert_eq!(p.decide(Some(&v("1.2.0")), &v("2.0.0"), false), AwaitApproval);
        assert_eq!(p.decide(None, &v("1.0.0"), false), AwaitApproval);
        assert_eq!(p.decide(Some(&v("1.2.0")), &v("1.2.1-rc.1"), false), AwaitApproval);
    }

    #[test]
    fn manual_always_asks() {
        assert_eq!(UpdatePolicy::Manual.decide(Some(&v("1.0.0")), &v("1.0.1"), false), AwaitApproval);
    }
}
