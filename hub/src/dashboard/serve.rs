//! Serving the dashboard router: HTTPS with the hub's certificate (rustls), or plain HTTP
//! only when the hub runs with `--insecure-dev`. HTTP/1.1, bounded handshakes and header
//! reads, and a bounded graceful drain on the hub's shutdown token.

use super::{DashboardError, DashboardTls};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 256;

fn read(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, DashboardError> {
    std::fs::read(path).map_err(|source| DashboardError::ReadFile { what, path: path.to_path_buf(), source })
}

/// A rustls server config from the hub's certificate chain and key (PEM). The dashboard
/// authenticates people by token, so it asks for no client certificate.
pub fn tls_config(tls: &DashboardTls) -> Result<Arc<ServerConfig>, DashboardError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| DashboardError::Tls(format!("{what}: {e}"));
    let chain = CertificateDer::pem_slice_iter(&read("server certificate", &tls.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&tls.cert.display().to_string(), &e))?;
    if chain.is_empty() {
        return Err(bad(&tls.cert.display().to_string(), &"no certificate in the PEM file"));
    }
    let key = PrivateKeyDer::from_pem_slice(&read("server key", &tls.key)?)
        .map_err(|e| bad(&tls.key.display().to_string(), &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("protocol versions", &e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad("certificate and key", &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Binds `listen` and serves `router` until `shutdown` is cancelled. Returns the bound address.
pub async fn spawn(
    listen: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
    router: Router,
    shutdown: CancellationToken,
) -> Result<SocketAddr, DashboardError> {
    let listener = bind(listen).await.map_err(|source| DashboardError::Bind { addr: listen, source })?;
    let addr = listener.local_addr().map_err(|source| DashboardError::Bind { addr: listen, source })?;
    tokio::spawn(accept_loop(listener, tls.map(TlsAcceptor::from), router, shutdown));
    Ok(addr)
}

/// Binds, retrying for a moment while the port is still held by a dashboard that is
/// shutting down (a hub restarted on the same address).
async fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    let mut tries = 0;
    loop {
        match TcpListener::bind(listen).await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && listen.port() != 0 && tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, router: Router, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "dashboard accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (router, tls, watcher) = (router.clone(), tls.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => serve_connection(stream, router, watcher).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "dashboard TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "dashboard TLS handshake timed out"),
                },
                None => serve_connection(tcp, router, watcher).await,
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::debug!("dashboard connections drained"),
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::debug!("dashboard drain timeout; closing connections"),
    }
}

async fn serve_connection<S>(stream: S, router: Router, watcher: hyper_util::server::graceful::Watcher)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "dashboard connection ended with an error");
    }
}
