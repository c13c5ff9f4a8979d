//! x5c injection: the OP's key-set responses passing through get `x5c` and `x5t#S256` on the
//! keys whose certificate the operator configured (`[[upstream.x5c]]`).
//!
//! The body is buffered (bounded) and rewritten by `filters::x5c::inject` at its end. The new
//! length is not known when the header leaves, so a rewritten response drops `Content-Length`
//! (and the OP's `ETag`, which names the other representation) and is sent chunked. The
//! upstream is asked for an uncompressed body; a compressed answer passes through unchanged.

use bytes::{Bytes, BytesMut};
use filters::x5c::{inject, Certificate, KeyOutcome};
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};

use crate::metrics::Metrics;

/// A larger "key set" is not one; it passes through unchanged.
pub const MAX_KEY_SET_BYTES: usize = 1024 * 1024;

/// One `[[upstream.x5c]]` entry, certificates loaded.
#[derive(Debug, Clone)]
pub struct X5cRoute {
    /// Exact path of the OP's key set (its `jwks_uri` path).
    pub path: String,
    /// One chain per configured file, leaf first.
    pub chains: Vec<Vec<Certificate>>,
}

/// Per-request state of a key-set response being rewritten.
#[derive(Debug)]
pub struct Rewrite {
    route: usize,
    /// Buffering the body (the response qualified); false once it passes through.
    buffering: bool,
    buffer: BytesMut,
}

/// The route of a GET to a configured key-set path.
pub fn route_for(routes: &[X5cRoute], method: &http::Method, path: &str) -> Option<Rewrite> {
    if method != http::Method::GET {
        return None;
    }
    let route = routes.iter().position(|r| r.path == path)?;
    Some(Rewrite {
        route,
        buffering: false,
        buffer: BytesMut::new(),
    })
}

/// Asks for a body the proxy can read, and a full answer (never a 304 for a representation
/// the proxy changed).
pub fn prepare_request(request: &mut RequestHeader) -> pingora::Result<()> {
    request.insert_header(header::ACCEPT_ENCODING, "identity")?;
    request.remove_header(&header::IF_NONE_MATCH);
    request.remove_header(&header::IF_MODIFIED_SINCE);
    Ok(())
}

impl Rewrite {
    /// Decides from the upstream's header whether the body is rewritten, and prepares the
    /// header for a body of unknown length.
    pub fn on_header(
        &mut self,
        response: &mut ResponseHeader,
        routes: &[X5cRoute],
        metrics: &Metrics,
    ) -> pingora::Result<()> {
        let path = routes[self.route].path.as_str();
        if response.status != http::StatusCode::OK {
            return Ok(());
        }
        let value = |name| {
            response
                .headers
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .map(str::to_ascii_lowercase)
        };
        let encoding = value(header::CONTENT_ENCODING);
        if encoding.as_deref().is_some_and(|e| e != "identity") {
            metrics.x5c_result("encoded");
            tracing::warn!(path, "key set is compressed despite accept-encoding: identity; passed through without x5c");
            return Ok(());
        }
        if !value(header::CONTENT_TYPE).is_some_and(|t| t.contains("json")) {
            metrics.x5c_result("invalid_body");
            tracing::warn!(
                path,
                "key set response is not JSON; passed through without x5c"
            );
            return Ok(());
        }
        let announced = value(header::CONTENT_LENGTH).and_then(|v| v.trim().parse::<usize>().ok());
        if announced.is_some_and(|len| len > MAX_KEY_SET_BYTES) {
            metrics.x5c_result("too_large");
            tracing::warn!(
                path,
                "key set larger than 1 MiB; passed through without x5c"
            );
            return Ok(());
        }
        response.remove_header(&header::CONTENT_LENGTH);
        response.remove_header(&header::ETAG);
        response.insert_header(header::TRANSFER_ENCODING, "chunked")?;
        self.buffering = true;
        Ok(())
    }

    /// Holds the body back until its end, then sends the rewritten document.
    pub fn on_body(
        &mut self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        routes: &[X5cRoute],
        metrics: &Metrics,
    ) {
        if !self.buffering {
            return;
        }
        let route = &routes[self.route];
        if let Some(chunk) = body.take() {
            if self.buffer.len() + chunk.len() > MAX_KEY_SET_BYTES {
                // Too large to be a key set: what was held back goes out, the rest streams.
                metrics.x5c_result("too_large");
                tracing::warn!(
                    path = route.path,
                    "key set larger than 1 MiB; passed through without x5c"
                );
                self.buffering = false;
                self.buffer.extend_from_slice(&chunk);
                *body = Some(std::mem::take(&mut self.buffer).freeze());
                return;
            }
            self.buffer.extend_from_slice(&chunk);
        }
        if !end_of_stream {
            return;
        }
        self.buffering = false;
        let original = std::mem::take(&mut self.buffer).freeze();
        *body = Some(match inject(&original, &route.chains) {
            Ok(result) => {
                for (kid, outcome) in &result.keys {
                    metrics.x5c_result(outcome.as_str());
                    match outcome {
                        KeyOutcome::NoMatch => tracing::warn!(
                            path = route.path,
                            kid,
                            "no configured certificate carries this key; published without x5c"
                        ),
                        KeyOutcome::Injected => {
                            tracing::debug!(path = route.path, kid, "x5c added")
                        }
                        KeyOutcome::Present => {}
                    }
                }
                result.body.map(Bytes::from).unwrap_or(original)
            }
            Err(e) => {
                metrics.x5c_result("invalid_body");
                tracing::warn!(
                    path = route.path,
                    reason = e.reason(),
                    "key set passed through without x5c"
                );
                original
            }
        });
    }
}
