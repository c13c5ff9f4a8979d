//! README "Abuse limits" (issue 20): per-client limits on Entra's authorize requests, through
//! the real binary. Clients are told apart by `X-Forwarded-For` through a trusted proxy (the
//! test's own 127.0.0.1), as behind a cloud load balancer.

use std::time::Duration;

use eam_tests::exclusive::heavy;
use eam_tests::hints::sign_hint;
use eam_tests::{
    default_jwks, microsoft_claims, parse_html_form, EntraRequest, KeyServer, Keys, ProxyConfig,
    ProxyProcess, Response, Upstream, Verdict, FOREIGN, GLOBAL_REDIRECT, SIGNER,
};

const FLOODER: &str = "198.51.100.1";
const OTHER: &str = "198.51.100.2";

/// Limits on, with small figures, behind the trusted 127.0.0.1.
fn limited(
    upstream: &Upstream,
    window_seconds: u64,
    failed_validations: u32,
    key_refetches: u32,
) -> ProxyConfig {
    ProxyConfig::new(upstream).with(|c| {
        c.server.trusted_proxies = vec!["127.0.0.1".into()];
        c.limits.enabled = true;
        c.limits.window_seconds = window_seconds;
        c.limits.failed_validations = failed_validations;
        c.limits.key_refetches = key_refetches;
    })
}

fn send_from(proxy: &ProxyProcess, client: &str, sent: &EntraRequest) -> Response {
    proxy.send(&sent.post().header("X-Forwarded-For", client))
}

fn forged() -> EntraRequest {
    EntraRequest::new(&FOREIGN.sign(SIGNER.kid, &microsoft_claims()))
}

fn valid() -> EntraRequest {
    EntraRequest::new(&sign_hint(&microsoft_claims()))
}

/// `Retry-After` of a limited answer: whole seconds, within the window.
fn retry_after(response: &Response, window_seconds: u64) -> u64 {
    let seconds: u64 = response
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {}", response.describe()))
        .parse()
        .expect("Retry-After in seconds");
    assert!(
        (1..=window_seconds).contains(&seconds),
        "Retry-After {seconds}"
    );
    seconds
}

fn metric(proxy: &ProxyProcess, series: &str) -> f64 {
    proxy
        .metric(series)
        .unwrap_or_else(|| panic!("no {series}"))
}

#[test]
fn a_flood_of_forged_hints_is_refused_past_the_limit_and_served_after_the_window() {
    let _heavy = heavy();
    const WINDOW: u64 = 3;
    const LIMIT: u32 = 3;
    let upstream = Upstream::start();
    let proxy = ProxyProcess::start(limited(&upstream, WINDOW, LIMIT, 5));
    let before = upstream.count();

    // A bounded flood from one client: the first LIMIT are verified and refused for their
    // signature, the rest refused by the limit (a window may end once in between).
    let mut verified = 0;
    let mut last_limited = None;
    for _ in 0..12 {
        let sent = forged();
        let response = send_from(&proxy, FLOODER, &sent);
        let decision = proxy.decision(sent.client_request_id());
        match decision["reason"].as_str() {
            Some("bad_signature") => {
                assert_eq!(response.verdict(), Verdict::refused());
                verified += 1;
            }
            Some("rate_limited") => {
                assert_eq!(
                    response.verdict(),
                    Verdict::form_post("temporarily_unavailable", GLOBAL_REDIRECT),
                    "{}",
                    response.describe()
                );
                let form = parse_html_form(&response.text()).unwrap();
                assert!(form
                    .field("error_description")
                    .is_some_and(|d| d.contains("failed_validations")));
                assert_eq!(form.field("state"), sent.get("state"));
                retry_after(&response, WINDOW);
                last_limited = Some(response);
            }
            other => panic!("unexpected reason {other:?}: {decision}"),
        }
    }
    assert!(
        verified <= 2 * LIMIT,
        "{verified} forged hints verified, limit {LIMIT}"
    );
    let limited_count = 12 - verified;
    assert!(limited_count >= 12 - 2 * LIMIT);
    assert!(last_limited.is_some());

    // Where errors are not posted to Entra, the same limit answers 429 with JSON.
    let elsewhere = forged().with("redirect_uri", "https://app.example/callback");
    let response = send_from(&proxy, FLOODER, &elsewhere);
    if proxy.decision(elsewhere.client_request_id())["reason"] == "rate_limited" {
        assert_eq!(
            response.verdict(),
            Verdict::status(429, "temporarily_unavailable")
        );
        retry_after(&response, WINDOW);
    }

    // A valid hint from the limited client is refused too: its hint is not even read.
    let sent = valid();
    let response = send_from(&proxy, FLOODER, &sent);
    let flooder_refused = response.verdict() != Verdict::Forwarded;
    // Another client is served meanwhile, and its own failures are its own.
    let response = send_from(&proxy, OTHER, &valid());
    response.assert_upstream_ok();
    let sent = forged();
    send_from(&proxy, OTHER, &sent);
    assert_eq!(
        proxy.decision(sent.client_request_id())["reason"],
        "bad_signature"
    );

    // Nothing refused reached the upstream: only the other client's valid request did (and the
    // flooder's, had a window ended just before it).
    assert_eq!(
        upstream.count() - before,
        if flooder_refused { 1 } else { 2 }
    );
    let counted = metric(
        &proxy,
        "eam_rate_limited_total{limit=\"failed_validations\"}",
    );
    assert!(counted >= limited_count as f64, "{counted}");
    let rejections = metric(&proxy, "eam_hint_rejections_total{reason=\"rate_limited\"}");
    assert_eq!(rejections, counted);
    assert_eq!(
        metric(&proxy, "eam_rate_limited_total{limit=\"key_refetches\"}"),
        0.0
    );

    // Once the window is over, the client is served again.
    std::thread::sleep(Duration::from_secs(WINDOW) + Duration::from_millis(200));
    send_from(&proxy, FLOODER, &valid()).assert_upstream_ok();
}

#[test]
fn unknown_kid_floods_cost_at_most_key_refetches_fetches() {
    const REFETCHES: u32 = 2;
    let keys = KeyServer::start(default_jwks());
    let upstream = Upstream::start();
    // min_refetch_seconds = 0: the key store's own spacing of fetches does not hide the limit.
    let config = limited(&upstream, 60, 100, REFETCHES)
        .keys(Keys::Url(keys.url()))
        .jwks_timings(3600, 0, 604_800, 2000);
    let proxy = ProxyProcess::start(config);
    let before = keys.fetches();

    let mut reasons = Vec::new();
    for i in 0..8 {
        let sent = EntraRequest::new(&SIGNER.sign(&format!("made-up-{i}"), &microsoft_claims()));
        let response = send_from(&proxy, FLOODER, &sent);
        let reason = proxy.decision(sent.client_request_id())["reason"]
            .as_str()
            .unwrap()
            .to_string();
        if reason == "rate_limited" {
            let form = parse_html_form(&response.text()).unwrap();
            assert!(form
                .field("error_description")
                .is_some_and(|d| d.contains("key_refetches")));
            retry_after(&response, 60);
        }
        reasons.push(reason);
    }
    let fetched = keys.fetches() - before;
    assert!(
        fetched <= REFETCHES as usize,
        "{fetched} fetches for one client, limit {REFETCHES}"
    );
    assert_eq!(
        reasons,
        [["unknown_kid"; 2].as_slice(), &["rate_limited"; 6]].concat(),
    );
    assert_eq!(
        metric(&proxy, "eam_rate_limited_total{limit=\"key_refetches\"}"),
        6.0
    );

    // Another client's unknown kid is still fetched for, and a known kid needs no fetch.
    let sent = EntraRequest::new(&SIGNER.sign("made-up-other", &microsoft_claims()));
    send_from(&proxy, OTHER, &sent);
    assert_eq!(
        proxy.decision(sent.client_request_id())["reason"],
        "unknown_kid"
    );
    assert_eq!(keys.fetches() - before, fetched + 1);
    send_from(&proxy, FLOODER, &valid()).assert_upstream_ok();
}
