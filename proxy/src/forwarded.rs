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

impl Peer {
    /// The connection's facts; the peer is trusted when it is in one of `trusted` (the parsed
    /// `server.trusted_proxies`).
    pub fn new(ip: Option<IpAddr>, trusted: &[ipnet::IpNet], tls: bool) -> Peer {
        Peer {
            ip,
            trusted: ip.is_some_and(|ip| in_networks(trusted, &ip)),
            tls,
        }
    }
}

/// Whether `ip` is in one of `networks` (`trusted_proxies`, `limits.exempt`).
pub(crate) fn in_networks(networks: &[ipnet::IpNet], ip: &IpAddr) -> bool {
    networks.iter().any(|net| net.contains(ip))
}

/// Every `X-Forwarded-For` field line, in order: a balancer may add its own line.
fn forwarded_for_lines(client: &RequestHeader) -> impl DoubleEndedIterator<Item = &str> {
    client
        .headers
        .get_all(X_FORWARDED_FOR)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
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
    let lines: Vec<&str> = if peer.trusted {
        forwarded_for_lines(client).collect()
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

/// The client a request is counted against (README "Abuse limits"): the peer, or, when the peer
/// is a trusted proxy, the `X-Forwarded-For` entry found walking right to left past trusted
/// addresses. Entries left of the first untrusted one are the client's own words and never
/// read; an entry that is not an address stops the walk at the last trusted hop.
pub fn client_address(
    client: &RequestHeader,
    peer: Peer,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let mut address = peer.ip?;
    if !peer.trusted {
        return Some(address);
    }
    for entry in forwarded_for_lines(client)
        .rev()
        .flat_map(|line| line.rsplit(','))
    {
        match parse_hop(entry.trim()) {
            Some(ip) => address = ip,
            None => break,
        }
        if !in_networks(trusted, &address) {
            break;
        }
    }
    Some(address)
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`192.0.2.1:443`, `[::1]:443`).
fn parse_hop(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
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

    fn client_of(lines: &[(&str, &str)], peer: &str) -> Option<IpAddr> {
        let trusted: Vec<ipnet::IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8:ffff::/48".parse().unwrap(),
        ];
        let peer = Peer::new(Some(peer.parse().unwrap()), &trusted, false);
        client_address(&head(lines), peer, &trusted)
    }

    fn addr(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn the_client_is_the_peer_unless_the_peer_is_trusted() {
        let forged = [("x-forwarded-for", "203.0.113.9")];
        assert_eq!(client_of(&forged, "192.0.2.7"), addr("192.0.2.7"));
        assert_eq!(client_of(&[], "10.0.0.2"), addr("10.0.0.2"));
        let peer = Peer {
            ip: None,
            trusted: false,
            tls: false,
        };
        assert_eq!(client_address(&head(&[]), peer, &[]), None);
    }

    #[test]
    fn through_trusted_proxies_the_client_is_the_rightmost_untrusted_hop() {
        // The client's own entries (left of the first untrusted one) are never believed.
        let chain = [("x-forwarded-for", "1.1.1.1, 198.51.100.4, 10.2.0.1")];
        assert_eq!(client_of(&chain, "10.0.0.2"), addr("198.51.100.4"));
        // Every line counts, the last one nearest.
        let lines = [
            ("x-forwarded-for", "1.1.1.1, 198.51.100.4"),
            ("x-forwarded-for", "10.9.9.9"),
        ];
        assert_eq!(client_of(&lines, "10.0.0.2"), addr("198.51.100.4"));
        let v6 = [("x-forwarded-for", "2001:db8:1::5, [2001:db8:ffff::1]:443")];
        assert_eq!(client_of(&v6, "2001:db8:ffff::2"), addr("2001:db8:1::5"));
        let ported = [("x-forwarded-for", "198.51.100.4:5123")];
        assert_eq!(client_of(&ported, "10.0.0.2"), addr("198.51.100.4"));
        // Only trusted hops: the farthest of them.
        let internal = [("x-forwarded-for", "10.3.0.1, 10.2.0.1")];
        assert_eq!(client_of(&internal, "10.0.0.2"), addr("10.3.0.1"));
        // Garbage stops the walk at the last trusted hop.
        let garbage = [("x-forwarded-for", "198.51.100.4, unknown, 10.2.0.1")];
        assert_eq!(client_of(&garbage, "10.0.0.2"), addr("10.2.0.1"));
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
