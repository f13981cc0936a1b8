//! What Länder and operators read: adopters, coverage, ratings, feedback, a Kommune's history.

use super::Registry;
use crate::error::Result;
use efa_domain::authz::{authorize, scope, Action, Identity, Scope};
use efa_domain::model::adoption::{AdoptionEntry, AdoptionRecord, AdoptionState, ServiceTotals};
use efa_domain::model::catalog::Service;
use efa_domain::model::ids::{Ags, LandCode, Leistungsschluessel, ServiceId};
use efa_domain::model::preflight::PreflightRecord;
use efa_domain::model::rating::{Rating, RatingAggregate};
use efa_domain::model::report::{
    coverage_over_time, Adopter, CoverageLevel, CoverageRow, Feedback, KommuneReport, RatingSummary, RoutingRow,
    TimelinePoint,
};
use std::collections::BTreeMap;

impl Registry {
    /// Authorizes reading who adopted `service`, and how much of it (an offering Land: its
    /// own Kommunen).
    fn authorize_adoption(&self, who: &Identity, service: &ServiceId) -> Result<(Service, Scope)> {
        let s = self.service(service)?;
        let offered_by = self.offered_by(service)?;
        let scope =
            scope(who, Action::ReadAdoption { owner: &s.land, public: s.adoption_public, offered_by: &offered_by })?;
        Ok((s, scope))
    }

    /// Every Kommune with a record for `service` the caller may see, in AGS order.
    pub fn adopters(&self, who: &Identity, service: &ServiceId) -> Result<Vec<Adopter>> {
        let (_, scope) = self.authorize_adoption(who, service)?;
        let register = self.register()?;
        let mut out: Vec<Adopter> = self
            .store
            .adopters(service)?
            .into_iter()
            .filter(|record| scope.admits(&record.latest.ags))
            .map(|record| Adopter { kommune: register.kommunen.get(&record.latest.ags).cloned(), record })
            .collect();
        out.sort_by(|a, b| a.record.latest.ags.cmp(&b.record.latest.ags));
        Ok(out)
    }

    /// The service's adoption and rating counters, read in one lookup (see [`ServiceTotals`]).
    pub fn service_totals(&self, service: &ServiceId) -> Result<ServiceTotals> {
        self.store.service_totals(service)
    }

    /// The current record of one Kommune for one service.
    pub fn adoption(&self, service: &ServiceId, ags: &Ags) -> Result<Option<AdoptionRecord>> {
        self.store.adoption(service, ags)
    }

    /// The records of several Kommunen at once (one query on PostgreSQL).
    pub fn adoptions_of_many(&self, agss: &[Ags]) -> Result<Vec<AdoptionRecord>> {
        self.store.adoptions_of_many(agss)
    }

    /// Number of Kommunen with at least one adoption record.
    pub fn kommunen_with_records(&self) -> Result<usize> {
        self.store.kommunen_with_records()
    }

    /// Kommunen with at least one adoption record whose AGS starts with `prefix` (a Land or
    /// Kreis code, or empty for all), in AGS order.
    pub fn kommunen_with_records_under(&self, prefix: &str) -> Result<Vec<Ags>> {
        self.store.kommunen_with_records_under(prefix)
    }

    /// What a Kommune runs, and its whole ledger.
    pub fn kommune_report(&self, who: &Identity, ags: &Ags) -> Result<KommuneReport> {
        authorize(who, Action::ReadKommune { ags })?;
        let kommune = self.kommune(ags)?;
        Ok(KommuneReport {
            land_name: self.land(&ags.land()).map(|l| l.name).unwrap_or_default(),
            kreis_name: self.kreis_name(&ags.kreis())?,
            kommune,
            current: self.store.adoptions_of(ags)?,
            history: self.store.history_of(ags)?,
        })
    }

    /// Gemeinden running `service` (state deployed or a running version) per Land, and per
    /// Kreis where it is adopted (or every Kreis of `land`, when given).
    /// An offering Land sees its own Land and Kreise only.
    pub fn coverage(&self, who: &Identity, service: &ServiceId, land: Option<&LandCode>) -> Result<Vec<CoverageRow>> {
        let (_, scope) = self.authorize_adoption(who, service)?;
        if let Some(land) = land {
            self.land(land)?;
        }
        let land = match (&scope, land) {
            (Scope::Land(own), Some(asked)) if own != asked => {
                return Err(efa_domain::Error::PermissionDenied(format!(
                    "Land {own} offers {service} and reads coverage of its own Kommunen only, not of Land {asked}"
                ))
                .into())
            }
            (Scope::Land(own), _) => Some(own),
            (Scope::All, land) => land,
        };
        let register = self.register()?;
        // (Gemeinden, inhabitants) running the service, per Land and per Kreis.
        let mut per_land: BTreeMap<String, (u32, u64)> = BTreeMap::new();
        let mut per_kreis: BTreeMap<String, (u32, u64)> = BTreeMap::new();
        for rec in self.store.adopters(service)? {
            if rec.running.is_some() && scope.admits(&rec.latest.ags) {
                let people = register.kommunen.get(&rec.latest.ags).and_then(|k| k.population).unwrap_or(0);
                for (map, code) in [
                    (&mut per_land, rec.latest.ags.land().to_string()),
                    (&mut per_kreis, rec.latest.ags.kreis().to_string()),
                ] {
                    let e = map.entry(code).or_default();
                    e.0 += 1;
                    e.1 += people;
                }
            }
        }
        let mut rows = Vec::new();
        for l in register.laender.iter().filter(|l| matches!(&scope, Scope::All) || Some(&l.code) == land) {
            let (adopted, inhabitants_adopted) = per_land.get(l.code.as_str()).copied().unwrap_or_default();
            rows.push(CoverageRow {
                level: CoverageLevel::Land,
                code: l.code.to_string(),
                name: l.name.clone(),
                adopted,
                total: register.per_land.get(l.code.as_str()).copied().unwrap_or(0),
                inhabitants_adopted,
                inhabitants_total: register.population_per_land.get(l.code.as_str()).copied().unwrap_or(0),
            });
        }
        for k in &register.kreise {
            let (adopted, inhabitants_adopted) = per_kreis.get(k.code.as_str()).copied().unwrap_or_default();
            let in_land = land.is_some_and(|l| k.code.land() == *l);
            if in_land || (adopted > 0 && scope == Scope::All) {
                rows.push(CoverageRow {
                    level: CoverageLevel::Kreis,
                    code: k.code.to_string(),
                    name: k.name.clone(),
                    adopted,
                    total: register.per_kreis.get(k.code.as_str()).copied().unwrap_or(0),
                    inhabitants_adopted,
                    inhabitants_total: register.population_per_kreis.get(k.code.as_str()).copied().unwrap_or(0),
                });
            }
        }
        Ok(rows)
    }

    /// Coverage of a service over time (Gemeinden and inhabitants), from its ledger.
    pub fn coverage_timeline(&self, who: &Identity, service: &ServiceId) -> Result<Vec<TimelinePoint>> {
        let (_, scope) = self.authorize_adoption(who, service)?;
        let register = self.register()?;
        let mut entries = Vec::new();
        for rec in self.store.adopters(service)?.into_iter().filter(|r| scope.admits(&r.latest.ags)) {
            let people = register.kommunen.get(&rec.latest.ags).and_then(|k| k.population).unwrap_or(0);
            for e in self.store.history_of(&rec.latest.ags)?.into_iter().filter(|e| &e.service_id == service) {
                entries.push((e, people));
            }
        }
        Ok(coverage_over_time(&mut entries))
    }

    /// The routing table for a Leistungsschlüssel: per Kommune that runs a service with it
    /// and declared destinations, the ARS and the destination. Every authenticated caller
    /// may read it: it is what a routing lookup answers anyway.
    pub fn routing_table(&self, key: &Leistungsschluessel) -> Result<Vec<RoutingRow>> {
        let register = self.register()?;
        let mut rows = Vec::new();
        for service in self.store.services()?.into_iter().filter(|s| s.all_leistungsschluessel().any(|k| k == key)) {
            for r in self.store.routing(&service.id)? {
                let runs = self.store.adoption(&service.id, &r.ags)?.and_then(|a| a.running).is_some();
                let Some(k) = register.kommunen.get(&r.ags).filter(|_| runs) else { continue };
                for d in &r.destinations {
                    rows.push(RoutingRow {
                        ars: k.ars.to_string(),
                        ags: r.ags.clone(),
                        kommune: k.name.clone(),
                        service_id: r.service_id.clone(),
                        version: r.version.clone(),
                        parameter: d.parameter.clone(),
                        destination: d.destination.clone(),
                    });
                }
            }
        }
        rows.sort_by(|a, b| a.ars.cmp(&b.ars).then(a.service_id.cmp(&b.service_id)));
        Ok(rows)
    }

    /// The pre-flight results of one release with each Kommune's name, blocked first, for
    /// operators and the publishing Land.
    pub fn preflight_report(
        &self,
        who: &Identity,
        service: &ServiceId,
        version: &str,
    ) -> Result<Vec<(PreflightRecord, String)>> {
        let (_, scope) = self.authorize_adoption(who, service)?;
        let release = self.release(service, version)?;
        let register = self.register()?;
        let mut out: Vec<(PreflightRecord, String)> = self
            .store
            .preflights(service, &release.version)?
            .into_iter()
            .filter(|p| scope.admits(&p.ags))
            .map(|p| {
                let name = register.kommunen.get(&p.ags).map(|k| k.name.clone()).unwrap_or_default();
                (p, name)
            })
            .collect();
        out.sort_by(|(a, _), (b, _)| a.is_ready().cmp(&b.is_ready()).then(a.ags.cmp(&b.ags)));
        Ok(out)
    }

    /// Rating aggregates of a service. They carry no names or comments, so every
    /// authenticated party may read them.
    pub fn rating_summary(&self, service: &ServiceId) -> Result<RatingSummary> {
        self.service(service)?;
        let ratings = self.store.ratings(service)?;
        let mut by_version: BTreeMap<semver::Version, Vec<&Rating>> = BTreeMap::new();
        for r in &ratings {
            by_version.entry(r.version.clone()).or_default().push(r);
        }
        Ok(RatingSummary {
            overall: RatingAggregate::from_ratings(&ratings),
            per_version: by_version.into_iter().rev().map(|(v, rs)| (v, RatingAggregate::from_ratings(rs))).collect(),
        })
    }

    /// Every rating of a service, for pages that list them.
    pub fn ratings(&self, service: &ServiceId) -> Result<Vec<Rating>> {
        self.store.ratings(service)
    }

    /// Ratings and rejections of one service, or of the services of `land` (a Land asking
    /// without either means the services it built and those it offers; an operator without
    /// either: all). A Land reads about a service it offers for its own Kommunen only.
    pub fn feedback(&self, who: &Identity, land: Option<&LandCode>, service: Option<&ServiceId>) -> Result<Feedback> {
        if let Some(land) = land {
            self.land(land)?;
        }
        // Each service with the Länder offering it, read once.
        let with_offers = |list: Vec<Service>| -> Result<Vec<(Service, Vec<LandCode>)>> {
            list.into_iter()
                .map(|s| {
                    let offered_by = self.offered_by(&s.id)?;
                    Ok((s, offered_by))
                })
                .collect()
        };
        let candidates = match (service, land, who) {
            (Some(id), _, _) => with_offers(vec![self.service(id)?])?,
            (None, Some(l), _) => with_offers(self.services(Some(l), None)?)?,
            (None, None, Identity::Land(me)) => with_offers(self.services(None, None)?)?
                .into_iter()
                .filter(|(s, offered_by)| &s.land == me || offered_by.contains(me))
                .collect(),
            (None, None, _) => with_offers(self.services(None, None)?)?,
        };
        if service.is_none() && candidates.is_empty() {
            // Nothing to read, but the caller must still be allowed to ask.
            let owner = land.cloned().or(match who {
                Identity::Land(l) => Some(l.clone()),
                _ => None,
            });
            scope(who, Action::ReadFeedback { owner: owner.as_ref(), offered_by: &[] })?;
        }
        let mut services: Vec<(Service, Scope)> = Vec::new();
        for (s, offered_by) in candidates {
            let owner = if service.is_none() && land.is_none() && !matches!(who, Identity::Land(_)) {
                None
            } else {
                Some(&s.land)
            };
            let sc = scope(who, Action::ReadFeedback { owner, offered_by: &offered_by })?;
            services.push((s, sc));
        }
        let register = self.register()?;
        let name = |ags: &Ags| register.kommunen.get(ags).map(|k| k.name.clone()).unwrap_or_default();
        let mut out = Feedback::default();
        for (s, scope) in services {
            for r in self.store.ratings(&s.id)?.into_iter().filter(|r| scope.admits(&r.ags)) {
                let n = name(&r.ags);
                out.ratings.push((r, n));
            }
            for rec in self.store.adopters(&s.id)?.into_iter().filter(|r| scope.admits(&r.latest.ags)) {
                let n = name(&rec.latest.ags);
                for entry in standing_rejections(&s.id, self.store.history_of(&rec.latest.ags)?) {
                    out.rejections.push((entry, n.clone()));
                }
            }
        }
        out.ratings.sort_by_key(|(r, _)| std::cmp::Reverse(r.at_ms));
        out.rejections.sort_by_key(|(r, _)| std::cmp::Reverse(r.at_ms));
        Ok(out)
    }
}

/// The rejections of `service` in one Kommune's ledger that still stand: a Kommune that
/// rejected 1.1.0 and went on running 1.0.x keeps that rejection, and the Land must see why.
/// A later report of the same version (it evaluated or deployed it after all) takes a
/// rejection back; for a rejection of the whole service, any later report does.
fn standing_rejections(service: &ServiceId, history: Vec<AdoptionEntry>) -> Vec<AdoptionEntry> {
    let mut standing: BTreeMap<Option<semver::Version>, AdoptionEntry> = BTreeMap::new();
    for e in history.into_iter().filter(|e| &e.service_id == service) {
        if e.state == AdoptionState::Rejected {
            standing.insert(e.version.clone(), e);
        } else {
            standing.remove(&e.version);
            standing.remove(&None);
        }
    }
    standing.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: Option<&str>, state: AdoptionState) -> AdoptionEntry {
        AdoptionEntry {
            ags: "05913000".parse().unwrap(),
            service_id: "wohngeld-nrw".parse().unwrap(),
            version: version.map(|v| v.parse().unwrap()),
            state,
            reason: "Grund".into(),
            at_ms: 0,
        }
    }

    #[test]
    fn a_rejection_stands_until_the_same_version_or_the_service_is_taken_up() {
        use AdoptionState::*;
        let id: ServiceId = "wohngeld-nrw".parse().unwrap();
        // Rejected 1.1.0, then rolled back to and deployed 1.0.0: the rejection stands.
        let h = vec![entry(Some("1.0.1"), Deployed), entry(Some("1.1.0"), Rejected), entry(Some("1.0.0"), Deployed)];
        let got = standing_rejections(&id, h);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].version.as_ref().map(|v| v.to_string()).as_deref(), Some("1.1.0"));
        // Rejected 1.1.0, then approved and deployed it after all: nothing stands.
        assert!(
            standing_rejections(&id, vec![entry(Some("1.1.0"), Rejected), entry(Some("1.1.0"), Deployed)]).is_empty()
        );
        // The whole service rejected, then adopted: nothing stands.
        assert!(standing_rejections(&id, vec![entry(None, Rejected), entry(Some("1.0.0"), Evaluating)]).is_empty());
    }
}
