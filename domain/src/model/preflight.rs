//! Pre-flight results: whether a Kommune's parameters fit a release before it is deployed,
//! as its node reported them. Publishers see per release who is ready and who is blocked,
//! and why, before anything happens.

use crate::error::{Error, Result};
use crate::model::ids::{Ags, ServiceId};
use crate::text::{self, Lines};
use serde::{Deserialize, Serialize};

/// Most problems or schema changes one report may list.
pub const MAX_LINES: usize = 64;
/// Longest problem or schema change, in characters.
pub const MAX_LINE_CHARS: usize = 500;

/// A pre-flight report as a node sends it, before its bounds are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPreflight {
    /// The service.
    pub service_id: ServiceId,
    /// The release checked.
    pub version: semver::Version,
    /// Each missing or invalid parameter; none means ready.
    pub problems: Vec<String>,
    /// How the schema differs from the running version's.
    pub changes: Vec<String>,
}

impl NewPreflight {
    /// Checks the bounds: at most [`MAX_LINES`] lines of at most [`MAX_LINE_CHARS`] each,
    /// one line each, no control characters.
    pub fn validate(&self) -> Result<()> {
        for (field, lines) in [("problems", &self.problems), ("schema changes", &self.changes)] {
            if lines.len() > MAX_LINES {
                return Err(Error::invalid(
                    field,
                    format!("{} lines, more than the limit of {MAX_LINES}", lines.len()),
                ));
            }
            for l in lines {
                text::check(
                    if field == "problems" { "problem" } else { "schema change" },
                    l,
                    MAX_LINE_CHARS,
                    Lines::Single,
                )?;
            }
        }
        Ok(())
    }
}

/// The latest pre-flight result of one Kommune for one release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflightRecord {
    /// The Kommune.
    pub ags: Ags,
    /// The service.
    pub service_id: ServiceId,
    /// The release checked.
    pub version: semver::Version,
    /// Each missing or invalid parameter; none means ready.
    pub problems: Vec<String>,
    /// How the schema differs from the version the Kommune ran.
    pub changes: Vec<String>,
    /// When the hub accepted it, ms since the Unix epoch.
    pub at_ms: i64,
}

impl PreflightRecord {
    /// No problems: the release can be deployed with the Kommune's parameters as they are.
    pub fn is_ready(&self) -> bool {
        self.problems.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_bounded() {
        let ok = NewPreflight {
            service_id: "wohngeld-nrw".parse().unwrap(),
            version: "1.1.0".parse().unwrap(),
            problems: vec!["missing required parameter 'office_email' (no description)".into()],
            changes: vec!["new required parameter 'office_email'".into()],
        };
        assert!(ok.validate().is_ok());
        let many = NewPreflight { problems: vec!["x".into(); 65], ..ok.clone() };
        assert!(many.validate().unwrap_err().to_string().contains("65 lines"));
        let long = NewPreflight { changes: vec!["x".repeat(501)], ..ok.clone() };
        assert!(long.validate().is_err());
        let multi = NewPreflight { problems: vec!["a\nb".into()], ..ok };
        assert!(multi.validate().is_err());
    }
}
