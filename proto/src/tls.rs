//! Client-side mTLS setup in one place: every EfA client connects the same way, with the
//! hub's CA and its own certificate (whose URI SAN names its role, see `efa_hub::auth`).

use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// PEM files a client presents and trusts.
#[derive(Clone, Debug)]
pub struct ClientTlsFiles {
    /// CA certificate that signed the hub's certificate.
    pub ca: PathBuf,
    /// This client's certificate chain; its URI SAN names the caller's role.
    pub cert: PathBuf,
    /// The private key of `cert`.
    pub key: PathBuf,
}

/// Setting up or opening the connection to the hub failed; the message says which file or URL.
#[derive(Debug)]
pub struct ConnectError(pub String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|e| ConnectError(format!("cannot read {what} {}: {e}", path.display())))
}

/// Builds an endpoint for `url` (`https://host:port`), with mTLS when `tls` is given.
/// Connection-level settings are chosen for long-lived event streams and large downloads.
pub fn endpoint(url: &str, tls: Option<&ClientTlsFiles>) -> Result<Endpoint, ConnectError> {
    let mut ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| ConnectError(format!("invalid hub URL {url:?}: {e}")))?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .initial_connection_window_size(8 * 1024 * 1024)
        .initial_stream_window_size(4 * 1024 * 1024);
    if let Some(tls) = tls {
        let ca = Certificate::from_pem(read(&tls.ca, "CA certificate")?);
        let identity = Identity::from_pem(read(&tls.cert, "client certificate")?, read(&tls.key, "client key")?);
        let host =
            url.split("://").nth(1).and_then(|rest| rest.split([':', '/']).next()).unwrap_or("localhost").to_string();
        let config = ClientTlsConfig::new().ca_certificate(ca).identity(identity).domain_name(host);
        ep = ep.tls_config(config).map_err(|e| ConnectError(format!("TLS setup for {url} failed: {}", causes(&e))))?;
    }
    Ok(ep)
}

/// Connects to the hub now, failing fast with a readable error.
pub async fn connect(url: &str, tls: Option<&ClientTlsFiles>) -> Result<Channel, ConnectError> {
    endpoint(url, tls)?
        .connect()
        .await
        .map_err(|e| ConnectError(format!("cannot connect to hub at {url}: {}", causes(&e))))
}

/// An error and its sources in words, each once (transport errors nest three deep and
/// only the innermost says what happened, e.g. "invalid peer certificate: UnknownIssuer").
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// A channel that connects on first use and reconnects after failures (for agents that
/// must survive the hub being away).
pub fn connect_lazy(url: &str, tls: Option<&ClientTlsFiles>) -> Result<Channel, ConnectError> {
    Ok(endpoint(url, tls)?.connect_lazy())
}
