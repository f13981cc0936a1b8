//! Which Kommunen a municipal IT service provider may act for, as an operator granted it.

use crate::model::ids::Ags;
use serde::{Deserialize, Serialize};

/// Most Kommunen one grant may list.
pub const MAX_KOMMUNEN: usize = 2000;

/// A provider's grant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderGrant {
    /// The Kommunen it may act for, sorted, each once.
    pub kommunen: Vec<Ags>,
    /// When an operator last changed it, ms since the Unix epoch (0: never).
    pub updated_at_ms: i64,
}
