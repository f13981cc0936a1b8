//! Who is calling, and what they may do: the only place the hub makes identity and
//! authorization decisions.
//!
//! Identity comes from the client certificate presented in the mTLS handshake. Its
//! subject alternative names must contain exactly one URI of the form
//! - `efa://land/<2-digit Land code>` — a Land publisher, e.g. `efa://land/05`;
//! - `efa://kommune/<8-digit AGS>` — a Kommune node, e.g. `efa://kommune/05913000`;
//! - `efa://operator/<name>` — an operator, e.g. `efa://operator/bund`.
//!
//! With `--insecure-dev` (plaintext, never in production) the identity is read from the
//! `x-efa-dev-identity` metadata header instead, in the same URI form.

use efa_registry::model::ids::{Ags, LandCode};
use tonic::{Request, Status};

const DEV_HEADER: &str = "x-efa-dev-identity";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    Land(LandCode),
    Kommune(Ags),
    Operator(String),
}

impl Identity {
    pub fn to_uri(&self) -> String {
        match self {
            Identity::Land(l) => format!("efa://land/{l}"),
            Identity::Kommune(a) => format!("efa://kommune/{a}"),
            Identity::Operator(n) => format!("efa://operator/{n}"),
        }
    }

    pub fn parse_uri(uri: &str) -> Result<Self, String> {
        let rest = uri.strip_prefix("efa://").ok_or_else(|| format!("{uri:?} is not an efa:// identity"))?;
        let (role, key) = rest.split_once('/').ok_or_else(|| format!("{uri:?} has no role/key"))?;
        match role {
            "land" => key.parse().map(Identity::Land).map_err(|e| e.to_string()),
            "kommune" => key.parse().map(Identity::Kommune).map_err(|e| e.to_string()),
            "operator" => {
                let ok = !key.is_empty()
                    && key.len() <= 64
                    && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if ok {
                    Ok(Identity::Operator(key.to_string()))
                } else {
                    Err(format!("operator name {key:?} must be 1..64 of A-Z a-z 0-9 - _"))
                }
            }
            other => Err(format!("unknown role {other:?} (expected land, kommune or operator)")),
        }
    }

    pub fn role(&self) -> &'static str {
        match self {
            Identity::Land(_) => "land",
            Identity::Kommune(_) => "kommune",
            Identity::Operator(_) => "operator",
        }
    }

    pub fn key(&self) -> String {
        match self {
            Identity::Land(l) => l.to_string(),
            Identity::Kommune(a) => a.to_string(),
            Identity::Operator(n) => n.clone(),
        }
    }

    /// File name stem for its certificate, e.g. `land-05`.
    pub fn file_stem(&self) -> String {
        format!("{}-{}", self.role(), self.key())
    }
}

/// Extracts the caller's identity from a request.
#[derive(Clone, Debug)]
pub struct Authenticator {
    insecure_dev: bool,
}

impl Authenticator {
    pub fn new(insecure_dev: bool) -> Self {
        Authenticator { insecure_dev }
    }

    pub fn identify<T>(&self, req: &Request<T>) -> Result<Identity, Status> {
        if self.insecure_dev {
            let header =
                req.metadata().get(DEV_HEADER).and_then(|v| v.to_str().ok()).ok_or_else(|| {
                    Status::unauthenticated(format!("insecure dev mode: send the {DEV_HEADER} header"))
                })?;
            return Identity::parse_uri(header).map_err(Status::unauthenticated);
        }
        let certs =
            req.peer_certs().ok_or_else(|| Status::unauthenticated("a client certificate is required (mTLS)"))?;
        let leaf = certs.first().ok_or_else(|| Status::unauthenticated("a client certificate is required (mTLS)"))?;
        identity_from_der(leaf.as_ref()).map_err(Status::unauthenticated)
    }
}

/// Reads the single `efa://` URI SAN of a DER certificate.
pub fn identity_from_der(der: &[u8]) -> Result<Identity, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("unreadable client certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?
        .ok_or("client certificate has no subjectAltName with an efa:// identity")?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) if u.starts_with("efa://") => Some(*u),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [one] => Identity::parse_uri(one),
        [] => Err("client certificate has no efa:// identity URI".into()),
        _ => Err("client certificate names more than one efa:// identity; it must carry exactly one role".into()),
    }
}

/// Every action that needs a decision, with what it concerns.
pub enum Action<'a> {
    /// Register or update a service; publish or yank a release of a service owned by `owner`
    /// (`None` when the service does not exist yet).
    ManageService { owner: Option<&'a LandCode> },
    /// Subscribe, report adoption, rate: acting as a Kommune.
    ActAsKommune,
    /// Read the catalog, releases and bundle content: every authenticated party.
    ReadCatalog,
    /// Read who adopted a service owned by `owner`; `public` if that Land made adoption
    /// of the service visible to every Kommune.
    ReadAdoption { owner: &'a LandCode, public: bool },
    /// Read one Kommune's ledger.
    ReadKommune { ags: &'a Ags },
    /// Read ratings, comments and rejection reasons of services owned by `owner` (`None`: all).
    ReadFeedback { owner: Option<&'a LandCode> },
    /// Read subscriptions of a Kommune.
    ReadSubscriptions { ags: &'a Ags },
}

/// The authorization rules. Each refusal says who tried what.
pub fn authorize(who: &Identity, action: Action<'_>) -> Result<(), Status> {
    let deny = |msg: String| Err(Status::permission_denied(msg));
    match (action, who) {
        (Action::ReadCatalog, _) => Ok(()),
        (Action::ManageService { owner }, Identity::Land(land)) => match owner {
            Some(owner) if owner != land => deny(format!("Land {land} cannot manage a service of Land {owner}")),
            _ => Ok(()),
        },
        (Action::ManageService { .. }, other) => {
            deny(format!("only a Land may register, publish or yank services; caller is {}", other.to_uri()))
        }
        (Action::ActAsKommune, Identity::Kommune(_)) => Ok(()),
        (Action::ActAsKommune, other) => {
            deny(format!("only a Kommune node may subscribe, report adoption or rate; caller is {}", other.to_uri()))
        }
        (Action::ReadAdoption { .. }, Identity::Operator(_)) => Ok(()),
        (Action::ReadAdoption { owner, .. }, Identity::Land(land)) if land == owner => Ok(()),
        (Action::ReadAdoption { public: true, .. }, Identity::Kommune(_)) => Ok(()),
        (Action::ReadAdoption { owner, .. }, other) => deny(format!(
            "adoption details of this service of Land {owner} are visible to operators and that Land only (the Land has not made them public); caller is {}",
            other.to_uri()
        )),
        (Action::ReadKommune { .. }, Identity::Operator(_)) => Ok(()),
        (Action::ReadKommune { ags }, Identity::Kommune(me)) if me == ags => Ok(()),
        (Action::ReadKommune { ags }, other) => deny(format!(
            "the ledger of Kommune {ags} is visible to operators and that Kommune only; caller is {}",
            other.to_uri()
        )),
        (Action::ReadFeedback { .. }, Identity::Operator(_)) => Ok(()),
        (Action::ReadFeedback { owner: Some(owner) }, Identity::Land(land)) if land == owner => Ok(()),
        (Action::ReadFeedback { owner }, other) => deny(format!(
            "feedback on {} is visible to operators and the publishing Land only; caller is {}",
            owner.map(|o| format!("services of Land {o}")).unwrap_or_else(|| "all services".into()),
            other.to_uri()
        )),
        (Action::ReadSubscriptions { .. }, Identity::Operator(_)) => Ok(()),
        (Action::ReadSubscriptions { ags }, Identity::Kommune(me)) if me == ags => Ok(()),
        (Action::ReadSubscriptions { ags }, other) => deny(format!(
            "subscriptions of Kommune {ags} are visible to operators and that Kommune only; caller is {}",
            other.to_uri()
        )),
    }
}

/// Authorizes a Land action on a service owned by `owner` and returns the acting Land.
pub fn acting_land(who: &Identity, owner: Option<&LandCode>) -> Result<LandCode, Status> {
    authorize(who, Action::ManageService { owner })?;
    match who {
        Identity::Land(l) => Ok(l.clone()),
        other => {
            Err(Status::permission_denied(format!("only a Land may manage services; caller is {}", other.to_uri())))
        }
    }
}

/// Authorizes an action a Kommune takes for itself and returns its AGS.
pub fn acting_kommune(who: &Identity) -> Result<Ags, Status> {
    authorize(who, Action::ActAsKommune)?;
    match who {
        Identity::Kommune(a) => Ok(a.clone()),
        other => {
            Err(Status::permission_denied(format!("only a Kommune node may do this; caller is {}", other.to_uri())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn land(c: &str) -> Identity {
        Identity::Land(c.parse().unwrap())
    }
    fn kommune(a: &str) -> Identity {
        Identity::Kommune(a.parse().unwrap())
    }

    #[test]
    fn uris_round_trip_and_reject_garbage() {
        for id in [land("05"), kommune("05913000"), Identity::Operator("bund".into())] {
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
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(authorize(&kommune("05913000"), Action::ManageService { owner: None }).is_err());
    }

    #[test]
    fn only_kommunen_act_as_kommune() {
        assert!(authorize(&kommune("05913000"), Action::ActAsKommune).is_ok());
        assert!(authorize(&land("05"), Action::ActAsKommune).is_err());
        assert!(authorize(&Identity::Operator("x".into()), Action::ActAsKommune).is_err());
    }

    #[test]
    fn kommunen_read_only_their_own_ledger_and_no_foreign_adoption() {
        let dortmund: Ags = "05913000".parse().unwrap();
        let nrw: LandCode = "05".parse().unwrap();
        assert!(authorize(&kommune("05913000"), Action::ReadKommune { ags: &dortmund }).is_ok());
        assert!(authorize(&kommune("05113000"), Action::ReadKommune { ags: &dortmund }).is_err());
        assert!(authorize(&kommune("05913000"), Action::ReadAdoption { owner: &nrw, public: false }).is_err());
        assert!(authorize(&land("05"), Action::ReadAdoption { owner: &nrw, public: false }).is_ok());
        assert!(authorize(&land("09"), Action::ReadAdoption { owner: &nrw, public: false }).is_err());
        assert!(authorize(&kommune("05913000"), Action::ReadAdoption { owner: &nrw, public: true }).is_ok());
        assert!(authorize(&land("09"), Action::ReadAdoption { owner: &nrw, public: true }).is_err());
    }

    #[test]
    fn feedback_is_for_operators_and_the_owning_land() {
        let nrw: LandCode = "05".parse().unwrap();
        assert!(authorize(&Identity::Operator("x".into()), Action::ReadFeedback { owner: None }).is_ok());
        assert!(authorize(&land("05"), Action::ReadFeedback { owner: Some(&nrw) }).is_ok());
        assert!(authorize(&land("05"), Action::ReadFeedback { owner: None }).is_err());
        assert!(authorize(&land("09"), Action::ReadFeedback { owner: Some(&nrw) }).is_err());
        assert!(authorize(&kommune("05913000"), Action::ReadFeedback { owner: Some(&nrw) }).is_err());
    }
}
