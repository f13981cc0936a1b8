//! Running counts of a rollout's rings, kept up to date one Kommune at a time, so the
//! controller judges a ring by its counters instead of reading every record of the service
//! (10,773 at full scale) each round.

use super::RingCounts;
use crate::model::adoption::{AdoptionRecord, AdoptionState};
use crate::model::ids::Ags;
use crate::model::rating::{Criterion, Rating};
use std::collections::HashMap;

/// What one Kommune adds to its ring's counts for one release.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Share {
    healthy: bool,
    failed: bool,
    rolled_back: bool,
    /// Stars and per-area scores of its rating of the release.
    rating: Option<(u8, Vec<(Criterion, u8)>)>,
    /// Its pre-flight result for the release: blocked or not.
    preflight: Option<bool>,
}

impl Share {
    fn apply(&self, c: &mut RingCounts, sign: i64) {
        let add = |n: &mut u32, yes: bool| {
            if yes {
                *n = (i64::from(*n) + sign).max(0) as u32;
            }
        };
        add(&mut c.healthy, self.healthy);
        add(&mut c.failed, self.failed);
        add(&mut c.rolled_back, self.rolled_back);
        if let Some((stars, criteria)) = &self.rating {
            add(&mut c.ratings, true);
            c.stars_sum = (c.stars_sum as i64 + sign * i64::from(*stars)).max(0) as u64;
            for (criterion, score) in criteria {
                let e = c.criteria.entry(*criterion).or_default();
                e.0 = (i64::from(e.0) + sign).max(0) as u32;
                e.1 = (e.1 as i64 + sign * i64::from(*score)).max(0) as u64;
                if e.0 == 0 {
                    c.criteria.remove(criterion);
                }
            }
        }
        if let Some(blocked) = self.preflight {
            add(&mut c.preflights, true);
            add(&mut c.blocked, blocked);
        }
    }
}

/// The counts of every ring of one release's rollout.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    shares: HashMap<Ags, (usize, Share)>,
    counts: Vec<RingCounts>,
}

impl Tally {
    /// Empty counts for a plan of `rings` rings (the last, "alle übrigen", included).
    pub fn new(rings: usize) -> Self {
        Tally { shares: HashMap::new(), counts: vec![RingCounts::default(); rings] }
    }

    /// Every ring's counts (`opened_at_ms` is the caller's to fill in).
    pub fn counts(&self) -> &[RingCounts] {
        &self.counts
    }

    fn update(&mut self, ags: &Ags, ring: usize, change: impl FnOnce(&mut Share)) {
        if ring >= self.counts.len() {
            return;
        }
        let (at, share) = self.shares.entry(ags.clone()).or_insert_with(|| (ring, Share::default()));
        share.apply(&mut self.counts[*at], -1);
        change(share);
        *at = ring;
        share.apply(&mut self.counts[ring], 1);
    }

    /// The Kommune's adoption record of the service now (`None`: it has none).
    pub fn set_adoption(&mut self, ring: usize, version: &semver::Version, ags: &Ags, record: Option<&AdoptionRecord>) {
        let (healthy, failed, rolled_back) = match record {
            None => (false, false, false),
            Some(r) => {
                let latest = r.latest.version.as_ref() == Some(version);
                (
                    r.running.as_ref() == Some(version),
                    latest && r.latest.state == AdoptionState::Failed,
                    latest && r.latest.state == AdoptionState::RolledBack,
                )
            }
        };
        self.update(ags, ring, |s| {
            s.healthy = healthy;
            s.failed = failed;
            s.rolled_back = rolled_back;
        });
    }

    /// The Kommune's rating of the release (a newer one replaces the older).
    pub fn set_rating(&mut self, ring: usize, rating: &Rating) {
        let r = (rating.stars, rating.criteria.clone());
        self.update(&rating.ags, ring, |s| s.rating = Some(r));
    }

    /// The Kommune's pre-flight result for the release.
    pub fn set_preflight(&mut self, ring: usize, ags: &Ags, blocked: bool) {
        self.update(ags, ring, |s| s.preflight = Some(blocked));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::adoption::AdoptionEntry;

    fn record(ags: &Ags, running: Option<&str>, latest: &str, state: AdoptionState) -> AdoptionRecord {
        AdoptionRecord {
            latest: AdoptionEntry {
                ags: ags.clone(),
                service_id: "wohngeld-nrw".parse().unwrap(),
                version: Some(latest.parse().unwrap()),
                state,
                reason: String::new(),
                at_ms: 1,
            },
            running: running.map(|v| v.parse().unwrap()),
            seen_versions: vec![],
        }
    }

    #[test]
    fn a_kommunes_later_report_replaces_what_it_added_before() {
        let v: semver::Version = "1.1.0".parse().unwrap();
        let (a, b): (Ags, Ags) = ("05913000".parse().unwrap(), "05711000".parse().unwrap());
        let mut t = Tally::new(2);
        t.set_adoption(0, &v, &a, Some(&record(&a, Some("1.1.0"), "1.1.0", AdoptionState::Deployed)));
        t.set_adoption(0, &v, &b, Some(&record(&b, Some("1.1.0"), "1.1.0", AdoptionState::Deployed)));
        assert_eq!(t.counts()[0].healthy, 2);
        // b rolls back to 1.0.0: no longer healthy on 1.1.0, one rollback.
        t.set_adoption(0, &v, &b, Some(&record(&b, Some("1.0.0"), "1.1.0", AdoptionState::RolledBack)));
        assert_eq!((t.counts()[0].healthy, t.counts()[0].rolled_back), (1, 1));
        // A new rating replaces the old one; criteria are summed per area.
        let rating = |stars: u8| Rating {
            ags: a.clone(),
            service_id: "wohngeld-nrw".parse().unwrap(),
            version: v.clone(),
            stars,
            criteria: vec![(Criterion::Payment, stars)],
            comment: String::new(),
            at_ms: 1,
            met: vec![],
        };
        t.set_rating(0, &rating(2));
        t.set_rating(0, &rating(4));
        assert_eq!((t.counts()[0].ratings, t.counts()[0].stars_sum), (1, 4));
        assert_eq!(t.counts()[0].criteria[&Criterion::Payment], (1, 4));
        t.set_preflight(0, &a, true);
        t.set_preflight(0, &a, false);
        assert_eq!((t.counts()[0].preflights, t.counts()[0].blocked), (1, 0));
        assert_eq!(t.counts()[1], RingCounts::default());
        // A ring beyond the plan is ignored, not a panic.
        t.set_preflight(7, &b, true);
        assert_eq!(t.counts().len(), 2);
    }
}
