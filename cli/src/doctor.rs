//! `efa doctor` and `efa-node doctor`: what is wrong with a client's certificate, key, CA
//! file or connection, in plain words.
//!
//! A TLS refusal reaches a client only as an opaque transport error ("TSI_DATA_CORRUPTED",
//! "transport error"). These checks run locally first (files readable, certificate valid
//! now, signed by the CA file, carrying exactly one `efa://` identity, matching its key),
//! then connect and ask the hub who it thinks the caller is.

use efa_proto::tls::ClientTlsFiles;
use efa_proto::v1 as pb;
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// True if the check passed.
    pub ok: bool,
    /// What was checked, and what was found, in words.
    pub text: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", if self.ok { "ok  " } else { "FAIL" }, self.text)
    }
}

fn ok(text: impl Into<String>) -> Finding {
    Finding { ok: true, text: text.into() }
}

fn fail(text: impl Into<String>) -> Finding {
    Finding { ok: false, text: text.into() }
}

fn read(what: &str, path: &Path, out: &mut Vec<Finding>) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Some(b),
        Err(e) => {
            out.push(fail(format!("{what} {}: cannot be read ({e})", path.display())));
            None
        }
    }
}

/// Checks the certificate, key and CA files without a network.
pub fn check_files(files: &ClientTlsFiles) -> Vec<Finding> {
    let mut out = Vec::new();
    let (Some(ca), Some(cert), Some(key)) = (
        read("CA file", &files.ca, &mut out),
        read("certificate", &files.cert, &mut out),
        read("key", &files.key, &mut out),
    ) else {
        return out;
    };
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&ca).filter_map(Result::ok).collect();
    if cas.is_empty() {
        out.push(fail(format!("CA file {}: holds no PEM certificate", files.ca.display())));
        return out;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert).filter_map(Result::ok).collect();
    let Some(leaf) = chain.first().cloned() else {
        out.push(fail(format!("certificate {}: holds no PEM certificate", files.cert.display())));
        return out;
    };
    let cert_name = files.cert.display();
    match x509_parser::parse_x509_certificate(leaf.as_ref()) {
        Err(e) => out.push(fail(format!("certificate {cert_name}: does not parse ({e})"))),
        Ok((_, c)) => {
            let now = x509_parser::time::ASN1Time::now();
            let validity = c.validity();
            if validity.not_after < now {
                out.push(fail(format!(
                    "certificate {cert_name}: expired on {}; ask the federation CA for a new one",
                    validity.not_after
                )));
            } else if validity.not_before > now {
                out.push(fail(format!(
                    "certificate {cert_name}: not valid before {} (check this machine's clock)",
                    validity.not_before
                )));
            } else {
                out.push(ok(format!("certificate {cert_name}: valid until {}", validity.not_after)));
            }
            if c.is_ca() {
                out.push(fail(format!(
                    "certificate {cert_name}: is a CA certificate; a client needs a certificate the CA issued for it"
                )));
            }
            let uris: Vec<String> = c
                .subject_alternative_name()
                .ok()
                .flatten()
                .map(|san| {
                    san.value
                        .general_names
                        .iter()
                        .filter_map(|n| match n {
                            x509_parser::extensions::GeneralName::URI(u) if u.starts_with("efa://") => {
                                Some(u.to_string())
                            }
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            match uris.as_slice() {
                [one] => match efa_domain::authz::Identity::parse_uri(one) {
                    Ok(id) => out.push(ok(format!("certificate {cert_name}: names {id}"))),
                    Err(e) => out.push(fail(format!("certificate {cert_name}: its identity {one} is invalid: {e}"))),
                },
                [] => out.push(fail(format!(
                    "certificate {cert_name}: carries no efa:// identity (a URI subject alternative name such as efa://kommune/05913000)"
                ))),
                _ => out.push(fail(format!(
                    "certificate {cert_name}: names {} identities ({}); it must carry exactly one role",
                    uris.len(),
                    uris.join(", ")
                ))),
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in &cas {
        let _ = roots.add(c.clone());
    }
    let verified = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())
        .and_then(|v| v.verify_client_cert(&leaf, &chain[1..], UnixTime::now()).map_err(|e| e.to_string()));
    match verified {
        Ok(_) => out.push(ok(format!("certificate {cert_name}: issued by the CA in {}", files.ca.display()))),
        Err(e) if e.contains("UnknownIssuer") || e.contains("BadSignature") => out.push(fail(format!(
            "certificate {cert_name}: not issued by the CA in {}; it comes from another CA (the hub refuses it)",
            files.ca.display()
        ))),
        Err(e) => {
            out.push(fail(format!("certificate {cert_name}: the CA in {} does not accept it: {e}", files.ca.display())))
        }
    }
    match PrivateKeyDer::from_pem_slice(&key) {
        Err(e) => out.push(fail(format!("key {}: no PEM private key ({e})", files.key.display()))),
        Ok(key_der) => match rustls::sign::CertifiedKey::from_der(chain.clone(), key_der, &provider) {
            Ok(_) => out.push(ok(format!("key {}: belongs to the certificate", files.key.display()))),
            Err(rustls::Error::InconsistentKeys(_)) => out.push(fail(format!(
                "key {}: does not belong to the certificate {cert_name} (they are from different pairs)",
                files.key.display()
            ))),
            Err(e) => out.push(fail(format!("key {}: unusable: {e}", files.key.display()))),
        },
    }
    out
}

/// Connects to `hub` and asks who it thinks the caller is.
pub async fn check_connection(hub: &str, files: &ClientTlsFiles) -> Finding {
    let channel = match efa_proto::tls::connect(hub, Some(files)).await {
        Ok(c) => c,
        Err(e) => {
            let text = e.to_string();
            let why = if text.contains("UnknownIssuer") || text.contains("BadSignature") {
                format!("the hub's certificate is not issued by the CA in {}", files.ca.display())
            } else if text.contains("NotValidForName") || text.contains("CertNotValidForName") {
                format!("the hub's certificate is not valid for the name in {hub}")
            } else if text.contains("Connection refused") || text.contains("ConnectionRefused") {
                format!("nothing listens at {hub}; is the hub running, and is the address right?")
            } else if text.contains("handshake") || text.contains("alert") || text.contains("InvalidCertificate") {
                format!("the TLS handshake failed ({text}); the hub's log names the reason")
            } else {
                text
            };
            return fail(format!("connection to {hub}: {why}"));
        }
    };
    match efa_proto::v1::catalog_service_client::CatalogServiceClient::new(channel).who_am_i(pb::WhoAmIRequest {}).await
    {
        Ok(me) => {
            let me = me.into_inner();
            ok(format!("connection to {hub}: the hub knows you as {} {} ({})", me.role, me.key, me.display_name))
        }
        Err(s) if s.message().is_empty() => fail(format!(
            "connection to {hub}: refused ({:?}); the TLS handshake failed, the hub's log names the reason",
            s.code()
        )),
        Err(s) => fail(format!("connection to {hub}: the hub refused ({:?}): {}", s.code(), s.message())),
    }
}

/// What is wrong with the local files, in words, if anything: for a failed connection,
/// whose transport error rarely says which file is at fault.
pub fn explain(files: &ClientTlsFiles) -> Option<String> {
    let failed: Vec<String> = check_files(files).into_iter().filter(|f| !f.ok).map(|f| f.text).collect();
    (!failed.is_empty()).then(|| failed.join("; "))
}

/// Every check; prints each finding and returns whether all passed.
pub async fn run(hub: &str, files: &ClientTlsFiles) -> bool {
    let mut findings = check_files(files);
    if findings.iter().all(|f| f.ok) {
        findings.push(check_connection(hub, files).await);
    }
    for f in &findings {
        println!("{f}");
    }
    findings.iter().all(|f| f.ok)
}
