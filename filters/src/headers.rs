//! Which client headers the upstream must never see (docs/SECURITY.md, "Routing headers").
//!
//! Frameworks route on some request headers as if a proxy of theirs had set them: gunicorn
//! takes `SCRIPT_NAME` from loopback peers (a sidecar proxy is one), Symfony and IIS take
//! `X-Original-URL`, Spring and werkzeug's `ProxyFix` take `X-Forwarded-Prefix`. A client that
//! sets them reaches the authorize handler under a path the proxy did not filter. Headers whose
//! names hold `_` are the same risk in disguise: CGI-style servers fold `-` and `_` together
//! (`SCRIPT_NAME`, `PATH_INFO`, `X_FORWARDED_FOR`), which is why nginx drops them by default.

/// Client headers used for routing, the request's URL, or the client's identity, removed
/// unless the direct peer is a trusted proxy. The `X-Forwarded-For`, `-Proto` and `-Host` that
/// the proxy writes itself are not listed: from other peers they are replaced.
pub const ROUTING_HEADERS: &[&str] = &[
    "forwarded",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-forwarded-prefix",
    "x-forwarded-path",
    "x-forwarded-uri",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-url-scheme",
    "x-scheme",
    "front-end-https",
    "x-script-name",
    "script-name",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "x-remote-user",
    "remote-user",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-auth-request-user",
    "x-auth-request-email",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderPolicy {
    /// Lower-case names, sorted, removed unless the peer is trusted (`server.routing_headers`).
    routing: Vec<String>,
    /// `server.underscores_in_headers`: keep names with `_`, from any peer.
    underscores_allowed: bool,
}

impl Default for HeaderPolicy {
    fn default() -> Self {
        HeaderPolicy::new(ROUTING_HEADERS, false)
    }
}

impl HeaderPolicy {
    pub fn new(routing: &[impl AsRef<str>], underscores_allowed: bool) -> HeaderPolicy {
        let mut routing: Vec<String> = routing
            .iter()
            .map(|h| h.as_ref().to_ascii_lowercase())
            .collect();
        routing.sort();
        routing.dedup();
        HeaderPolicy {
            routing,
            underscores_allowed,
        }
    }

    /// Whether a client header named `name` (lower-case, as HTTP/2 and the `http` crate give
    /// it) is removed before the request goes upstream. It runs for every request: a binary
    /// search, no allocation.
    pub fn drops(&self, name: &str, peer_is_trusted: bool) -> bool {
        (!self.underscores_allowed && name.contains('_'))
            || (!peer_is_trusted
                && self
                    .routing
                    .binary_search_by(|r| r.as_str().cmp(name))
                    .is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_headers_only_from_trusted_peers_and_underscores_never() {
        let policy = HeaderPolicy::default();
        for name in [
            "x-original-url",
            "x-forwarded-prefix",
            "forwarded",
            "x-real-ip",
        ] {
            assert!(policy.drops(name, false), "{name}");
            assert!(!policy.drops(name, true), "{name}");
        }
        for name in ["script_name", "path_info", "x_forwarded_for", "_"] {
            assert!(policy.drops(name, false), "{name}");
            assert!(policy.drops(name, true), "{name}");
        }
        for name in ["cookie", "user-agent", "x-forwarded-for", "content-type"] {
            assert!(!policy.drops(name, false), "{name}");
        }
        let lenient = HeaderPolicy::new(&["X-Kept"], true);
        assert!(!lenient.drops("script_name", false));
        assert!(!lenient.drops("x-original-url", false));
        assert!(lenient.drops("x-kept", false));
        assert!(ROUTING_HEADERS.iter().all(|h| h.to_ascii_lowercase() == *h));
    }
}
