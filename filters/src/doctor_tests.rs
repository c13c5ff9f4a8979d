use rcgen::{CertificateParams, DistinguishedName, DnType, Issuer, KeyPair};
use serde_json::json;
use testkit::{FOREIGN, SIGNER};

use super::*;

const URL: &str = "https://idp.example.com/.well-known/openid-configuration";
const NOW: u64 = 1_900_000_000;
const DAY: u64 = 86_400;

fn good_discovery() -> Value {
    json!({
        "issuer": "https://idp.example.com",
        "authorization_endpoint": "https://idp.example.com/authorize",
        "jwks_uri": "https://idp.example.com/jwks",
        "scopes_supported": ["openid", "profile"],
        "response_types_supported": ["code", "id_token"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "id_token_signing_alg_values_supported": ["RS256", "PS256"],
        "claim_types_supported": ["normal"],
        "subject_types_supported": ["public", "pairwise"],
    })
}

/// `authorize.paths`: the one the good document's authorization_endpoint names.
fn paths() -> Vec<String> {
    vec!["/authorize".into()]
}

fn fetched(doc: &Value) -> Fetched {
    let body = doc.to_string().into_bytes();
    Fetched {
        status: 200,
        content_length: Some(body.len().to_string()),
        body,
    }
}

fn failed(checks: &[Check]) -> Vec<&'static str> {
    checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.id)
        .collect()
}

#[test]
fn a_conforming_discovery_document_passes() {
    let (checks, jwks_uri) =
        discovery(URL, &fetched(&good_discovery()), Rules::default(), &paths());
    // The one warning: the redirect URI Entra needs cannot be seen from here.
    let not_passed: Vec<_> = checks.iter().filter(|c| c.status != Status::Pass).collect();
    assert_eq!(not_passed.len(), 1, "{checks:#?}");
    assert_eq!(not_passed[0].id, "entra.reply_url");
    assert_eq!(not_passed[0].status, Status::Warn);
    assert!(not_passed[0]
        .entra_error
        .unwrap()
        .starts_with("AADSTS50161"));
    assert!(not_passed[0]
        .fix
        .as_ref()
        .unwrap()
        .contains("https://idp.example.com/authorize"));
    assert_eq!(checks.len(), 12);
    assert_eq!(jwks_uri.as_deref(), Some("https://idp.example.com/jwks"));
}

#[test]
fn each_discovery_requirement_is_caught_on_its_own() {
    type Breaks = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Breaks)> = vec![
        (
            "discovery.issuer",
            Box::new(|d| d["issuer"] = json!("https://idp.example.com/")),
        ),
        (
            "discovery.issuer",
            Box::new(|d| d["issuer"] = json!("https://IDP.example.com")),
        ),
        (
            "discovery.issuer",
            Box::new(|d| drop(d.as_object_mut().unwrap().remove("issuer"))),
        ),
        (
            "discovery.jwks_uri",
            Box::new(|d| d["jwks_uri"] = json!("http://idp.example.com/jwks")),
        ),
        (
            "discovery.jwks_uri",
            Box::new(|d| d["jwks_uri"] = json!("https://idp.example.com/jwks?v=2")),
        ),
        (
            "discovery.jwks_uri",
            Box::new(|d| d["jwks_uri"] = json!("https://idp.example.com/jwks#k")),
        ),
        (
            "discovery.scopes_supported",
            Box::new(|d| d["scopes_supported"] = json!(["profile"])),
        ),
        (
            "discovery.response_types_supported",
            Box::new(|d| d["response_types_supported"] = json!(["code"])),
        ),
        (
            "discovery.response_modes_supported",
            Box::new(|d| d["response_modes_supported"] = json!(["query"])),
        ),
        (
            "discovery.response_modes_supported",
            Box::new(|d| {
                drop(
                    d.as_object_mut()
                        .unwrap()
                        .remove("response_modes_supported"),
                )
            }),
        ),
        (
            "discovery.id_token_signing_alg_values_supported",
            Box::new(|d| d["id_token_signing_alg_values_supported"] = json!(["ES256"])),
        ),
        (
            "discovery.claim_types_supported",
            Box::new(|d| d["claim_types_supported"] = json!(["aggregated"])),
        ),
        (
            "discovery.subject_types_supported",
            Box::new(|d| d["subject_types_supported"] = json!(["pairwise"])),
        ),
        (
            "discovery.authorization_endpoint",
            Box::new(|d| d["authorization_endpoint"] = json!("https://idp.example.com/auth")),
        ),
        (
            "discovery.authorization_endpoint",
            Box::new(|d| {
                d.as_object_mut().unwrap().remove("authorization_endpoint");
            }),
        ),
    ];
    for (id, breaks) in cases {
        let mut doc = good_discovery();
        breaks(&mut doc);
        let (checks, _) = discovery(URL, &fetched(&doc), Rules::default(), &paths());
        assert_eq!(failed(&checks), [id], "{doc}");
        let check = checks.iter().find(|c| c.id == id).unwrap();
        assert!(check.entra_error.is_some() && check.fix.is_some());
    }
    // claim_types_supported may be absent.
    let mut doc = good_discovery();
    doc.as_object_mut().unwrap().remove("claim_types_supported");
    assert!(failed(&discovery(URL, &fetched(&doc), Rules::default(), &paths()).0).is_empty());
}

#[test]
fn an_unlisted_authorize_or_par_path_is_named_with_its_fix() {
    let mut doc = good_discovery();
    doc["authorization_endpoint"] = json!("https://idp.example.com/auth");
    doc["pushed_authorization_request_endpoint"] = json!("https://idp.example.com/request");
    let (checks, _) = discovery(URL, &fetched(&doc), Rules::default(), &paths());
    let auth = checks
        .iter()
        .find(|c| c.id == "discovery.authorization_endpoint")
        .unwrap();
    assert_eq!(auth.status, Status::Fail);
    assert_eq!(
        auth.fix.as_deref(),
        Some("add \"/auth\" to authorize.paths")
    );
    let par = checks
        .iter()
        .find(|c| c.id == "discovery.pushed_authorization_request_endpoint")
        .unwrap();
    assert_eq!(par.status, Status::Warn);
    let both = vec!["/auth".to_string(), "/request".to_string()];
    let (checks, _) = discovery(URL, &fetched(&doc), Rules::default(), &both);
    assert!(failed(&checks).is_empty(), "{checks:#?}");
    // A format-suffix or other variant of a configured path counts as listed.
    doc["authorization_endpoint"] = json!("https://idp.example.com/authorize.php");
    let (checks, _) = discovery(URL, &fetched(&doc), Rules::default(), &paths());
    assert!(!failed(&checks).contains(&"discovery.authorization_endpoint"));
}

#[test]
fn the_issuer_mismatch_names_aadsts50027() {
    let mut doc = good_discovery();
    doc["issuer"] = json!("https://idp.example.com/tenant");
    let (checks, _) = discovery(URL, &fetched(&doc), Rules::default(), &paths());
    let issuer = checks.iter().find(|c| c.id == "discovery.issuer").unwrap();
    assert!(issuer.entra_error.unwrap().starts_with("AADSTS50027"));
    assert!(issuer
        .fix
        .as_ref()
        .unwrap()
        .contains("exactly https://idp.example.com"));
}

#[test]
fn the_discovery_url_and_answer_are_checked() {
    let ok = fetched(&good_discovery());
    for url in [
        "https://idp.example.com/openid-configuration",
        "https://idp.example.com/.well-known/openid-configuration?x=1",
        "https://idp.example.com/.well-known/openid-configuration#f",
        "http://idp.example.com/.well-known/openid-configuration",
        "not a url",
    ] {
        let (checks, _) = discovery(url, &ok, Rules::default(), &paths());
        assert!(
            failed(&checks).contains(&"discovery.url"),
            "{url}: {checks:#?}"
        );
    }
    let mut chunked = ok.clone();
    chunked.content_length = None;
    assert_eq!(
        failed(&discovery(URL, &chunked, Rules::default(), &paths()).0),
        ["discovery.content_length"]
    );
    let mut wrong = ok.clone();
    wrong.content_length = Some("12".into());
    assert_eq!(
        failed(&discovery(URL, &wrong, Rules::default(), &paths()).0),
        ["discovery.content_length"]
    );
    let mut signed = ok.clone();
    signed.content_length = Some(format!("+{}", ok.body.len()));
    assert_eq!(
        failed(&discovery(URL, &signed, Rules::default(), &paths()).0),
        ["discovery.content_length"]
    );
    let gone = Fetched {
        status: 404,
        ..ok.clone()
    };
    let (checks, jwks_uri) = discovery(URL, &gone, Rules::default(), &paths());
    assert_eq!(failed(&checks), ["discovery.fetch"]);
    assert_eq!(jwks_uri, None);
    let not_json = Fetched {
        body: b"<html>".to_vec(),
        content_length: Some("6".into()),
        ..ok
    };
    assert_eq!(
        failed(&discovery(URL, &not_json, Rules::default(), &paths()).0),
        ["discovery.json"]
    );
}

#[test]
fn http_on_loopback_is_only_a_warning_with_allow_http() {
    let url = "http://127.0.0.1:8080/.well-known/openid-configuration";
    let mut doc = good_discovery();
    doc["issuer"] = json!("http://127.0.0.1:8080");
    doc["jwks_uri"] = json!("http://127.0.0.1:8080/jwks");
    let strict = discovery(url, &fetched(&doc), Rules::default(), &paths()).0;
    assert_eq!(
        failed(&strict),
        ["discovery.url", "discovery.issuer", "discovery.jwks_uri"]
    );
    let relaxed = discovery(url, &fetched(&doc), Rules { allow_http: true }, &paths()).0;
    assert!(failed(&relaxed).is_empty(), "{relaxed:#?}");
    assert_eq!(
        relaxed.iter().filter(|c| c.status == Status::Warn).count(),
        4,
        "three http URLs and the redirect URI reminder"
    );
    // Never for a host that is not loopback.
    let mut public = doc.clone();
    public["jwks_uri"] = json!("http://idp.example.com/jwks");
    let checks = discovery(url, &fetched(&public), Rules { allow_http: true }, &paths()).0;
    assert_eq!(failed(&checks), ["discovery.jwks_uri"]);
}

fn cert(params: CertificateParams, issuer: Option<&Issuer<'_, KeyPair>>) -> String {
    let key = KeyPair::from_pem(SIGNER.pem).unwrap();
    let cert = match issuer {
        None => params.self_signed(&key).unwrap(),
        Some(issuer) => params.signed_by(&key, issuer).unwrap(),
    };
    STANDARD.encode(cert.der())
}

fn params(days_from_now: i64) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "idp.example.com");
    params.distinguished_name = dn;
    params.not_before = time::OffsetDateTime::from_unix_timestamp((NOW - 10 * DAY) as i64).unwrap();
    params.not_after =
        time::OffsetDateTime::from_unix_timestamp(NOW as i64 + days_from_now * DAY as i64).unwrap();
    params
}

fn key_with(x5c: Option<Value>) -> Fetched {
    let mut key = SIGNER.jwk("op-1");
    if let Some(x5c) = x5c {
        key["x5c"] = x5c;
    }
    fetched(&json!({"keys": [key, {"kty": "EC", "kid": "ec"}]}))
}

fn key_checks(x5c: Option<Value>) -> Vec<Check> {
    key_set("https://idp.example.com/jwks", &key_with(x5c), NOW)
}

#[test]
fn a_key_with_a_matching_self_issued_valid_certificate_passes() {
    let checks = key_checks(Some(json!([cert(params(365), None)])));
    assert_eq!(
        checks.iter().map(|c| (c.id, c.status)).collect::<Vec<_>>(),
        [
            ("jwks.keys", Status::Pass),
            ("jwks.kid", Status::Pass),
            ("jwks.x5c", Status::Pass),
            ("jwks.x5c_issuer", Status::Pass),
            ("jwks.x5c_validity", Status::Pass),
        ]
    );
}

#[test]
fn a_signing_key_needs_a_base64_kid() {
    for (kid, ok) in [
        (json!("op-1"), true),
        (json!("nOo3ZDrODXEK1jKWhXslHR_KXEg"), true),
        (json!("a b"), false),
        (json!(""), false),
        (json!(7), false),
    ] {
        let mut set: Value = serde_json::from_slice(&key_with(None).body).unwrap();
        set["keys"][0]["kid"] = kid.clone();
        let checks = key_set("https://idp.example.com/jwks", &fetched(&set), NOW);
        let check = checks.iter().find(|c| c.id == "jwks.kid").unwrap();
        assert_eq!(check.status == Status::Pass, ok, "{kid}: {check:?}");
        if !ok {
            assert!(check.entra_error.unwrap().starts_with("AADSTS50012"));
        }
    }
}

#[test]
fn x5c_problems_are_caught_and_name_the_fix() {
    let missing = key_checks(None);
    assert_eq!(failed(&missing), ["jwks.x5c"]);
    let x5c = missing.iter().find(|c| c.id == "jwks.x5c").unwrap();
    assert!(x5c.entra_error.unwrap().contains("AADSTS50012"));
    assert!(x5c.fix.as_ref().unwrap().contains("eam-proxy cert"));
    assert!(x5c.fix.as_ref().unwrap().contains("[[upstream.x5c]]"));

    assert_eq!(failed(&key_checks(Some(json!(["%%%"])))), ["jwks.x5c"]);
    assert_eq!(failed(&key_checks(Some(json!(["AAAA"])))), ["jwks.x5c"]);
    assert_eq!(failed(&key_checks(Some(json!([])))), ["jwks.x5c"]);

    // Another key's certificate.
    let foreign = KeyPair::from_pem(FOREIGN.pem).unwrap();
    let other = STANDARD.encode(params(365).self_signed(&foreign).unwrap().der());
    assert_eq!(failed(&key_checks(Some(json!([other])))), ["jwks.x5c"]);

    let ca = Issuer::new(
        {
            let mut p = params(3650);
            p.distinguished_name = DistinguishedName::new();
            p.distinguished_name.push(DnType::CommonName, "Some CA");
            p
        },
        KeyPair::from_pem(FOREIGN.pem).unwrap(),
    );
    let issued = cert(params(365), Some(&ca));
    assert_eq!(
        failed(&key_checks(Some(json!([issued])))),
        ["jwks.x5c_issuer"]
    );

    let expired = cert(params(-1), None);
    assert_eq!(
        failed(&key_checks(Some(json!([expired])))),
        ["jwks.x5c_validity"]
    );

    let soon = key_checks(Some(json!([cert(params(10), None)])));
    assert!(failed(&soon).is_empty());
    let validity = soon.iter().find(|c| c.id == "jwks.x5c_validity").unwrap();
    assert_eq!(validity.status, Status::Warn);
    assert!(
        validity.detail.contains("ends in 10 day(s)"),
        "{}",
        validity.detail
    );
}

#[test]
fn key_set_shape_problems() {
    let url = "https://idp.example.com/jwks";
    let gone = Fetched {
        status: 500,
        ..key_with(None)
    };
    assert_eq!(failed(&key_set(url, &gone, NOW)), ["jwks.fetch"]);
    let not_a_set = fetched(&json!({"jwks": []}));
    assert_eq!(failed(&key_set(url, &not_a_set, NOW)), ["jwks.json"]);
    let only_ec = fetched(&json!({"keys": [{"kty": "EC", "kid": "ec"}]}));
    assert_eq!(failed(&key_set(url, &only_ec, NOW)), ["jwks.keys"]);
}

fn policy(toml_apps: &[(&str, &[&str], usize)], clouds: Vec<CloudPolicy>) -> Policy {
    let base = crate::invariants::fixture::policy(0);
    Policy {
        apps: toml_apps
            .iter()
            .map(|(client_id, audiences, cloud)| crate::policy::AppPolicy {
                client_id: client_id.to_string(),
                audiences: audiences.iter().map(|a| a.to_string()).collect(),
                cloud: *cloud,
                allowed_tenants: Vec::new(),
                allow_msa_tenant: false,
            })
            .collect(),
        clouds,
        ..base
    }
}

#[test]
fn config_checks_ids_audiences_and_redirect_uris() {
    let global = CloudPolicy::builtin("global").unwrap();
    let mut overridden = global.clone();
    overridden.redirect_uris = vec!["https://example.com/cb".into()];
    let custom = CloudPolicy {
        name: "sim".into(),
        issuer_template: "https://login.example/{tid}/v2.0".into(),
        redirect_uris: vec!["http://127.0.0.1:9/common/federation/externalauthprovider".into()],
    };
    let guid = "56c2b5e3-c41d-4c14-abcf-72d407f57650";
    let p = policy(
        &[
            (guid, &[guid], 0),
            ("entra", &["entra"], 1),
            (guid, &[guid], 2),
        ],
        vec![global, overridden, custom],
    );
    let checks = config(&p, Rules::default());
    let by = |id: &str, status: Status| {
        checks
            .iter()
            .filter(|c| c.id == id && c.status == status)
            .count()
    };
    assert_eq!(by("config.client_id", Status::Pass), 2);
    assert_eq!(by("config.client_id", Status::Warn), 1);
    assert_eq!(by("config.audiences", Status::Fail), 1);
    assert_eq!(by("config.redirect_uris", Status::Pass), 1);
    assert_eq!(by("config.redirect_uris", Status::Warn), 1, "{checks:#?}");
    assert_eq!(
        by("config.redirect_uris", Status::Fail),
        1,
        "http loopback without --allow-http"
    );
    let relaxed = config(&p, Rules { allow_http: true });
    assert_eq!(
        relaxed
            .iter()
            .filter(|c| c.id == "config.redirect_uris" && c.status == Status::Fail)
            .count(),
        0
    );
}

#[test]
fn microsoft_key_sets_must_load() {
    let jwks = json!({"keys": [SIGNER.jwk("k")]}).to_string();
    let ok = microsoft_keys("global", "https://login.example/keys", Ok(jwks.as_bytes()));
    assert_eq!(ok.status, Status::Pass);
    let empty = microsoft_keys("global", "x", Ok(b"{\"keys\": []}"));
    assert_eq!(empty.status, Status::Fail);
    let down = microsoft_keys("global", "x", Err("connection refused".into()));
    assert_eq!(down.status, Status::Fail);
    assert!(down
        .entra_error
        .unwrap()
        .contains("temporarily_unavailable"));
}

#[test]
fn the_table_shows_entra_error_and_fix_under_each_problem() {
    let checks = key_checks(None);
    let table = render_table(&checks);
    assert!(
        table.contains("fail  jwks.x5c   key op-1 has no x5c certificate"),
        "{table}"
    );
    assert!(table.contains("causes: AADSTS50012"));
    assert!(table.contains("fix: publish x5c on key op-1"));
    assert!(
        table.ends_with("doctor: 1 failed, 0 warnings, 2 passed\n"),
        "{table}"
    );
    let json = serde_json::to_value(&checks).unwrap();
    assert_eq!(json[2]["status"], "fail");
    assert_eq!(json[0].get("fix"), None);
}
