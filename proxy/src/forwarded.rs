//! What the upstream learns of the client (README "Pass-through"): the client's routing headers
//! removed (`filters::headers`) and the proxy's `X-Forwarded-*`. Pure functions of the client's
//! head and the connection's facts, so each rule is tested without a socket.

use std::net::IpAddr;

use filters::HeaderPolicy;
use http::header::{self, HeaderName};
use pingora::http::RequestHeader;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub ip: Option<IpAddr>,
    /// The direct peer is one of `server.trusted_proxies` (a cloud load balancer).
    pub trusted: bool,
    pub tls: bool,
}

/// `X-Forwarded-*` as the upstream should see them; `None` removes the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub for_chain: Option<String>,
    pub proto: String,
    pub host: Option<String>,
}

/// From a trusted proxy the chain is extended and its proto and host kept; from anyone else they
/// are replaced, so a client cannot forge its address.
pub fn forwarded(client: &RequestHeader, peer: Peer) -> Forwarded {
    let incoming = |name: HeaderName| {
        peer.trusted
            .then(|| client.headers.get(name).and_then(|v| v.to_str().ok()))
            .flatten()
            .map(str::to_string)
    };
    // A balancer may add its own field line: the chain is every line, in order.
    let lines: Vec<&str> = if peer.trusted {
        client
            .headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    } else {
        Vec::new()
    };
    let chain = (!lines.is_empty()).then(|| lines.join(", "));
    let for_chain = match (chain, peer.ip) {
        (Some(chain), Some(ip)) => Some(format!("{chain}, {ip}")),
        (chain, ip) => ip.map(|ip| ip.to_string()).or(chain),
    };
    let proto = incoming(X_FORWARDED_PROTO)
        .unwrap_or_else(|| if peer.tls { "https" } else { "http" }.into());
    let host = incoming(X_FORWARDED_HOST)
        .or_else(|| {
            client
                .headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .or_else(|| client.uri.authority().map(|a| a.to_string()));
    Forwarded {
        for_chain,
        proto,
        host,
    }
}

impl Forwarded {
    pub fn apply(self, upstream: &mut RequestHeader) -> pingora::Result<()> {
        match self.for_chain {
            Some(value) => upstream.insert_header(X_FORWARDED_FOR, value)?,
            None => drop(upstream.remove_header(&X_FORWARDED_FOR)),
        }
        upstream.insert_header(X_FORWARDED_PROTO, self.proto)?;
        match self.host {
            Some(host) => upstream.insert_header(X_FORWARDED_HOST, host)?,
            None => drop(upstream.remove_header(&X_FORWARDED_HOST)),
        }
        Ok(())
    }
}

/// Removes the client headers that frameworks route on or read the client's identity from, on
/// every path.
pub fn remove_client_headers(upstream: &mut RequestHeader, policy: &HeaderPolicy, peer: Peer) {
    let drops = |name: &HeaderName| policy.drops(name.as_str(), peer.trusted);
    // Most requests carry none: allocate only for those that do.
    if !upstream.headers.keys().any(drops) {
        return;
    }
    let dropped: Vec<HeaderName> = upstream
        .headers
        .keys()
        .filter(|n| drops(n))
        .cloned()
        .collect();
    for name in dropped {
        upstream.remove_header(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(lines: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
        for (name, value) in lines {
            req.append_header(name.to_string(), *value).unwrap();
        }
        req
    }

    const CLIENT: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)));

    /// What a client's head becomes from the peer `CLIENT` over plain HTTP: (for, proto, host).
    fn from_client(lines: &[(&str, &str)], trusted: bool) -> (String, String, String) {
        let peer = Peer {
            ip: CLIENT,
            trusted,
            tls: false,
        };
        let f = forwarded(&head(lines), peer);
        (f.for_chain.unwrap(), f.proto, f.host.unwrap())
    }

    #[test]
    fn an_untrusted_peer_cannot_forge_its_address_proto_or_host() {
        let forged = [
            ("host", "idp.example"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ];
        assert_eq!(
            from_client(&forged, false),
            ("192.0.2.7".into(), "http".into(), "idp.example".into())
        );
    }

    #[test]
    fn a_trusted_peer_extends_the_chain_over_every_line_and_keeps_proto_and_host() {
        let relayed = [
            ("host", "internal:8080"),
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "idp.example"),
        ];
        assert_eq!(
            from_client(&relayed, true),
            (
                "203.0.113.1, 10.0.0.1, 192.0.2.7".into(),
                "https".into(),
                "idp.example".into()
            )
        );
    }

    #[test]
    fn without_a_peer_address_or_host_the_headers_are_removed() {
        let client = head(&[("x-forwarded-for", "1.2.3.4")]);
        let peer = Peer {
            ip: None,
            trusted: false,
            tls: true,
        };
        let f = forwarded(&client, peer);
        assert_eq!((f.for_chain.as_deref(), f.proto.as_str()), (None, "https"));
        let mut upstream = head(&[("x-forwarded-for", "1.2.3.4"), ("x-forwarded-host", "h")]);
        f.apply(&mut upstream).unwrap();
        assert!(upstream.headers.get(X_FORWARDED_FOR).is_none());
        assert!(upstream.headers.get(X_FORWARDED_HOST).is_none());
        assert_eq!(upstream.headers[X_FORWARDED_PROTO], "https");
    }
}
