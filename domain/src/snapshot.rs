//! Land-signed snapshots: freeze protection in the spirit of TUF's timestamp role.
//!
//! A hub that is buggy or compromised could keep serving old releases and hide newer ones.
//! Each Land therefore signs, with its release key, a short statement of the newest
//! version of each of its services per channel, with an expiry. Nodes fetch it, verify
//! it, and compare it with what the hub shows. An expired snapshot means the node's view
//! may be stale; a version in the snapshot that the hub does not list means the hub hides
//! it. A snapshot older than one already seen is a replay.

use crate::error::{Error, Result};
use crate::model::ids::{Channel, LandCode, ServiceId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Current snapshot format version.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// A Land's signed statement of its newest releases, valid until `expires_at_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Snapshot format version; must equal [`SNAPSHOT_FORMAT`].
    pub format: u32,
    /// The Land that signs it; it covers only this Land's services.
    pub land: LandCode,
    /// When the Land issued it, ms since the Unix epoch; a lower value than one already seen is a replay.
    pub issued_at_ms: i64,
    /// After this (ms since the Unix epoch) the snapshot no longer vouches for freshness.
    pub expires_at_ms: i64,
    /// Newest published version per service and channel.
    pub latest: BTreeMap<ServiceId, BTreeMap<Channel, String>>,
}

impl Snapshot {
    /// Parses snapshot bytes (as signed) and checks format, validity window and versions.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let s: Snapshot = serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid("snapshot", format!("not a valid snapshot: {e}")))?;
        if s.format != SNAPSHOT_FORMAT {
            return Err(Error::invalid("snapshot", format!("format {} is not supported", s.format)));
        }
        if s.expires_at_ms <= s.issued_at_ms {
            return Err(Error::invalid("snapshot", "expires before it is issued"));
        }
        for channels in s.latest.values() {
            for v in channels.values() {
                crate::model::ids::parse_version(v)?;
            }
        }
        Ok(s)
    }

    /// Canonical bytes: what the Land signs and the hub stores.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("snapshot serializes")
    }

    /// True from `expires_at_ms` on.
    pub(crate) fn is_expired(&self, now_ms: i64) -> bool {
        now_ms >= self.expires_at_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_and_reject_nonsense() {
        let s = Snapshot {
            format: 1,
            land: "05".parse().unwrap(),
            issued_at_ms: 10,
            expires_at_ms: 20,
            latest: BTreeMap::from([(
                "wohngeld-nrw".parse().unwrap(),
                BTreeMap::from([(Channel::stable(), "1.2.0".to_string())]),
            )]),
        };
        assert_eq!(Snapshot::from_bytes(&s.to_bytes()).unwrap(), s);
        assert!(s.is_expired(20) && !s.is_expired(19));
        let mut bad = s.clone();
        bad.expires_at_ms = 5;
        assert!(Snapshot::from_bytes(&bad.to_bytes()).is_err());
        assert!(Snapshot::from_bytes(b"[]").is_err());
    }
}
