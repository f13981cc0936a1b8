//! Freeze protection as pure rules: what a node concludes from a Land's signed snapshot
//! (see [`crate::snapshot`]) and what the hub lists.
//!
//! A hub that is buggy or compromised could keep serving old releases and hide newer
//! ones. The node fetches each Land's snapshot and hands it here together with the keys it
//! pins, the newest snapshot it has seen before and what the hub lists; the answer is a
//! list of warnings (empty when all is fresh) and the newest issue time to remember.
//! Warnings never block deploying what the node can verify; they tell the Kommune that its
//! view may be stale.

use crate::model::ids::{Channel, LandCode, ServiceId};
use crate::signing::{verify_any, VerifyingKey};
use crate::snapshot::Snapshot;

/// A service of the Land as the hub lists it, on the channel the node follows.
#[derive(Clone, Debug)]
pub struct Listed<'a> {
    /// The service.
    pub id: &'a ServiceId,
    /// The channel the node subscribes to.
    pub channel: &'a Channel,
    /// The versions the hub lists for it.
    pub versions: &'a [String],
}

/// What the node learned about one Land's snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LandFreshness {
    /// What is wrong, in words for the Kommune's operator; empty when all is fresh.
    pub warnings: Vec<String>,
    /// The newest `issued_at_ms` seen for this Land, to remember for the next check.
    pub newest_seen_ms: i64,
}

/// Checks a Land's snapshot. `signed` is the snapshot and its signature as the hub
/// returned them, or `None` when the hub has none; `last_seen_ms` the newest issue time the
/// node saw before (0: never).
pub fn check_land(
    land: &LandCode,
    signed: Option<(&[u8], &[u8])>,
    keys: &[VerifyingKey],
    last_seen_ms: i64,
    now_ms: i64,
    listed: &[Listed<'_>],
) -> LandFreshness {
    let mut out = LandFreshness { warnings: Vec::new(), newest_seen_ms: last_seen_ms };
    let Some((bytes, signature)) = signed else {
        out.warnings
            .push(format!("Land {land} has no signed snapshot on the hub; freeze protection is off for its services"));
        return out;
    };
    if !verify_any(keys, bytes, signature) {
        out.warnings.push(format!("the hub's snapshot of Land {land} is not signed by a trusted key of that Land"));
        return out;
    }
    let snapshot = match Snapshot::from_bytes(bytes) {
        Ok(s) if &s.land == land => s,
        Ok(s) => {
            out.warnings.push(format!("the hub returned Land {}'s snapshot when asked for Land {land}", s.land));
            return out;
        }
        Err(e) => {
            out.warnings.push(format!("the snapshot of Land {land} is invalid: {e}"));
            return out;
        }
    };
    if snapshot.issued_at_ms < last_seen_ms {
        out.warnings.push(format!(
            "the hub replays an older snapshot of Land {land} (issued {} ms before the newest seen); the hub may be frozen",
            last_seen_ms - snapshot.issued_at_ms
        ));
    }
    if snapshot.is_expired(now_ms) {
        out.warnings.push(format!(
            "the signed snapshot of Land {land} expired {} s ago: the hub may be frozen, or the Land has not refreshed it",
            (now_ms - snapshot.expires_at_ms) / 1000
        ));
    }
    for s in listed {
        let Some(version) = snapshot.latest.get(s.id).and_then(|c| c.get(s.channel)) else { continue };
        if !s.versions.contains(version) {
            out.warnings.push(format!(
                "the hub hides {} {version}, which Land {land} signed as its newest release on {}",
                s.id, s.channel
            ));
        }
    }
    out.newest_seen_ms = last_seen_ms.max(snapshot.issued_at_ms);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::SigningKey;
    use crate::snapshot::SNAPSHOT_FORMAT;
    use std::collections::BTreeMap;

    struct Case {
        name: &'static str,
        issued: i64,
        expires: i64,
        land_in_snapshot: &'static str,
        signed_by_trusted: bool,
        last_seen: i64,
        now: i64,
        hub_lists: &'static [&'static str],
        expect: &'static [&'static str],
    }

    fn run(c: &Case) -> LandFreshness {
        let trusted = SigningKey::generate();
        let other = SigningKey::generate();
        let id: ServiceId = "wohngeld-nrw".parse().unwrap();
        let snapshot = Snapshot {
            format: SNAPSHOT_FORMAT,
            land: c.land_in_snapshot.parse().unwrap(),
            issued_at_ms: c.issued,
            expires_at_ms: c.expires,
            latest: BTreeMap::from([(id.clone(), BTreeMap::from([(Channel::stable(), "1.2.0".to_string())]))]),
        };
        let bytes = snapshot.to_bytes();
        let sig = if c.signed_by_trusted { trusted.sign(&bytes) } else { other.sign(&bytes) };
        let versions: Vec<String> = c.hub_lists.iter().map(|v| v.to_string()).collect();
        let channel = Channel::stable();
        let listed = [Listed { id: &id, channel: &channel, versions: &versions }];
        check_land(
            &"05".parse().unwrap(),
            Some((&bytes, &sig)),
            &[trusted.verifying_key()],
            c.last_seen,
            c.now,
            &listed,
        )
    }

    #[test]
    fn each_kind_of_staleness_is_named() {
        let cases = [
            Case {
                name: "fresh",
                issued: 100,
                expires: 200,
                land_in_snapshot: "05",
                signed_by_trusted: true,
                last_seen: 50,
                now: 150,
                hub_lists: &["1.1.0", "1.2.0"],
                expect: &[],
            },
            Case {
                name: "expired",
                issued: 100,
                expires: 200,
                land_in_snapshot: "05",
                signed_by_trusted: true,
                last_seen: 0,
                now: 5_200,
                hub_lists: &["1.2.0"],
                expect: &["expired 5 s ago"],
            },
            Case {
                name: "replayed",
                issued: 100,
                expires: 200,
                land_in_snapshot: "05",
                signed_by_trusted: true,
                last_seen: 150,
                now: 150,
                hub_lists: &["1.2.0"],
                expect: &["replays an older snapshot"],
            },
            Case {
                name: "hidden",
                issued: 100,
                expires: 200,
                land_in_snapshot: "05",
                signed_by_trusted: true,
                last_seen: 0,
                now: 150,
                hub_lists: &["1.1.0"],
                expect: &["hides wohngeld-nrw 1.2.0"],
            },
            Case {
                name: "forged",
                issued: 100,
                expires: 200,
                land_in_snapshot: "05",
                signed_by_trusted: false,
                last_seen: 0,
                now: 150,
                hub_lists: &["1.2.0"],
                expect: &["not signed by a trusted key"],
            },
            Case {
                name: "other land",
                issued: 100,
                expires: 200,
                land_in_snapshot: "09",
                signed_by_trusted: true,
                last_seen: 0,
                now: 150,
                hub_lists: &["1.2.0"],
                expect: &["Land 09's snapshot"],
            },
        ];
        for c in &cases {
            let got = run(c);
            assert_eq!(got.warnings.len(), c.expect.len(), "{}: {:?}", c.name, got.warnings);
            for (w, e) in got.warnings.iter().zip(c.expect) {
                assert!(w.contains(e), "{}: {w:?} should contain {e:?}", c.name);
            }
        }
        assert_eq!(run(&cases[0]).newest_seen_ms, 100);
        assert_eq!(run(&cases[2]).newest_seen_ms, 150, "a replay does not move the newest seen back");
    }

    #[test]
    fn a_missing_snapshot_turns_freeze_protection_off_with_a_warning() {
        let got = check_land(&"05".parse().unwrap(), None, &[], 7, 0, &[]);
        assert_eq!(got.newest_seen_ms, 7);
        assert!(got.warnings[0].contains("no signed snapshot"));
    }
}
