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

/// Writes a private key readable by its owner only (0600, whatever the umask).
fn write_private(path: PathBuf, contents: &str) -> Result<PathBuf, PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| PkiError::Io { path: path.clone(), source })?;
    f.write_all(contents.as_bytes()).map_err(|source| PkiError::Io { path: path.clone(), source })?;
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
    write_private(dir.join("ca.key"), &ca_key.serialize_pem())?;

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
        key: write_private(dir.join("hub.key"), &hub_key.serialize_pem())?,
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
        key: write_private(dir.join(format!("{stem}.key")), &key.serialize_pem())?,
    })
}

/// Revokes the certificate in `cert` (PEM, issued by the CA in `dir`): adds its serial to
/// `dir/crl.pem`, a CRL signed by the CA, valid for 30 days. A hub started with
/// `--crl dir/crl.pem` picks it up within seconds and closes the certificate's
/// connections. Returns the CRL's path.
pub fn revoke(dir: &Path, cert: &Path) -> Result<PathBuf, PkiError> {
    use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber};
    let pem = std::fs::read(cert).map_err(|source| PkiError::Io { path: cert.to_path_buf(), source })?;
    let der = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| PkiError::Invalid(format!("{}: not a PEM certificate: {e}", cert.display())))?
        .1;
    let serial = der
        .parse_x509()
        .map_err(|e| PkiError::Invalid(format!("{}: not a certificate: {e}", cert.display())))?
        .raw_serial()
        .to_vec();
    let crl_path = dir.join("crl.pem");
    // Keep what the CRL already revokes.
    let mut revoked: Vec<Vec<u8>> = Vec::new();
    let mut number = 1u64;
    if let Ok(old) = std::fs::read(&crl_path) {
        if let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(&old) {
            if let Ok((_, crl)) = x509_parser::parse_x509_crl(&pem.contents) {
                revoked.extend(crl.iter_revoked_certificates().map(|r| r.raw_serial().to_vec()));
                number = crl.crl_number().and_then(|n| u64::try_from(n).ok()).unwrap_or(0) + 1;
            }
        }
    }
    if !revoked.contains(&serial) {
        revoked.push(serial);
    }
    let now = time::OffsetDateTime::now_utc();
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: now + time::Duration::days(30),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from_slice(s),
                revocation_time: now,
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let ca_key = KeyPair::from_pem(&read(dir.join("ca.key"))?)?;
    let issuer = Issuer::from_ca_cert_pem(&read(dir.join("ca.pem"))?, ca_key)?;
    let crl = params.signed_by(&issuer)?;
    // Written aside and renamed, so a hub never reads half a CRL.
    let tmp = dir.join("crl.pem.tmp");
    write(tmp.clone(), &crl.pem()?)?;
    std::fs::rename(&tmp, &crl_path).map_err(|source| PkiError::Io { path: crl_path.clone(), source })?;
    Ok(crl_path)
}
