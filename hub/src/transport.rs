//! The hub's own TLS edge for gRPC: accept, handshake, and hand tonic connections that
//! know their peer.
//!
//! Why not tonic's built-in TLS: it neither takes certificate revocation lists nor tells
//! anyone why a handshake failed (a client with an expired certificate sees only
//! "TSI_DATA_CORRUPTED"). Here every refused handshake is logged with the peer address and
//! the reason in words, client certificates are checked against the CRL given with
//! `--crl`, the CRL is reloaded when its file changes, and connections whose certificate
//! the new CRL revokes are closed at once (their streams end).
//!
//! Client certificates are optional at the TLS level only so the health service works
//! without one; every EfA RPC refuses callers without one (`auth.rs`).

use crate::server::{HubError, ServerTls};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, CertificateError, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// How long a client may take for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight; more connections wait their turn.
const MAX_HANDSHAKES: usize = 512;
/// Handshakes in flight from one IP address. A client that opens connections and never
/// finishes the handshake holds a slot for [`HANDSHAKE_TIMEOUT`]; without a per-address
/// bound one address could hold every slot and lock all Kommunen out. Connections beyond
/// it wait (within the same timeout) instead of being refused, so the nodes behind one NAT
/// of an IT service provider that all reconnect after a hub restart get through.
const MAX_HANDSHAKES_PER_IP: usize = 32;
/// Unfinished connections (waiting or in a handshake) from one address; more are closed
/// at once. Bounds the file descriptors one address can hold.
const MAX_PENDING_PER_IP: usize = 1024;
/// Unfinished connections in all.
const MAX_PENDING: usize = 8192;
/// How often the CRL file is looked at.
pub const CRL_POLL: Duration = Duration::from_secs(2);

/// What a connection knows about its peer; tonic puts it into every request's extensions.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The remote address.
    pub remote: SocketAddr,
    /// The client's certificate chain (leaf first), if it presented one.
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
    /// The identity its certificate names, read once per connection (`Err`: why it names
    /// none); `None` without a certificate.
    pub identity: Option<Result<efa_domain::authz::Identity, String>>,
}

/// A TLS connection that closes itself when its certificate is revoked.
pub struct PeerStream {
    inner: TlsStream<TcpStream>,
    info: PeerInfo,
    revoked: Pin<Box<WaitForCancellationFutureOwned>>,
    _tracked: Tracked,
}

impl PeerStream {
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.revoked.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "client certificate revoked")),
            Poll::Pending => Ok(()),
        }
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for PeerStream {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

/// Live connections: id → (certificate serial, empty without one; token that closes it).
#[derive(Default)]
struct Connections {
    next: AtomicU64,
    live: Mutex<HashMap<u64, (Vec<u8>, CancellationToken)>>,
}

/// Removes a connection from [`Connections`] when it ends.
struct Tracked {
    id: u64,
    conns: Arc<Connections>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Ok(mut live) = self.conns.live.lock() {
            live.remove(&self.id);
        }
    }
}

/// The server side of the hub's TLS: the current config (swapped when the CRL changes)
/// and the live connections.
pub struct TlsServer {
    files: ServerTls,
    config: RwLock<Arc<ServerConfig>>,
    revoked: RwLock<Vec<Vec<u8>>>,
    crl_modified: Mutex<Option<SystemTime>>,
    conns: Arc<Connections>,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, HubError> {
    std::fs::read(path).map_err(|source| HubError::ReadFile { what, path: path.to_path_buf(), source })
}

fn bad(path: &Path, why: impl std::fmt::Display) -> HubError {
    HubError::Config(format!("{}: {why}", path.display()))
}

/// The serial numbers a CRL revokes.
fn revoked_serials(crls: &[CertificateRevocationListDer<'_>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for crl in crls {
        if let Ok((_, parsed)) = x509_parser::parse_x509_crl(crl.as_ref()) {
            out.extend(parsed.iter_revoked_certificates().map(|r| r.raw_serial().to_vec()));
        }
    }
    out
}

/// The serial number of a DER certificate.
fn serial(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    x509_parser::parse_x509_certificate(cert.as_ref()).ok().map(|(_, c)| c.raw_serial().to_vec())
}

impl TlsServer {
    /// Reads certificate, key, client CA and CRL and builds the first config.
    pub fn new(files: ServerTls) -> Result<Arc<Self>, HubError> {
        let modified = files.crl.as_ref().and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        let (config, revoked) = Self::build(&files)?;
        Ok(Arc::new(TlsServer {
            files,
            config: RwLock::new(config),
            revoked: RwLock::new(revoked),
            crl_modified: Mutex::new(modified),
            conns: Default::default(),
        }))
    }

    fn build(files: &ServerTls) -> Result<(Arc<ServerConfig>, Vec<Vec<u8>>), HubError> {
        let chain = CertificateDer::pem_slice_iter(&read("server certificate", &files.cert)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&files.cert, e))?;
        if chain.is_empty() {
            return Err(bad(&files.cert, "no certificate in the PEM file"));
        }
        let key = PrivateKeyDer::from_pem_slice(&read("server key", &files.key)?).map_err(|e| bad(&files.key, e))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&read("client CA", &files.client_ca)?) {
            roots.add(ca.map_err(|e| bad(&files.client_ca, e))?).map_err(|e| bad(&files.client_ca, e))?;
        }
        let crls = match &files.crl {
            Some(path) => CertificateRevocationListDer::pem_slice_iter(&read("CRL", path)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(path, e))?,
            None => Vec::new(),
        };
        let revoked = revoked_serials(&crls);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .with_crls(crls)
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status()
            .allow_unauthenticated()
            .build()
            .map_err(|e| bad(&files.client_ca, e))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| HubError::Config(format!("TLS protocol versions: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| bad(&files.key, format!("does not fit the certificate {}: {e}", files.cert.display())))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok((Arc::new(config), revoked))
    }

    /// Closes every live connection: after a shutdown's drain, so no connection task keeps
    /// the hub's state (and its store's file lock) alive.
    pub fn close_all(&self) -> usize {
        let live = self.conns.live.lock().unwrap_or_else(|p| p.into_inner());
        live.values().map(|(_, t)| t.cancel()).count()
    }

    /// Rereads the CRL if its file changed: new handshakes use it, and live connections
    /// whose certificate it revokes are closed. Returns how many were closed.
    pub fn reload_if_changed(&self) -> usize {
        let Some(path) = &self.files.crl else { return 0 };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        {
            let mut last = self.crl_modified.lock().unwrap_or_else(|p| p.into_inner());
            if *last == modified {
                return 0;
            }
            *last = modified;
        }
        match Self::build(&self.files) {
            Ok((config, revoked)) => {
                *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
                let closed = {
                    let live = self.conns.live.lock().unwrap_or_else(|p| p.into_inner());
                    live.values().filter(|(s, _)| revoked.contains(s)).map(|(_, t)| t.cancel()).count()
                };
                tracing::info!(crl = %path.display(), revoked = revoked.len(), connections_closed = closed, "CRL reloaded");
                *self.revoked.write().unwrap_or_else(|p| p.into_inner()) = revoked;
                closed
            }
            Err(e) => {
                tracing::error!(crl = %path.display(), error = %e, "CRL not reloaded; the previous one stays in force");
                0
            }
        }
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.read().unwrap_or_else(|p| p.into_inner()).clone())
    }

    async fn handshake(self: Arc<Self>, tcp: TcpStream, remote: SocketAddr, timeout: Duration) -> Option<PeerStream> {
        let tls = match tokio::time::timeout(timeout, self.acceptor().accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::warn!(peer = %remote, reason = %refusal_reason(&e), "TLS handshake refused");
                return None;
            }
            Err(_) => {
                tracing::warn!(peer = %remote, "TLS handshake refused: not finished within 10 s");
                return None;
            }
        };
        let certs = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| Arc::new(c.iter().map(|c| c.clone().into_owned()).collect::<Vec<_>>()));
        let token = CancellationToken::new();
        let id = self.conns.next.fetch_add(1, Ordering::Relaxed);
        let serial = certs.as_ref().and_then(|c| c.first()).and_then(serial).unwrap_or_default();
        // A CRL that changed between the handshake and now still applies.
        if !serial.is_empty() && self.revoked.read().unwrap_or_else(|p| p.into_inner()).contains(&serial) {
            token.cancel();
        }
        self.conns.live.lock().unwrap_or_else(|p| p.into_inner()).insert(id, (serial, token.clone()));
        let identity = certs.as_ref().and_then(|c| c.first()).map(|leaf| crate::auth::identity_from_der(leaf.as_ref()));
        Some(PeerStream {
            inner: tls,
            info: PeerInfo { remote, certs, identity },
            revoked: Box::pin(token.cancelled_owned()),
            _tracked: Tracked { id, conns: self.conns.clone() },
        })
    }
}

/// A refused handshake in words for the operator's log.
fn refusal_reason(e: &io::Error) -> String {
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return e.to_string();
    };
    match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the client certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the client certificate is not valid yet (check the clock)".into()
            }
            CertificateError::UnknownIssuer => {
                "the client certificate is not signed by the federation CA (unknown issuer)".into()
            }
            CertificateError::Revoked => "the client certificate is revoked (CRL)".into(),
            CertificateError::BadSignature => "the client certificate's signature does not verify".into(),
            other => format!("the client certificate is not acceptable: {other:?}"),
        },
        rustls::Error::NoCertificatesPresented => "no client certificate".into(),
        other => other.to_string(),
    }
}

/// Accepts TCP connections on `listener` and yields finished TLS handshakes until
/// `shutdown`. Handshakes run concurrently, so one slow client does not hold up others.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<TlsServer>,
    shutdown: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<Result<PeerStream, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let gate = Gate::new();
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Some(pending) = gate.enter(remote.ip()) else {
                continue; // dropping `tcp` closes it
            };
            let _ = tcp.set_nodelay(true);
            let (tls, tx, global) = (tls.clone(), tx.clone(), gate.handshakes.clone());
            tokio::spawn(async move {
                let _pending = pending;
                // Waiting for a slot counts against the handshake timeout.
                let started = tokio::time::Instant::now();
                let slots = async {
                    let ip = _pending.handshakes.clone().acquire_owned().await.ok()?;
                    let all = global.acquire_owned().await.ok()?;
                    Some((ip, all))
                };
                let Ok(Some(_slots)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, slots).await else {
                    // Debug only: a flood queues thousands of these; the per-address warning
                    // and the timeouts of the handshakes it did start say enough.
                    tracing::debug!(peer = %remote, "TLS handshake refused: no handshake slot within 10 s");
                    return;
                };
                let left = HANDSHAKE_TIMEOUT.saturating_sub(started.elapsed());
                if let Some(stream) = tls.handshake(tcp, remote, left).await {
                    let _ = tx.send(Ok(stream)).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Bounds on unfinished connections: per address and in all, waiting and in a handshake.
#[derive(Clone)]
struct Gate {
    per_ip: Arc<Mutex<HashMap<IpAddr, PerIp>>>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
    handshakes: Arc<tokio::sync::Semaphore>,
}

struct PerIp {
    pending: usize,
    handshakes: Arc<tokio::sync::Semaphore>,
    /// Whether a refusal was logged since the address last had nothing pending: one line
    /// per burst, not one per dropped connection.
    logged: bool,
}

impl Gate {
    fn new() -> Self {
        Gate {
            per_ip: Arc::default(),
            pending: Arc::default(),
            handshakes: Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES)),
        }
    }

    /// Admits an unfinished connection from `ip`, or `None` if it must be closed.
    fn enter(&self, ip: IpAddr) -> Option<Pending> {
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(ip).or_insert_with(|| PerIp {
            pending: 0,
            handshakes: Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES_PER_IP)),
            logged: false,
        });
        if entry.pending >= MAX_PENDING_PER_IP || self.pending.load(Ordering::Relaxed) >= MAX_PENDING {
            if !entry.logged {
                entry.logged = true;
                tracing::warn!(peer = %ip, per_address = MAX_PENDING_PER_IP, in_all = MAX_PENDING, "connections closed: too many unfinished TLS handshakes");
            }
            if entry.pending == 0 {
                map.remove(&ip);
            }
            return None;
        }
        entry.pending += 1;
        self.pending.fetch_add(1, Ordering::Relaxed);
        Some(Pending { ip, handshakes: entry.handshakes.clone(), gate: self.clone() })
    }
}

/// One unfinished connection; dropping it (handshake done, failed or timed out) frees it.
struct Pending {
    ip: IpAddr,
    handshakes: Arc<tokio::sync::Semaphore>,
    gate: Gate,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.gate.pending.fetch_sub(1, Ordering::Relaxed);
        let mut map = self.gate.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = map.get_mut(&self.ip) {
            entry.pending -= 1;
            if entry.pending == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Rereads the CRL every [`CRL_POLL`] until `shutdown`.
pub fn watch_crl(tls: Arc<TlsServer>, shutdown: CancellationToken) {
    if tls.files.crl.is_none() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CRL_POLL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let tls = tls.clone();
            let _ = tokio::task::spawn_blocking(move || tls.reload_if_changed()).await;
        }
    });
}
