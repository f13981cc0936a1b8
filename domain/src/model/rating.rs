//! Ratings of service versions by Kommunen, and their aggregation.

use super::ids::{Ags, ServiceId};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Longest comment accepted, in characters.
pub const MAX_COMMENT_CHARS: usize = 2000;

/// The eight areas of the EfA-Mindestanforderungen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// Design and usability of the user interface.
    Design,
    /// The Fachlogik: the rules of the administrative procedure.
    Fachlogik,
    /// Connection to the Nutzerkonto (citizen and business accounts).
    Nutzerkonto,
    /// Online payment of fees.
    Payment,
    /// Use of a Datenaustauschstandard towards the Fachverfahren.
    Datenaustauschstandard,
    /// Routing and transport of applications to the responsible authority.
    RoutingTransport,
    /// The legal terms under which other Länder and Kommunen may re-use it.
    RechtlicheNachnutzung,
    /// Operation and organisation: support, responsibilities, processes.
    Organisation,
}

impl Criterion {
    /// Every area, in the order aggregates list them.
    pub const ALL: [Criterion; 8] = [
        Criterion::Design,
        Criterion::Fachlogik,
        Criterion::Nutzerkonto,
        Criterion::Payment,
        Criterion::Datenaustauschstandard,
        Criterion::RoutingTransport,
        Criterion::RechtlicheNachnutzung,
        Criterion::Organisation,
    ];

    /// The German name for display, e.g. `Routing & Transport`; the official names of the
    /// EfA-Mindestanforderungen areas where they are confirmed ("Oberflächengestaltung und
    /// Design", "Rechtliche Nachnutzungsmöglichkeit").
    pub fn label(self) -> &'static str {
        match self {
            Criterion::Design => "Oberflächengestaltung und Design",
            Criterion::Fachlogik => "Fachlogik",
            Criterion::Nutzerkonto => "Nutzerkonto",
            Criterion::Payment => "Payment",
            Criterion::Datenaustauschstandard => "Datenaustauschstandard",
            Criterion::RoutingTransport => "Routing & Transport",
            Criterion::RechtlicheNachnutzung => "Rechtliche Nachnutzungsmöglichkeit",
            Criterion::Organisation => "Organisation",
        }
    }

    /// The name used on the command line and in JSON, e.g. `routing_transport`.
    pub fn as_str(self) -> &'static str {
        match self {
            Criterion::Design => "design",
            Criterion::Fachlogik => "fachlogik",
            Criterion::Nutzerkonto => "nutzerkonto",
            Criterion::Payment => "payment",
            Criterion::Datenaustauschstandard => "datenaustauschstandard",
            Criterion::RoutingTransport => "routing_transport",
            Criterion::RechtlicheNachnutzung => "rechtliche_nachnutzung",
            Criterion::Organisation => "organisation",
        }
    }
}

impl std::fmt::Display for Criterion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Criterion {
    type Err = Error;
    /// Accepts `routing_transport` and `routing-transport`, in any case.
    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        Criterion::ALL.into_iter().find(|c| c.as_str() == wanted).ok_or_else(|| {
            let names: Vec<&str> = Criterion::ALL.iter().map(|c| c.as_str()).collect();
            Error::invalid("criterion", format!("{} is not one of {}", crate::error::echo(s), names.join(", ")))
        })
    }
}

/// A Kommune's rating of one service version; a new rating of the same version replaces it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rating {
    /// The rating Kommune.
    pub ags: Ags,
    /// The service rated.
    pub service_id: ServiceId,
    /// The version rated; the Kommune must have evaluated or deployed it.
    pub version: semver::Version,
    /// Overall score, 1..=5.
    pub stars: u8,
    /// Scores 1..=5 per Mindestanforderungen area, each at most once; empty if none scored.
    pub criteria: Vec<(Criterion, u8)>,
    /// Free text for the building Land; empty if none. At most [`MAX_COMMENT_CHARS`].
    pub comment: String,
    /// When it was submitted, ms since the Unix epoch.
    pub at_ms: i64,
    /// Whether the release meets each Mindestanforderungen area (they are MUSS/SOLL/KANN
    /// requirements, so a yes or no says more than a score), each area at most once.
    pub met: Vec<(Criterion, bool)>,
}

impl Rating {
    /// Checks the ranges: stars and criteria 1..=5, each criterion once, bounded comment.
    pub fn validate(&self) -> Result<()> {
        if !(1..=5).contains(&self.stars) {
            return Err(Error::invalid("stars", format!("{} is outside 1..5", self.stars)));
        }
        let mut seen = Vec::new();
        for (c, score) in &self.criteria {
            if !(1..=5).contains(score) {
                return Err(Error::invalid("criterion score", format!("{} for {} is outside 1..5", score, c.label())));
            }
            if seen.contains(c) {
                return Err(Error::invalid("criteria", format!("{} is scored twice", c.label())));
            }
            seen.push(*c);
        }
        let mut seen = Vec::new();
        for (c, _) in &self.met {
            if seen.contains(c) {
                return Err(Error::invalid("met", format!("{} is marked twice", c.label())));
            }
            seen.push(*c);
        }
        crate::text::check("comment", &self.comment, MAX_COMMENT_CHARS, crate::text::Lines::Multi)
    }
}

/// A rating as a Kommune submits it, before its ranges are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRating {
    /// The service.
    pub service_id: ServiceId,
    /// The version rated.
    pub version: semver::Version,
    /// 1..=5.
    pub stars: u32,
    /// Scores 1..=5 per Mindestanforderungen area, each area at most once.
    pub criteria: Vec<(Criterion, u32)>,
    /// Free text for the building Land.
    pub comment: String,
    /// Met or not, per Mindestanforderungen area, each area at most once.
    pub met: Vec<(Criterion, bool)>,
}

impl NewRating {
    /// The rating of `ags` at `at_ms`, if every value is in range.
    pub fn into_rating(self, ags: Ags, at_ms: i64) -> Result<Rating> {
        let to_u8 = |v: u32, field: &'static str| {
            u8::try_from(v).map_err(|_| Error::invalid(field, format!("{v} is outside 1..5")))
        };
        let rating = Rating {
            ags,
            service_id: self.service_id,
            version: self.version,
            stars: to_u8(self.stars, "stars")?,
            criteria: self
                .criteria
                .into_iter()
                .map(|(c, s)| Ok((c, to_u8(s, "criterion score")?)))
                .collect::<Result<_>>()?,
            comment: self.comment,
            at_ms,
            met: self.met,
        };
        rating.validate()?;
        Ok(rating)
    }
}

/// Aggregate of a set of ratings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RatingAggregate {
    /// Number of ratings aggregated.
    pub count: u32,
    /// Mean of the stars; 0.0 if there are no ratings.
    pub average_stars: f64,
    /// Index 0 is one star.
    pub histogram: [u32; 5],
    /// (criterion, average, count), for criteria that were scored at all.
    pub criteria: Vec<(Criterion, f64, u32)>,
    /// (criterion, ratings saying met, ratings saying not met), for areas marked at all.
    pub met: Vec<(Criterion, u32, u32)>,
}

impl RatingAggregate {
    /// Aggregates `ratings`; an empty input gives the all-zero default.
    pub fn from_ratings<'a>(ratings: impl IntoIterator<Item = &'a Rating>) -> Self {
        let mut agg = RatingAggregate::default();
        let mut star_sum = 0u64;
        let mut crit: [(u64, u32); 8] = [(0, 0); 8];
        let mut met: [(u32, u32); 8] = [(0, 0); 8];
        for r in ratings {
            for (c, yes) in &r.met {
                let i = Criterion::ALL.iter().position(|x| x == c).unwrap_or(0);
                if *yes {
                    met[i].0 += 1;
                } else {
                    met[i].1 += 1;
                }
            }
            agg.count += 1;
            star_sum += u64::from(r.stars);
            if (1..=5).contains(&r.stars) {
                agg.histogram[usize::from(r.stars - 1)] += 1;
            }
            for (c, s) in &r.criteria {
                let i = Criterion::ALL.iter().position(|x| x == c).unwrap_or(0);
                crit[i].0 += u64::from(*s);
                crit[i].1 += 1;
            }
        }
        if agg.count > 0 {
            agg.average_stars = star_sum as f64 / f64::from(agg.count);
        }
        agg.criteria = Criterion::ALL
            .iter()
            .zip(crit)
            .filter(|(_, (_, n))| *n > 0)
            .map(|(c, (sum, n))| (*c, sum as f64 / f64::from(n), n))
            .collect();
        agg.met =
            Criterion::ALL.iter().zip(met).filter(|(_, (y, n))| y + n > 0).map(|(c, (y, n))| (*c, y, n)).collect();
        agg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rating(stars: u8, criteria: Vec<(Criterion, u8)>) -> Rating {
        Rating {
            ags: "05913000".parse().unwrap(),
            service_id: "wohngeld-nrw".parse().unwrap(),
            version: "1.0.0".parse().unwrap(),
            stars,
            criteria,
            comment: String::new(),
            at_ms: 0,
            met: vec![],
        }
    }

    #[test]
    fn out_of_range_values_are_refused() {
        assert!(rating(0, vec![]).validate().is_err());
        assert!(rating(6, vec![]).validate().is_err());
        assert!(rating(3, vec![(Criterion::Payment, 9)]).validate().is_err());
        assert!(rating(3, vec![(Criterion::Payment, 2), (Criterion::Payment, 3)]).validate().is_err());
        let mut long = rating(3, vec![]);
        long.comment = "ä".repeat(MAX_COMMENT_CHARS + 1);
        assert!(long.validate().is_err());
        assert!(rating(5, vec![(Criterion::Design, 4)]).validate().is_ok());
    }

    #[test]
    fn aggregate_averages_stars_and_criteria() {
        let rs =
            [rating(4, vec![(Criterion::Design, 2)]), rating(2, vec![(Criterion::Design, 4), (Criterion::Payment, 5)])];
        let agg = RatingAggregate::from_ratings(&rs);
        assert_eq!(agg.count, 2);
        assert!((agg.average_stars - 3.0).abs() < 1e-9);
        assert_eq!(agg.histogram, [0, 1, 0, 1, 0]);
        assert_eq!(agg.criteria, vec![(Criterion::Design, 3.0, 2), (Criterion::Payment, 5.0, 1)]);
    }

    #[test]
    fn met_is_one_answer_per_area_and_is_counted() {
        let mut r = rating(4, vec![]);
        r.met = vec![(Criterion::Payment, true), (Criterion::Payment, false)];
        assert!(r.validate().unwrap_err().to_string().contains("marked twice"));
        let mut a = rating(4, vec![]);
        a.met = vec![(Criterion::Payment, true), (Criterion::RechtlicheNachnutzung, false)];
        let mut b = rating(2, vec![]);
        b.met = vec![(Criterion::Payment, false)];
        let agg = RatingAggregate::from_ratings([&a, &b]);
        assert_eq!(agg.met, vec![(Criterion::Payment, 1, 1), (Criterion::RechtlicheNachnutzung, 0, 1)]);
    }
}
