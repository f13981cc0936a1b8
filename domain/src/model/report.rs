//! What reports return: plain rows that the hub sends and the CLIs print.

use super::adoption::{AdoptionEntry, AdoptionRecord};
use super::catalog::Kommune;
use super::rating::{Rating, RatingAggregate};

/// An adoption record with the Kommune's name, for reports.
#[derive(Clone, Debug)]
pub struct Adopter {
    /// The Gemeinde, if it is in the register.
    pub kommune: Option<Kommune>,
    /// Its current record for the service.
    pub record: AdoptionRecord,
}

/// The level of a coverage row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoverageLevel {
    /// A Land.
    Land,
    /// A Kreis or kreisfreie Stadt.
    Kreis,
}

impl CoverageLevel {
    /// `land` or `kreis`.
    pub fn as_str(self) -> &'static str {
        match self {
            CoverageLevel::Land => "land",
            CoverageLevel::Kreis => "kreis",
        }
    }
}

/// Gemeinden running a service in one Land or Kreis.
#[derive(Clone, Debug)]
pub struct CoverageRow {
    /// Land or Kreis.
    pub level: CoverageLevel,
    /// Its code.
    pub code: String,
    /// Its name.
    pub name: String,
    /// Gemeinden running the service.
    pub adopted: u32,
    /// Gemeinden in the register.
    pub total: u32,
    /// Inhabitants of the Gemeinden running it (GV100AD population).
    pub inhabitants_adopted: u64,
    /// Inhabitants of all its Gemeinden.
    pub inhabitants_total: u64,
}

/// Rating aggregates of a service.
#[derive(Clone, Debug)]
pub struct RatingSummary {
    /// Over every version.
    pub overall: RatingAggregate,
    /// Per version, newest version first.
    pub per_version: Vec<(semver::Version, RatingAggregate)>,
}

/// Ratings and rejections, newest first, each with the Kommune's name.
#[derive(Clone, Debug, Default)]
pub struct Feedback {
    /// Ratings with the rating Kommune's name.
    pub ratings: Vec<(Rating, String)>,
    /// Latest-state rejections with the rejecting Kommune's name.
    pub rejections: Vec<(AdoptionEntry, String)>,
}

/// What a Kommune runs and everything it reported.
#[derive(Clone, Debug)]
pub struct KommuneReport {
    /// The Gemeinde.
    pub kommune: Kommune,
    /// Name of its Land.
    pub land_name: String,
    /// Name of its Kreis.
    pub kreis_name: String,
    /// Its current record per service.
    pub current: Vec<AdoptionRecord>,
    /// Its ledger, oldest first.
    pub history: Vec<AdoptionEntry>,
}

/// One row of the routing table: where a Kommune's applications for a service go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingRow {
    /// The Kommune's Amtlicher Regionalschlüssel (what FIT-Connect routes by).
    pub ars: String,
    /// The Kommune.
    pub ags: crate::model::ids::Ags,
    /// Its name.
    pub kommune: String,
    /// The service.
    pub service_id: crate::model::ids::ServiceId,
    /// The version it runs.
    pub version: semver::Version,
    /// The parameter that holds the destination.
    pub parameter: String,
    /// The FIT-Connect destination ID.
    pub destination: String,
}
