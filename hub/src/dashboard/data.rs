//! What each page shows, read from the [`Registry`] in one blocking call per page. Plain
//! structs, no HTML: the pages render them.

use efa_domain::authz::Identity;
use efa_domain::model::adoption::{AdoptionEntry, AdoptionRecord, AdoptionState, ServiceTotals};
use efa_domain::model::catalog::{Kommune, Service};
use efa_domain::model::ids::{LandCode, ServiceId};
use efa_domain::model::rating::Rating;
use efa_domain::model::release::Release;
use efa_domain::model::report::{CoverageLevel, CoverageRow, RatingSummary};
use efa_domain::model::rollout::{Members, Rollout, Status};
use efa_proto::v1 as pb;
use efa_registry::{Registry, Result};
use std::collections::{BTreeMap, BTreeSet};

/// At most this many Kommune columns in the matrix; narrow the filter for more.
pub const MATRIX_MAX_KOMMUNEN: usize = 200;

/// Names of Länder and Kreise by code.
pub(crate) struct Names {
    pub laender: BTreeMap<String, String>,
    pub kreise: BTreeMap<String, String>,
}

impl Names {
    pub fn load(reg: &Registry) -> Result<Names> {
        Ok(Names {
            laender: reg.laender()?.into_iter().map(|l| (l.code.to_string(), l.name)).collect(),
            kreise: reg.kreise()?.into_iter().map(|k| (k.code.to_string(), k.name)).collect(),
        })
    }

    pub fn land(&self, code: &str) -> String {
        match code {
            "00" => "Bund".to_string(),
            _ => self.laender.get(code).cloned().unwrap_or_else(|| format!("Land {code}")),
        }
    }

    pub fn kreis(&self, code: &str) -> String {
        self.kreise.get(code).cloned().unwrap_or_else(|| format!("Kreis {code}"))
    }
}

// ------------------------------------------------------------------ overview

/// One service on the overview page.
pub struct ServiceRow {
    /// The service.
    pub service: Service,
    /// Name of the Land that owns it.
    pub land_name: String,
    /// Names of the Länder that offer it to their Kommunen (active offers).
    pub offered_by: Vec<String>,
    /// Highest version, yanked or not.
    pub latest: Option<Release>,
    /// Its adoption and rating counters.
    pub totals: ServiceTotals,
}

/// The landing page: every service, and the hub's overall numbers.
pub struct Overview {
    /// Every service, sorted by Land code, then title.
    pub rows: Vec<ServiceRow>,
    /// Newest event seq.
    pub head_seq: u64,
    /// Kommunen with at least one adoption ledger entry.
    pub kommunen_with_records: usize,
}

/// Reads the overview from each service's counters, not its adoption records, so it stays
/// fast at federal scale.
pub fn overview(reg: &Registry) -> Result<Overview> {
    let names = Names::load(reg)?;
    let mut rows = Vec::new();
    // One counter record per service, not its records: this page is the landing page and
    // must stay fast with 10,773 Gemeinden × every service.
    for service in reg.services(None, None)? {
        rows.push(ServiceRow {
            land_name: names.land(service.land.as_str()),
            offered_by: reg
                .offers(&service.id)?
                .into_iter()
                .filter(|o| o.is_active())
                .map(|o| names.land(o.land.as_str()))
                .collect(),
            latest: reg.releases(&service.id, None)?.into_iter().next(),
            totals: reg.service_totals(&service.id)?,
            service,
        });
    }
    rows.sort_by(|a, b| (&a.service.land, &a.service.title).cmp(&(&b.service.land, &b.service.title)));
    Ok(Overview { rows, head_seq: reg.head_seq()?, kommunen_with_records: reg.kommunen_with_records()? })
}

// ------------------------------------------------------------------ matrix

/// Query parameters of `/matrix`; empty strings mean "all".
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct MatrixFilter {
    /// Land code: only Kommunen of this Land.
    pub land: String,
    /// Kreis code: only Kommunen of this Kreis; none at all if it is not in `land`.
    pub kreis: String,
    /// Only services of this Themenfeld.
    pub themenfeld: String,
    /// Only services with releases on this channel, and cells whose version is on it.
    pub channel: String,
}

/// What the filter form offers to choose from.
pub struct FilterOptions {
    /// (code, name) of the Länder with any adoption records, by code.
    pub laender: Vec<(String, String)>,
    /// (code, name) of the Kreise with any adoption records, by name.
    pub kreise: Vec<(String, String)>,
    /// Themenfelder of all services.
    pub themenfelder: Vec<String>,
    /// Channels of all releases.
    pub channels: Vec<String>,
}

/// The adoption matrix: services × Kommunen under a [`MatrixFilter`].
pub struct Matrix {
    /// The services the filter keeps, by title; rows even without any cell.
    pub services: Vec<Service>,
    /// Kommunen with at least one shown cell, in AGS order.
    pub kommunen: Vec<Kommune>,
    /// (service id, AGS) to the pair's record.
    pub cells: BTreeMap<(String, String), AdoptionRecord>,
    /// (service id, version) of every yanked release, to flag Kommunen still running one.
    pub yanked: BTreeSet<(String, semver::Version)>,
    /// Choices for the filter form, independent of the current filter.
    pub options: FilterOptions,
    /// Kommunen left out beyond [`MATRIX_MAX_KOMMUNEN`].
    pub left_out: usize,
}

/// Builds the matrix from the Kommunen first: at most [`MATRIX_MAX_KOMMUNEN`] of those with
/// records under the Land/Kreis filter, then their records in one read (one query on
/// PostgreSQL), so the page costs the same with 6.2M records as with a hundred.
pub fn matrix(reg: &Registry, f: &MatrixFilter) -> Result<Matrix> {
    let names = Names::load(reg)?;
    let mut options = FilterOptions { laender: vec![], kreise: vec![], themenfelder: vec![], channels: vec![] };
    let (mut laender, mut kreise, mut themen, mut channels) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for ags in reg.kommunen_with_records_under("")? {
        laender.insert(ags.land().to_string());
        kreise.insert(ags.kreis().to_string());
    }
    let prefix = if f.kreis.is_empty() { f.land.as_str() } else { f.kreis.as_str() };
    let candidates = if f.kreis.starts_with(&f.land) { reg.kommunen_with_records_under(prefix)? } else { Vec::new() };
    let shown = &candidates[..candidates.len().min(MATRIX_MAX_KOMMUNEN)];
    let mut records: BTreeMap<(String, String), AdoptionRecord> = reg
        .adoptions_of_many(shown)?
        .into_iter()
        .map(|r| ((r.latest.service_id.to_string(), r.latest.ags.to_string()), r))
        .collect();
    let mut services = Vec::new();
    let mut cells = BTreeMap::new();
    let mut agss = BTreeSet::new();
    let mut yanked = BTreeSet::new();
    for service in reg.services(None, None)? {
        themen.insert(service.themenfeld.clone());
        let releases = reg.releases(&service.id, None)?;
        let channel_of: BTreeMap<semver::Version, String> =
            releases.iter().map(|r| (r.version.clone(), r.channel.to_string())).collect();
        channels.extend(channel_of.values().cloned());
        yanked
            .extend(releases.iter().filter(|r| r.yank.is_some()).map(|r| (service.id.to_string(), r.version.clone())));
        let on_channel = f.channel.is_empty() || channel_of.values().any(|c| *c == f.channel);
        if !(f.themenfeld.is_empty() || service.themenfeld == f.themenfeld) || !on_channel {
            continue;
        }
        for ags in shown {
            let Some(r) = records.remove(&(service.id.to_string(), ags.to_string())) else { continue };
            let version = r.latest.version.as_ref().or(r.running.as_ref());
            let channel_ok = f.channel.is_empty() || version.and_then(|v| channel_of.get(v)) == Some(&f.channel);
            if channel_ok {
                agss.insert(ags.clone());
                cells.insert((service.id.to_string(), ags.to_string()), r);
            }
        }
        services.push(service);
    }
    services.sort_by(|a, b| a.title.cmp(&b.title));
    let mut kommunen = Vec::new();
    for ags in &agss {
        kommunen.push(reg.kommune(ags)?);
    }
    options.laender = laender.into_iter().map(|c| (names.land(&c), c)).map(|(n, c)| (c, n)).collect();
    options.kreise = kreise.into_iter().map(|c| (names.kreis(&c), c)).map(|(n, c)| (c, n)).collect();
    options.kreise.sort_by(|a, b| a.1.cmp(&b.1));
    options.themenfelder = themen.into_iter().collect();
    options.channels = channels.into_iter().collect();
    Ok(Matrix { services, kommunen, cells, yanked, options, left_out: candidates.len().saturating_sub(shown.len()) })
}

// ------------------------------------------------------------------ coverage

pub(crate) struct LandCoverage {
    pub land: CoverageRow,
    pub kreise: Vec<CoverageRow>,
}

pub(crate) struct Coverage {
    pub service: Service,
    pub laender: Vec<LandCoverage>,
    pub running: u32,
}

/// The services to choose from on `/coverage` without a service.
pub(crate) fn service_choices(reg: &Registry) -> Result<Vec<Service>> {
    let mut s = reg.services(None, None)?;
    s.sort_by(|a, b| a.title.cmp(&b.title));
    Ok(s)
}

pub(crate) fn coverage(reg: &Registry, who: &Identity, id: &ServiceId, land: Option<&LandCode>) -> Result<Coverage> {
    let service = reg.service(id)?;
    let rows = reg.coverage(who, id, land)?;
    let mut laender: Vec<LandCoverage> = rows
        .iter()
        .filter(|r| r.level == CoverageLevel::Land)
        .map(|r| LandCoverage { land: r.clone(), kreise: vec![] })
        .collect();
    for k in rows.into_iter().filter(|r| r.level == CoverageLevel::Kreis) {
        if let Some(l) = laender.iter_mut().find(|l| k.code.starts_with(&l.land.code)) {
            l.kreise.push(k);
        }
    }
    let running = laender.iter().map(|l| l.land.adopted).sum();
    Ok(Coverage { service, laender, running })
}

// ------------------------------------------------------------------ one service

pub(crate) struct VersionRow {
    pub release: Release,
    /// Kommunen (names) whose running version this is.
    pub running: Vec<String>,
    /// The state of the release's rollout, if it has a plan.
    pub rollout: Option<Status>,
}

pub(crate) struct AdopterRow {
    pub kommune: String,
    pub record: AdoptionRecord,
}

pub(crate) struct ServiceDetail {
    pub service: Service,
    pub land_name: String,
    pub versions: Vec<VersionRow>,
    pub adopters: Vec<AdopterRow>,
    pub summary: RatingSummary,
    /// Newest first, with the Kommune's name.
    pub ratings: Vec<(String, Rating)>,
    pub rejections: Vec<(String, AdoptionEntry)>,
    /// Coverage over time, from the ledger.
    pub timeline: Vec<efa_domain::model::report::TimelinePoint>,
}

pub(crate) fn service(reg: &Registry, who: &Identity, id: &ServiceId) -> Result<ServiceDetail> {
    let service = reg.service(id)?;
    let names = Names::load(reg)?;
    let mut adopters: Vec<AdopterRow> = reg
        .adopters(who, id)?
        .into_iter()
        .map(|a| AdopterRow {
            kommune: a.kommune.map(|k| k.name).unwrap_or_else(|| a.record.latest.ags.to_string()),
            record: a.record,
        })
        .collect();
    adopters.sort_by(|a, b| a.kommune.cmp(&b.kommune));
    let versions = reg
        .releases(id, None)?
        .into_iter()
        .map(|release| {
            Ok(VersionRow {
                running: adopters
                    .iter()
                    .filter(|a| a.record.running.as_ref() == Some(&release.version))
                    .map(|a| a.kommune.clone())
                    .collect(),
                rollout: reg.rollout(id, &release.version)?.map(|r| r.status),
                release,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let feedback = reg.feedback(who, None, Some(id))?;
    let named = |name: String, ags: &efa_domain::model::ids::Ags| if name.is_empty() { ags.to_string() } else { name };
    let ratings = feedback.ratings.into_iter().map(|(r, n)| (named(n, &r.ags), r)).collect();
    let rejections = feedback.rejections.into_iter().map(|(e, n)| (named(n, &e.ags), e)).collect();
    Ok(ServiceDetail {
        land_name: names.land(service.land.as_str()),
        summary: reg.rating_summary(id)?,
        timeline: reg.coverage_timeline(who, id)?,
        service,
        versions,
        adopters,
        ratings,
        rejections,
    })
}

// ------------------------------------------------------------------ rejections

pub(crate) struct ServiceRejections {
    pub service: Service,
    pub land_name: String,
    /// Kommunen whose latest state for this service is "rejected", with the entry.
    pub rejections: Vec<(String, AdoptionEntry)>,
    pub running: usize,
}

pub(crate) fn rejections(reg: &Registry, who: &Identity, land: Option<&LandCode>) -> Result<Vec<ServiceRejections>> {
    let names = Names::load(reg)?;
    let mut out = Vec::new();
    for service in reg.services(land, None)? {
        let adopters = reg.adopters(who, &service.id)?;
        let records: Vec<&AdoptionRecord> = adopters.iter().map(|a| &a.record).collect();
        let mut rejections = Vec::new();
        for a in adopters.iter().filter(|a| a.record.latest.state == AdoptionState::Rejected) {
            let name = a.kommune.as_ref().map(|k| k.name.clone()).unwrap_or_else(|| a.record.latest.ags.to_string());
            rejections.push((name, a.record.latest.clone()));
        }
        if rejections.is_empty() {
            continue;
        }
        rejections.sort_by_key(|(_, e)| std::cmp::Reverse(e.at_ms));
        out.push(ServiceRejections {
            land_name: names.land(service.land.as_str()),
            running: records.iter().filter(|r| r.running.is_some()).count(),
            service,
            rejections,
        });
    }
    out.sort_by(|a, b| b.rejections.len().cmp(&a.rejections.len()).then(a.service.title.cmp(&b.service.title)));
    Ok(out)
}

// ------------------------------------------------------------------ rollouts

/// One rollout on `/rollouts`.
pub(crate) struct RolloutRow {
    pub service: Service,
    pub version: semver::Version,
    /// Whose plan: `None` the building Land's, else an offering Land's own.
    pub land: Option<LandCode>,
    /// As gRPC and the CLI show it; rings counted only while the rollout can still move.
    pub status: pb::RolloutStatus,
}

/// Every rollout, by service title, newest version first. Counting a ring reads the
/// service's adoption records, ratings and pre-flight results, so only running and paused
/// rollouts are counted: a halted or complete one opens no further ring, and its state
/// and reason say all the list needs.
pub(crate) fn rollouts(reg: &Registry, now_ms: i64) -> Result<Vec<RolloutRow>> {
    let services: BTreeMap<String, Service> =
        reg.services(None, None)?.into_iter().map(|s| (s.id.to_string(), s)).collect();
    let mut rows = Vec::new();
    for (id, version, land, rollout) in reg.rollouts()? {
        // Services are not deleted; were one missing, the list still shows the others.
        let Some(service) = services.get(id.as_str()) else { continue };
        let counts = match rollout.status {
            Status::Running | Status::Paused { .. } => reg.ring_counts(&id, &version, land.as_ref(), &rollout)?,
            Status::Halted { .. } | Status::Complete => Vec::new(),
        };
        let status = efa_proto::convert::rollout_status(
            id.as_str(),
            &version.to_string(),
            land.as_ref(),
            &rollout,
            &counts,
            now_ms,
        );
        rows.push(RolloutRow { service: service.clone(), version, land, status });
    }
    rows.sort_by(|a, b| {
        a.service.title.cmp(&b.service.title).then_with(|| b.version.cmp(&a.version)).then_with(|| a.land.cmp(&b.land))
    });
    Ok(rows)
}

/// Who is in a ring, with names from the Gemeindeverzeichnis (empty where it has none).
pub(crate) enum RingMembers {
    /// (AGS, name) of the named Gemeinden.
    Kommunen(Vec<(String, String)>),
    /// (code, name) of the named Kreise.
    Kreise(Vec<(String, String)>),
    /// A share of the Gemeinden no named ring holds, in percent.
    Share(u8),
    /// The last ring: every Gemeinde no other ring holds.
    Rest,
}

/// One release's rollout on `/services/{id}/rollout/{version}`.
pub(crate) struct RolloutDetail {
    pub service: Service,
    pub version: semver::Version,
    /// As gRPC and the CLI show it, rings counted.
    pub status: pb::RolloutStatus,
    /// Per ring, the last one included.
    pub members: Vec<RingMembers>,
    /// When the open ring is overdue, if the plan sets a deadline.
    pub deadline_at_ms: Option<i64>,
}

/// A release's rollout; `None` if the release has no plan (a missing service or release is
/// NOT_FOUND, a malformed version INVALID, as everywhere).
pub(crate) fn rollout(
    reg: &Registry,
    id: &ServiceId,
    version: &str,
    land: Option<&LandCode>,
    now_ms: i64,
) -> Result<Option<RolloutDetail>> {
    let service = reg.service(id)?;
    let version = reg.release(id, version)?.version;
    let Some(rollout) = reg.rollout_of(id, &version, land)? else { return Ok(None) };
    let counts = reg.ring_counts(id, &version, land, &rollout)?;
    let status = efa_proto::convert::rollout_status(id.as_str(), &version.to_string(), land, &rollout, &counts, now_ms);
    Ok(Some(RolloutDetail {
        members: ring_members(reg, &rollout)?,
        deadline_at_ms: rollout.deadline_at_ms(),
        service,
        version,
        status,
    }))
}

fn ring_members(reg: &Registry, rollout: &Rollout) -> Result<Vec<RingMembers>> {
    let names = Names::load(reg)?;
    let mut out = Vec::with_capacity(rollout.plan.ring_count());
    for ring in &rollout.plan.rings {
        out.push(match &ring.members {
            // Names come from the register held in memory: no store read per Gemeinde.
            Members::Kommunen(set) => RingMembers::Kommunen(
                set.iter().map(|a| Ok((a.to_string(), reg.kommune_name(a)?))).collect::<Result<_>>()?,
            ),
            Members::Kreise(set) => RingMembers::Kreise(
                set.iter()
                    .map(|k| (k.to_string(), names.kreise.get(k.as_str()).cloned().unwrap_or_default()))
                    .collect(),
            ),
            Members::Share { percent } => RingMembers::Share(*percent),
        });
    }
    out.push(RingMembers::Rest);
    Ok(out)
}
