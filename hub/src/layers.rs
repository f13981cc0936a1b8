//! Tower layers in front of every gRPC service.
//!
//! [`StatusFixLayer`] gives the refusals tonic's codec produces the codes a client can act
//! on: a request larger than the limit is `RESOURCE_EXHAUSTED` (the gRPC status table;
//! tonic says `OUT_OF_RANGE`), and bytes that are no valid `efa.v1` message are
//! `INVALID_ARGUMENT`. The gRPC table lists `INTERNAL` for an unparsable request, but here
//! `INTERNAL` means "the hub failed, see its log", which would send the caller looking in
//! the wrong place.

use http::{HeaderMap, HeaderValue};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Rewrites the status of codec refusals (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct StatusFixLayer;

impl<S> tower::Layer<S> for StatusFixLayer {
    type Service = StatusFix<S>;
    fn layer(&self, inner: S) -> StatusFix<S> {
        StatusFix { inner }
    }
}

/// The service of [`StatusFixLayer`].
#[derive(Clone, Debug)]
pub struct StatusFix<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for StatusFix<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            fix(resp.headers_mut());
            Ok(resp)
        })
    }
}

/// Decodes a `grpc-message` (percent-encoded UTF-8).
fn decode_message(v: &HeaderValue) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a `grpc-message` as the gRPC spec asks (everything outside printable
/// ASCII and `%` itself).
fn encode_message(s: &str) -> HeaderValue {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("invalid request"))
}

fn fix(headers: &mut HeaderMap) {
    let Some(code) = headers.get("grpc-status").and_then(|v| v.to_str().ok()) else { return };
    let message = headers.get("grpc-message").map(decode_message).unwrap_or_default();
    let replacement = match code {
        "11" if message.contains("message length too large") => {
            Some(("8", format!("{message}; the request is larger than the hub accepts (send large bundles in chunks)")))
        }
        "13" if message.starts_with("failed to decode Protobuf message") => {
            Some(("3", format!("the request is not a valid efa.v1 message ({message})")))
        }
        _ => None,
    };
    if let Some((code, message)) = replacement {
        headers.insert("grpc-status", HeaderValue::from_static(code));
        headers.insert("grpc-message", encode_message(&efa_proto::error::bounded(&message)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_refusals_get_actionable_codes() {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("11"));
        h.insert("grpc-message", encode_message("Error, decoded message length too large: found 9 bytes"));
        fix(&mut h);
        assert_eq!(h["grpc-status"], "8");
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("13"));
        h.insert("grpc-message", encode_message("failed to decode Protobuf message: buffer underflow"));
        fix(&mut h);
        assert_eq!(h["grpc-status"], "3");
        assert!(decode_message(&h["grpc-message"]).contains("not a valid efa.v1 message"));
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("13"));
        h.insert("grpc-message", encode_message("internal error in the hub"));
        fix(&mut h);
        assert_eq!(h["grpc-status"], "13", "the hub's own internal errors stay internal");
        assert_eq!(decode_message(&encode_message("Zuständigkeit 100%")), "Zuständigkeit 100%");
    }
}
