//! README "Pass-through" / issue 6: the proxy sets `X-Forwarded-For`, `-Proto` and `-Host`. A client cannot
//! forge them; a direct peer listed in `server.trusted_proxies` (a cloud load balancer) has its
//! chain extended and its proto/host kept. Issue 16: the other headers frameworks route on
//! (`server.routing_headers`) are removed unless the peer is trusted, and names with `_` always
//! (`server.underscores_in_headers`).
//!
//! The test client connects from 127.0.0.1.

use eam_tests::{
    microsoft_claims, sign_hint, EntraRequest, ProxyConfig, ProxyProcess, Recorded, Request,
    Upstream, DEFAULT_HOST,
};

const FORGED_FOR: &str = "6.6.6.6";
const FORGED_PROTO: &str = "https";
const FORGED_HOST: &str = "evil.example.test";

/// The `X-Forwarded-*` values the upstream received, every field line of each.
#[derive(Debug, PartialEq, Eq)]
struct Forwarded {
    r#for: Vec<String>,
    proto: Vec<String>,
    host: Vec<String>,
}

impl Forwarded {
    fn of(request: &Recorded) -> Forwarded {
        let all = |name: &str| {
            request
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .collect()
        };
        Forwarded {
            r#for: all("x-forwarded-for"),
            proto: all("x-forwarded-proto"),
            host: all("x-forwarded-host"),
        }
    }

    fn expected(r#for: &str, proto: &str, host: &str) -> Forwarded {
        Forwarded {
            r#for: vec![r#for.to_string()],
            proto: vec![proto.to_string()],
            host: vec![host.to_string()],
        }
    }
}

/// A proxy and its upstream.
struct Setup {
    upstream: Upstream,
    proxy: ProxyProcess,
}

impl Setup {
    /// `trusted`: the `server.trusted_proxies` list, or `None` to leave the key out.
    fn start(trusted: Option<&[&str]>) -> Setup {
        let upstream = Upstream::start();
        let mut config = ProxyConfig::new(&upstream);
        if let Some(trusted) = trusted {
            config = config.with(|c| {
                c.server.trusted_proxies = trusted.iter().map(|t| t.to_string()).collect()
            });
        }
        let proxy = ProxyProcess::start(config);
        Setup { upstream, proxy }
    }

    /// Sends `request`, which must be answered by the upstream, and returns it as received.
    fn forward(&self, request: &Request) -> Recorded {
        self.proxy.forward(&self.upstream, request)
    }

    /// Sends `request` (see [`Setup::forward`]) and asserts the `X-Forwarded-*` headers it
    /// arrived with; `what` says which case it is.
    fn assert_arrives_with(&self, request: &Request, expected: Forwarded, what: &str) {
        assert_eq!(Forwarded::of(&self.forward(request)), expected, "{what}");
    }
}

/// A GET carrying forged `X-Forwarded-*` headers.
fn forged(target: &str) -> Request {
    Request::get(target)
        .header("X-Forwarded-For", FORGED_FOR)
        .header("X-Forwarded-Proto", FORGED_PROTO)
        .header("X-Forwarded-Host", FORGED_HOST)
}

/// An Entra POST (the authorize route) carrying the same forged headers.
fn forged_entra_post() -> Request {
    EntraRequest::new(&sign_hint(&microsoft_claims()))
        .post()
        .header("X-Forwarded-For", FORGED_FOR)
        .header("X-Forwarded-Proto", FORGED_PROTO)
        .header("X-Forwarded-Host", FORGED_HOST)
}

/// What the upstream must see for a request from 127.0.0.1 whose headers are not trusted.
fn replaced() -> Forwarded {
    Forwarded::expected("127.0.0.1", "http", DEFAULT_HOST)
}

/// ... and from a trusted peer that sent the forged ones.
fn extended() -> Forwarded {
    Forwarded::expected(
        &format!("{FORGED_FOR}, 127.0.0.1"),
        FORGED_PROTO,
        FORGED_HOST,
    )
}

#[test]
fn forged_forwarded_headers_from_an_untrusted_client_are_replaced() {
    let setup = Setup::start(None);

    setup.assert_arrives_with(&Request::get("/plain"), replaced(), "no incoming headers");
    setup.assert_arrives_with(&forged("/page"), replaced(), "forged headers");
    setup.assert_arrives_with(
        &forged_entra_post(),
        replaced(),
        "forged headers on the authorize route",
    );

    // Repeated and oddly-cased field lines, and a forged chain, are all dropped.
    let request = Request::get("/repeated")
        .header("x-forwarded-for", "6.6.6.6, 10.0.0.1")
        .header("X-FORWARDED-FOR", "7.7.7.7")
        .header("x-forwarded-proto", "https")
        .header("X-Forwarded-Proto", "wss")
        .header("x-forwarded-host", FORGED_HOST)
        .header("X-Forwarded-Host", "another.example.test");
    setup.assert_arrives_with(&request, replaced(), "repeated forged headers");

    // X-Forwarded-Host follows the request's Host.
    let request = forged("/host").header("Host", "login.contoso.test:8443");
    setup.assert_arrives_with(
        &request,
        Forwarded::expected("127.0.0.1", "http", "login.contoso.test:8443"),
        "X-Forwarded-Host is the Host the client sent",
    );
}

#[test]
fn trusted_proxies_not_matching_the_peer_do_not_trust_it() {
    let setup = Setup::start(Some(&["10.0.0.0/8", "192.168.1.7", "::1"]));
    setup.assert_arrives_with(&forged("/page"), replaced(), "untrusted peer");
    setup.assert_arrives_with(
        &forged_entra_post(),
        replaced(),
        "untrusted peer, authorize",
    );
}

#[test]
fn trusted_proxy_chain_is_extended_and_proto_host_kept() {
    let setup = Setup::start(Some(&["127.0.0.1"]));

    setup.assert_arrives_with(&forged("/page"), extended(), "from a trusted peer");
    setup.assert_arrives_with(
        &forged_entra_post(),
        extended(),
        "from a trusted peer, authorize route",
    );

    // A chain of several hops is extended, not rewritten.
    let request = Request::get("/chain")
        .header("X-Forwarded-For", "6.6.6.6, 10.1.2.3")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "idp.contoso.test");
    setup.assert_arrives_with(
        &request,
        Forwarded::expected("6.6.6.6, 10.1.2.3, 127.0.0.1", "https", "idp.contoso.test"),
        "a chain of several hops",
    );

    // A trusted peer that sends none gets the proxy's own values.
    setup.assert_arrives_with(&Request::get("/plain"), replaced(), "no incoming headers");
}

#[test]
fn trusted_proxies_accept_cidr_ranges() {
    let setup = Setup::start(Some(&["10.0.0.0/8", "127.0.0.0/8"]));
    setup.assert_arrives_with(&forged("/page"), extended(), "trusted by range");
    setup.assert_arrives_with(
        &forged_entra_post(),
        extended(),
        "trusted by range, authorize",
    );
}

#[test]
fn trusted_chain_over_several_field_lines_is_kept_whole() {
    let setup = Setup::start(Some(&["127.0.0.1"]));
    // RFC 9110 §5.3: several field lines are one comma-separated list. Here the client forged
    // the first line and the balancer appended the address it saw (203.0.113.9) as a second.
    let request = Request::get("/lines")
        .header("X-Forwarded-For", "6.6.6.6")
        .header("X-Forwarded-For", "203.0.113.9");
    let seen = Forwarded::of(&setup.forward(&request));
    assert_eq!(
        seen.r#for,
        vec!["6.6.6.6, 203.0.113.9, 127.0.0.1".to_string()],
        "{seen:?}"
    );
}

/// Issue 16: headers that frameworks route on or read the client's identity from, as a client
/// would forge them to reach the authorize handler under a path the proxy did not filter.
fn routing_forgeries(target: &str) -> Request {
    Request::get(target)
        .header("X-Original-URL", "/authorize")
        .header("X-Rewrite-URL", "/authorize")
        .header("X-Forwarded-Prefix", "/x")
        .header("Forwarded", "for=6.6.6.6;proto=https")
        .header("X-Real-IP", FORGED_FOR)
        .header("X-Remote-User", "admin")
        .header("SCRIPT_NAME", "/x")
        .header("Path_Info", "/authorize")
        .header("X_Forwarded_For", FORGED_FOR)
        .header("X-Kept", "yes")
}

/// The names of the headers the upstream received, lower-case, in order.
fn names(request: &Recorded) -> Vec<String> {
    request
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect()
}

const ROUTING: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-forwarded-prefix",
    "forwarded",
    "x-real-ip",
    "x-remote-user",
];
const UNDERSCORED: &[&str] = &["script_name", "path_info", "x_forwarded_for"];

#[test]
fn routing_headers_from_clients_never_reach_the_upstream() {
    let setup = Setup::start(None);
    for target in ["/x/authorize", "/authorize?client_id=app"] {
        let received = setup.forward(&routing_forgeries(target));
        let seen = names(&received);
        for name in ROUTING.iter().chain(UNDERSCORED) {
            assert!(
                !seen.contains(&name.to_string()),
                "{target}: {name} kept: {seen:?}"
            );
        }
        assert_eq!(received.header("x-kept"), Some("yes"), "{seen:?}");
    }
}

#[test]
fn a_trusted_proxy_keeps_routing_headers_but_not_underscored_ones() {
    let setup = Setup::start(Some(&["127.0.0.1"]));
    let received = setup.forward(&routing_forgeries("/x/authorize"));
    let seen = names(&received);
    for name in ROUTING {
        assert!(seen.contains(&name.to_string()), "{name} dropped: {seen:?}");
    }
    for name in UNDERSCORED {
        assert!(!seen.contains(&name.to_string()), "{name} kept: {seen:?}");
    }
}

#[test]
fn routing_headers_and_underscores_are_configurable() {
    let upstream = Upstream::start();
    let config = ProxyConfig::new(&upstream).with(|c| {
        c.server.routing_headers = vec!["x-kept".into()];
        c.server.underscores_in_headers = true;
    });
    let proxy = ProxyProcess::start(config);
    let seen = names(&proxy.forward(&upstream, &routing_forgeries("/page")));
    for name in ROUTING.iter().chain(UNDERSCORED) {
        assert!(seen.contains(&name.to_string()), "{name} dropped: {seen:?}");
    }
    assert!(!seen.contains(&"x-kept".to_string()), "{seen:?}");
}
