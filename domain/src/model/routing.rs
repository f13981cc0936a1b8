//! FIT-Connect routing: which destination receives a Kommune's applications for a service.
//! A node declares the destinations it is configured with (its `fit_connect_destination`
//! parameters) for the version it runs; the hub answers "Leistungsschlüssel + ARS →
//! destination" from them, the table a FIT-Connect routing lookup answers from.

use crate::error::{echo, Error, Result};
use crate::model::ids::{Ags, ServiceId};
use serde::{Deserialize, Serialize};

/// Most destinations one service may declare for one Kommune.
pub const MAX_DESTINATIONS: usize = 16;

/// One destination: the parameter that holds it and its ID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// The parameter name, e.g. `fit_connect_destination`.
    pub parameter: String,
    /// The FIT-Connect destination ID, a UUID in lower case.
    pub destination: String,
}

/// What a node declares for a service it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingDeclaration {
    /// The service.
    pub service_id: ServiceId,
    /// The version it runs.
    pub version: semver::Version,
    /// Its destinations; empty withdraws them.
    pub destinations: Vec<Destination>,
}

impl RoutingDeclaration {
    /// Checks the bounds and that every destination is a UUID.
    pub fn validate(&self) -> Result<()> {
        if self.destinations.len() > MAX_DESTINATIONS {
            return Err(Error::invalid(
                "destinations",
                format!("{} given, more than the limit of {MAX_DESTINATIONS}", self.destinations.len()),
            ));
        }
        for d in &self.destinations {
            let name_ok = !d.parameter.is_empty()
                && d.parameter.len() <= 64
                && d.parameter.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !name_ok {
                return Err(Error::invalid(
                    "destination parameter",
                    format!("{} is not a parameter name", echo(&d.parameter)),
                ));
            }
            if !crate::params::is_uuid(&d.destination) || d.destination.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(Error::invalid(
                    "destination",
                    format!("{} is not a FIT-Connect destination ID (a lower-case UUID)", echo(&d.destination)),
                ));
            }
        }
        Ok(())
    }
}

/// A Kommune's declared destinations for a service, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingRecord {
    /// The Kommune.
    pub ags: Ags,
    /// The service.
    pub service_id: ServiceId,
    /// The version it ran when it declared them.
    pub version: semver::Version,
    /// Its destinations.
    pub destinations: Vec<Destination>,
    /// When the hub accepted them, ms since the Unix epoch.
    pub at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_lower_case_uuids() {
        let d = |dest: &str| RoutingDeclaration {
            service_id: "wohngeld-nrw".parse().unwrap(),
            version: "1.0.0".parse().unwrap(),
            destinations: vec![Destination { parameter: "fit_connect_destination".into(), destination: dest.into() }],
        };
        assert!(d("7b0b3d6e-1f0a-4c2e-9a4b-2d1f0e9c8a7b").validate().is_ok());
        assert!(d("7B0B3D6E-1F0A-4C2E-9A4B-2D1F0E9C8A7B").validate().is_err());
        assert!(d("dest-05913000").validate().unwrap_err().to_string().contains("not a FIT-Connect destination"));
    }
}
