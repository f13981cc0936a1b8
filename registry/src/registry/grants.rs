//! Grants of municipal IT service providers: an operator says for which Kommunen a
//! provider may act; the hub then lets the provider's nodes act as those Kommunen.

use super::Registry;
use crate::error::{Error, Result};
use efa_domain::authz::{authorize, Action, Identity};
use efa_domain::model::grant::{ProviderGrant, MAX_KOMMUNEN};
use efa_domain::model::ids::Ags;

impl Registry {
    /// Replaces the Kommunen `provider` may act for (an operator only). Each must be an
    /// active Gemeinde of the register.
    pub fn set_grant(&self, who: &Identity, provider: &str, mut kommunen: Vec<Ags>) -> Result<ProviderGrant> {
        authorize(who, Action::ManageGrants)?;
        Identity::parse_uri(&format!("efa://provider/{provider}"))?;
        if kommunen.len() > MAX_KOMMUNEN {
            return Err(Error::invalid(
                "kommunen",
                format!("{} listed, more than the limit of {MAX_KOMMUNEN}", kommunen.len()),
            ));
        }
        for ags in &kommunen {
            self.check_identity(&Identity::Kommune(ags.clone()))?;
        }
        kommunen.sort();
        kommunen.dedup();
        let grant = ProviderGrant { kommunen, updated_at_ms: efa_domain::now_ms() };
        let (name, g) = (provider.to_string(), grant.clone());
        self.commits.write(move |s| s.put_grant(&name, &g))?;
        Ok(grant)
    }

    /// The Kommunen `provider` may act for (operators and the provider itself).
    pub fn grant(&self, who: &Identity, provider: &str) -> Result<ProviderGrant> {
        authorize(who, Action::ReadGrant { provider })?;
        self.store.grant(provider)
    }

    /// The identity `who` acts under for Kommune `ags`: the Kommune itself, or a provider
    /// an operator granted to act for it. Refused otherwise (PERMISSION_DENIED).
    pub fn act_for(&self, who: &Identity, ags: &Ags) -> Result<Identity> {
        let granted = match who {
            Identity::Provider(p) => self.store.grant(p)?.kommunen.binary_search(ags).is_ok(),
            // Zuständigkeit follows the map: a Kreis acts for the Gemeinden in it, a
            // Gemeindeverband for its members.
            Identity::Kreis(k) => &ags.kreis() == k,
            Identity::Verband(v) => {
                self.register()?.kommunen.get(ags).is_some_and(|g| g.ars.as_str().starts_with(v.as_str()))
            }
            _ => false,
        };
        authorize(who, Action::ActFor { ags, granted })?;
        let acting = Identity::Kommune(ags.clone());
        self.check_identity(&acting)?;
        Ok(acting)
    }
}
