//! Enums: one table per enum, both directions.

use crate::v1 as pb;
use efa_domain::error::{Error, Result};
use efa_domain::model::adoption::AdoptionState;
use efa_domain::model::rating::Criterion;
use efa_domain::model::release::UpdatePolicy;
use efa_domain::params::ParameterKind;

/// A domain enum that travels as a protobuf enum (an `i32` on the wire).
pub trait WireEnum: Sized + Copy {
    /// Parses the wire value; unset and unknown values are refused.
    fn from_wire(value: i32) -> Result<Self>;
    /// The wire value.
    fn to_wire(self) -> i32;
}

macro_rules! wire_enum {
    ($domain:ty, $wire:ty, $field:literal, $choices:literal, { $($d:path => $w:path),+ $(,)? }) => {
        impl WireEnum for $domain {
            fn from_wire(value: i32) -> Result<Self> {
                match <$wire>::try_from(value) {
                    $(Ok($w) => Ok($d),)+
                    Ok(_) => Err(Error::invalid($field, concat!("must be set to one of ", $choices))),
                    Err(_) => Err(Error::invalid(
                        $field,
                        format!("{value} is not a known value (one of {}); is the client older or newer than the hub?", $choices),
                    )),
                }
            }
            fn to_wire(self) -> i32 {
                let w: $wire = match self { $($d => $w,)+ };
                w as i32
            }
        }
    };
}

wire_enum!(UpdatePolicy, pb::UpdatePolicy, "policy", "AUTO, PATCH_ONLY, MANUAL", {
    UpdatePolicy::Auto => pb::UpdatePolicy::Auto,
    UpdatePolicy::PatchOnly => pb::UpdatePolicy::PatchOnly,
    UpdatePolicy::Manual => pb::UpdatePolicy::Manual,
});

wire_enum!(AdoptionState, pb::AdoptionState, "adoption state",
    "EVALUATING, DEPLOYED, FAILED, ROLLED_BACK, REJECTED, RETIRED", {
    AdoptionState::Evaluating => pb::AdoptionState::Evaluating,
    AdoptionState::Deployed => pb::AdoptionState::Deployed,
    AdoptionState::Failed => pb::AdoptionState::Failed,
    AdoptionState::RolledBack => pb::AdoptionState::RolledBack,
    AdoptionState::Rejected => pb::AdoptionState::Rejected,
    AdoptionState::Retired => pb::AdoptionState::Retired,
});

wire_enum!(Criterion, pb::Criterion, "criterion",
    "the eight EfA-Mindestanforderungen areas DESIGN .. ORGANISATION", {
    Criterion::Design => pb::Criterion::Design,
    Criterion::Fachlogik => pb::Criterion::Fachlogik,
    Criterion::Nutzerkonto => pb::Criterion::Nutzerkonto,
    Criterion::Payment => pb::Criterion::Payment,
    Criterion::Datenaustauschstandard => pb::Criterion::Datenaustauschstandard,
    Criterion::RoutingTransport => pb::Criterion::RoutingTransport,
    Criterion::RechtlicheNachnutzung => pb::Criterion::RechtlicheNachnutzung,
    Criterion::Organisation => pb::Criterion::Organisation,
});

wire_enum!(ParameterKind, pb::ParameterKind, "parameter kind",
    "TEXT, URL, EMAIL, AMOUNT_CENTS, POSTCODES, BOOLEAN, INTEGER, FIT_CONNECT_DESTINATION, PHONE", {
    ParameterKind::Text => pb::ParameterKind::Text,
    ParameterKind::Url => pb::ParameterKind::Url,
    ParameterKind::Email => pb::ParameterKind::Email,
    ParameterKind::AmountCents => pb::ParameterKind::AmountCents,
    ParameterKind::Postcodes => pb::ParameterKind::Postcodes,
    ParameterKind::Boolean => pb::ParameterKind::Boolean,
    ParameterKind::Integer => pb::ParameterKind::Integer,
    ParameterKind::FitConnectDestination => pb::ParameterKind::FitConnectDestination,
    ParameterKind::Phone => pb::ParameterKind::Phone,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_and_unset_or_unknown_is_refused() {
        for p in UpdatePolicy::ALL {
            assert_eq!(UpdatePolicy::from_wire(p.to_wire()).unwrap(), p);
        }
        for c in Criterion::ALL {
            assert_eq!(Criterion::from_wire(c.to_wire()).unwrap(), c);
        }
        for k in ParameterKind::ALL {
            assert_eq!(ParameterKind::from_wire(k.to_wire()).unwrap(), k);
        }
        let unset = UpdatePolicy::from_wire(0).unwrap_err().to_string();
        assert!(unset.contains("must be set"), "{unset}");
        let unknown = ParameterKind::from_wire(99).unwrap_err().to_string();
        assert!(unknown.contains("99 is not a known value"), "{unknown}");
    }
}
