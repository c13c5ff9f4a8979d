//! Properties that must hold for every input (issue 8), asserted by the property tests in
//! `tests.rs` (stable, part of `cargo test -p eam-filters`) and by the `cargo fuzz` targets in
//! `fuzz/` (which cargo-fuzz builds with `--cfg fuzzing`).
//!
//! Each `check_*` function panics with a message naming the property that failed, so a fuzzer
//! crash or a shrunk proptest case says what went wrong, not merely that something did.
//! [`fixture`] holds what both drivers share: the policy variants, the fixed key set built from
//! the test kit's keys, the pre-signed hints and a small model of Entra-shaped requests.
//!
//! Not part of the supported API: compiled for tests and fuzzing only.

use std::collections::HashSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use crate::authorize::{
    AuthorizeDecision, Outcome, Ruling, Summary, MAX_PARAMETERS, SINGLE_VALUED,
};
use crate::error::AuthorizeError;
use crate::keys::KeySet;
use crate::params::{push_encoded, Param, Params};
use crate::policy::{is_guid, AppPolicy, DetectMode, ErrorDelivery, Policy, MSA_TENANT};
use crate::render::ErrorResponse;
use crate::request::{AuthorizeRequest, Field, Framing, Method};

// ---------------------------------------------------------------------------------------------
// The authorize decision
// ---------------------------------------------------------------------------------------------

/// Checks one decision of [`Policy::authorize`] against README "How a request is handled", from what the upstream would
/// receive:
///
/// - only a GET or a POST is forwarded, with one `Content-Type` naming no charset but UTF-8 (a
///   form for a POST), no `Content-Encoding` but `identity`, and a GET without a body;
/// - what is forwarded parses with the strict codec, and every framework reads it alike: each
///   name is ASCII letters, digits, `_` and `-` (no single-valued OAuth name in another
///   case), no raw pair holds `;`, `[` or `]`, and at most `MAX_PARAMETERS` were received;
/// - no parameter the policy reserves (`param_prefix…`, any case, or `hint_param`) reaches the
///   upstream unless the outcome is `Accepted`, and never in the query of a POST;
/// - when accepted: each reserved name appears once at most and only those the proxy writes, the
///   `hint_param` value is the request's `id_token_hint`, `id_token_hint` is gone, `prompt=login`
///   when forced, every other parameter keeps its value and order, and the identity parameters
///   equal the claims of a hint that (re-checked here independently) names a configured
///   audience, a GUID tenant the app allows and the issuer of the app's cloud;
/// - not Entra: forwarded byte for byte apart from the stripped parameters and the pairs
///   re-encoded for their structure bytes (which keep their name and value), and indeed not
///   Entra's under the configured detection; `PassThrough` only when nothing was stripped;
/// - a rejection forwards nothing; a form_post goes only to a configured Entra redirect URI (of
///   the app's cloud when the app is known) and its page passes [`check_page`]; a JSON answer
///   carries the error's own status and fixed description.
pub fn check_decision(policy: &Policy, req: &AuthorizeRequest<'_>, out: &Ruling) {
    let summary = &out.summary;
    assert_eq!(
        summary.error.is_some(),
        summary.outcome == Outcome::Rejected,
        "an error is reported exactly when the request is rejected: {summary:?}"
    );
    assert!(
        out.keys_wanted.is_none()
            || matches!(
                summary.error,
                Some(AuthorizeError::UnknownKid | AuthorizeError::KeysUnavailable)
            ),
        "a key fetch is asked for only when a key is missing: {:?}",
        out.keys_wanted
    );
    let (query, body): (Option<&[u8]>, &[u8]) = match &out.decision {
        AuthorizeDecision::Reject(response) => {
            assert_eq!(
                summary.outcome,
                Outcome::Rejected,
                "a refused request reports a rejection"
            );
            check_reject(policy, req, summary, response);
            return;
        }
        AuthorizeDecision::PassThrough => {
            assert_eq!(
                summary.outcome,
                Outcome::Passed,
                "only a request that is not Entra's passes through unchanged: {summary:?}"
            );
            assert_eq!(
                summary.stripped, 0,
                "passed through as received although {} parameters were stripped",
                summary.stripped
            );
            (req.query.map(str::as_bytes), req.body)
        }
        AuthorizeDecision::Forward { query, body } => {
            assert_ne!(
                summary.outcome,
                Outcome::Rejected,
                "a rejected request is forwarded"
            );
            if req.method == Method::Get {
                assert!(body.is_none(), "a GET is forwarded with a new body");
            }
            (
                query.as_deref().or(req.query).map(str::as_bytes),
                body.as_deref().unwrap_or(req.body),
            )
        }
    };
    check_head(req);

    let (main_out, query_out, main_in, query_in) = match req.method {
        Method::Get => (
            forwarded("query", query.unwrap_or_default()),
            None,
            received("query", req.query.unwrap_or_default().as_bytes()),
            None,
        ),
        Method::Post => (
            forwarded("body", body),
            query.map(|q| forwarded("query", q)),
            received("body", req.body),
            req.query.map(|q| received("query", q.as_bytes())),
        ),
        Method::Other => unreachable!("checked by check_head"),
    };
    let received_count = main_in.len() + query_in.as_ref().map_or(0, Params::len);
    assert!(
        received_count <= MAX_PARAMETERS,
        "a request of {received_count} parameters was forwarded"
    );
    for p in main_out
        .iter()
        .chain(query_out.iter().flat_map(Params::iter))
    {
        check_reads_alike(p);
    }
    if req.method == Method::Post {
        assert!(
            req.body.len() <= policy.authorize.max_body_bytes,
            "a body over max_body_bytes was forwarded"
        );
    }

    let reserved = |p: &&crate::params::Param<'_>| policy.is_reserved_param(&p.name);
    let expected_stripped = main_in.iter().filter(reserved).count()
        + query_in
            .as_ref()
            .map_or(0, |q| q.iter().filter(reserved).count());
    assert_eq!(
        summary.stripped, expected_stripped,
        "stripped count differs from the reserved parameters received"
    );

    // The query of a POST: never a reserved parameter, otherwise exactly as received.
    if let Some(query_out) = &query_out {
        if let Some(p) = query_out.iter().find(reserved) {
            panic!(
                "reserved parameter {:?} forwarded in the query of a POST",
                p.name
            );
        }
        let kept: Vec<&Param<'_>> = query_in
            .iter()
            .flat_map(Params::iter)
            .filter(|p| !reserved(p))
            .collect();
        check_kept(&kept, query_out, "the query of a POST");
    }

    match summary.outcome {
        Outcome::Accepted => check_accepted(policy, &main_in, &main_out, summary, req.method),
        _ => {
            if let Some(p) = main_out.iter().find(reserved) {
                panic!(
                    "reserved parameter {:?} reaches the upstream without a validated hint \
                     (outcome {:?})",
                    p.name, summary.outcome
                );
            }
            assert!(!summary.entra, "an Entra request was forwarded unvalidated");
            let kept: Vec<&Param<'_>> = main_in.iter().filter(|p| !reserved(p)).collect();
            check_kept(&kept, &main_out, "a request that is not Entra's");
            let by_client_id = main_out.all("client_id").any(|id| policy.app(id).is_some());
            let by_request_id = main_out.contains("client-request-id");
            let entra = match policy.authorize.detect {
                DetectMode::ClientId => by_client_id,
                DetectMode::ClientRequestId => by_request_id,
                DetectMode::Either => by_client_id || by_request_id,
                DetectMode::Both => by_client_id && by_request_id,
            };
            assert!(
                !entra,
                "an Entra request (detect = {:?}) was forwarded without validation",
                policy.authorize.detect
            );
        }
    }
}

/// The head of a forwarded request: the rules of `Policy::admit`, restated.
fn check_head(req: &AuthorizeRequest<'_>) {
    assert_ne!(
        req.method,
        Method::Other,
        "a method other than GET or POST was forwarded"
    );
    let content_type = match req.content_type {
        Field::Ambiguous => panic!("a request with a repeated Content-Type was forwarded"),
        Field::One(value) => Some(value.to_ascii_lowercase()),
        Field::Absent => None,
    };
    match req.content_encoding {
        Field::Absent => {}
        Field::One(coding) if coding.trim().eq_ignore_ascii_case("identity") => {}
        other => panic!("a request with Content-Encoding {other:?} was forwarded"),
    }
    if let Some(value) = &content_type {
        for parameter in value.split(';').skip(1) {
            let (name, charset) = parameter.split_once('=').unwrap_or((parameter, ""));
            assert!(
                name.trim() != "charset" || charset.trim() == "utf-8",
                "a request in another charset than UTF-8 was forwarded: {value:?}"
            );
        }
    }
    match req.method {
        Method::Get => assert!(
            req.body.is_empty() && matches!(req.framing, Framing::None | Framing::Open),
            "a GET with a body was forwarded ({:?}, {} bytes)",
            req.framing,
            req.body.len()
        ),
        _ => {
            let media = content_type.as_deref().unwrap_or_default();
            let mut parts = media.split(';');
            assert_eq!(
                parts.next().map(str::trim),
                Some("application/x-www-form-urlencoded"),
                "a POST that is not a form was forwarded: {media:?}"
            );
            assert!(
                parts.all(|p| p.split('=').next().unwrap_or_default().trim() == "charset"),
                "a form with a parameter other than charset was forwarded: {media:?}"
            );
        }
    }
}

/// A forwarded pair that every framework reads as the strict codec does.
fn check_reads_alike(p: &Param<'_>) {
    let name = p.name.as_ref();
    assert!(
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "a parameter named {name:?} was forwarded: frameworks rewrite or nest such names"
    );
    let lower = name.to_ascii_lowercase();
    assert!(
        lower == name || !SINGLE_VALUED.iter().any(|(n, _)| *n == lower),
        "{name:?} was forwarded: a case-insensitive framework reads it as {lower}"
    );
    assert!(
        !p.raw.contains([';', '[', ']']),
        "the raw pair {:?} was forwarded: Rack, Go, PHP or qs read its structure",
        p.raw
    );
}

/// The kept pairs reach the upstream in order, each as received, or re-encoded with the same
/// name and value when its raw bytes held `;`, `[` or `]`.
fn check_kept(kept: &[&Param<'_>], sent: &Params<'_>, what: &str) {
    let sent: Vec<&Param<'_>> = sent.iter().collect();
    assert_eq!(
        sent.len(),
        kept.len(),
        "{what} is forwarded with other pairs than it kept"
    );
    for (out, kept) in sent.iter().zip(kept) {
        assert_eq!(
            (&out.name, &out.value),
            (&kept.name, &kept.value),
            "{what} is forwarded with a pair changed"
        );
        if !kept.raw.contains([';', '[', ']']) {
            assert_eq!(out.raw, kept.raw, "{what} is not forwarded byte for byte");
        }
    }
}

/// [`check_decision`], plus the time window of README "How a request is handled", step 6 for an accepted hint at `now`.
pub fn check_decision_at(policy: &Policy, req: &AuthorizeRequest<'_>, out: &Ruling, now: u64) {
    check_decision(policy, req, out);
    if out.summary.outcome != Outcome::Accepted {
        return;
    }
    let main = match req.method {
        Method::Post => req.body,
        _ => req.query.unwrap_or_default().as_bytes(),
    };
    let main = Params::parse(main).expect("checked by check_decision");
    let (_, claims) = decode_jws(main.first("id_token_hint").unwrap_or_default())
        .expect("checked by check_decision");
    let date = |name: &str| claims.get(name).and_then(Value::as_f64);
    let iat = date("iat").expect("an accepted hint has a numeric iat");
    let exp = date("exp").expect("an accepted hint has a numeric exp");
    let leeway = policy.authorize.leeway_seconds as f64;
    let now = now as f64;
    assert!(iat - leeway <= now, "accepted a hint issued in the future");
    if let Some(nbf) = date("nbf") {
        assert!(nbf - leeway <= now, "accepted a hint before its nbf");
    }
    let end = if policy.authorize.accept_hints_until_exp {
        exp.max(iat)
    } else {
        iat
    };
    assert!(now <= end + leeway, "accepted a hint past its window's end");
}

fn forwarded<'a>(channel: &str, bytes: &'a [u8]) -> Params<'a> {
    Params::parse(bytes).unwrap_or_else(|e| {
        panic!(
            "the forwarded {channel} does not parse ({e:?}): {:?}",
            String::from_utf8_lossy(bytes)
        )
    })
}

fn received<'a>(channel: &str, bytes: &'a [u8]) -> Params<'a> {
    Params::parse(bytes).unwrap_or_else(|e| {
        panic!("a request whose {channel} does not parse ({e:?}) was not rejected")
    })
}

fn check_accepted(
    policy: &Policy,
    main_in: &Params<'_>,
    main_out: &Params<'_>,
    summary: &Summary,
    method: Method,
) {
    let settings = &policy.authorize;
    assert!(
        summary.entra && summary.hint_checked,
        "accepted without detection and validation: {summary:?}"
    );
    let single = |params: &Params<'_>, name: &str| -> String {
        let all = values(params, name);
        assert_eq!(all.len(), 1, "accepted with {} values of {name}", all.len());
        all[0].to_string()
    };
    let hint = single(main_in, "id_token_hint");
    let client_id = single(main_in, "client_id");
    single(main_in, "redirect_uri");
    let app = policy
        .app(&client_id)
        .unwrap_or_else(|| panic!("accepted for client_id {client_id:?}, which no app configures"));

    // Every reserved name once at most (the upstream may match names case-insensitively), and
    // only those the proxy writes itself.
    let prefix = &settings.param_prefix;
    let mut written: HashSet<String> = ["iss", "tid", "oid", "preferred_username", "sub"]
        .iter()
        .map(|s| format!("{prefix}{s}"))
        .collect();
    written.insert(settings.hint_param.clone());
    written.extend(settings.extra_claims.iter().map(|e| e.param.clone()));
    let mut seen = HashSet::new();
    for p in main_out
        .iter()
        .filter(|p| policy.is_reserved_param(&p.name))
    {
        assert!(
            written.contains(p.name.as_ref()),
            "reserved parameter {:?} forwarded that the proxy did not write",
            p.name
        );
        assert!(
            seen.insert(p.name.to_ascii_lowercase()),
            "reserved parameter {:?} forwarded twice",
            p.name
        );
    }

    let hint_out = values(main_out, &settings.hint_param);
    assert_eq!(
        hint_out,
        [hint.as_str()],
        "{} must carry the request's id_token_hint",
        settings.hint_param
    );
    assert_eq!(
        main_out.count("id_token_hint"),
        0,
        "id_token_hint is forwarded"
    );
    if settings.force_prompt_login {
        let prompts = values(main_out, "prompt");
        assert_eq!(prompts, ["login"], "prompt=login is not forced");
    }

    // Every other parameter keeps its value and order.
    let other = |params: &Params<'_>| -> Vec<(String, String)> {
        params
            .iter()
            .filter(|p| {
                let name = p.name.as_ref();
                !(policy.is_reserved_param(name)
                    || name == "id_token_hint"
                    || (settings.force_prompt_login && name == "prompt"))
            })
            .map(|p| (p.name.to_string(), p.value.to_string()))
            .collect()
    };
    assert_eq!(
        other(main_out),
        other(main_in),
        "a rewrite changed, dropped or reordered another parameter ({method:?})"
    );

    // The identity comes from a hint whose claims satisfy the app (re-checked here, apart from
    // the signature and time, which need the key set and the clock).
    let (header, claims) = decode_jws(&hint)
        .unwrap_or_else(|| panic!("accepted an id_token_hint that is not a compact JWS"));
    assert_eq!(
        header.get("alg").and_then(Value::as_str),
        Some("RS256"),
        "accepted a hint whose alg is not RS256"
    );
    let claim = |name: &str| claims.get(name).and_then(Value::as_str);
    let tid = claim("tid").unwrap_or_else(|| panic!("accepted a hint without a string tid"));
    assert!(is_guid(tid), "accepted a hint whose tid is not a GUID");
    check_tenant(app, tid);
    let cloud = policy.cloud_of(app);
    assert_eq!(
        claim("iss"),
        Some(cloud.expected_issuer(tid).as_str()),
        "accepted a hint from another issuer than the app's cloud"
    );
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => app.audiences.contains(aud),
        Some(Value::Array(auds)) => auds
            .iter()
            .filter_map(Value::as_str)
            .any(|a| app.audiences.iter().any(|x| x == a)),
        _ => false,
    };
    assert!(audience_ok, "accepted a hint for another audience");
    for name in ["iss", "tid", "oid", "sub"] {
        let value = claim(name).unwrap_or_default();
        assert!(!value.is_empty(), "accepted a hint without {name}");
        let sent = values(main_out, &format!("{prefix}{name}"));
        assert_eq!(sent, [value], "{prefix}{name} is not the hint's {name}");
    }
    let username = values(main_out, &format!("{prefix}preferred_username"));
    match claim("preferred_username") {
        Some(u) => assert_eq!(username, [u], "preferred_username differs from the hint"),
        None => assert!(
            username.is_empty(),
            "preferred_username forwarded without the claim"
        ),
    }
    for extra in &settings.extra_claims {
        let sent = values(main_out, &extra.param);
        let expected = match claims.get(&extra.claim) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
            None => None,
        };
        assert_eq!(
            sent,
            expected.as_deref().into_iter().collect::<Vec<_>>(),
            "extra claim {} is not copied into {}",
            extra.claim,
            extra.param
        );
    }
    assert_eq!(summary.tid.as_deref(), Some(tid), "summary tid");
    assert_eq!(summary.oid.as_deref(), claim("oid"), "summary oid");
}

fn check_tenant(app: &AppPolicy, tid: &str) {
    if tid.eq_ignore_ascii_case(MSA_TENANT) {
        assert!(
            app.allow_msa_tenant,
            "accepted a Microsoft-account tenant hint"
        );
    }
    if !app.allowed_tenants.is_empty() {
        assert!(
            app.allowed_tenants
                .iter()
                .any(|t| t.eq_ignore_ascii_case(tid)),
            "accepted a tenant outside allowed_tenants"
        );
    }
}

fn check_reject(
    policy: &Policy,
    req: &AuthorizeRequest<'_>,
    summary: &Summary,
    response: &ErrorResponse,
) {
    let error = summary.error.expect("a rejection names its error");
    assert!(
        header(response, "location").is_none(),
        "a rejection redirects"
    );
    let main = match req.method {
        Method::Get => Params::parse(req.query.unwrap_or_default().as_bytes()).ok(),
        Method::Post => Params::parse(req.body).ok(),
        Method::Other => None,
    };
    let unique = |name: &str| {
        main.as_ref()
            .filter(|m| m.count(name) == 1)
            .and_then(|m| m.first(name))
    };
    let named_app = unique("client_id").and_then(|id| policy.app(id));
    let allowed = |uri: &str| match named_app {
        Some(app) => policy.cloud_of(app).redirect_uris.iter().any(|u| u == uri),
        None => policy
            .clouds
            .iter()
            .any(|c| c.redirect_uris.iter().any(|u| u == uri)),
    };
    let expect_page = summary.entra
        && policy.authorize.error_delivery == ErrorDelivery::FormPost
        && unique("redirect_uri").is_some_and(allowed);

    let is_page = header(response, "content-type").is_some_and(|c| c.starts_with("text/html"));
    if !is_page {
        assert!(
            !expect_page,
            "{error:?}: a JSON error although the redirect_uri is a configured Entra URI"
        );
        assert_eq!(response.status, error.status(), "{error:?}: status");
        assert_eq!(
            header(response, "content-type"),
            Some("application/json"),
            "{error:?}: content type"
        );
        let json: Value = serde_json::from_slice(&response.body)
            .unwrap_or_else(|e| panic!("{error:?}: the JSON error does not parse: {e}"));
        assert_eq!(
            json,
            serde_json::json!({
                "error": error.oauth_error().code(),
                "error_description": error.description(),
            }),
            "{error:?}: JSON error body"
        );
        return;
    }

    assert!(
        expect_page,
        "{error:?}: a form_post page although the README (step 8, \"Reject\") calls for JSON (entra = {}, delivery = \
         {:?}, redirect_uri = {:?})",
        summary.entra,
        policy.authorize.error_delivery,
        unique("redirect_uri")
    );
    let body = std::str::from_utf8(&response.body).expect("the page is UTF-8");
    let action = form_action(body).unwrap_or_else(|| panic!("a page without a form: {body}"));
    assert!(
        policy
            .clouds
            .iter()
            .any(|c| c.redirect_uris.contains(&action)),
        "{error:?}: form_post to {action:?}, which no cloud configures"
    );
    assert!(
        allowed(&action),
        "{error:?}: form_post to {action:?}, not a redirect URI of the app's cloud"
    );
    assert_eq!(
        unique("redirect_uri"),
        Some(action.as_str()),
        "the form_post goes elsewhere than the request's redirect_uri"
    );
    check_page(response, &action, error, unique("state"));
}

// ---------------------------------------------------------------------------------------------
// The form codec and key sets
// ---------------------------------------------------------------------------------------------

/// When `input` parses: the pairs agree with a lenient reference decoder (`form_urlencoded`,
/// what many upstreams use), forwarding the pairs keeps their meaning, and re-encoding the
/// decoded pairs with `push_encoded` parses back to the same pairs and re-encodes to the
/// identical string (stable).
pub fn check_form_round_trip(input: &[u8]) {
    let Ok(params) = Params::parse(input) else {
        return;
    };
    let pairs = pairs_of(&params);
    let lenient: Vec<(String, String)> = form_urlencoded::parse(input).into_owned().collect();
    assert_eq!(
        pairs, lenient,
        "the strict codec and a lenient decoder disagree on an input both accept"
    );
    let raw = params.to_forwarded_string();
    let reparsed = Params::parse(raw.as_bytes()).expect("the forwarded pairs parse again");
    assert_eq!(
        pairs_of(&reparsed),
        pairs,
        "the forwarded pairs change meaning"
    );

    let encoded = encode(&pairs);
    let again = Params::parse(encoded.as_bytes())
        .unwrap_or_else(|e| panic!("re-encoded form does not parse ({e:?}): {encoded:?}"));
    let again_pairs = pairs_of(&again);
    assert_eq!(again_pairs, pairs, "re-encoding changes the pairs");
    assert_eq!(encode(&again_pairs), encoded, "re-encoding is not stable");
}

/// Every value of `name`, in order.
fn values<'p>(params: &'p Params<'_>, name: &str) -> Vec<&'p str> {
    params
        .iter()
        .filter(|p| p.name == name)
        .map(|p| p.value.as_ref())
        .collect()
}

fn pairs_of(params: &Params<'_>) -> Vec<(String, String)> {
    params
        .iter()
        .map(|p| (p.name.to_string(), p.value.to_string()))
        .collect()
}

fn encode(pairs: &[(String, String)]) -> String {
    let mut out = String::new();
    for (name, value) in pairs {
        push_encoded(&mut out, name, value);
    }
    out
}

/// `KeySet::from_jwks` never panics, and a set it returns holds at least one key, each
/// reachable by a non-empty `kid`.
pub fn check_key_set(input: &[u8]) {
    if let Ok(set) = KeySet::from_jwks(input, 0) {
        assert!(!set.is_empty(), "a key set without keys was accepted");
        assert_eq!(set.kids().count(), set.len());
        for kid in set.kids() {
            assert!(!kid.is_empty(), "a key with an empty kid was kept");
            assert!(set.get(kid).is_some());
        }
    }
}

/// Header and claims of a compact JWS, without any verification.
fn decode_jws(token: &str) -> Option<(Map<String, Value>, Map<String, Value>)> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let object =
        |segment: &str| match serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).ok()?) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        };
    Some((object(header)?, object(payload)?))
}

pub mod fixture;
mod page;

#[cfg(test)]
pub(crate) use page::hidden_fields;
pub use page::{check_escape_html, check_page};
pub(crate) use page::{form_action, header};

#[cfg(test)]
mod tests;
