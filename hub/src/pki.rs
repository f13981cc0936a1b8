//! A development PKI: one CA, a hub certificate and client certificates whose URI SAN
//! names exactly one role (see `auth.rs`). Real deployments use their own CA (e.g. the
//! Land's or DOI-Netz PKI) and issue certificates with the same SAN scheme.

use efa_domain::authz::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use std::path::{Path, PathBuf};

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Generating, signing or parsing a key or certificate failed.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A PEM file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The input cannot go into a certificate (e.g. an identity URI that is not ASCII).
    #[error("{0}")]
    Invalid(String),
}

fn write(path: PathBuf, contents: &str) -> Result<PathBuf, PkiError> {
    std::fs::write(&path, contents).map_err(|source| PkiError::Io { path: path.clone(), source })?;
    Ok(path)
}

fn read(path: PathBuf) -> Result<String, PkiError> {
    std::fs::read_to_string(&path).map_err(|source| PkiError::Io { path, source })
}

/// Paths of a certificate and its key.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM), unencrypted.
    pub key: PathBuf,
}

/// Creates `dir/ca.pem`, `dir/ca.key`, `dir/hub.pem`, `dir/hub.key`. The hub certificate is
/// valid for `localhost`, `127.0.0.1`, `::1` and any extra `hub_names`.
pub fn init(dir: &Path, hub_names: &[String]) -> Result<CertFiles, PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io { path: dir.to_path_buf(), source })?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "EfA Hub Dev CA");
    ca.distinguished_name.push(DnType::OrganizationName, "EfA Hub (development only)");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key)?;
    write(dir.join("ca.pem"), &ca_cert.pem())?;
    write(dir.join("ca.key"), &ca_key.serialize_pem())?;

    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    names.extend(hub_names.iter().cloned());
    let mut hub = CertificateParams::new(names)?;
    hub.distinguished_name.push(DnType::CommonName, "EfA Hub");
    hub.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let issuer = Issuer::new(ca, ca_key);
    let hub_key = KeyPair::generate()?;
    let hub_cert = hub.signed_by(&hub_key, &issuer)?;
    Ok(CertFiles {
        cert: write(dir.join("hub.pem"), &hub_cert.pem())?,
        key: write(dir.join("hub.key"), &hub_key.serialize_pem())?,
    })
}

/// Issues a client certificate for `identity`, signed by the CA in `dir`. Files are named
/// after the identity, e.g. `kommune-05913000.pem`.
pub fn issue(dir: &Path, identity: &Identity, common_name: &str) -> Result<CertFiles, PkiError> {
    let ca_key = KeyPair::from_pem(&read(dir.join("ca.key"))?)?;
    let issuer = Issuer::from_ca_cert_pem(&read(dir.join("ca.pem"))?, ca_key)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = vec![SanType::URI(
        identity.to_uri().try_into().map_err(|_| PkiError::Invalid("identity URI is not ASCII".into()))?,
    )];
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let stem = identity.file_stem();
    Ok(CertFiles {
        cert: write(dir.join(format!("{stem}.pem")), &cert.pem())?,
        key: write(dir.join(format!("{stem}.key")), &key.serialize_pem())?,
    })
}
