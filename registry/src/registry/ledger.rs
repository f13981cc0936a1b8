//! What Kommunen write: subscriptions, adoption reports, ratings and pre-flight results.

use super::{Registry, MAX_REASON_CHARS};
use crate::error::{Error, Result};
use efa_domain::model::adoption::{AdoptionEntry, AdoptionRecord, AdoptionReport};
use efa_domain::model::event::Event;
use efa_domain::model::ids::{Ags, Channel};
use efa_domain::model::preflight::{NewPreflight, PreflightRecord};
use efa_domain::model::rating::{NewRating, Rating};
use efa_domain::model::release::UpdatePolicy;
use efa_domain::model::routing::{RoutingDeclaration, RoutingRecord};
use efa_domain::model::subscription::{Subscription, SubscriptionTarget};
use efa_domain::text::{self, Lines};
use std::future::Future;

impl Registry {
    /// Subscribes a Kommune to a service or a Themenfeld (replacing an earlier subscription
    /// to the same target).
    pub fn subscribe(
        &self,
        ags: &Ags,
        target: SubscriptionTarget,
        channel: Channel,
        policy: UpdatePolicy,
    ) -> Result<(Subscription, Event)> {
        self.kommune(ags)?;
        match &target {
            SubscriptionTarget::Service(id) => {
                self.service(id)?;
            }
            SubscriptionTarget::Themenfeld(t) => self.check_themenfeld(t)?,
        }
        let sub = Subscription { ags: ags.clone(), target, channel, policy, since_ms: efa_domain::now_ms() };
        self.commits.write(move |s| Ok((s.put_subscription(&sub)?, sub))).map(|(event, sub)| (sub, event))
    }

    /// Ends a subscription; false if there was none.
    pub fn unsubscribe(&self, ags: &Ags, target: &SubscriptionTarget) -> Result<bool> {
        let (ags, key) = (ags.clone(), target.key());
        self.commits.write(move |s| Ok(s.remove_subscription(&ags, &key)?.is_some()))
    }

    /// The subscriptions of a Kommune.
    pub fn subscriptions(&self, ags: &Ags) -> Result<Vec<Subscription>> {
        self.store.subscriptions_of(ags)
    }

    /// Number of subscriptions of all Kommunen.
    pub fn subscription_count(&self) -> Result<usize> {
        Ok(self.store.all_subscriptions()?.len())
    }

    /// Appends a Kommune's adoption report to the ledger. The checks run on the caller's
    /// thread; the returned future resolves once the entry is durable, without parking a
    /// thread meanwhile (this is the hot write path of 11,000 nodes).
    pub fn report_adoption(
        &self,
        ags: &Ags,
        report: AdoptionReport,
    ) -> impl Future<Output = Result<(AdoptionRecord, Event)>> + Send + 'static {
        let commit = self.check_adoption(ags, report).map(|entry| self.commits.report_async(entry));
        async move { commit?.await }
    }

    fn release_known(&self, service: &efa_domain::model::ids::ServiceId, version: &semver::Version) -> bool {
        self.known_releases.read().unwrap_or_else(|p| p.into_inner()).contains(&format!("{service} {version}"))
    }

    fn remember_release(&self, service: &efa_domain::model::ids::ServiceId, version: &semver::Version) {
        let mut known = self.known_releases.write().unwrap_or_else(|p| p.into_inner());
        // Bounded: a federation has a few thousand releases; start over if it ever grows odd.
        if known.len() >= 100_000 {
            known.clear();
        }
        known.insert(format!("{service} {version}"));
    }

    fn check_adoption(&self, ags: &Ags, report: AdoptionReport) -> Result<AdoptionEntry> {
        self.kommune(ags)?;
        let AdoptionReport { service_id, version, state, reason } = report;
        let version = match version {
            // Releases are immutable and never removed: one seen is known for good, which
            // spares the store two reads on the hot path (round trips on PostgreSQL).
            Some(v) if self.release_known(&service_id, &v) => Some(v),
            Some(v) => {
                self.service(&service_id)?;
                let release = self.release(&service_id, &v.to_string())?;
                self.remember_release(&service_id, &release.version);
                Some(release.version)
            }
            None => {
                self.service(&service_id)?;
                if state.needs_version() {
                    return Err(Error::invalid("version", format!("state {state} must name the version it refers to")));
                }
                None
            }
        };
        if state.needs_reason() && reason.trim().is_empty() {
            return Err(Error::invalid("reason", format!("state {state} must say why")));
        }
        text::check("reason", &reason, MAX_REASON_CHARS, Lines::Multi)?;
        Ok(AdoptionEntry { ags: ags.clone(), service_id, version, state, reason, at_ms: efa_domain::now_ms() })
    }

    /// Loads adoption ledger entries in bulk (migrations, benchmarks): no events are
    /// appended and the rules of [`report_adoption`](Self::report_adoption) are not
    /// checked; see [`crate::store::Store::bulk_load_adoptions`]. Durable when it returns.
    pub fn bulk_load_adoptions(&self, entries: Vec<AdoptionEntry>) -> Result<()> {
        self.commits.write(move |s| s.bulk_load_adoptions(&entries))
    }

    /// Records a Kommune's rating of a version it has evaluated or deployed; resolves once it
    /// is durable (see [`report_adoption`](Self::report_adoption)).
    pub fn rate(&self, ags: &Ags, rating: NewRating) -> impl Future<Output = Result<(Rating, Event)>> + Send + 'static {
        let commit = self
            .check_rating(ags, rating)
            .map(|rating| self.commits.write_async(move |s| Ok((s.put_rating(&rating)?, rating))));
        async move { commit?.await.map(|(event, rating)| (rating, event)) }
    }

    fn check_rating(&self, ags: &Ags, new: NewRating) -> Result<Rating> {
        let release = self.release(&new.service_id, &new.version.to_string())?;
        let rating = new.into_rating(ags.clone(), efa_domain::now_ms())?;
        let may = self.store.adoption(&rating.service_id, ags)?.is_some_and(|r| r.may_rate(&release.version));
        if !may {
            return Err(Error::failed_precondition(format!(
                "Kommune {ags} has not evaluated or deployed {} {}; only Kommunen that did may rate it",
                rating.service_id, release.version
            )));
        }
        Ok(rating)
    }

    /// Records a Kommune's pre-flight result for a release, replacing its previous one.
    pub fn report_preflight(
        &self,
        ags: &Ags,
        new: NewPreflight,
    ) -> impl Future<Output = Result<PreflightRecord>> + Send + 'static {
        let check = || -> Result<PreflightRecord> {
            new.validate()?;
            let release = self.release(&new.service_id, &new.version.to_string())?;
            Ok(PreflightRecord {
                ags: ags.clone(),
                service_id: release.service_id,
                version: release.version,
                problems: new.problems,
                changes: new.changes,
                at_ms: efa_domain::now_ms(),
            })
        };
        let commit = check().map(|record| self.commits.write_async(move |s| s.put_preflight(&record).map(|()| record)));
        async move { commit?.await }
    }

    /// Records the FIT-Connect destinations a Kommune declares for a service it runs at
    /// that version (FAILED_PRECONDITION otherwise: routing must point at a running service).
    pub fn declare_routing(
        &self,
        ags: &Ags,
        new: RoutingDeclaration,
    ) -> impl Future<Output = Result<RoutingRecord>> + Send + 'static {
        let check = || -> Result<RoutingRecord> {
            new.validate()?;
            let release = self.release(&new.service_id, &new.version.to_string())?;
            let runs = self.store.adoption(&release.service_id, ags)?.and_then(|r| r.running);
            if !new.destinations.is_empty() && runs.as_ref() != Some(&release.version) {
                return Err(Error::failed_precondition(format!(
                    "Kommune {ags} does not run {} {} (it runs {}); declare the destinations of the version it runs",
                    release.service_id,
                    release.version,
                    runs.map(|v| v.to_string()).unwrap_or_else(|| "nothing".into())
                )));
            }
            Ok(RoutingRecord {
                ags: ags.clone(),
                service_id: release.service_id,
                version: release.version,
                destinations: new.destinations,
                at_ms: efa_domain::now_ms(),
            })
        };
        let commit = check().map(|record| self.commits.write_async(move |s| s.put_routing(&record).map(|()| record)));
        async move { commit?.await }
    }
}
