//! x5c injection: the OP's key-set responses get `x5c` and `x5t#S256` on the keys whose
//! certificate the operator configured (`[[upstream.x5c]]`).
//!
//! The proxy fetches the key set itself, whole and uncompressed (`upstream_client`), rewrites it
//! with `filters::x5c::inject`, and answers with the new document's `Content-Length` and an
//! `ETag` of its bytes; it answers the client's `If-None-Match` itself. Microsoft requires a
//! `Content-Length` on the discovery document, and a chunked key set may fail the same way.
//! An answer that cannot be rewritten goes out as the OP sent it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use filters::x5c::{inject, Certificate, KeyOutcome};
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use sha2::{Digest, Sha256};

use crate::hop;
use crate::metrics::{Metrics, X5cResult};
use crate::upstream_client::Fetched;

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

/// The route of a GET to a configured key-set path.
pub fn route_for(routes: &[X5cRoute], method: &http::Method, path: &str) -> Option<usize> {
    if method != http::Method::GET {
        return None;
    }
    routes.iter().position(|r| r.path == path)
}

/// Asks for a body the proxy can read, and a full answer: the client's conditional headers are
/// answered by the proxy, against the bytes it sends.
pub fn prepare_request(request: &mut RequestHeader) -> pingora::Result<()> {
    request.insert_header(header::ACCEPT_ENCODING, "identity")?;
    request.remove_header(&header::IF_NONE_MATCH);
    request.remove_header(&header::IF_MODIFIED_SINCE);
    Ok(())
}

/// The answer to the client for a fetched key set: rewritten when it is one and a configured
/// certificate carries one of its keys, else as the OP sent it; with its length, and a `304`
/// when `if_none_match` names its `ETag`.
pub fn answer(
    fetched: Fetched,
    route: &X5cRoute,
    if_none_match: Option<&str>,
    metrics: &Metrics,
) -> pingora::Result<(ResponseHeader, Bytes)> {
    let Fetched { mut head, body } = fetched;
    hop::remove_hop_by_hop(&mut head);
    head.remove_header(&header::TRANSFER_ENCODING);
    let rewritten = if rewritable(&head, &route.path, metrics) {
        rewrite(&body, route, metrics)
    } else {
        None
    };
    let body = match rewritten {
        Some(new) => {
            // A new representation: the OP's validators name the other one.
            head.remove_header(&header::LAST_MODIFIED);
            head.insert_header(header::ETAG, etag_of(&new))?;
            new
        }
        None => body,
    };
    let etag = head
        .headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let not_modified = head.status == http::StatusCode::OK
        && etag
            .as_deref()
            .zip(if_none_match)
            .is_some_and(|(etag, inm)| names_etag(inm, etag));
    if not_modified {
        head.set_status(http::StatusCode::NOT_MODIFIED)?;
        for name in [
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
        ] {
            head.remove_header(&name);
        }
        return Ok((head, Bytes::new()));
    }
    head.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    Ok((head, body))
}

/// Whether the OP's answer is an uncompressed JSON key set worth reading.
fn rewritable(head: &ResponseHeader, path: &str, metrics: &Metrics) -> bool {
    if head.status != http::StatusCode::OK {
        return false;
    }
    let value = |name| {
        head.headers
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    let encoding = value(header::CONTENT_ENCODING);
    if encoding.as_deref().is_some_and(|e| e != "identity") {
        metrics.x5c_result(X5cResult::Encoded);
        tracing::warn!(
            path,
            "key set is compressed despite accept-encoding: identity; passed through without x5c"
        );
        return false;
    }
    if !value(header::CONTENT_TYPE).is_some_and(|t| t.contains("json")) {
        metrics.x5c_result(X5cResult::InvalidBody);
        tracing::warn!(
            path,
            "key set response is not JSON; passed through without x5c"
        );
        return false;
    }
    true
}

/// The rewritten document, or `None` when the OP's bytes stay (nothing to add, or not a key set).
fn rewrite(original: &[u8], route: &X5cRoute, metrics: &Metrics) -> Option<Bytes> {
    match inject(original, &route.chains) {
        Ok(result) => {
            for (kid, outcome) in &result.keys {
                metrics.x5c_result(match outcome {
                    KeyOutcome::Injected => X5cResult::Injected,
                    KeyOutcome::Present => X5cResult::Present,
                    KeyOutcome::NoMatch => X5cResult::NoMatch,
                });
                match outcome {
                    KeyOutcome::NoMatch => tracing::warn!(
                        path = route.path,
                        kid,
                        "no configured certificate carries this key; published without x5c"
                    ),
                    KeyOutcome::Injected => tracing::debug!(path = route.path, kid, "x5c added"),
                    KeyOutcome::Present => {}
                }
            }
            result.body.map(Bytes::from)
        }
        Err(e) => {
            metrics.x5c_result(X5cResult::InvalidBody);
            tracing::warn!(
                path = route.path,
                reason = e.reason(),
                "key set passed through without x5c"
            );
            None
        }
    }
}

/// A strong validator of exactly these bytes.
fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"x5c-{}\"", URL_SAFE_NO_PAD.encode(&digest[..18]))
}

/// `If-None-Match` compares weakly (RFC 9110 §13.1.2): `W/` is ignored, `*` matches anything.
fn names_etag(if_none_match: &str, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let etag = bare(etag);
    if_none_match
        .split(',')
        .any(|candidate| candidate.trim() == "*" || bare(candidate) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(names_etag("\"a\"", "\"a\""));
        assert!(names_etag("W/\"a\"", "\"a\""));
        assert!(names_etag("\"b\", W/\"a\"", "\"a\""));
        assert!(names_etag("*", "\"a\""));
        assert!(!names_etag("\"b\"", "\"a\""));
        assert!(!names_etag("", "\"a\""));
    }

    #[test]
    fn etags_name_the_bytes() {
        assert_eq!(etag_of(b"x"), etag_of(b"x"));
        assert_ne!(etag_of(b"x"), etag_of(b"y"));
        assert!(etag_of(b"x").starts_with("\"x5c-") && etag_of(b"x").ends_with('"'));
    }
}
