use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use testkit::claims::SUB;
use testkit::entra::{CLIENT_ID, GLOBAL_REDIRECT as REDIRECT};

use super::*;
use crate::policy::{AppPolicy, AuthorizeSettings, CloudPolicy};

const OTHER_CLIENT: &str = "0d4c8e2a-7b1f-4c3e-9a5d-6e8f0a1b2c3d";
const NONCE: &str = "nonce-9f3e2c4a";
const STATE: &str = "AwABAAEAAAACAOz_BAD0&8h2Ejq7";

fn guard() -> ResponseGuard {
    let app = |client_id: &str| AppPolicy {
        client_id: client_id.into(),
        audiences: vec![client_id.into()],
        cloud: 0,
        allowed_tenants: vec![],
        allow_msa_tenant: false,
    };
    ResponseGuard::new(&Policy {
        authorize: AuthorizeSettings::default(),
        apps: vec![app(CLIENT_ID), app(OTHER_CLIENT)],
        clouds: ["global", "usgov"]
            .map(|c| CloudPolicy::builtin(c).unwrap())
            .into(),
        max_stale_seconds: 1,
    })
}

const ISSUER: &str = "https://op.example";
/// Within the good id_token's iat..exp.
const NOW: u64 = 1_750_000_100;

fn context() -> AnswerContext<'static> {
    AnswerContext {
        issuer: Some(ISSUER),
        now: NOW,
    }
}

fn expectation() -> Expectation {
    Expectation {
        state: Some(STATE.into()),
        client_id: CLIENT_ID.into(),
        redirect_uri: REDIRECT.into(),
        client_request_id: Some("crid".into()),
        sub: SUB.into(),
        nonce: Some(NONCE.into()),
        acr_values: vec!["possessionorinherence".into()],
    }
}

/// What a well-behaved OP issues for the remembered request.
fn good_claims() -> Value {
    json!({
        "iss": "https://op.example",
        "aud": CLIENT_ID,
        "sub": SUB,
        "nonce": NONCE,
        "acr": "possessionorinherence",
        "amr": ["fido"],
        "iat": 1_750_000_000,
        "exp": 1_750_000_600,
    })
}

/// An unsigned-looking JWS: the guard never verifies the signature.
fn token(claims: &Value) -> String {
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.c2ln",
        enc(&json!({"alg": "RS256", "kid": "op"})),
        enc(claims)
    )
}

fn post(claims: &Value) -> EntraFormPost {
    EntraFormPost {
        redirect_uri: REDIRECT.into(),
        state: Some(STATE.into()),
        id_token: Some(token(claims)),
    }
}

fn with(change: impl FnOnce(&mut Value)) -> EntraFormPost {
    let mut claims = good_claims();
    change(&mut claims);
    post(&claims)
}

fn violations(post: &EntraFormPost, expected: Option<&Expectation>) -> Vec<Violation> {
    guard()
        .check(post, expected, &context())
        .expect("an id_token is checked")
        .violations
}

/// oidc-provider's form_post page, as it renders it.
fn oidc_provider_page(action: &str, fields: &[(&str, &str)]) -> String {
    let inputs: Vec<String> = fields
        .iter()
        .map(|(n, v)| {
            format!(
                "<input type=\"hidden\" name=\"{n}\" value=\"{}\"/>",
                crate::render::escape_html(v)
            )
        })
        .collect();
    format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<title>Submitting Callback</title>\n<script>\n\
         document.addEventListener('DOMContentLoaded', function () {{ document.forms[0].submit() }});\n\
         </script>\n</head>\n<body>\n<form method=\"post\" action=\"{action}\">\n{}\n\
         <noscript>Your browser does not support JavaScript<br/><button autofocus type=\"submit\">Continue</button></noscript>\n\
         </form>\n</body>\n</html>",
        inputs.join("\n")
    )
}

#[test]
fn finds_the_form_post_to_entra_with_decoded_fields() {
    let id_token = token(&good_claims());
    let html = oidc_provider_page(REDIRECT, &[("id_token", &id_token), ("state", STATE)]);
    let found = guard().find(html.as_bytes()).expect("a form_post to Entra");
    assert_eq!(
        found,
        EntraFormPost {
            redirect_uri: REDIRECT.into(),
            state: Some(STATE.into()),
            id_token: Some(id_token),
        }
    );
    // The state carries `&`: it came escaped as `&amp;` and is decoded like a browser does.
    assert!(html.contains("&amp;"));
}

#[test]
fn other_pages_are_not_entra_form_posts() {
    let g = guard();
    let fields = [("id_token", "a.b.c"), ("state", "s")];
    for html in [
        // A login page, a form_post to another client, a GET form to Entra.
        "<html><body><form method=post action=/interaction/x/login><input name=login></form>"
            .to_string(),
        oidc_provider_page("https://rp.example/cb", &fields),
        oidc_provider_page(REDIRECT, &fields).replace("method=\"post\"", "method=\"get\""),
        // Entra's URI differently spelled is another URI: Entra would not receive it.
        oidc_provider_page(&format!("{REDIRECT}?x=1"), &fields),
        "not html at all \u{0}\u{ff}".to_string(),
        String::new(),
    ] {
        assert_eq!(g.find(html.as_bytes()), None, "{html}");
    }
}

#[test]
fn only_fields_a_browser_submits_count() {
    let html = format!(
        "<form method=\"POST\" action=\"https://rp.example/x\"><input name=id_token value=decoy></form>\
         <script>var s = '<form method=post action={REDIRECT}><input name=id_token value=in-script>';</script>\
         <FORM METHOD=post ACTION='{REDIRECT}'>\
         <noscript><input name=state value=in-noscript></noscript>\
         <input type=submit name=id_token value=button>\
         <input type=hidden name=id_token value=real><input name=state value='s&#x27;1'>\
         <form action=https://rp.example/nested><input name=nested value=1></form>\
         </FORM>"
    );
    let found = guard()
        .find(html.as_bytes())
        .expect("the second form posts to Entra");
    assert_eq!(found.id_token.as_deref(), Some("real"));
    assert_eq!(found.state.as_deref(), Some("s'1"));
}

#[test]
fn the_usgov_redirect_uri_is_entra_too() {
    let uri = "https://login.microsoftonline.us/common/federation/externalauthprovider";
    let html = oidc_provider_page(uri, &[("id_token", "x.y.z"), ("state", "s")]);
    assert_eq!(guard().find(html.as_bytes()).unwrap().redirect_uri, uri);
}

#[test]
fn a_good_answer_passes_both_ways() {
    let verdict = guard()
        .check(&post(&good_claims()), Some(&expectation()), &context())
        .unwrap();
    assert_eq!(
        verdict,
        GuardVerdict {
            scope: Scope::Full,
            violations: vec![]
        }
    );
    assert!(verdict.passed());
    let verdict = guard()
        .check(&post(&good_claims()), None, &context())
        .unwrap();
    assert_eq!(verdict.scope, Scope::Stateless);
    assert!(verdict.passed());
    // An aud array holding the client_id is the client's too (OIDC Core 3.1.3.7).
    let arr = with(|c| c["aud"] = json!(["https://other", CLIENT_ID]));
    assert_eq!(violations(&arr, Some(&expectation())), []);
}

#[test]
fn an_error_answer_has_nothing_to_check() {
    let error = EntraFormPost {
        redirect_uri: REDIRECT.into(),
        state: Some(STATE.into()),
        id_token: None,
    };
    assert_eq!(
        guard().check(&error, Some(&expectation()), &context()),
        None
    );
}

#[test]
fn every_violation_is_caught_against_the_request() {
    let e = expectation();
    let cases: Vec<(EntraFormPost, Violation)> = vec![
        (
            with(|c| c["sub"] = json!("someone-else")),
            Violation::SubjectMismatch,
        ),
        (
            with(|c| drop(c.as_object_mut().unwrap().remove("sub"))),
            Violation::SubjectMismatch,
        ),
        (
            with(|c| c["nonce"] = json!("replayed")),
            Violation::NonceMismatch,
        ),
        (
            with(|c| drop(c.as_object_mut().unwrap().remove("nonce"))),
            Violation::NonceMismatch,
        ),
        (
            with(|c| c["aud"] = json!(OTHER_CLIENT)),
            Violation::AudienceMismatch,
        ),
        (
            with(|c| c["aud"] = json!(["https://other"])),
            Violation::AudienceMismatch,
        ),
        (
            with(|c| c["acr"] = json!("knowledge")),
            Violation::AcrNotRequested,
        ),
        (
            with(|c| c["acr"] = json!(["possessionorinherence"])),
            Violation::AcrNotSingle,
        ),
        (
            with(|c| drop(c.as_object_mut().unwrap().remove("acr"))),
            Violation::AcrNotSingle,
        ),
        (
            with(|c| c["amr"] = json!(["fido", "otp"])),
            Violation::AmrNotSingle,
        ),
        (with(|c| c["amr"] = json!([])), Violation::AmrNotSingle),
        (with(|c| c["amr"] = json!("fido")), Violation::AmrNotSingle),
        (
            with(|c| drop(c.as_object_mut().unwrap().remove("amr"))),
            Violation::AmrNotSingle,
        ),
        (
            with(|c| c["amr"] = json!(["pwd"])),
            Violation::AmrNotAllowed,
        ),
        (with(|c| c["amr"] = json!([7])), Violation::AmrNotAllowed),
    ];
    for (answer, violation) in cases {
        assert_eq!(violations(&answer, Some(&e)), [violation], "{answer:?}");
    }
}

#[test]
fn the_answer_must_post_to_the_requests_redirect_uri() {
    // Both are Entra's redirect URIs (the form is judged), but Entra asked for the global one.
    let usgov = EntraFormPost {
        redirect_uri: "https://login.microsoftonline.us/common/federation/externalauthprovider"
            .into(),
        ..post(&good_claims())
    };
    assert_eq!(
        violations(&usgov, Some(&expectation())),
        [Violation::RedirectUriMismatch]
    );
    // Without the request the guard cannot know which one was asked for.
    assert_eq!(violations(&usgov, None), []);
}

#[test]
fn violations_are_all_listed_in_check_order() {
    let answer = with(|c| {
        c["sub"] = json!("x");
        c["acr"] = json!("knowledge");
        c["amr"] = json!(["fido", "otp"]);
    });
    let verdict = guard()
        .check(&answer, Some(&expectation()), &context())
        .unwrap();
    assert_eq!(
        verdict.violations,
        [
            Violation::SubjectMismatch,
            Violation::AcrNotRequested,
            Violation::AmrNotSingle
        ]
    );
    assert_eq!(verdict.first(), Some(Violation::SubjectMismatch));
}

#[test]
fn malformed_tokens_and_a_missing_state() {
    let e = expectation();
    // e30.e30. is unsigned (alg none): malformed to Entra as to the hint's validator.
    for bad in [
        "",
        "a.b",
        "a.b.c.d.e",
        "a.!!!.c",
        "a.bnVsbA.c",
        "a.WzFd.c",
        "e30.e30.",
    ] {
        let answer = EntraFormPost {
            id_token: Some(bad.into()),
            ..post(&good_claims())
        };
        assert_eq!(
            violations(&answer, Some(&e)),
            [Violation::MalformedIdToken],
            "{bad}"
        );
    }
    let no_state = EntraFormPost {
        state: None,
        ..post(&good_claims())
    };
    assert_eq!(violations(&no_state, Some(&e)), [Violation::MissingState]);
    let empty_state = EntraFormPost {
        state: Some(String::new()),
        ..post(&good_claims())
    };
    assert_eq!(
        violations(&empty_state, Some(&e)),
        [Violation::MissingState]
    );
    // Microsoft returns state only when it was sent: none required of an unknown request, or of
    // one that had none.
    assert_eq!(violations(&empty_state, None), []);
    let stateless_request = Expectation {
        state: None,
        ..expectation()
    };
    assert_eq!(violations(&no_state, Some(&stateless_request)), []);
    // Found by its nonce, with another state than the request's.
    let other_state = EntraFormPost {
        state: Some("another".into()),
        ..post(&good_claims())
    };
    assert_eq!(
        violations(&other_state, Some(&e)),
        [Violation::StateMismatch]
    );
}

#[test]
fn issuer_and_time_are_checked_when_known() {
    let e = expectation();
    assert_eq!(
        violations(&with(|c| c["iss"] = json!("https://op.example/")), Some(&e)),
        [Violation::IssuerMismatch]
    );
    assert_eq!(
        violations(&with(|c| c["iss"] = json!("https://op.example/")), None),
        [Violation::IssuerMismatch],
        "stateless too"
    );
    // Discovery could not be read: iss is not judged.
    let unknown = AnswerContext {
        issuer: None,
        now: NOW,
    };
    let other_iss = with(|c| c["iss"] = json!("https://elsewhere"));
    assert!(guard()
        .check(&other_iss, Some(&e), &unknown)
        .unwrap()
        .passed());
    let at = |now: u64| AnswerContext {
        issuer: Some(ISSUER),
        now,
    };
    let good = post(&good_claims());
    for (now, ok) in [
        (1_750_000_000 - 300, true),
        (1_750_000_000 - 301, false),
        (1_750_000_600 + 300, true),
        (1_750_000_600 + 301, false),
    ] {
        let verdict = guard().check(&good, Some(&e), &at(now)).unwrap();
        assert_eq!(verdict.passed(), ok, "now = {now}: {verdict:?}");
        if !ok {
            assert_eq!(verdict.violations, [Violation::TimeInvalid]);
        }
    }
    for broken in [
        with(|c| drop(c.as_object_mut().unwrap().remove("exp"))),
        with(|c| c["iat"] = json!("1750000000")),
    ] {
        assert_eq!(violations(&broken, Some(&e)), [Violation::TimeInvalid]);
    }
}

#[test]
fn the_nonce_finds_an_answer_without_state() {
    let no_state = EntraFormPost {
        state: None,
        ..post(&good_claims())
    };
    assert_eq!(ResponseGuard::nonce_of(&no_state).as_deref(), Some(NONCE));
    let error = EntraFormPost {
        id_token: None,
        ..no_state
    };
    assert_eq!(ResponseGuard::nonce_of(&error), None);
}

#[test]
fn without_the_request_only_stateless_checks_apply() {
    // sub, nonce and the requested acr need the request: unknown state, not judged.
    let unknowable = with(|c| {
        c["sub"] = json!("someone-else");
        c["nonce"] = json!("other");
        c["acr"] = json!("knowledge");
        c["aud"] = json!(OTHER_CLIENT);
    });
    assert_eq!(violations(&unknowable, None), []);
    // aud must still be some configured client_id; acr single; amr one allowed method.
    assert_eq!(
        violations(&with(|c| c["aud"] = json!("not-configured")), None),
        [Violation::AudienceMismatch]
    );
    assert_eq!(
        violations(&with(|c| c["acr"] = json!(1)), None),
        [Violation::AcrNotSingle]
    );
    assert_eq!(
        violations(&with(|c| c["amr"] = json!(["fido", "otp"])), None),
        [Violation::AmrNotSingle]
    );
    assert_eq!(
        violations(&with(|c| c["amr"] = json!(["mfa"])), None),
        [Violation::AmrNotAllowed]
    );
}

#[test]
fn no_requested_acr_accepts_any_single_acr() {
    let e = Expectation {
        acr_values: vec![],
        nonce: None,
        ..expectation()
    };
    let answer = with(|c| {
        c["acr"] = json!("anything");
        drop(c.as_object_mut().unwrap().remove("nonce"));
    });
    assert_eq!(violations(&answer, Some(&e)), []);
}

#[test]
fn denial_is_an_access_denied_form_post_with_the_state() {
    let answer = post(&good_claims());
    let page = guard().denial(&answer, Violation::AmrNotSingle);
    assert_eq!(page.status, 200);
    let html = String::from_utf8(page.body.clone()).unwrap();
    // The proxy's own parser reads it back as a form_post to Entra, without an id_token.
    let back = guard().find(html.as_bytes()).unwrap();
    assert_eq!(back.redirect_uri, REDIRECT);
    assert_eq!(back.state.as_deref(), Some(STATE));
    assert_eq!(back.id_token, None);
    assert!(html.contains("name=\"error\" value=\"access_denied\""));
    let description = crate::render::escape_html(Violation::AmrNotSingle.description());
    assert!(html.contains(&description));
    assert!(
        !html.contains(answer.id_token.as_deref().unwrap()),
        "no token echoed"
    );
}

#[test]
fn requested_acr_reads_claims_and_acr_values() {
    let claims = r#"{"id_token":{"acr":{"essential":true,"values":["a","b"]}}}"#;
    assert_eq!(requested_acr(Some(claims), Some("b c")), ["a", "b", "c"]);
    let single = r#"{"id_token":{"acr":{"value":"x"}}}"#;
    assert_eq!(requested_acr(Some(single), None), ["x"]);
    assert_eq!(requested_acr(Some("not json"), None), Vec::<String>::new());
    assert_eq!(
        requested_acr(Some(r#"{"userinfo":{}}"#), Some("")),
        Vec::<String>::new()
    );
}

mod properties {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_page_is_read_without_panicking(page in vec(any::<u8>(), 0..512)) {
            let g = guard();
            if let Some(found) = g.find(&page) {
                prop_assert!(found.redirect_uri == REDIRECT
                    || g.redirect_uris.contains(&found.redirect_uri));
                let _ = g.check(&found, Some(&expectation()), &context());
            }
        }

        /// A browser normalises CR and NUL in a page; Entra's values have neither.
        #[test]
        fn fields_round_trip_as_a_browser_reads_them(
            id_token in "[^\r\u{0}]{0,64}",
            state in "[^\r\u{0}]{0,64}",
        ) {
            let html = oidc_provider_page(REDIRECT, &[("id_token", &id_token), ("state", &state)]);
            let found = guard().find(html.as_bytes()).expect("the form_post is found");
            prop_assert_eq!(found.id_token.as_deref(), Some(id_token.as_str()));
            prop_assert_eq!(found.state.as_deref(), Some(state.as_str()));

            // The enforce answer carries that state back, escaped, and nothing else of the page.
            let denial = guard().denial(&found, Violation::SubjectMismatch);
            let back = guard().find(&denial.body).expect("the denial is a form_post to Entra");
            prop_assert_eq!(back.state.as_deref(), Some(state.as_str()));
            prop_assert_eq!(back.id_token, None);
        }
    }
}
