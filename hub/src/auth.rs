//! Who is calling: the hub's authentication. What each caller may do is decided by the one
//! rule table, [`efa_domain::authz::authorize`].
//!
//! Identity comes from the client certificate presented in the mTLS handshake. Its
//! subject alternative names must contain exactly one URI of the form
//! - `efa://land/<2-digit Land code>` — a Land publisher, e.g. `efa://land/05`;
//! - `efa://kommune/<8-digit AGS>` — a Kommune node, e.g. `efa://kommune/05913000`;
//! - `efa://operator/<name>` — an operator, e.g. `efa://operator/bund`;
//! - `efa://provider/<name>` — a municipal IT service provider, which acts for a Kommune
//!   it was granted by sending `x-efa-on-behalf-of: <AGS>` and is then that Kommune.
//!
//! With `--insecure-dev` (plaintext, never in production) the identity is read from the
//! `x-efa-dev-identity` metadata header instead, in the same URI form.

pub use efa_domain::authz::Identity;
use efa_registry::Registry;
use std::sync::Arc;
use tonic::{Request, Status};

const DEV_HEADER: &str = "x-efa-dev-identity";
/// The Kommune a caller acts for: a provider's node names the Kommune it runs; a Kommune
/// node may send its own AGS (nodes always send it).
pub const ON_BEHALF_OF: &str = "x-efa-on-behalf-of";

/// Extracts the caller's identity from a request and checks it against the register.
#[derive(Clone)]
pub struct Authenticator {
    insecure_dev: bool,
    registry: Arc<Registry>,
}

impl Authenticator {
    pub fn new(insecure_dev: bool, registry: Arc<Registry>) -> Self {
        Authenticator { insecure_dev, registry }
    }

    /// The caller, if its certificate (or dev header) names a Land, an active Gemeinde of
    /// the register, or an operator.
    pub fn identify<T>(&self, req: &Request<T>) -> Result<Identity, Status> {
        let who = self.read_identity(req)?;
        self.registry.check_identity(&who).map_err(crate::error::status)?;
        let Some(header) = req.metadata().get(ON_BEHALF_OF) else { return Ok(who) };
        let ags = header
            .to_str()
            .ok()
            .and_then(|s| s.parse::<efa_domain::model::ids::Ags>().ok())
            .ok_or_else(|| Status::invalid_argument(format!("{ON_BEHALF_OF} must be an 8-digit AGS")))?;
        match &who {
            // A Land or an operator never acts for a Kommune.
            Identity::Land(_) | Identity::Operator(_) => Err(Status::permission_denied(format!(
                "{who} cannot act for Kommune {ags}; only that Kommune or a provider it granted can"
            ))),
            _ => self.registry.act_for(&who, &ags).map_err(crate::error::status),
        }
    }

    fn read_identity<T>(&self, req: &Request<T>) -> Result<Identity, Status> {
        if self.insecure_dev {
            let header =
                req.metadata().get(DEV_HEADER).and_then(|v| v.to_str().ok()).ok_or_else(|| {
                    Status::unauthenticated(format!("insecure dev mode: send the {DEV_HEADER} header"))
                })?;
            return Identity::parse_uri(header).map_err(|e| Status::unauthenticated(e.to_string()));
        }
        match req.extensions().get::<crate::transport::PeerInfo>().and_then(|p| p.identity.clone()) {
            Some(Ok(who)) => Ok(who),
            Some(Err(why)) => Err(Status::unauthenticated(why)),
            None => Err(Status::unauthenticated("a client certificate is required (mTLS)")),
        }
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
        [one] => Identity::parse_uri(one).map_err(|e| e.to_string()),
        [] => Err("client certificate has no efa:// identity URI".into()),
        _ => Err("client certificate names more than one efa:// identity; it must carry exactly one role".into()),
    }
}
