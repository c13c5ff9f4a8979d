use std::path::PathBuf;

use filters::{DetectMode, ErrorDelivery};

use super::*;

const APP: &str = r#"
[[apps]]
client_id = "56c2b5e3-c41d-4c14-abcf-72d407f57650"
"#;

fn validate(text: &str) -> Result<Validated, ConfigError> {
    Config::parse(text)?.validate()
}

fn error_of(text: &str) -> ConfigError {
    validate(text).expect_err("configuration should be refused")
}

/// The key path and reason of an error about one key.
fn key_and_reason(e: &ConfigError) -> (&str, &str) {
    match e {
        ConfigError::Schema { key, reason } | ConfigError::Invalid { key, reason } => (key, reason),
        other => panic!("not an error about a key: {other}"),
    }
}

#[test]
fn defaults_match_the_spec() {
    let v = validate(APP).unwrap();
    let c = &v.config;
    assert_eq!(c.server.listen, ["0.0.0.0:8080"]);
    assert_eq!(c.server.admin_listen, "127.0.0.1:9090");
    assert_eq!(c.server.threads, 2);
    assert_eq!(c.server.max_body_bytes, 32768);
    assert_eq!(c.server.client_read_timeout_ms, 10_000);
    // Issue 17 (nginx's defaults) wins over the original brief's 30 s upstream read timeout.
    assert_eq!(
        (
            c.server.client_header_timeout_ms,
            c.server.client_body_timeout_ms,
            c.server.keepalive_timeout_ms
        ),
        (60_000, 60_000, 75_000)
    );
    assert_eq!(c.server.grace_period_seconds, 10);
    assert_eq!(c.upstream.addresses, ["127.0.0.1:8081"]);
    assert!(!c.upstream.tls && c.upstream.verify);
    assert_eq!(
        (
            c.upstream.connect_timeout_ms,
            c.upstream.read_timeout_ms,
            c.upstream.send_timeout_ms,
            c.upstream.stream_idle_timeout_ms,
            c.upstream.health_check_interval_ms
        ),
        (2000, 60_000, 60_000, 300_000, 5000)
    );
    assert_eq!(
        (
            c.jwks.refresh_seconds,
            c.jwks.min_refetch_seconds,
            c.jwks.max_stale_seconds,
            c.jwks.fetch_timeout_ms
        ),
        (3600, 60, 604_800, 5000)
    );
    assert_eq!(c.log.format, LogFormat::Json);
    assert!(!c.log.include_username);
    assert_eq!(c.authorize.response_guard, GuardMode::Monitor);
    assert_eq!(
        (
            c.authorize.response_guard_max_entries,
            c.authorize.response_guard_ttl_seconds,
            c.authorize.response_guard_max_body_bytes
        ),
        (20_000, 600, 65_536)
    );

    let p = &v.policy;
    assert_eq!(p.authorize.paths, ["/authorize"]);
    assert_eq!(p.authorize.detect, DetectMode::ClientId);
    assert_eq!(p.authorize.param_prefix, "entra_");
    assert_eq!(p.authorize.hint_param, "entra_id_token_hint");
    assert!(p.authorize.force_prompt_login);
    assert_eq!(p.authorize.leeway_seconds, 300);
    assert_eq!(p.authorize.error_delivery, ErrorDelivery::FormPost);
    let app = &p.apps[0];
    assert_eq!(
        app.audiences,
        std::slice::from_ref(&app.client_id),
        "audiences default to the client_id"
    );
    assert_eq!(p.clouds[app.cloud].name, "global");
    assert!(!app.allow_msa_tenant);
    assert_eq!(
        v.key_sources,
        [(
            "global".to_string(),
            KeySource::Url("https://login.microsoftonline.com/common/discovery/v2.0/keys".into())
        )]
    );
}

#[test]
fn the_repository_example_is_valid_and_complete() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/eam-proxy.toml");
    let text = std::fs::read_to_string(path).unwrap();
    validate(&text).unwrap();
    // Every key of the schema appears in the example, commented or not.
    for key in [
        "listen",
        "tls_listen",
        "tls_cert",
        "tls_key",
        "admin_listen",
        "threads",
        "max_body_bytes",
        "client_read_timeout_ms",
        "client_header_timeout_ms",
        "client_body_timeout_ms",
        "keepalive_timeout_ms",
        "grace_period_seconds",
        "pid_file",
        "upgrade_sock",
        "trusted_proxies",
        "routing_headers",
        "underscores_in_headers",
        "addresses",
        "tls",
        "sni",
        "ca_file",
        "verify",
        "host_header",
        "connect_timeout_ms",
        "send_timeout_ms",
        "stream_idle_timeout_ms",
        "read_timeout_ms",
        "health_check_interval_ms",
        "health_check_path",
        "path",
        "certificates",
        "paths",
        "detect",
        "param_prefix",
        "hint_param",
        "force_prompt_login",
        "leeway_seconds",
        "discovery_path",
        "accept_hints_until_exp",
        "error_delivery",
        "response_guard",
        "response_guard_max_entries",
        "response_guard_ttl_seconds",
        "response_guard_max_body_bytes",
        "response_guard_key_file",
        "claim",
        "param",
        "refresh_seconds",
        "min_refetch_seconds",
        "max_stale_seconds",
        "fetch_timeout_ms",
        "format",
        "include_username",
        "level",
        "client_id",
        "audiences",
        "cloud",
        "allowed_tenants",
        "allow_msa_tenant",
        "jwks_url",
        "jwks_file",
        "issuer_template",
        "redirect_uris",
    ] {
        assert!(
            text.lines().any(|l| l
                .trim_start_matches(['#', ' '])
                .starts_with(&format!("{key} ="))),
            "config/eam-proxy.toml does not show `{key}`"
        );
    }
    for table in [
        "[server]",
        "[upstream]",
        "[[upstream.x5c]]",
        "[authorize]",
        "[[authorize.extra_claims]]",
        "[jwks]",
        "[log]",
        "[[apps]]",
        "[clouds.global]",
    ] {
        assert!(
            text.contains(table),
            "config/eam-proxy.toml does not show {table}"
        );
    }
}

#[test]
fn errors_name_the_key_path() {
    let cases: &[(&str, &str, &str)] = &[
        ("[server]\nbogus = 1\n", "server.bogus", "unknown field"),
        ("[nope]\n", "nope", "unknown field"),
        (
            "[authorize]\ndetect = \"sometimes\"\n",
            "authorize.detect",
            "unknown variant",
        ),
        (
            "[authorize]\nerror_delivery = \"page\"\n",
            "authorize.error_delivery",
            "unknown variant",
        ),
        (
            "[authorize]\nresponse_guard = \"strict\"\n",
            "authorize.response_guard",
            "unknown variant",
        ),
        ("[log]\nformat = \"xml\"\n", "log.format", "unknown variant"),
        (
            "[server]\nthreads = \"two\"\n",
            "server.threads",
            "invalid type",
        ),
        (
            "[[apps]]\nclient_id = \"a\"\nextra = 1\n",
            "apps[0].extra",
            "unknown field",
        ),
        (
            "[clouds.global]\nbogus = \"x\"\n",
            "clouds.global.bogus",
            "unknown field",
        ),
    ];
    for (text, path, reason) in cases {
        let e = error_of(text);
        assert!(matches!(e, ConfigError::Schema { .. }), "{text}: {e:?}");
        let (key, got) = key_and_reason(&e);
        assert_eq!(key, *path, "{text}");
        assert!(got.contains(reason), "{text}: {e}");
    }
    let syntax = error_of("[server\n");
    assert!(matches!(syntax, ConfigError::Syntax(_)), "{syntax:?}");
    assert!(syntax.to_string().contains("TOML parse error"));
}

#[test]
fn semantic_errors_name_the_key_path() {
    let with_app = |extra: &str| format!("{APP}\n{extra}");
    let cases: Vec<(String, &str)> = vec![
        ("".into(), "apps"),
        ("[[apps]]\nclient_id = \"\"\n".into(), "apps[0].client_id"),
        (format!("{APP}{APP}"), "apps[1].client_id"),
        (
            "[[apps]]\nclient_id = \"a\"\ncloud = \"mars\"\n".into(),
            "apps[0].cloud",
        ),
        (
            "[[apps]]\nclient_id = \"a\"\nallowed_tenants = [\"contoso\"]\n".into(),
            "apps[0].allowed_tenants[0]",
        ),
        (
            "[[apps]]\nclient_id = \"a\"\naudiences = [\"\"]\n".into(),
            "apps[0].audiences",
        ),
        (
            with_app("[clouds.global]\njwks_url = \"https://a/k\"\njwks_file = \"/k.json\"\n"),
            "clouds.global",
        ),
        (
            with_app("[clouds.global]\njwks_url = \"http://keys.example.com/k\"\n"),
            "clouds.global.jwks_url",
        ),
        (
            with_app("[clouds.global]\njwks_url = \"ftp://127.0.0.1/k\"\n"),
            "clouds.global.jwks_url",
        ),
        (
            with_app("[clouds.global]\nissuer_template = \"https://x/v2.0\"\n"),
            "clouds.global.issuer_template",
        ),
        (
            with_app("[clouds.global]\nredirect_uris = [\"https://x/cb; script-src *\"]\n"),
            "clouds.global.redirect_uris[0]",
        ),
        (
            with_app("[clouds.global]\nredirect_uris = []\n"),
            "clouds.global.redirect_uris",
        ),
        (
            with_app("[clouds.private]\njwks_file = \"/k.json\"\n"),
            "clouds.private",
        ),
        (
            with_app("[server]\nmax_body_bytes = 65536\n"),
            "server.max_body_bytes",
        ),
        (
            with_app("[server]\nmax_body_bytes = 0\n"),
            "server.max_body_bytes",
        ),
        (with_app("[server]\nthreads = 0\n"), "server.threads"),
        (
            with_app("[server]\nlisten = [\"localhost\"]\n"),
            "server.listen[0]",
        ),
        (with_app("[server]\nlisten = []\n"), "server.listen"),
        (
            with_app("[server]\ntls_listen = [\"127.0.0.1:8443\"]\n"),
            "server.tls_cert",
        ),
        (
            with_app("[server]\nadmin_listen = \"9090\"\n"),
            "server.admin_listen",
        ),
        (
            with_app("[upstream]\naddresses = []\n"),
            "upstream.addresses",
        ),
        (
            with_app("[upstream]\naddresses = [\"idp\"]\n"),
            "upstream.addresses[0]",
        ),
        (
            with_app("[upstream]\nread_timeout_ms = 0\n"),
            "upstream.read_timeout_ms",
        ),
        (
            with_app("[upstream]\nca_file = \"/nonexistent/ca.pem\"\n"),
            "upstream.ca_file",
        ),
        (with_app("[authorize]\npaths = []\n"), "authorize.paths"),
        (
            with_app("[authorize]\npaths = [\"authorize\"]\n"),
            "authorize.paths[0]",
        ),
        (
            with_app("[authorize]\ndiscovery_path = \"openid\"\n"),
            "authorize.discovery_path",
        ),
        (
            with_app("[authorize]\nparam_prefix = \"\"\n"),
            "authorize.param_prefix",
        ),
        (
            with_app("[authorize]\nhint_param = \"id_token_hint\"\n"),
            "authorize.hint_param",
        ),
        (
            with_app("[authorize]\nleeway_seconds = 86400\n"),
            "authorize.leeway_seconds",
        ),
        (
            with_app("[authorize]\nresponse_guard_max_entries = 0\n"),
            "authorize.response_guard_max_entries",
        ),
        (
            with_app("[authorize]\nresponse_guard_ttl_seconds = 0\n"),
            "authorize.response_guard_ttl_seconds",
        ),
        (
            with_app("[authorize]\nresponse_guard_max_body_bytes = 100\n"),
            "authorize.response_guard_max_body_bytes",
        ),
        (
            with_app("[[authorize.extra_claims]]\nclaim = \"name\"\nparam = \"name\"\n"),
            "authorize.extra_claims[0].param",
        ),
        (
            with_app("[[authorize.extra_claims]]\nclaim = \"name\"\nparam = \"entra_sub\"\n"),
            "authorize.extra_claims[0].param",
        ),
        (
            with_app("[[authorize.extra_claims]]\nclaim = \"\"\nparam = \"entra_x\"\n"),
            "authorize.extra_claims[0].claim",
        ),
        (
            with_app("[jwks]\nrefresh_seconds = 0\n"),
            "jwks.refresh_seconds",
        ),
        (with_app("[log]\nlevel = \"a=b=c\"\n"), "log.level"),
        (with_app("[upstream]\ntls = true\n"), "upstream.sni"),
        (
            with_app("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n"),
            "server.trusted_proxies[0]",
        ),
        (
            with_app("[server]\nrouting_headers = [\"x-ok\", \"not a header\"]\n"),
            "server.routing_headers[1]",
        ),
    ];
    for (text, path) in cases {
        let e = error_of(&text);
        assert!(matches!(e, ConfigError::Invalid { .. }), "{text}: {e:?}");
        let (key, reason) = key_and_reason(&e);
        assert_eq!(key, path, "{text}\n=> {e}");
        assert!(!reason.is_empty());
    }
}

#[test]
fn clouds_can_be_overridden_and_defined() {
    let text = format!(
        r#"{APP}
[[apps]]
client_id = "b"
cloud = "private"
allowed_tenants = ["9122040D-6C67-4C5B-B112-36A304B66DAD"]

[clouds.global]
jwks_url = "http://127.0.0.1:1234/keys"

[clouds.private]
jwks_file = "/etc/eam-proxy/keys.json"
issuer_template = "https://login.example.test/{{tid}}/v2.0"
redirect_uris = ["https://login.example.test/federation/cb"]
"#
    );
    let v = validate(&text).unwrap();
    assert_eq!(
        v.key_sources,
        [
            (
                "global".to_string(),
                KeySource::Url("http://127.0.0.1:1234/keys".into())
            ),
            (
                "private".to_string(),
                KeySource::File("/etc/eam-proxy/keys.json".into())
            ),
        ]
    );
    let private = &v.policy.clouds[v.policy.apps[1].cloud];
    assert_eq!(
        private.expected_issuer("t"),
        "https://login.example.test/t/v2.0"
    );
    assert_eq!(
        private.redirect_uris,
        ["https://login.example.test/federation/cb"]
    );
    assert_eq!(
        v.policy.apps[1].allowed_tenants,
        ["9122040d-6c67-4c5b-b112-36a304b66dad"],
        "tenants are compared lower-case"
    );
    let global = &v.policy.clouds[v.policy.apps[0].cloud];
    assert_eq!(
        global.expected_issuer("t"),
        "https://login.microsoftonline.com/t/v2.0"
    );
}

#[test]
fn loopback_http_key_urls_are_allowed() {
    for url in [
        "http://127.0.0.1:9/k",
        "http://localhost/k",
        "http://[::1]:8/k",
        "https://keys.example/k",
    ] {
        let text = format!("{APP}\n[clouds.global]\njwks_url = \"{url}\"\n");
        validate(&text).unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}

/// A self-signed certificate for the signer fixture key, written to a temporary file.
fn x5c_cert_file(name: &str) -> PathBuf {
    let key = rcgen::KeyPair::from_pem(testkit::SIGNER.pem).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["idp.example.com".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("eam-config-x5c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, cert.pem()).unwrap();
    path
}

#[test]
fn x5c_certificates_are_loaded_at_validation() {
    let cert = x5c_cert_file("ok.pem");
    let text = format!(
        "[[upstream.x5c]]\npath = \"/jwks\"\ncertificates = [{:?}]\n{APP}",
        cert.display().to_string()
    );
    let v = validate(&text).unwrap();
    assert_eq!(v.x5c.len(), 1);
    assert_eq!(v.x5c[0].path, "/jwks");
    assert_eq!(v.x5c[0].chains.len(), 1);
    assert_eq!(v.x5c[0].chains[0].len(), 1);
}

#[test]
fn x5c_errors_name_the_entry() {
    let cert = x5c_cert_file("err.pem");
    let cert = format!("{:?}", cert.display().to_string());
    let not_pem = x5c_cert_file("not.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let not_pem = format!("{:?}", not_pem.display().to_string());
    let cases = [
        (
            format!("path = \"jwks\"\ncertificates = [{cert}]"),
            "upstream.x5c[0].path",
            "absolute path",
        ),
        (
            format!("path = \"/jwks?x=1\"\ncertificates = [{cert}]"),
            "upstream.x5c[0].path",
            "absolute path",
        ),
        (
            format!("path = \"/authorize\"\ncertificates = [{cert}]"),
            "upstream.x5c[0].path",
            "authorize path",
        ),
        (
            "path = \"/jwks\"\ncertificates = []".to_string(),
            "upstream.x5c[0].certificates",
            "at least one",
        ),
        (
            "path = \"/jwks\"\ncertificates = [\"/nonexistent/op.pem\"]".to_string(),
            "upstream.x5c[0].certificates[0]",
            "cannot read",
        ),
        (
            format!("path = \"/jwks\"\ncertificates = [{not_pem}]"),
            "upstream.x5c[0].certificates[0]",
            "no certificate found",
        ),
        (
            "path = \"/jwks\"\nbogus = 1\ncertificates = []".to_string(),
            "upstream.x5c[0].bogus",
            "unknown field",
        ),
    ];
    for (entry, path, reason) in cases {
        let e = error_of(&format!("[[upstream.x5c]]\n{entry}\n{APP}"));
        assert_eq!(key_and_reason(&e).0, path, "{entry}");
        assert!(key_and_reason(&e).1.contains(reason), "{entry}: {e}");
    }
    let twice = format!(
        "[[upstream.x5c]]\npath = \"/jwks\"\ncertificates = [{cert}]\n[[upstream.x5c]]\npath = \"/jwks\"\ncertificates = [{cert}]\n{APP}"
    );
    assert_eq!(error_of(&twice).key(), "upstream.x5c[1].path");
}

#[test]
fn the_guard_key_file_is_read_and_checked_at_validation() {
    let dir = std::env::temp_dir().join(format!("eam-config-guard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let with_file = |name: &str, contents: &str| {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        format!(
            "[authorize]\nresponse_guard_key_file = {:?}\n{APP}",
            path.display().to_string()
        )
    };
    let secret = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="; // 32 bytes
    let v = validate(&with_file("ok.key", &format!("# key\n\n{secret}\n"))).unwrap();
    assert!(v.guard_keys.is_some());
    assert!(validate(APP).unwrap().guard_keys.is_none());
    let cases = [
        (with_file("empty.key", "# nothing\n"), "no secret"),
        (
            with_file("bad.key", "not base64!\n"),
            "line 1 is not base64",
        ),
        (with_file("short.key", "QUFB\n"), "fewer than 32 bytes"),
        (
            with_file("three.key", &format!("{secret}\n{secret}\n{secret}\n")),
            "more than 2",
        ),
        (
            "[authorize]\nresponse_guard_key_file = \"/nonexistent/guard.key\"\n".to_string() + APP,
            "cannot read",
        ),
    ];
    for (text, words) in cases {
        let e = error_of(&text);
        let (key, reason) = key_and_reason(&e);
        assert_eq!(key, "authorize.response_guard_key_file");
        assert!(reason.contains(words), "{reason}");
    }
}

#[test]
fn limits_are_on_by_default_and_each_key_is_checked() {
    let on = validate(APP).unwrap().limits.expect("limits on by default");
    assert_eq!(
        (
            on.window,
            on.failed_validations,
            on.key_refetches,
            on.ipv6_prefix
        ),
        (std::time::Duration::from_secs(60), 30, 5, 64)
    );
    let off = validate(&format!("[limits]\nenabled = false\n{APP}")).unwrap();
    assert_eq!(off.limits, None);
    let exempt = validate(&format!(
        "[limits]\nexempt = [\"10.0.0.0/8\", \"2001:db8::1\"]\n{APP}"
    ))
    .unwrap();
    assert_eq!(exempt.limits.unwrap().exempt.len(), 2);
    for (line, key) in [
        ("window_seconds = 0", "limits.window_seconds"),
        ("window_seconds = 86401", "limits.window_seconds"),
        ("failed_validations = 0", "limits.failed_validations"),
        ("key_refetches = 0", "limits.key_refetches"),
        ("ipv6_prefix = 0", "limits.ipv6_prefix"),
        ("ipv6_prefix = 129", "limits.ipv6_prefix"),
        ("exempt = [\"10.0.0.0/33\"]", "limits.exempt[0]"),
        ("exempt = [\"nowhere\"]", "limits.exempt[0]"),
    ] {
        let e = error_of(&format!("[limits]\n{line}\n{APP}"));
        assert_eq!(key_and_reason(&e).0, key, "{line}: {e}");
    }
}
