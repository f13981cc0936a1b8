//! The one mapping between wire messages ([`crate::v1`]) and domain types, shared by hub,
//! node and CLI.
//!
//! Wire → domain is `TryFrom` (every value from the wire is untrusted and parsed into a
//! validated domain type); domain → wire is `From`. Enums travel as `i32`, so an unset
//! (`*_UNSPECIFIED`) or unknown value is refused with [`efa_domain::Error::Invalid`] (gRPC
//! `INVALID_ARGUMENT`), never defaulted. Empty strings mean "not given" where the `.proto`
//! documents it.

mod catalog;
mod enums;
mod ledger;
mod log;
mod reports;
mod rollout;

pub use catalog::{grant, kommune, offer_info};
pub use enums::WireEnum;
pub use ledger::{entry, rating, record, stream_event, target};
pub use log::{log_leaf, BesideText};
pub use reports::{aggregate, rating_summary};
pub use rollout::{rollout_state, rollout_status};

use efa_domain::error::Result;

/// Parses a wire string into a validated domain type.
pub fn parse<T>(s: &str) -> Result<T>
where
    T: std::str::FromStr<Err = efa_domain::Error>,
{
    s.parse()
}

/// Parses a wire string that may be empty ("not given").
pub fn parse_opt<T>(s: &str) -> Result<Option<T>>
where
    T: std::str::FromStr<Err = efa_domain::Error>,
{
    if s.trim().is_empty() {
        Ok(None)
    } else {
        s.parse().map(Some)
    }
}
