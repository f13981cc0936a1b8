//! Who may do what: the one authorization table of EfA Hub.
//!
//! Callers are named by an [`Identity`], which the hub reads from the single `efa://` URI
//! in a client certificate (or an operator token, for the dashboard). Every decision goes
//! through [`authorize`] over an [`Action`]; the gRPC services, the registry (for rules
//! that need stored ownership) and the dashboard all ask it, so a rule is written once.

use crate::error::{echo, Error, Result};
use crate::model::ids::{Ags, KreisCode, LandCode, VerbandCode};

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A Land, e.g. `efa://land/05`: builds and publishes services.
    Land(LandCode),
    /// A Kommune node, e.g. `efa://kommune/05913000`.
    Kommune(Ags),
    /// An operator of the federation, e.g. `efa://operator/bund`.
    Operator(String),
    /// A municipal IT service provider that runs the nodes of several Kommunen, e.g.
    /// `efa://provider/citkomm`. It acts for a Kommune only as far as an operator granted it,
    /// and then under that Kommune's identity (every report names the Kommune).
    Provider(String),
    /// A Kreis, e.g. `efa://kreis/05978` (Unna): runs services it is zuständig for on behalf
    /// of its Gemeinden, and acts for those Gemeinden only (every report names the Gemeinde).
    Kreis(KreisCode),
    /// A Gemeindeverband (Amt, Verbandsgemeinde, Samtgemeinde), named by the first 9 digits
    /// of its Gemeinden's ARS, e.g. `efa://verband/010575747`: acts for its member Gemeinden.
    Verband(VerbandCode),
}

impl Identity {
    /// The `efa://role/key` form carried in certificates.
    pub fn to_uri(&self) -> String {
        format!("efa://{}/{}", self.role(), self.key())
    }

    /// Parses the `efa://role/key` form.
    pub fn parse_uri(uri: &str) -> Result<Self> {
        let bad = |why: String| Error::invalid("identity", why);
        let rest = uri.strip_prefix("efa://").ok_or_else(|| bad(format!("{} is not an efa:// identity", echo(uri))))?;
        let (role, key) = rest.split_once('/').ok_or_else(|| bad(format!("{} has no role/key", echo(uri))))?;
        match role {
            "land" => key.parse().map(Identity::Land),
            "kommune" => key.parse().map(Identity::Kommune),
            "kreis" => key.parse().map(Identity::Kreis),
            "verband" => key.parse().map(Identity::Verband),
            "operator" | "provider" => {
                let ok = !key.is_empty()
                    && key.len() <= 64
                    && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                match (ok, role) {
                    (true, "operator") => Ok(Identity::Operator(key.to_string())),
                    (true, _) => Ok(Identity::Provider(key.to_string())),
                    (false, _) => Err(bad(format!("{role} name {} must be 1..64 of A-Z a-z 0-9 - _", echo(key)))),
                }
            }
            other => Err(bad(format!(
                "unknown role {} (expected land, kommune, kreis, verband, operator or provider)",
                echo(other)
            ))),
        }
    }

    /// `land`, `kommune`, `kreis`, `verband`, `operator` or `provider`.
    pub fn role(&self) -> &'static str {
        match self {
            Identity::Land(_) => "land",
            Identity::Kommune(_) => "kommune",
            Identity::Kreis(_) => "kreis",
            Identity::Verband(_) => "verband",
            Identity::Operator(_) => "operator",
            Identity::Provider(_) => "provider",
        }
    }

    /// The Land code, AGS, Kreis or Verband code, operator or provider name.
    pub fn key(&self) -> String {
        match self {
            Identity::Land(l) => l.to_string(),
            Identity::Kommune(a) => a.to_string(),
            Identity::Kreis(k) => k.to_string(),
            Identity::Verband(v) => v.to_string(),
            Identity::Operator(n) | Identity::Provider(n) => n.clone(),
        }
    }

    /// File name stem for its certificate, e.g. `land-05`.
    pub fn file_stem(&self) -> String {
        format!("{}-{}", self.role(), self.key())
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_uri())
    }
}

/// Every action that needs a decision, with what it concerns.
#[derive(Clone, Copy, Debug)]
pub enum Action<'a> {
    /// Register or update a service; publish or yank a release or sign a snapshot of a
    /// service owned by `owner` (`None` when the service does not exist yet).
    ManageService {
        /// The Land that registered the service, if it exists.
        owner: Option<&'a LandCode>,
    },
    /// Subscribe, report adoption, rate: acting as a Kommune.
    ActAsKommune,
    /// Read the catalog, releases, bundle content and rating aggregates: every
    /// authenticated party.
    ReadCatalog,
    /// Read who adopted a service owned by `owner`.
    ReadAdoption {
        /// The Land that registered the service.
        owner: &'a LandCode,
        /// The Land made adoption of the service visible to every Kommune.
        public: bool,
        /// The Länder that offer (or offered) it to their Kommunen: each reads its own Kommunen.
        offered_by: &'a [LandCode],
    },
    /// Read one Kommune's ledger.
    ReadKommune {
        /// Whose ledger.
        ags: &'a Ags,
    },
    /// Read ratings, comments and rejection reasons of services owned by `owner` (`None`:
    /// of all services).
    ReadFeedback {
        /// Whose services.
        owner: Option<&'a LandCode>,
        /// The Länder that offer (or offered) the service: each reads its own Kommunen's.
        offered_by: &'a [LandCode],
    },
    /// Offer a service built by Land `builder` to the caller's Kommunen (or withdraw the offer).
    OfferService {
        /// The building Land (Umsetzungsland).
        builder: &'a LandCode,
    },
    /// Set or move a release's rollout: the building Land its plan (for every Kommune
    /// without a plan of its own Land), an offering Land its own plan for its Kommunen.
    SteerRollout {
        /// The building Land (Umsetzungsland).
        builder: &'a LandCode,
        /// The caller is a Land with an active offer of the service.
        caller_offers: bool,
    },
    /// Read the subscriptions of a Kommune.
    ReadSubscriptions {
        /// Whose subscriptions.
        ags: &'a Ags,
    },
    /// Read the operator dashboard: every service's adoption, ratings and rejections.
    ReadDashboard,
    /// Read the transparency log (checkpoints, proofs, tiles): every authenticated party,
    /// since the point of the log is that anyone can check it. Its leaves carry adoption
    /// states but reasons and comments only as salted hashes.
    ReadLog,
    /// Erase free text kept beside the log (an erasure request): operators.
    EraseLogText,
    /// Cosign a checkpoint of the log as a witness: a Land or an operator, parties other
    /// than the hub's own.
    Cosign,
    /// Grant an IT service provider the right to act for Kommunen.
    ManageGrants,
    /// Read which Kommunen a provider may act for.
    ReadGrant {
        /// The provider.
        provider: &'a str,
    },
    /// Act for Kommune `ags`; `granted` says whether an operator granted the caller that (a
    /// provider) or the Gemeinde lies in the caller (a Kreis or Gemeindeverband).
    ActFor {
        /// The Kommune acted for.
        ags: &'a Ags,
        /// Whether the caller holds a grant for it or contains it.
        granted: bool,
    },
}

/// How much of what it asked for a caller may read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything.
    All,
    /// Only what concerns the Kommunen of this Land: an offering Land reads about its own
    /// Kommunen, not about those of the building Land or of other offering Länder.
    Land(LandCode),
}

impl Scope {
    /// Whether a row about Kommune `ags` is in scope.
    pub fn admits(&self, ags: &Ags) -> bool {
        match self {
            Scope::All => true,
            Scope::Land(l) => &ags.land() == l,
        }
    }
}

fn deny<T>(msg: String) -> Result<T> {
    Err(Error::PermissionDenied(msg))
}

/// The authorization table. Each refusal says who tried what.
pub fn authorize(who: &Identity, action: Action<'_>) -> Result<()> {
    scope(who, action).map(drop)
}

/// The authorization table, with the scope of what is allowed (see [`Scope`]).
pub fn scope(who: &Identity, action: Action<'_>) -> Result<Scope> {
    match (action, who) {
        (Action::ReadAdoption { offered_by, .. }, Identity::Land(land)) if offered_by.contains(land) => {
            Ok(Scope::Land(land.clone()))
        }
        (Action::ReadFeedback { owner, offered_by }, Identity::Land(land))
            if owner != Some(land) && offered_by.contains(land) =>
        {
            Ok(Scope::Land(land.clone()))
        }
        (action, who) => table(who, action).map(|()| Scope::All),
    }
}

fn table(who: &Identity, action: Action<'_>) -> Result<()> {
    match (action, who) {
        (Action::ReadCatalog, _) => Ok(()),
        (Action::ReadLog, _) => Ok(()),
        (Action::EraseLogText, Identity::Operator(_)) => Ok(()),
        (Action::EraseLogText, other) => {
            deny(format!("only an operator erases text kept beside the log; caller is {other}"))
        }
        (Action::Cosign, Identity::Land(_) | Identity::Operator(_)) => Ok(()),
        (Action::Cosign, other) => deny(format!("only a Land or an operator may witness the log; caller is {other}")),
        (Action::ManageService { owner }, Identity::Land(land)) => match owner {
            Some(owner) if owner != land => deny(format!("Land {land} cannot manage a service of Land {owner}")),
            _ => Ok(()),
        },
        (Action::ManageService { .. }, other) => {
            deny(format!("only a Land may register, publish or yank services; caller is {other}"))
        }
        (Action::ActAsKommune, Identity::Kommune(_)) => Ok(()),
        (Action::ActAsKommune, other) => {
            deny(format!("only a Kommune node may subscribe, report adoption or rate; caller is {other}"))
        }
        (Action::ReadAdoption { .. }, Identity::Operator(_)) => Ok(()),
        (Action::ReadAdoption { owner, .. }, Identity::Land(land)) if land == owner => Ok(()),
        (Action::ReadAdoption { public: true, .. }, Identity::Kommune(_)) => Ok(()),
        (Action::ReadAdoption { owner, .. }, other) => deny(format!(
            "adoption details of this service of Land {owner} are visible to operators, that Land and, for their own \
             Kommunen, the Länder offering it (the Land has not made them public); caller is {other}"
        )),
        (Action::ReadKommune { .. }, Identity::Operator(_)) => Ok(()),
        (Action::ReadKommune { ags }, Identity::Kommune(me)) if me == ags => Ok(()),
        (Action::ReadKommune { ags }, other) => deny(format!(
            "the ledger of Kommune {ags} is visible to operators and that Kommune only; caller is {other}"
        )),
        (Action::ReadFeedback { .. }, Identity::Operator(_)) => Ok(()),
        (Action::ReadFeedback { owner: Some(owner), .. }, Identity::Land(land)) if land == owner => Ok(()),
        (Action::ReadFeedback { owner, .. }, other) => deny(format!(
            "feedback on {} is visible to operators, the building Land and, for their own Kommunen, the Länder offering it; caller is {other}",
            owner.map(|o| format!("services of Land {o}")).unwrap_or_else(|| "all services".into()),
        )),
        (Action::ReadSubscriptions { .. }, Identity::Operator(_)) => Ok(()),
        (Action::ReadSubscriptions { ags }, Identity::Kommune(me)) if me == ags => Ok(()),
        (Action::ReadSubscriptions { ags }, other) => deny(format!(
            "subscriptions of Kommune {ags} are visible to operators and that Kommune only; caller is {other}"
        )),
        (Action::ReadDashboard, Identity::Operator(_)) => Ok(()),
        (Action::ReadDashboard, other) => deny(format!("the dashboard is for operators only; caller is {other}")),
        (Action::ManageGrants, Identity::Operator(_)) => Ok(()),
        (Action::ManageGrants, other) => {
            deny(format!("only an operator grants a provider the right to act for Kommunen; caller is {other}"))
        }
        (Action::ReadGrant { .. }, Identity::Operator(_)) => Ok(()),
        (Action::ReadGrant { provider }, Identity::Provider(me)) if me == provider => Ok(()),
        (Action::ReadGrant { provider }, other) => deny(format!(
            "the grant of provider {provider} is visible to operators and that provider; caller is {other}"
        )),
        (Action::ActFor { ags, .. }, Identity::Kommune(me)) if me == ags => Ok(()),
        (Action::ActFor { granted: true, .. }, Identity::Provider(_)) => Ok(()),
        (Action::ActFor { ags, .. }, Identity::Provider(p)) => deny(format!(
            "provider {p} is not granted to act for Kommune {ags}; an operator grants it (efa grants set)"
        )),
        (Action::ActFor { granted: true, .. }, Identity::Kreis(_) | Identity::Verband(_)) => Ok(()),
        (Action::ActFor { ags, .. }, Identity::Kreis(k)) => {
            deny(format!("Kreis {k} acts for its own Gemeinden only; Gemeinde {ags} lies in Kreis {}", ags.kreis()))
        }
        (Action::ActFor { ags, .. }, Identity::Verband(v)) => {
            deny(format!("Gemeindeverband {v} acts for its member Gemeinden only; Gemeinde {ags} is not one of them"))
        }
        (Action::ActFor { ags, .. }, other) => {
            deny(format!("only Kommune {ags} or a provider it granted may act for it; caller is {other}"))
        }
        (Action::OfferService { .. }, Identity::Land(land)) if land.is_bund() => {
            deny("the Bund has no Kommunen to offer services to; the Länder offer its services to theirs".into())
        }
        (Action::OfferService { builder }, Identity::Land(land)) if builder == land => deny(format!(
            "Land {land} builds this service; its own Kommunen see it without an offer (offers are for Nachnutzung by other Länder)"
        )),
        (Action::OfferService { .. }, Identity::Land(_)) => Ok(()),
        (Action::OfferService { .. }, other) => {
            deny(format!("only a Land offers services to its Kommunen; caller is {other}"))
        }
        (Action::SteerRollout { builder, .. }, Identity::Land(land)) if builder == land => Ok(()),
        (Action::SteerRollout { caller_offers: true, .. }, Identity::Land(_)) => Ok(()),
        (Action::SteerRollout { builder, .. }, Identity::Land(land)) => deny(format!(
            "Land {land} neither builds this service (Land {builder} does) nor offers it to its Kommunen"
        )),
        (Action::SteerRollout { .. }, other) => {
            deny(format!("only the building Land or an offering Land steers a rollout; caller is {other}"))
        }
    }
}

/// Authorizes a Land action on a service owned by `owner` and returns the acting Land.
pub fn acting_land(who: &Identity, owner: Option<&LandCode>) -> Result<LandCode> {
    authorize(who, Action::ManageService { owner })?;
    match who {
        Identity::Land(l) => Ok(l.clone()),
        other => deny(format!("only a Land may manage services; caller is {other}")),
    }
}

/// Authorizes an action a Kommune takes for itself and returns its AGS.
pub fn acting_kommune(who: &Identity) -> Result<Ags> {
    authorize(who, Action::ActAsKommune)?;
    match who {
        Identity::Kommune(a) => Ok(a.clone()),
        other => deny(format!("only a Kommune node may do this; caller is {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Classify, ErrorKind};

    fn land(c: &str) -> Identity {
        Identity::Land(c.parse().unwrap())
    }
    fn kommune(a: &str) -> Identity {
        Identity::Kommune(a.parse().unwrap())
    }
    fn operator() -> Identity {
        Identity::Operator("bund".into())
    }

    #[test]
    fn uris_round_trip_and_reject_garbage() {
        for id in [land("05"), kommune("05913000"), operator()] {
            assert_eq!(Identity::parse_uri(&id.to_uri()).unwrap(), id);
        }
        for bad in ["efa://land/5", "efa://kommune/0591300x", "efa://admin/x", "https://land/05", "efa://operator/a b"]
        {
            assert!(Identity::parse_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_land_manages_only_its_own_services() {
        let nrw: LandCode = "05".parse().unwrap();
        let by: LandCode = "09".parse().unwrap();
        assert!(authorize(&land("05"), Action::ManageService { owner: Some(&nrw) }).is_ok());
        assert!(authorize(&land("05"), Action::ManageService { owner: None }).is_ok());
        let err = authorize(&land("05"), Action::ManageService { owner: Some(&by) }).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
        assert!(authorize(&kommune("05913000"), Action::ManageService { owner: None }).is_err());
        assert_eq!(acting_land(&land("05"), Some(&nrw)).unwrap(), nrw);
    }

    #[test]
    fn only_kommunen_act_as_kommune() {
        assert!(authorize(&kommune("05913000"), Action::ActAsKommune).is_ok());
        assert!(authorize(&land("05"), Action::ActAsKommune).is_err());
        assert!(authorize(&operator(), Action::ActAsKommune).is_err());
        assert_eq!(acting_kommune(&kommune("05913000")).unwrap().as_str(), "05913000");
    }

    #[test]
    fn kommunen_read_only_their_own_ledger_and_no_foreign_adoption() {
        let dortmund: Ags = "05913000".parse().unwrap();
        let nrw: LandCode = "05".parse().unwrap();
        assert!(authorize(&kommune("05913000"), Action::ReadKommune { ags: &dortmund }).is_ok());
        assert!(authorize(&kommune("05113000"), Action::ReadKommune { ags: &dortmund }).is_err());
        assert!(authorize(&kommune("05913000"), Action::ReadAdoption { owner: &nrw, public: false, offered_by: &[] })
            .is_err());
        assert!(authorize(&land("05"), Action::ReadAdoption { owner: &nrw, public: false, offered_by: &[] }).is_ok());
        assert!(authorize(&land("09"), Action::ReadAdoption { owner: &nrw, public: false, offered_by: &[] }).is_err());
        assert!(authorize(&kommune("05913000"), Action::ReadAdoption { owner: &nrw, public: true, offered_by: &[] })
            .is_ok());
        assert!(authorize(&land("09"), Action::ReadAdoption { owner: &nrw, public: true, offered_by: &[] }).is_err());
    }

    #[test]
    fn feedback_is_for_operators_and_the_owning_land() {
        let nrw: LandCode = "05".parse().unwrap();
        assert!(authorize(&operator(), Action::ReadFeedback { owner: None, offered_by: &[] }).is_ok());
        assert!(authorize(&land("05"), Action::ReadFeedback { owner: Some(&nrw), offered_by: &[] }).is_ok());
        assert!(authorize(&land("05"), Action::ReadFeedback { owner: None, offered_by: &[] }).is_err());
        assert!(authorize(&land("09"), Action::ReadFeedback { owner: Some(&nrw), offered_by: &[] }).is_err());
        assert!(authorize(&kommune("05913000"), Action::ReadFeedback { owner: Some(&nrw), offered_by: &[] }).is_err());
    }

    #[test]
    fn an_offering_land_reads_about_its_own_kommunen_only() {
        let (hb, nrw): (LandCode, LandCode) = ("04".parse().unwrap(), "05".parse().unwrap());
        let offered = [nrw.clone()];
        let read = Action::ReadAdoption { owner: &hb, public: false, offered_by: &offered };
        assert_eq!(scope(&land("04"), read).unwrap(), Scope::All);
        assert_eq!(scope(&land("05"), read).unwrap(), Scope::Land(nrw.clone()));
        assert_eq!(scope(&operator(), read).unwrap(), Scope::All);
        assert!(scope(&land("09"), read).is_err(), "a Land that does not offer it");
        let fb = Action::ReadFeedback { owner: Some(&hb), offered_by: &offered };
        assert_eq!(scope(&land("05"), fb).unwrap(), Scope::Land(nrw.clone()));
        assert!(scope(&land("09"), fb).is_err());
        let dortmund: Ags = "05913000".parse().unwrap();
        let bremen: Ags = "04011000".parse().unwrap();
        assert!(Scope::Land(nrw).admits(&dortmund) && !Scope::Land("05".parse().unwrap()).admits(&bremen));
        assert!(Scope::All.admits(&bremen));
    }

    #[test]
    fn a_land_offers_what_others_built() {
        let hb: LandCode = "04".parse().unwrap();
        assert!(authorize(&land("05"), Action::OfferService { builder: &hb }).is_ok());
        // Rollouts: the builder, and a Land that offers the service (its own plan).
        let steer = |offers| Action::SteerRollout { builder: &hb, caller_offers: offers };
        assert!(authorize(&land("04"), steer(false)).is_ok());
        assert!(authorize(&land("05"), steer(true)).is_ok());
        assert!(authorize(&land("05"), steer(false)).unwrap_err().to_string().contains("nor offers it"));
        assert!(authorize(&kommune("05913000"), steer(true)).is_err());
        assert!(authorize(&operator(), steer(true)).is_err());
        let own = authorize(&land("04"), Action::OfferService { builder: &hb }).unwrap_err().to_string();
        assert!(own.contains("without an offer"), "{own}");
        assert!(authorize(&kommune("05913000"), Action::OfferService { builder: &hb }).is_err());
        assert!(authorize(&operator(), Action::OfferService { builder: &hb }).is_err());
        let err = authorize(&land("00"), Action::OfferService { builder: &hb }).unwrap_err().to_string();
        assert!(err.contains("Bund has no Kommunen"), "{err}");
    }

    #[test]
    fn the_dashboard_is_for_operators() {
        assert!(authorize(&operator(), Action::ReadDashboard).is_ok());
        assert!(authorize(&land("05"), Action::ReadDashboard).is_err());
        assert!(authorize(&kommune("05913000"), Action::ReadDashboard).is_err());
    }

    #[test]
    fn a_kreis_or_verband_acts_for_its_own_gemeinden_only() {
        let unna = Identity::parse_uri("efa://kreis/05978").unwrap();
        let amt = Identity::parse_uri("efa://verband/010575747").unwrap();
        assert_eq!(Identity::parse_uri(&unna.to_uri()).unwrap(), unna);
        assert!(Identity::parse_uri("efa://kreis/0597").is_err() && Identity::parse_uri("efa://verband/0105").is_err());
        let luenen: Ags = "05978024".parse().unwrap();
        let dortmund: Ags = "05913000".parse().unwrap();
        assert!(authorize(&unna, Action::ActFor { ags: &luenen, granted: true }).is_ok());
        let err = authorize(&unna, Action::ActFor { ags: &dortmund, granted: false }).unwrap_err().to_string();
        assert!(err.contains("lies in Kreis 05913"), "{err}");
        assert!(authorize(&amt, Action::ActFor { ags: &luenen, granted: false }).is_err());
        assert!(authorize(&unna, Action::ActAsKommune).is_err(), "as itself a Kreis is no Kommune");
        assert!(authorize(&unna, Action::ManageService { owner: None }).is_err());
    }

    #[test]
    fn a_provider_acts_for_granted_kommunen_only() {
        let p = Identity::parse_uri("efa://provider/citkomm").unwrap();
        assert_eq!(p, Identity::Provider("citkomm".into()));
        let dortmund: Ags = "05913000".parse().unwrap();
        assert!(authorize(&p, Action::ActFor { ags: &dortmund, granted: true }).is_ok());
        let err = authorize(&p, Action::ActFor { ags: &dortmund, granted: false }).unwrap_err().to_string();
        assert!(err.contains("not granted to act for Kommune 05913000"), "{err}");
        assert!(authorize(&kommune("05913000"), Action::ActFor { ags: &dortmund, granted: false }).is_ok());
        assert!(authorize(&kommune("05113000"), Action::ActFor { ags: &dortmund, granted: false }).is_err());
        assert!(authorize(&p, Action::ActAsKommune).is_err(), "not as itself");
        assert!(authorize(&p, Action::ManageGrants).is_err());
        assert!(authorize(&operator(), Action::ManageGrants).is_ok());
        assert!(authorize(&p, Action::ReadGrant { provider: "citkomm" }).is_ok());
        assert!(authorize(&p, Action::ReadGrant { provider: "other" }).is_err());
    }
}
