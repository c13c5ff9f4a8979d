//! README "How a request is handled", step 7: a valid hint is rewritten and forwarded, whatever the framing of the request.

use eam_tests::http::{Connection, CONTINUE_TIMEOUT};
use eam_tests::upstream::DEFAULT_BODY;
use eam_tests::{
    assert_entra_rewrite, microsoft_claims, parse_form, sign_hint, upstream_and_proxy,
    EntraRequest, ProxyProcess, Recorded, Request, Response, OID, TENANT_ID, USERNAME,
};
use serde_json::Value;

fn valid_request() -> (EntraRequest, Value) {
    let claims = microsoft_claims();
    (EntraRequest::new(&sign_hint(&claims)), claims)
}

/// The client must get the upstream's own answer, not one made up by the proxy.
fn assert_upstream_answer(response: &Response) {
    response.assert_upstream_ok();
    assert_eq!(response.text(), DEFAULT_BODY);
}

/// A rewritten POST: re-encoded body with an exact Content-Length and no chunking.
fn assert_forwarded_post(request: &Recorded, sent: &EntraRequest, claims: &Value) {
    assert_eq!(request.method, "POST");
    assert_eq!(request.target, "/authorize");
    let content_type = request.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/x-www-form-urlencoded"),
        "content-type {content_type:?}"
    );
    assert_eq!(
        request.header("transfer-encoding"),
        None,
        "the rewritten body must be sent with a Content-Length: {:?}",
        request.headers
    );
    assert_eq!(
        request.header("content-length"),
        Some(request.body.len().to_string().as_str()),
        "Content-Length must be the rewritten body's length: {:?}",
        request.headers
    );
    assert_entra_rewrite(&parse_form(&request.body), sent, claims);
}

/// Sends `request`, made of a valid Entra request, through a proxy of its own and asserts the
/// client got the upstream's answer. Returns the proxy, the Entra request, its hint's claims
/// and the one request the upstream received.
fn forward(
    request: impl FnOnce(&EntraRequest) -> Request,
) -> (ProxyProcess, EntraRequest, Value, Recorded) {
    let (upstream, proxy) = upstream_and_proxy();
    let (sent, claims) = valid_request();
    assert_upstream_answer(&proxy.send(&request(&sent)));
    let received = upstream.only_request();
    (proxy, sent, claims, received)
}

#[test]
fn valid_hint_post_is_rewritten_and_forwarded() {
    let (proxy, sent, claims, received) = forward(EntraRequest::post);
    assert_forwarded_post(&received, &sent, &claims);

    let decision = proxy.decision(sent.client_request_id());
    assert_eq!(decision["tid"], TENANT_ID, "{decision}");
    assert_eq!(decision["oid"], OID, "{decision}");
    let log = proxy.log();
    assert!(!log.contains(sent.hint()), "the hint must never be logged");
    assert!(
        !log.contains(USERNAME),
        "preferred_username is logged only with log.include_username"
    );
}

#[test]
fn valid_hint_get_is_rewritten_in_the_query() {
    let (_, sent, claims, request) = forward(EntraRequest::get_request);
    assert_eq!(request.method, "GET");
    assert_eq!(request.path(), "/authorize");
    assert!(request.body.is_empty(), "a GET has no body");
    let query = request.query().expect("the rewritten query");
    assert_entra_rewrite(&parse_form(query.as_bytes()), &sent, &claims);
}

#[test]
fn form_content_type_with_charset_is_an_entra_post() {
    let (_, sent, claims, received) = forward(|sent| {
        Request::post("/authorize")
            .header(
                "Content-Type",
                "application/x-www-form-urlencoded; charset=UTF-8",
            )
            .body(sent.encoded())
    });
    assert_entra_rewrite(&parse_form(&received.body), &sent, &claims);
}

#[test]
fn chunked_entra_post_is_forwarded_with_content_length() {
    let (_, sent, claims, received) = forward(|sent| {
        // Small chunks, so that chunk boundaries fall inside the hint and the percent-escapes.
        let chunks: Vec<Vec<u8>> = sent
            .encoded()
            .as_bytes()
            .chunks(97)
            .map(<[u8]>::to_vec)
            .collect();
        assert!(chunks.len() > 3);
        Request::post("/authorize")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .chunked(chunks)
    });
    assert_forwarded_post(&received, &sent, &claims);
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let (upstream, proxy) = upstream_and_proxy();
    let (sent, claims) = valid_request();
    let request = sent.post().header("Expect", "100-continue");

    let mut conn = Connection::open(proxy.addr);
    conn.write(&request.head_bytes());
    let interim = conn
        .read_one(CONTINUE_TIMEOUT)
        .unwrap_or_else(|e| panic!("no 100 Continue within {CONTINUE_TIMEOUT:?}: {e}"));
    assert_eq!(
        interim.status,
        100,
        "expected 100 Continue before sending the body, got {}",
        interim.describe()
    );
    assert!(
        interim.raw.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{:?}",
        String::from_utf8_lossy(&interim.raw)
    );
    conn.write(&request.body_bytes());
    let response = conn.read_response();

    assert_upstream_answer(&response);
    assert_forwarded_post(&upstream.only_request(), &sent, &claims);
}

#[test]
fn keep_alive_connection_carries_two_entra_posts() {
    let (upstream, proxy) = upstream_and_proxy();
    let (first, first_claims) = valid_request();
    let (second, second_claims) = valid_request();

    let mut conn = Connection::open(proxy.addr);
    conn.write(&first.post().to_bytes());
    assert_upstream_answer(&conn.read_response());
    conn.write(&second.post().to_bytes());
    assert_upstream_answer(&conn.read_response());

    let requests = upstream.wait_for(2, std::time::Duration::from_secs(5));
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert_forwarded_post(&requests[0], &first, &first_claims);
    assert_forwarded_post(&requests[1], &second, &second_claims);
}
