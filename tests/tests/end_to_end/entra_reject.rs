//! README "How a request is handled", steps 1, 5, 6 and 8: an Entra request that fails a check never reaches the upstream;
//! Entra gets an OAuth error it can act on, and the log names the reason without the token.

use eam_tests::hints::{issuer, sign_hs256, unsigned};
use eam_tests::{
    assert_forwarded, microsoft_claims, now, parse_html_form, sign_hint, upstream_and_proxy,
    EntraRequest, Request, Response, CLIENT_ID, FOREIGN, GLOBAL_REDIRECT, MSA_TENANT_ID,
    OTHER_TENANT_ID, SIGNER, TENANT_ID,
};
use serde_json::{json, Value};
use std::panic::AssertUnwindSafe;

/// The CSP directive `name`'s sources.
fn csp_sources<'a>(csp: &'a str, name: &str) -> Option<Vec<&'a str>> {
    csp.split(';').find_map(|directive| {
        let mut words = directive.split_whitespace();
        (words.next()? == name).then(|| words.collect())
    })
}

/// Asserts a form_post error page (README "How a request is handled", step 8) and returns its form's fields.
fn assert_form_post_error(response: &Response, expected_error: &str) -> Vec<(String, String)> {
    assert_eq!(response.status, 200, "{}", response.describe());
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/html"),
        "content-type {content_type:?}"
    );
    assert!(
        response
            .header("cache-control")
            .is_some_and(|v| v.contains("no-store")),
        "Cache-Control: no-store expected: {:?}",
        response.headers
    );
    assert!(
        response
            .header("x-frame-options")
            .is_some_and(|v| v.eq_ignore_ascii_case("DENY")),
        "X-Frame-Options: DENY expected: {:?}",
        response.headers
    );

    let csp = response
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("no Content-Security-Policy: {:?}", response.headers));
    assert_eq!(
        csp_sources(csp, "default-src"),
        Some(vec!["'none'"]),
        "CSP must allow nothing by default: {csp}"
    );
    let form_action =
        csp_sources(csp, "form-action").unwrap_or_else(|| panic!("CSP without form-action: {csp}"));
    assert!(
        !form_action.is_empty()
            && form_action.iter().all(|source| GLOBAL_REDIRECT
                .starts_with(source.trim_end_matches('/'))
                && source.starts_with("https://")),
        "CSP form-action must allow only the redirect_uri: {csp}"
    );
    let script_src =
        csp_sources(csp, "script-src").unwrap_or_else(|| panic!("CSP without script-src: {csp}"));
    assert!(
        !script_src.is_empty()
            && script_src
                .iter()
                .all(|source| ["'sha256-", "'sha384-", "'sha512-", "'nonce-"]
                    .iter()
                    .any(|p| source.starts_with(p))),
        "CSP must allow only the one inline script (by hash or nonce): {csp}"
    );

    let form = parse_html_form(&response.text())
        .unwrap_or_else(|| panic!("no form in the page: {}", response.text()));
    assert!(form.method.eq_ignore_ascii_case("post"), "{form:?}");
    assert_eq!(form.action, GLOBAL_REDIRECT, "{form:?}");
    assert_eq!(form.field("error"), Some(expected_error), "{form:?}");
    assert!(
        form.field("error_description")
            .is_some_and(|d| !d.is_empty()),
        "{form:?}"
    );
    form.fields
}

/// Asserts that nothing of the hint appears in `text` (whole, payload or signature).
fn assert_no_token(text: &str, hint: &str, what: &str) {
    assert!(!text.contains(hint), "{what} contains the hint");
    for part in hint.split('.').skip(1).filter(|p| p.len() > 8) {
        assert!(!text.contains(part), "{what} contains part of the hint");
    }
}

#[test]
fn foreign_signature_gets_a_form_post_error_to_entra() {
    let (upstream, proxy) = upstream_and_proxy();
    let hint = FOREIGN.sign("signer", &microsoft_claims());
    let state = "\"><script>alert(1)</script>&'x";
    let sent = EntraRequest::new(&hint).with("state", state);

    let response = proxy.send(&sent.post());

    let fields = assert_form_post_error(&response, "invalid_request");
    assert!(
        fields.iter().any(|(n, v)| n == "state" && v == state),
        "state must be echoed, exactly: {fields:?}"
    );
    let page = response.text();
    assert!(
        !page.contains(state) && !page.contains("<script>alert"),
        "state must be HTML-escaped: {page}"
    );
    assert_no_token(&page, &hint, "the error page");
    upstream.assert_untouched();

    let decision = proxy.decision(sent.client_request_id());
    assert_eq!(decision["reason"], "bad_signature", "{decision}");
    assert_eq!(decision["client_id"], CLIENT_ID, "{decision}");
    assert_no_token(&proxy.log(), &hint, "the log");
}

#[test]
fn unlisted_redirect_uri_gets_a_json_400() {
    let (upstream, proxy) = upstream_and_proxy();
    let hint = FOREIGN.sign("signer", &microsoft_claims());
    let sent = EntraRequest::new(&hint).with("redirect_uri", "https://evil.example/callback");

    let response = proxy.send(&sent.post());

    assert_eq!(response.status, 400, "{}", response.describe());
    assert!(
        response
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{}",
        response.describe()
    );
    assert_eq!(
        response.header("location"),
        None,
        "never a redirect to an unlisted URI"
    );
    let body = response.json();
    assert_eq!(body["error"], "invalid_request", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    assert!(
        !response.text().contains("evil.example"),
        "{}",
        response.text()
    );
    assert_no_token(&response.text(), &hint, "the error body");
    upstream.assert_untouched();
}

fn with_claims(edit: impl FnOnce(&mut Value)) -> Value {
    let mut claims = microsoft_claims();
    edit(&mut claims);
    claims
}

#[test]
fn every_failed_check_is_rejected_with_its_reason() {
    let (upstream, proxy) = upstream_and_proxy();
    let now = now();
    let hint = |claims: &Value| EntraRequest::new(&sign_hint(claims));
    let signer_n = SIGNER.n();
    let mut duplicated_state = hint(&microsoft_claims());
    duplicated_state
        .params
        .push(("state".into(), "second".into()));
    let mut no_hint = hint(&microsoft_claims());
    no_hint.params.retain(|(n, _)| n != "id_token_hint");

    // Each case lists the reasons that name its failed check.
    let cases: Vec<(&str, &[&str], EntraRequest)> = vec![
        (
            "issued an hour ago",
            &["expired"],
            hint(&with_claims(|c| {
                c["iat"] = json!(now - 3600);
                c["nbf"] = json!(now - 3600);
                c["exp"] = json!(now - 3601);
            })),
        ),
        (
            "issued in an hour",
            &["not_yet_valid"],
            hint(&with_claims(|c| {
                c["iat"] = json!(now + 3600);
                c["nbf"] = json!(now + 3600);
                c["exp"] = json!(now + 3599);
            })),
        ),
        (
            "no iat",
            &["missing_time_claim"],
            hint(&with_claims(|c| {
                c.as_object_mut().unwrap().remove("iat");
            })),
        ),
        (
            "another audience",
            &["audience_mismatch"],
            hint(&with_claims(|c| {
                c["aud"] = json!("0b2f5a4e-1c3d-4e5f-8a9b-0c1d2e3f4a5b");
            })),
        ),
        (
            "Microsoft-account tenant",
            &["msa_tenant"],
            hint(&with_claims(|c| {
                c["tid"] = json!(MSA_TENANT_ID);
                c["iss"] = json!(issuer(MSA_TENANT_ID));
            })),
        ),
        (
            "tid not a GUID",
            &["invalid_tid"],
            hint(&with_claims(|c| {
                c["tid"] = json!("contoso");
                c["iss"] = json!(issuer("contoso"));
            })),
        ),
        (
            "issuer of another tenant",
            &["issuer_mismatch"],
            hint(&with_claims(|c| {
                c["iss"] = json!(issuer(OTHER_TENANT_ID));
            })),
        ),
        (
            "issuer of another cloud",
            &["issuer_mismatch"],
            hint(&with_claims(|c| {
                c["iss"] = json!(format!("https://login.microsoftonline.us/{TENANT_ID}/v2.0"));
            })),
        ),
        (
            "key pinned to another tenant",
            &["key_issuer_mismatch"],
            EntraRequest::new(&FOREIGN.sign("foreign", &microsoft_claims())),
        ),
        (
            "no sub",
            &["missing_sub"],
            hint(&with_claims(|c| {
                c.as_object_mut().unwrap().remove("sub");
            })),
        ),
        (
            "empty oid",
            &["missing_oid"],
            hint(&with_claims(|c| c["oid"] = json!(""))),
        ),
        (
            "HS256 keyed with the public key",
            &["alg_not_allowed"],
            EntraRequest::new(&sign_hs256(
                signer_n.as_bytes(),
                "signer",
                &microsoft_claims(),
            )),
        ),
        (
            "alg none, empty signature",
            &["alg_not_allowed", "malformed_token"],
            EntraRequest::new(&unsigned("signer", &microsoft_claims())),
        ),
        (
            "alg none, with a signature borrowed from a valid hint",
            &["alg_not_allowed"],
            EntraRequest::new(&format!(
                "{}{}",
                unsigned("signer", &microsoft_claims()),
                sign_hint(&microsoft_claims()).rsplit('.').next().unwrap()
            )),
        ),
        (
            "kid not in the key set",
            &["unknown_kid"],
            EntraRequest::new(&SIGNER.sign("rotated-away", &microsoft_claims())),
        ),
        (
            "not a JWS",
            &["malformed_token"],
            EntraRequest::new("not-a-token"),
        ),
        (
            "four parts",
            &["malformed_token"],
            EntraRequest::new(&format!("{}.x", sign_hint(&microsoft_claims()))),
        ),
        ("state twice", &["duplicate_parameter"], duplicated_state),
        ("no id_token_hint", &["missing_parameter"], no_hint),
    ];

    let mut failures = Vec::new();
    for (case, reasons, sent) in &cases {
        let response = proxy.send(&sent.post());
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            assert_form_post_error(&response, "invalid_request");
            let decision = proxy.decision(sent.client_request_id());
            assert!(
                reasons.iter().any(|r| decision["reason"] == *r),
                "reason {} not in {reasons:?}: {decision}",
                decision["reason"]
            );
        }));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{case}: {message}"));
        }
    }
    upstream.assert_untouched();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn key_with_a_pinned_issuer_accepts_its_own_tenant() {
    let (upstream, proxy) = upstream_and_proxy();
    let claims = with_claims(|c| {
        c["tid"] = json!(OTHER_TENANT_ID);
        c["iss"] = json!(issuer(OTHER_TENANT_ID));
    });
    let sent = EntraRequest::new(&FOREIGN.sign("foreign", &claims));

    assert_forwarded(&proxy, &upstream, &sent, &claims);
}

#[test]
fn oversize_authorize_body_gets_413() {
    let (upstream, proxy) = upstream_and_proxy();
    let sent =
        EntraRequest::new(&sign_hint(&microsoft_claims())).with("padding", &"x".repeat(40_000));
    let body = sent.encoded();
    assert!(body.len() > 40_000);

    let announced = proxy.send(&sent.post());
    assert_eq!(announced.status, 413, "{}", announced.describe());

    // Without an announced length the proxy has to count while reading.
    let chunked = Request::post("/authorize")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .chunked(body.as_bytes().chunks(4096).map(<[u8]>::to_vec).collect());
    let response = proxy.send(&chunked);
    assert_eq!(response.status, 413, "{}", response.describe());
    // The rest of the body is left unread: the connection is not kept to drain it.
    assert_eq!(
        response.header("connection"),
        Some("close"),
        "{}",
        response.describe()
    );

    upstream.assert_untouched();
}

#[test]
fn authorize_post_with_another_content_type_gets_400() {
    let (upstream, proxy) = upstream_and_proxy();
    let sent = EntraRequest::new(&sign_hint(&microsoft_claims()));
    for content_type in [
        "text/plain",
        "application/json",
        "multipart/form-data; boundary=x",
    ] {
        let request = Request::post("/authorize")
            .header("Content-Type", content_type)
            .body(sent.encoded());
        let response = proxy.send(&request);
        assert_eq!(
            response.status,
            400,
            "{content_type}: {}",
            response.describe()
        );
    }
    upstream.assert_untouched();
}
