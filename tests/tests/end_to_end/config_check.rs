//! README "Configuration reference": `eam-proxy --check` validates a configuration and names the offending key.

use eam_tests::{check_config, closed_port, Keys, ProxyConfig};

fn base() -> ProxyConfig {
    ProxyConfig::with_upstreams(&[closed_port()])
}

/// Asserts a refused configuration whose message names every one of `words`.
fn assert_refused(config: ProxyConfig, words: &[&str]) {
    let outcome = check_config(config);
    let message = format!("{}{}", outcome.stderr, outcome.stdout);
    assert!(
        !outcome.status.success(),
        "--check must fail; it exited {} with {message:?}",
        outcome.status
    );
    for word in words {
        assert!(
            message.contains(word),
            "the message must name {word:?}: {message:?}"
        );
    }
}

#[test]
fn check_accepts_the_test_configuration() {
    let outcome = check_config(base());
    assert!(
        outcome.status.success(),
        "--check refused a valid configuration ({}): {}{}",
        outcome.status,
        outcome.stderr,
        outcome.stdout
    );
}

#[test]
fn check_rejects_an_unknown_key() {
    assert_refused(base().set("server", "bogus", "1"), &["server", "bogus"]);
}

#[test]
fn check_rejects_an_unknown_detect_mode() {
    assert_refused(
        base().set("authorize", "detect", "\"sometimes\""),
        &["authorize", "detect"],
    );
}

#[test]
fn check_rejects_plain_http_keys_off_loopback() {
    assert_refused(
        base().keys(Keys::Url("http://keys.example.com/keys".into())),
        &["jwks_url"],
    );
}
