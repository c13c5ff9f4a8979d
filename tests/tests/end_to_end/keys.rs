//! README `[jwks]` and "Operations": key sets from a URL, readiness, and the answer when no key set is usable.

use std::time::Duration;

use eam_tests::{
    assert_forwarded, closed_port, default_jwks, microsoft_claims, parse_html_form, sign_hint,
    EntraRequest, KeyServer, Keys, ProxyConfig, ProxyProcess, Upstream, FOREIGN,
};
use serde_json::json;

#[test]
fn unreachable_key_server_keeps_the_proxy_unready() {
    let upstream = Upstream::start();
    let proxy = ProxyProcess::start_unready(
        ProxyConfig::new(&upstream)
            .keys(Keys::Url(format!("http://{}/keys", closed_port())))
            .with(|c| c.jwks.fetch_timeout_ms = 500),
    );

    assert_eq!(proxy.admin_get("/healthz").status, 200);
    for _ in 0..3 {
        let ready = proxy.admin_get("/readyz");
        assert_eq!(ready.status, 503, "{}", ready.describe());
        std::thread::sleep(Duration::from_millis(300));
    }

    // Entra must be told to stop waiting, not be left on an error page.
    let sent = EntraRequest::new(&sign_hint(&microsoft_claims()));
    let response = proxy.send(&sent.post());
    assert_eq!(response.status, 200, "{}", response.describe());
    let form = parse_html_form(&response.text())
        .unwrap_or_else(|| panic!("no form: {}", response.describe()));
    assert_eq!(
        form.field("error"),
        Some("temporarily_unavailable"),
        "{form:?}"
    );
    assert_eq!(form.field("state"), sent.get("state"), "{form:?}");
    upstream.assert_untouched();
}

#[test]
fn keys_over_loopback_http_make_the_proxy_ready() {
    let keys = KeyServer::start(default_jwks());
    let upstream = Upstream::start();
    let proxy = ProxyProcess::start(ProxyConfig::new(&upstream).keys(Keys::Url(keys.url())));
    assert!(keys.fetches() >= 1, "ready without fetching the keys");

    let claims = microsoft_claims();
    let sent = EntraRequest::new(&sign_hint(&claims));
    assert_forwarded(&proxy, &upstream, &sent, &claims);
}

#[test]
fn unknown_kid_triggers_a_refetch_that_finds_the_rotated_key() {
    // Start with only the other key published, as before Microsoft rotates its signer in.
    let keys = KeyServer::start(json!({"keys": [FOREIGN.jwk(FOREIGN.kid)]}));
    let upstream = Upstream::start();
    let proxy = ProxyProcess::start(
        ProxyConfig::new(&upstream)
            .keys(Keys::Url(keys.url()))
            .with(|c| c.jwks.min_refetch_seconds = 1),
    );
    let before = keys.fetches();
    keys.set_jwks(default_jwks());
    // Past min_refetch_seconds since the start-up fetch.
    std::thread::sleep(Duration::from_millis(1_200));

    // The hint signed by the new key is accepted after a refetch.
    let claims = microsoft_claims();
    let sent = EntraRequest::new(&sign_hint(&claims));
    assert_forwarded(&proxy, &upstream, &sent, &claims);
    assert_eq!(
        keys.fetches(),
        before + 1,
        "exactly one refetch for the unknown kid"
    );
}
