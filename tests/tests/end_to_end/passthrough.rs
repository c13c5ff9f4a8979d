//! README "Pass-through": everything that is not an authorize request reaches the upstream unchanged, and
//! upstream failures are told apart (502 down, 504 too slow).

use std::time::{Duration, Instant};

use eam_tests::{
    closed_port, microsoft_claims, sign_hint, EntraRequest, ProxyConfig, ProxyProcess, Reply,
    Request, Upstream, Verdict, DEFAULT_HOST,
};

/// Answers by path, so that a test can tell which request produced which answer.
fn routing_upstream() -> Upstream {
    Upstream::with_responder(|request| match request.path() {
        "/token" => Reply::ok(r#"{"access_token":"abc","token_type":"Bearer"}"#)
            .status(201)
            .header("X-Reply", "token"),
        "/.well-known/openid-configuration" => {
            Reply::ok(r#"{"issuer":"https://idp.example.test"}"#).header("X-Reply", "discovery")
        }
        "/missing" => Reply::ok("no such page").status(404),
        _ => Reply::ok("echo"),
    })
}

fn start(upstream: &Upstream) -> ProxyProcess {
    ProxyProcess::start(ProxyConfig::new(upstream))
}

#[test]
fn token_post_passes_through_byte_for_byte() {
    let upstream = routing_upstream();
    let proxy = start(&upstream);
    // entra_sub here is not spoofing: stripping applies to authorize paths only.
    let body = "grant_type=authorization_code&code=SplxlOBeZQQYbYS6WxSbIA\
                &redirect_uri=https%3A%2F%2Fclient.example.org%2Fcb&entra_sub=kept";
    let request = Request::post("/token?x=1")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Authorization", "Basic czZCaGRSa3F0MzpnWDFmQmF0M2JW")
        .header("X-Custom", "kept-value")
        .body(body);

    let response = proxy.send(&request);

    assert_eq!(response.status, 201, "{}", response.describe());
    assert_eq!(response.header("x-reply"), Some("token"));
    assert_eq!(response.verdict(), Verdict::Forwarded);
    assert_eq!(
        response.text(),
        r#"{"access_token":"abc","token_type":"Bearer"}"#
    );

    let received = upstream.only_request();
    assert_eq!(received.method, "POST");
    assert_eq!(received.target, "/token?x=1");
    assert_eq!(received.body_text(), body);
    assert_eq!(received.header("x-custom"), Some("kept-value"));
    assert_eq!(
        received.header("authorization"),
        Some("Basic czZCaGRSa3F0MzpnWDFmQmF0M2JW")
    );
    assert_eq!(
        received.header("host"),
        Some(DEFAULT_HOST),
        "the client's Host is kept by default"
    );
    assert_forwarded_headers(&received);
}

fn assert_forwarded_headers(received: &eam_tests::Recorded) {
    let headers = &received.headers;
    assert!(
        received
            .header("x-forwarded-for")
            .is_some_and(|v| v.contains("127.0.0.1")),
        "X-Forwarded-For with the client address: {headers:?}"
    );
    assert_eq!(
        received.header("x-forwarded-proto"),
        Some("http"),
        "{headers:?}"
    );
    assert_eq!(
        received.header("x-forwarded-host"),
        Some(DEFAULT_HOST),
        "{headers:?}"
    );
}

#[test]
fn discovery_get_and_upstream_statuses_pass_through() {
    let upstream = routing_upstream();
    let proxy = start(&upstream);

    let discovery = proxy.send(
        &Request::get("/.well-known/openid-configuration?x=1").header("X-Custom", "kept-value"),
    );
    let missing = proxy.send(&Request::get("/missing"));

    assert_eq!(discovery.status, 200, "{}", discovery.describe());
    assert_eq!(discovery.header("x-reply"), Some("discovery"));
    assert_eq!(discovery.text(), r#"{"issuer":"https://idp.example.test"}"#);
    assert_eq!(missing.status, 404, "{}", missing.describe());
    assert_eq!(missing.text(), "no such page");

    let requests = upstream.wait_for(2, Duration::from_secs(5));
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].target, "/.well-known/openid-configuration?x=1");
    assert!(requests[0].body.is_empty());
    assert_eq!(requests[0].header("x-custom"), Some("kept-value"));
    assert_forwarded_headers(&requests[0]);
    assert_eq!(requests[1].target, "/missing");
}

#[test]
fn large_and_chunked_bodies_pass_through() {
    let upstream = routing_upstream();
    let proxy = start(&upstream);
    // Above max_body_bytes and above Pingora's 64 KiB buffer: only authorize bodies are limited.
    let large: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let chunked: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();

    let first = proxy.send(
        &Request::post("/upload")
            .header("Content-Type", "application/octet-stream")
            .body(large.clone()),
    );
    let second = proxy.send(
        &Request::post("/upload")
            .header("Content-Type", "application/octet-stream")
            .chunked(chunked.chunks(7_000).map(<[u8]>::to_vec).collect()),
    );

    assert_eq!(first.status, 200, "{}", first.describe());
    assert_eq!(second.status, 200, "{}", second.describe());
    let requests = upstream.wait_for(2, Duration::from_secs(5));
    assert!(requests[0].body == large, "the large body arrived altered");
    assert!(
        requests[1].body == chunked,
        "the chunked body arrived altered"
    );
}

#[test]
fn upstream_down_is_502() {
    let proxy = ProxyProcess::start_unready(ProxyConfig::with_upstreams(&[closed_port()]));

    let response = proxy.send(&Request::get("/.well-known/openid-configuration"));
    assert_eq!(response.status, 502, "{}", response.describe());
    assert!(!response.body.is_empty(), "502 with a short body");

    let entra = EntraRequest::new(&sign_hint(&microsoft_claims()));
    let response = proxy.send(&entra.post());
    assert_eq!(
        response.status,
        502,
        "a valid Entra request with no upstream: {}",
        response.describe()
    );
}

#[test]
fn upstream_timeout_is_504() {
    let upstream = Upstream::hanging();
    let proxy = ProxyProcess::start(
        ProxyConfig::new(&upstream).with(|c| c.upstream.read_timeout_ms = 1000),
    );

    let started = Instant::now();
    let response = proxy.send(&Request::get("/slow"));

    assert_eq!(response.status, 504, "{}", response.describe());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "504 after {:?}, read_timeout_ms is 1000",
        started.elapsed()
    );
    assert_eq!(
        upstream.wait_for(1, Duration::from_secs(1))[0].target,
        "/slow"
    );
}

/// A streamed body reaches the upstream whole however its bytes are cut: chunk-size lines and
/// data in separate segments, a length-framed body in pieces. (The HTTP/2 framing workaround of
/// docs/PINGORA.md once ended the upstream body at the first empty read, before its end.)
#[test]
fn a_body_sent_in_pieces_arrives_whole() {
    let upstream = routing_upstream();
    let proxy = start(&upstream);
    let pause = || std::thread::sleep(Duration::from_millis(30));
    let head = |framing: &str| {
        format!(
            "POST /token HTTP/1.1\r\nHost: {DEFAULT_HOST}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n{framing}\r\n\r\n"
        )
    };

    let mut chunked = eam_tests::http::Connection::open(proxy.addr);
    chunked.write(head("Transfer-Encoding: chunked").as_bytes());
    for piece in [
        "6\r\n",
        "a=1&b=",
        "\r\n",
        "3\r\n",
        "2&c",
        "\r\n",
        "2\r\n=3\r\n",
        "0\r\n\r\n",
    ] {
        pause();
        chunked.write(piece.as_bytes());
    }
    let response = chunked.read_response();
    assert_eq!(response.status, 201, "{}", response.describe());

    let mut length = eam_tests::http::Connection::open(proxy.addr);
    length.write(head("Content-Length: 11").as_bytes());
    for piece in ["a=1", "&b=2", "&c=3"] {
        pause();
        length.write(piece.as_bytes());
    }
    let response = length.read_response();
    assert_eq!(response.status, 201, "{}", response.describe());

    let bodies: Vec<String> = upstream
        .wait_for(2, Duration::from_secs(5))
        .iter()
        .map(|r| r.body_text())
        .collect();
    assert_eq!(bodies, ["a=1&b=2&c=3", "a=1&b=2&c=3"]);
}
