//! Per-identity limits: one misbehaving node or Land must not take the hub down for the
//! others. Each caller (by the identity its certificate names) gets a bounded number of
//! calls in flight, of event streams, and a rate of adoption reports and ratings. Beyond
//! that it is answered `RESOURCE_EXHAUSTED` at once, with the `retry-after-ms` metadata
//! saying when to try again; nodes treat that as "try later" and keep the report queued.

use crate::transport::PeerInfo;
use http::HeaderValue;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits per identity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Calls in flight (downloads included, for as long as they stream).
    pub calls: usize,
    /// Open `WatchEvents` streams (a node needs one).
    pub streams: usize,
    /// Adoption reports and ratings per second, sustained.
    pub writes_per_second: f64,
    /// Adoption reports and ratings in a burst (a node catching up after being offline).
    pub write_burst: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { calls: 64, streams: 16, writes_per_second: 50.0, write_burst: 500.0 }
    }
}

impl Limits {
    /// No limits (benchmarks that drive thousands of streams through one certificate).
    pub fn unlimited() -> Self {
        Limits {
            calls: Semaphore::MAX_PERMITS,
            streams: Semaphore::MAX_PERMITS,
            writes_per_second: f64::MAX,
            write_burst: f64::MAX,
        }
    }
}

const WATCH: &str = "/efa.v1.SubscriptionService/WatchEvents";
const FETCH: &str = "/efa.v1.ReleaseService/FetchBlob";
const WRITES: [&str; 4] = [
    "/efa.v1.AdoptionService/ReportAdoption",
    "/efa.v1.AdoptionService/SubmitRating",
    "/efa.v1.AdoptionService/ReportPreflight",
    "/efa.v1.AdoptionService/DeclareRouting",
];

struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
struct State {
    calls: HashMap<String, Arc<Semaphore>>,
    streams: HashMap<String, Arc<Semaphore>>,
    buckets: HashMap<String, Bucket>,
}

/// The shared counters behind [`LimitsLayer`].
#[derive(Clone)]
pub(crate) struct Limiter {
    limits: Limits,
    state: Arc<Mutex<State>>,
}

impl Limiter {
    pub(crate) fn new(limits: Limits) -> Self {
        Limiter { limits, state: Default::default() }
    }

    fn semaphore(&self, stream: bool, who: &str) -> Arc<Semaphore> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (map, n) = if stream { (&mut s.streams, self.limits.streams) } else { (&mut s.calls, self.limits.calls) };
        map.entry(who.to_string()).or_insert_with(|| Arc::new(Semaphore::new(n))).clone()
    }

    /// Takes a write token; `Err(wait)` when the bucket is empty.
    fn write_token(&self, who: &str) -> Result<(), Duration> {
        let (rate, burst) = (self.limits.writes_per_second, self.limits.write_burst);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let b = s.buckets.entry(who.to_string()).or_insert(Bucket { tokens: burst, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(((1.0 - b.tokens) / rate).min(60.0)))
        }
    }
}

/// Applies [`Limits`] to every gRPC call.
#[derive(Clone)]
pub(crate) struct LimitsLayer(pub(crate) Limiter);

impl<S> tower::Layer<S> for LimitsLayer {
    type Service = LimitsService<S>;
    fn layer(&self, inner: S) -> LimitsService<S> {
        LimitsService { inner, limiter: self.0.clone() }
    }
}

/// The service of [`LimitsLayer`].
#[derive(Clone)]
pub(crate) struct LimitsService<S> {
    inner: S,
    limiter: Limiter,
}

/// Who is calling, as far as limits care: the identity of the certificate (or the dev
/// header), and the Kommune it acts for, so each node of an IT service provider has the
/// limits of one Kommune. Calls without an identity are refused by the handlers anyway.
fn caller<B>(req: &http::Request<B>) -> Option<String> {
    let who = match req.extensions().get::<PeerInfo>().map(|p| p.identity.as_ref()) {
        Some(Some(Ok(who))) => who.to_uri(),
        _ => req.headers().get("x-efa-dev-identity").and_then(|v| v.to_str().ok())?.to_string(),
    };
    match req.headers().get(crate::auth::ON_BEHALF_OF).and_then(|v| v.to_str().ok()) {
        // Only a provider acts for others; an AGS is 8 digits (anything else is refused by
        // the handler, and a wrong one too, so keys stay few).
        Some(ags) if who.starts_with("efa://provider/") && ags.len() == 8 => Some(format!("{who}#{ags}")),
        _ => Some(who),
    }
}

fn refuse(message: String, retry_after: Duration) -> http::Response<tonic::body::Body> {
    let mut resp = tonic::Status::resource_exhausted(message).into_http::<tonic::body::Body>();
    if let Ok(v) = HeaderValue::from_str(&retry_after.as_millis().max(1).to_string()) {
        resp.headers_mut().insert("retry-after-ms", v);
    }
    resp
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for LimitsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some(who) = caller(&req) else {
            let fut = self.inner.call(req);
            return Box::pin(fut);
        };
        let path = req.uri().path().to_string();
        if WRITES.contains(&path.as_str()) {
            if let Err(wait) = self.limiter.write_token(&who) {
                tracing::debug!(%who, %path, "write rate limit");
                let msg = format!(
                    "{who} sends adoption reports and ratings faster than {} per second; retry in {} ms",
                    self.limiter.limits.writes_per_second,
                    wait.as_millis().max(1)
                );
                return Box::pin(std::future::ready(Ok(refuse(msg, wait))));
            }
        }
        let stream = path == WATCH;
        let Ok(permit) = self.limiter.semaphore(stream, &who).try_acquire_owned() else {
            let (what, n) = if stream {
                ("event streams open", self.limiter.limits.streams)
            } else {
                ("calls in flight", self.limiter.limits.calls)
            };
            tracing::debug!(%who, %path, "{what} limit");
            let msg = format!("{who} has {n} {what}, the limit per caller; retry when one has ended");
            return Box::pin(std::future::ready(Ok(refuse(msg, Duration::from_millis(500)))));
        };
        let holds_body = stream || path == FETCH;
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            if !holds_body {
                return Ok(resp); // the permit ends with the call
            }
            // A stream holds its permit for as long as it flows.
            Ok(resp.map(|body| tonic::body::Body::new(Held { body, _permit: permit })))
        })
    }
}

/// A response body that holds a permit until it is dropped.
struct Held {
    body: tonic::body::Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for Held {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.body)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refills_at_its_rate() {
        let l = Limiter::new(Limits { write_burst: 2.0, writes_per_second: 10.0, ..Limits::default() });
        assert!(l.write_token("a").is_ok() && l.write_token("a").is_ok());
        let wait = l.write_token("a").unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(l.write_token("b").is_ok(), "another caller has its own bucket");
        std::thread::sleep(Duration::from_millis(120));
        assert!(l.write_token("a").is_ok());
    }
}
