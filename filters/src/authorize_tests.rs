//! Table-driven tests of every rule of README "How a request is handled" through `Policy::authorize`.
//!
//! Each row of a table is one request, mostly hostile or malformed, with the exact outcome the
//! the README demands: the `AuthorizeError` (its `reason()` is a log and metric label, so the string is
//! spelled out too) and the shape of the answer (form_post to Entra, or JSON with its status).
//! The base hint is Microsoft's sample payload (README "7. Rewrite and forward", its example), with a `tid` that matches its `iss`
//! and time claims relative to a fixed `NOW`.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use serde_json::{json, Map, Value};
use testkit::claims::{
    issuer, set_tenant, APP_REGISTRATION, NOW, OID, OTHER_TID, SUB, TID, USERNAME,
};
use testkit::entra::{
    encode_form, CLIENT_ID, CRID, FORM, GLOBAL_REDIRECT, NONCE, STATE, USGOV_REDIRECT,
};
use testkit::jwk::{jwks, signer_jwks};
use testkit::keys::PUBLIC_JWKS;
use testkit::sign::{b64, hs256, signing_input};
use testkit::{Algorithm, EntraRequest, TestKey, FOREIGN, SIGNER};

use super::*;
use crate::error::AuthorizeError as E;
use crate::invariants::{form_action, header, hidden_fields};
use crate::keys::KeySet;
use crate::policy::{
    AppPolicy, AuthorizeSettings, CloudPolicy, DetectMode, ExtraClaim, MSA_TENANT,
};
use crate::request::{AuthorizeRequest, Field, Framing, Method};
use crate::standing::{Exceeded, Limit};

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

/// One global app whose audiences are the config default (`[]` → `[client_id]`), every
/// built-in cloud known, default `[authorize]` settings.
fn policy() -> Policy {
    Policy {
        authorize: AuthorizeSettings::default(),
        apps: vec![AppPolicy {
            client_id: CLIENT_ID.into(),
            audiences: vec![CLIENT_ID.into()],
            cloud: 0,
            allowed_tenants: vec![],
            allow_msa_tenant: false,
        }],
        clouds: ["global", "usgov", "china"]
            .map(|name| CloudPolicy::builtin(name).unwrap())
            .into(),
        max_stale_seconds: 604_800,
    }
}

type Keys = HashMap<String, Arc<KeySet>>;

/// The global key set, `SIGNER` under kid `signer` with Microsoft's issuer template, fresh.
fn keys() -> Keys {
    keys_for("global", signer_set(NOW))
}

/// `SIGNER` under kid `signer` with Microsoft's issuer template, loaded at `loaded_at`.
fn signer_set(loaded_at: u64) -> KeySet {
    KeySet::from_jwks(signer_jwks().as_bytes(), loaded_at).unwrap()
}

fn keys_for(cloud: &str, set: KeySet) -> Keys {
    HashMap::from([(cloud.to_string(), Arc::new(set))])
}

fn key_set(keys: Vec<Value>, loaded_at: u64) -> KeySet {
    KeySet::from_jwks(jwks(keys).to_string().as_bytes(), loaded_at).unwrap()
}

/// Microsoft's sample member-user payload (README "7. Rewrite and forward", its example) for
/// the app, pre-expired like the real thing.
fn claims() -> Map<String, Value> {
    testkit::claims::sample(CLIENT_ID, NOW)
}

/// A hint signed by the trusted key, with `tweak` applied to the sample claims.
fn hint(tweak: impl FnOnce(&mut Map<String, Value>)) -> String {
    let mut claims = claims();
    tweak(&mut claims);
    SIGNER.sign(SIGNER.kid, &Value::Object(claims))
}

/// A claims or header tweak: `name` set to `value`.
fn with(name: &'static str, value: impl Into<Value>) -> impl FnOnce(&mut Map<String, Value>) {
    let value = value.into();
    move |map| {
        map.insert(name.into(), value);
    }
}

/// A claims or header tweak: `name` removed.
fn without(name: &'static str) -> impl FnOnce(&mut Map<String, Value>) {
    move |map| {
        map.remove(name);
    }
}

/// A claims tweak: the hint comes from tenant `tid` (with the matching global issuer).
fn tenant(tid: &str) -> impl FnOnce(&mut Map<String, Value>) {
    let tid = tid.to_string();
    move |claims| set_tenant(claims, &tid)
}

fn valid_hint() -> String {
    static VALID: OnceLock<String> = OnceLock::new();
    VALID.get_or_init(|| hint(|_| {})).clone()
}

fn rs256_header() -> Map<String, Value> {
    let Value::Object(h) = json!({"typ": "JWT", "alg": "RS256", "kid": SIGNER.kid}) else {
        unreachable!()
    };
    h
}

fn claims_json() -> String {
    Value::Object(claims()).to_string()
}

/// A JWS over arbitrary header and payload bytes, correctly signed by `key` with `alg`.
fn jws(key: &TestKey, alg: Algorithm, header: &Map<String, Value>, payload: &str) -> String {
    key.jws(alg, &Value::Object(header.clone()), payload)
}

/// The sample claims under the trusted key with `tweak` applied to the header.
fn hint_with_header(tweak: impl FnOnce(&mut Map<String, Value>)) -> String {
    let mut header = rs256_header();
    tweak(&mut header);
    jws(&SIGNER, Algorithm::RS256, &header, &claims_json())
}

/// The classic key-confusion forgery: HMAC with public key material as the secret.
fn hmac_hint(alg_in_header: &str, secret: &[u8]) -> String {
    let mut header = rs256_header();
    header.insert("alg".into(), alg_in_header.into());
    let input = signing_input(&Value::Object(header), &claims_json());
    format!("{input}.{}", hs256(&input, secret))
}

fn segments(token: &str) -> Vec<String> {
    token.split('.').map(str::to_string).collect()
}

fn entra_body(hint: &str) -> String {
    EntraRequest::new(hint).body()
}

fn entra_body_with(hint: &str, tweak: impl FnOnce(&mut Vec<(String, String)>)) -> String {
    let mut params = EntraRequest::new(hint).pairs();
    tweak(&mut params);
    encode_form(&params)
}

fn set(params: &mut [(String, String)], name: &str, value: &str) {
    params.iter_mut().find(|(n, _)| n == name).unwrap().1 = value.into();
}

fn remove(params: &mut Vec<(String, String)>, name: &str) {
    params.retain(|(n, _)| n != name);
}

/// Appends a second copy of `name` (same value: even an identical repeat is ambiguous).
fn duplicate(params: &mut Vec<(String, String)>, name: &str) {
    let pair = params.iter().find(|(n, _)| n == name).unwrap().clone();
    params.push(pair);
}

fn parse(raw: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect()
}

fn values<'p>(params: &'p [(String, String)], name: &str) -> Vec<&'p str> {
    params
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// An authorize request as the proxy would hand it over, owned so tables can hold it.
#[derive(Clone)]
struct Req {
    method: Method,
    content_type: Option<&'static str>,
    content_encoding: Field<'static>,
    /// `None`: as a client frames this body (by its length; a GET without one).
    framing: Option<Framing>,
    query: Option<String>,
    body: Vec<u8>,
}

impl Req {
    fn post(body: impl Into<Vec<u8>>) -> Req {
        Req {
            method: Method::Post,
            content_type: Some(FORM),
            content_encoding: Field::Absent,
            framing: None,
            query: None,
            body: body.into(),
        }
    }
    fn get(query: impl Into<String>) -> Req {
        Req {
            method: Method::Get,
            content_type: None,
            content_encoding: Field::Absent,
            framing: None,
            query: Some(query.into()),
            body: Vec::new(),
        }
    }
    fn query(mut self, query: &str) -> Req {
        self.query = Some(query.into());
        self
    }
    fn content_type(mut self, content_type: Option<&'static str>) -> Req {
        self.content_type = content_type;
        self
    }
    fn content_encoding(mut self, field: Field<'static>) -> Req {
        self.content_encoding = field;
        self
    }
    /// The body that arrived (a GET's in HTTP/2 DATA frames), and how it was framed.
    fn framed(mut self, framing: Framing, body: &[u8]) -> Req {
        self.framing = Some(framing);
        self.body = body.to_vec();
        self
    }
    fn as_request(&self) -> AuthorizeRequest<'_> {
        AuthorizeRequest {
            method: self.method,
            content_type: self.content_type.into(),
            content_encoding: self.content_encoding,
            framing: self.framing.unwrap_or(match self.method {
                Method::Post => Framing::of_body(&self.body),
                _ => Framing::None,
            }),
            query: self.query.as_deref(),
            body: &self.body,
        }
    }
}

fn run(policy: &Policy, keys: &Keys, req: &Req, now: u64) -> Ruling {
    policy.authorize(&req.as_request(), keys, now)
}

/// The parameters the upstream receives for a forwarded request of `method`.
fn forwarded(decision: &AuthorizeDecision, method: Method) -> Vec<(String, String)> {
    match (decision, method) {
        (
            AuthorizeDecision::Forward {
                body: Some(body), ..
            },
            Method::Post,
        ) => parse(std::str::from_utf8(body).unwrap()),
        (
            AuthorizeDecision::Forward {
                query: Some(query),
                body: None,
            },
            Method::Get,
        ) => parse(query),
        other => panic!("expected a rewritten {method:?}, got {other:?}"),
    }
}

fn forwarded_body(out: &Ruling) -> String {
    match &out.decision {
        AuthorizeDecision::Forward {
            query: None,
            body: Some(body),
        } => String::from_utf8(body.clone()).unwrap(),
        other => panic!("expected a rewritten body, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Table machinery
// ---------------------------------------------------------------------------------------------

/// How a rejection must reach the browser (README "How a request is handled", step 8).
#[derive(Debug, Clone)]
enum Answer {
    /// `200` auto-submitting form to this Entra redirect URI, echoing this `state`.
    FormPost {
        to: &'static str,
        state: Option<String>,
    },
    /// A JSON error body with this status; never a form_post or redirect.
    Json(u16),
}

#[derive(Debug, Clone)]
enum Expect {
    /// Entra request with a valid hint: rewritten and forwarded.
    Accepted,
    /// Not Entra, nothing to strip: forwarded as received.
    PassThrough,
    Rejected {
        error: E,
        reason: &'static str,
        answer: Answer,
    },
}

struct Case {
    name: String,
    policy: Policy,
    keys: Keys,
    req: Req,
    now: u64,
    expect: Expect,
}

/// The valid Entra POST of the base policy, accepted unless a builder says otherwise.
fn case(name: &str) -> Case {
    Case {
        name: name.into(),
        policy: policy(),
        keys: keys(),
        req: Req::post(entra_body(&valid_hint())),
        now: NOW,
        expect: Expect::Accepted,
    }
}

impl Case {
    fn policy(mut self, tweak: impl FnOnce(&mut Policy)) -> Case {
        tweak(&mut self.policy);
        self
    }
    fn keys(mut self, keys: Keys) -> Case {
        self.keys = keys;
        self
    }
    fn req(mut self, req: Req) -> Case {
        self.req = req;
        self
    }
    fn hint(self, token: String) -> Case {
        self.req(Req::post(entra_body(&token)))
    }
    fn claims(self, tweak: impl FnOnce(&mut Map<String, Value>)) -> Case {
        self.hint(hint(tweak))
    }
    fn params(self, tweak: impl FnOnce(&mut Vec<(String, String)>)) -> Case {
        self.req(Req::post(entra_body_with(&valid_hint(), tweak)))
    }
    fn at(mut self, now: u64) -> Case {
        self.now = now;
        self
    }
    fn accepted(mut self) -> Case {
        self.expect = Expect::Accepted;
        self
    }
    fn passes(mut self) -> Case {
        self.expect = Expect::PassThrough;
        self
    }
    fn answer(mut self, error: E, reason: &'static str, answer: Answer) -> Case {
        self.expect = Expect::Rejected {
            error,
            reason,
            answer,
        };
        self
    }
    /// Rejected with a form_post to the global Entra redirect URI, echoing Entra's state.
    fn form_post(self, error: E, reason: &'static str) -> Case {
        self.form_post_to(GLOBAL_REDIRECT, Some(STATE), error, reason)
    }
    fn form_post_to(
        self,
        to: &'static str,
        state: Option<&str>,
        error: E,
        reason: &'static str,
    ) -> Case {
        let state = state.map(str::to_string);
        self.answer(error, reason, Answer::FormPost { to, state })
    }
    fn json(self, status: u16, error: E, reason: &'static str) -> Case {
        self.answer(error, reason, Answer::Json(status))
    }
}

fn check(case: &Case) {
    let out = run(&case.policy, &case.keys, &case.req, case.now);
    let name = &case.name;
    match &case.expect {
        Expect::Accepted => {
            assert_eq!(
                (out.summary.outcome, out.summary.error),
                (Outcome::Accepted, None),
                "{name}"
            );
            let params = forwarded(&out.decision, case.req.method);
            assert_eq!(values(&params, "entra_sub"), [SUB], "{name}");
            assert!(values(&params, "id_token_hint").is_empty(), "{name}");
            let hint_param = &case.policy.authorize.hint_param;
            assert_eq!(values(&params, hint_param).len(), 1, "{name}");
        }
        Expect::PassThrough => {
            assert_eq!(out.decision, AuthorizeDecision::PassThrough, "{name}");
            assert_eq!(out.summary.outcome, Outcome::Passed, "{name}");
            assert_eq!(out.summary.error, None, "{name}");
            assert!(!out.summary.entra, "{name}");
        }
        Expect::Rejected {
            error,
            reason,
            answer,
        } => {
            assert_eq!(out.summary.error, Some(*error), "{name}");
            assert_eq!(out.summary.reason(), Some(*reason), "{name}");
            assert_eq!(out.summary.outcome, Outcome::Rejected, "{name}");
            let AuthorizeDecision::Reject(response) = &out.decision else {
                panic!("{name}: expected a rejection, got {:?}", out.decision);
            };
            assert_answer(name, response, *error, answer);
        }
    }
}

/// Runs every case, then fails once, naming every case that failed.
fn check_all(cases: Vec<Case>) {
    let mut names: Vec<_> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names must be unique");
    let failed: Vec<_> = cases
        .iter()
        .filter(|c| catch_unwind(AssertUnwindSafe(|| check(c))).is_err())
        .map(|c| c.name.clone())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} cases failed: {failed:#?}",
        failed.len(),
        cases.len()
    );
}

fn assert_answer(name: &str, response: &ErrorResponse, error: E, answer: &Answer) {
    // README "How a request is handled", step 8: only a missing or stale key set is `temporarily_unavailable`.
    let code = if error == E::KeysUnavailable {
        "temporarily_unavailable"
    } else {
        "invalid_request"
    };
    let body = String::from_utf8(response.body.clone()).unwrap();
    assert_eq!(
        header(response, "location"),
        None,
        "{name}: never a redirect"
    );
    // Descriptions name the failed check; nothing of the token is echoed.
    for secret in [SUB, OID, USERNAME, "eyJ"] {
        assert!(!body.contains(secret), "{name}: echoes {secret}");
    }
    match answer {
        Answer::Json(status) => {
            assert_eq!(response.status, *status, "{name}");
            assert_eq!(
                header(response, "content-type"),
                Some("application/json"),
                "{name}"
            );
            let json: Value = serde_json::from_slice(&response.body).unwrap();
            assert_eq!(
                json,
                json!({"error": code, "error_description": error.description()}),
                "{name}"
            );
        }
        Answer::FormPost { to, state } => {
            assert_eq!(response.status, 200, "{name}");
            assert!(
                header(response, "content-type").is_some_and(|c| c.starts_with("text/html")),
                "{name}"
            );
            assert_eq!(
                header(response, "cache-control"),
                Some("no-store"),
                "{name}"
            );
            assert_eq!(header(response, "x-frame-options"), Some("DENY"), "{name}");
            let csp = header(response, "content-security-policy").unwrap_or_default();
            assert!(csp.contains(&format!("form-action {to};")), "{name}: {csp}");
            assert!(csp.contains("script-src 'sha256-"), "{name}: {csp}");
            assert!(!csp.contains("unsafe-inline"), "{name}: {csp}");
            assert_eq!(form_action(&body).as_deref(), Some(*to), "{name}");
            let mut expected = vec![
                ("error".to_string(), code.to_string()),
                ("error_description".to_string(), error.description()),
            ];
            if let Some(state) = state {
                expected.push(("state".to_string(), state.clone()));
            }
            assert_eq!(hidden_fields(&body), expected, "{name}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// §3.6 The hint: JWS structure, algorithm, key
// ---------------------------------------------------------------------------------------------

#[test]
fn hint_structure_algorithm_and_key() {
    let valid = valid_hint();
    let [h, p, s] = <[String; 3]>::try_from(segments(&valid)).unwrap();
    let none_header = b64(r#"{"typ":"JWT","alg":"none","kid":"signer"}"#);
    let jwks_json = PUBLIC_JWKS.as_bytes();
    let mut tampered_sub = claims();
    tampered_sub.insert("sub".into(), "attacker-chosen-subject".into());
    let tampered_payload = b64(Value::Object(tampered_sub).to_string());
    let mut tampered_header = rs256_header();
    tampered_header.insert("typ".into(), "at+jwt".into());
    let tampered_header = b64(Value::Object(tampered_header).to_string());
    let mut none_with_rs256_sig = rs256_header();
    none_with_rs256_sig.insert("alg".into(), "none".into());
    let none_with_rs256_sig = b64(Value::Object(none_with_rs256_sig).to_string());

    let malformed = |name: &str, token: String| {
        case(name)
            .hint(token)
            .form_post(E::MalformedToken, "malformed_token")
    };
    let bad_alg = |name: &str, token: String| {
        case(name)
            .hint(token)
            .form_post(E::AlgorithmNotAllowed, "alg_not_allowed")
    };
    let bad_signature = |name: &str, token: String| {
        case(name)
            .hint(token)
            .form_post(E::BadSignature, "bad_signature")
    };

    check_all(vec![
        case("baseline: Microsoft's pre-expired sample hint").accepted(),
        // alg none: the structure check sees the empty signature first.
        malformed("alg none, empty signature", format!("{none_header}.{p}.")),
        bad_alg(
            "alg none, non-empty signature",
            format!("{none_header}.{p}.{s}"),
        ),
        bad_alg(
            "alg none swapped into a validly signed header",
            format!("{none_with_rs256_sig}.{p}.{s}"),
        ),
        bad_alg(
            "HS256 keyed with the JWK's n",
            hmac_hint("HS256", SIGNER.n().as_bytes()),
        ),
        bad_alg(
            "HS256 keyed with the JWKS document",
            hmac_hint("HS256", jwks_json),
        ),
        // Same forgery, header lying about the algorithm: the RSA check must fail.
        bad_signature(
            "HMAC signature under an RS256 header",
            hmac_hint("RS256", SIGNER.n().as_bytes()),
        ),
        bad_alg(
            "RS384 by the trusted key",
            jws(
                &SIGNER,
                Algorithm::RS384,
                &{
                    let mut h = rs256_header();
                    h.insert("alg".into(), "RS384".into());
                    h
                },
                &claims_json(),
            ),
        ),
        bad_alg(
            "PS256 by the trusted key",
            jws(
                &SIGNER,
                Algorithm::PS256,
                &{
                    let mut h = rs256_header();
                    h.insert("alg".into(), "PS256".into());
                    h
                },
                &claims_json(),
            ),
        ),
        bad_alg("missing alg", hint_with_header(without("alg"))),
        bad_alg(
            "alg lower-case rs256",
            hint_with_header(with("alg", "rs256")),
        ),
        bad_alg(
            "alg with trailing space",
            hint_with_header(with("alg", "RS256 ")),
        ),
        bad_alg(
            "alg as an array",
            hint_with_header(with("alg", json!(["RS256"]))),
        ),
        bad_signature(
            "foreign key under the trusted kid",
            FOREIGN.sign(SIGNER.kid, &Value::Object(claims())),
        ),
        case("unknown kid")
            .hint(FOREIGN.sign(FOREIGN.kid, &Value::Object(claims())))
            .form_post(E::UnknownKid, "unknown_kid"),
        case("missing kid")
            .hint(hint_with_header(without("kid")))
            .form_post(E::MissingKid, "missing_kid"),
        case("empty kid")
            .hint(hint_with_header(with("kid", "")))
            .form_post(E::MissingKid, "missing_kid"),
        case("numeric kid")
            .hint(hint_with_header(with("kid", 1)))
            .form_post(E::MissingKid, "missing_kid"),
        bad_signature(
            "payload swapped after signing (sub)",
            format!("{h}.{tampered_payload}.{s}"),
        ),
        bad_signature(
            "header changed after signing",
            format!("{tampered_header}.{p}.{s}"),
        ),
        bad_signature("signature of another token", {
            let other = hint(with("sub", "x"));
            format!("{h}.{p}.{}", segments(&other)[2])
        }),
        bad_signature("signature not base64url", format!("{h}.{p}.!!!")),
        bad_signature("signature with base64 padding", format!("{h}.{p}.{s}=")),
        malformed("two parts", format!("{h}.{p}")),
        malformed("four parts", format!("{valid}.{s}")),
        malformed("five parts (JWE shape)", format!("{h}.{p}.{s}.{s}.{s}")),
        malformed("one part", h.clone()),
        malformed("empty id_token_hint", String::new()),
        malformed("empty signature", format!("{h}.{p}.")),
        malformed("empty header segment", format!(".{p}.{s}")),
        malformed("empty payload segment", format!("{h}..{s}")),
        malformed("header not base64url", format!("!!!.{p}.{s}")),
        malformed("header not JSON", format!("{}.{p}.{s}", b64("RS256"))),
        malformed(
            "header a JSON array",
            format!("{}.{p}.{s}", b64(r#"["RS256"]"#)),
        ),
        case("payload not JSON, validly signed")
            .hint(jws(&SIGNER, Algorithm::RS256, &rs256_header(), "sub=x"))
            .form_post(E::MalformedClaims, "malformed_claims"),
        case("payload a JSON array, validly signed")
            .hint(jws(
                &SIGNER,
                Algorithm::RS256,
                &rs256_header(),
                &format!("[{}]", claims_json()),
            ))
            .form_post(E::MalformedClaims, "malformed_claims"),
        case("payload number out of f64 range in a claim the checks read, validly signed")
            .hint(jws(
                &SIGNER,
                Algorithm::RS256,
                &rs256_header(),
                &claims_json().replacen('{', r#"{"tid":1e400,"#, 1),
            ))
            .form_post(E::MalformedClaims, "malformed_claims"),
        case("claim read twice (the OP's parser may keep the other copy), validly signed")
            .hint(jws(
                &SIGNER,
                Algorithm::RS256,
                &rs256_header(),
                &claims_json().replacen('{', r#"{"sub":"attacker-chosen-subject","#, 1),
            ))
            .form_post(E::MalformedClaims, "malformed_claims"),
        // Members nobody reads are checked for JSON syntax only (jws.rs).
        case("payload number out of f64 range in a claim nobody reads, validly signed")
            .hint(jws(
                &SIGNER,
                Algorithm::RS256,
                &rs256_header(),
                &claims_json().replacen('{', r#"{"big":1e400,"#, 1),
            ))
            .accepted(),
        case("payload not base64url, validly signed")
            .hint({
                let input = format!("{h}.!!!");
                format!("{input}.{}", SIGNER.signature(&input, Algorithm::RS256))
            })
            .form_post(E::MalformedClaims, "malformed_claims"),
        // RFC 7515 §4.1.11: an extension we do not understand must not be ignored.
        malformed(
            "crit header, validly signed",
            hint_with_header(with("crit", json!(["exp"]))),
        ),
        // jku/x5u/jwk are never read: a signed hint that carries them is judged on its kid alone.
        case("jku, x5u and jwk header fields are ignored")
            .hint(hint_with_header(|h| {
                h.insert("jku".into(), "https://attacker.example/keys".into());
                h.insert("x5u".into(), "https://attacker.example/cert.pem".into());
                h.insert("jwk".into(), FOREIGN.jwk(SIGNER.kid));
            }))
            .accepted(),
        bad_signature("embedded jwk of the attacker's key", {
            let mut header = rs256_header();
            header.insert("jwk".into(), FOREIGN.jwk(SIGNER.kid));
            jws(&FOREIGN, Algorithm::RS256, &header, &claims_json())
        }),
        case("typ absent is fine")
            .hint(hint_with_header(without("typ")))
            .accepted(),
    ]);
}

// ---------------------------------------------------------------------------------------------
// §3.6 The hint: tenant, issuer, audience, subject
// ---------------------------------------------------------------------------------------------

#[test]
fn hint_claims() {
    let global = |tid: &str| issuer("login.microsoftonline.com", tid);
    let usgov_key = {
        let mut jwk = SIGNER.jwk(SIGNER.kid);
        jwk["issuer"] = "https://login.microsoftonline.us/{tenantid}/v2.0".into();
        keys_for("global", key_set(vec![jwk], NOW))
    };
    let audiences = |list: &[&str]| {
        let list: Vec<String> = list.iter().map(|a| a.to_string()).collect();
        move |p: &mut Policy| p.apps[0].audiences = list
    };

    check_all(vec![
        // aud
        case("wrong aud")
            .claims(with("aud", OTHER_TID))
            .form_post(E::AudienceMismatch, "audience_mismatch"),
        case("aud array containing the client_id")
            .claims(with("aud", json!([OTHER_TID, CLIENT_ID])))
            .accepted(),
        case("aud array without it")
            .claims(with("aud", json!([OTHER_TID, APP_REGISTRATION])))
            .form_post(E::AudienceMismatch, "audience_mismatch"),
        case("aud empty array")
            .claims(with("aud", json!([])))
            .form_post(E::AudienceMismatch, "audience_mismatch"),
        case("aud missing")
            .claims(without("aud"))
            .form_post(E::AudienceMismatch, "audience_mismatch"),
        case("aud an object")
            .claims(with("aud", json!({"aud": CLIENT_ID})))
            .form_post(E::AudienceMismatch, "audience_mismatch"),
        // RFC 7519 §4.1.3: audience values compare as case-sensitive strings.
        case("aud in upper case")
            .claims(with("aud", CLIENT_ID.to_uppercase()))
            .form_post(E::AudienceMismatch, "audience_mismatch"),
        case("aud = app registration while audiences default to client_id")
            .claims(with("aud", APP_REGISTRATION))
            .form_post(E::AudienceMismatch, "audience_mismatch"),
        case("aud = client_id while audiences = [app registration]")
            .policy(audiences(&[APP_REGISTRATION]))
            .form_post(E::AudienceMismatch, "audience_mismatch"),
        case("aud = app registration while audiences = [app registration]")
            .policy(audiences(&[APP_REGISTRATION]))
            .claims(with("aud", APP_REGISTRATION))
            .accepted(),
        case("both audiences configured, aud = client_id")
            .policy(audiences(&[APP_REGISTRATION, CLIENT_ID]))
            .accepted(),
        case("both audiences configured, aud = app registration")
            .policy(audiences(&[APP_REGISTRATION, CLIENT_ID]))
            .claims(with("aud", APP_REGISTRATION))
            .accepted(),
        // iss
        case("iss of another tenant than tid")
            .claims(with("iss", global(OTHER_TID)))
            .form_post(E::IssuerMismatch, "issuer_mismatch"),
        case("iss of the usgov cloud for a global app")
            .claims(with("iss", issuer("login.microsoftonline.us", TID)))
            .form_post(E::IssuerMismatch, "issuer_mismatch"),
        case("iss v1 (sts.windows.net)")
            .claims(with("iss", format!("https://sts.windows.net/{TID}/")))
            .form_post(E::IssuerMismatch, "issuer_mismatch"),
        case("iss with a trailing slash")
            .claims(with("iss", format!("{}/", global(TID))))
            .form_post(E::IssuerMismatch, "issuer_mismatch"),
        case("iss with the literal template")
            .claims(with("iss", global("{tid}")))
            .form_post(E::IssuerMismatch, "issuer_mismatch"),
        case("iss missing")
            .claims(without("iss"))
            .form_post(E::IssuerMismatch, "issuer_mismatch"),
        case("key issuer template of another cloud")
            .keys(usgov_key)
            .form_post(E::KeyIssuerMismatch, "key_issuer_mismatch"),
        case("key without issuer template")
            .keys(keys_for(
                "global",
                key_set(
                    vec![json!({"kty":"RSA","kid":SIGNER.kid,"n":SIGNER.n(),"e":SIGNER.e()})],
                    NOW,
                ),
            ))
            .accepted(),
        case("key issuer template with {tid}")
            .keys({
                let mut jwk = SIGNER.jwk(SIGNER.kid);
                jwk["issuer"] = "https://login.microsoftonline.com/{tid}/v2.0".into();
                keys_for("global", key_set(vec![jwk], NOW))
            })
            .accepted(),
        // tid
        case("tid not a GUID (domain name)")
            .claims(tenant("contoso.onmicrosoft.com"))
            .form_post(E::InvalidTenant, "invalid_tid"),
        case("tid 'common'")
            .claims(tenant("common"))
            .form_post(E::InvalidTenant, "invalid_tid"),
        case("tid GUID without dashes")
            .claims(tenant(&TID.replace('-', "")))
            .form_post(E::InvalidTenant, "invalid_tid"),
        case("tid missing")
            .claims(without("tid"))
            .form_post(E::MissingTenant, "missing_tid"),
        case("tid empty")
            .claims(with("tid", ""))
            .form_post(E::MissingTenant, "missing_tid"),
        case("tid a number")
            .claims(with("tid", 42))
            .form_post(E::MissingTenant, "missing_tid"),
        case("MSA tenant rejected by default")
            .claims(tenant(MSA_TENANT))
            .form_post(E::MsaTenant, "msa_tenant"),
        case("MSA tenant in upper case rejected by default")
            .claims(tenant(&MSA_TENANT.to_uppercase()))
            .form_post(E::MsaTenant, "msa_tenant"),
        case("MSA tenant accepted with allow_msa_tenant")
            .policy(|p| p.apps[0].allow_msa_tenant = true)
            .claims(tenant(MSA_TENANT))
            .accepted(),
        case("tenant allow-list hit")
            .policy(|p| p.apps[0].allowed_tenants = vec![OTHER_TID.into(), TID.into()])
            .accepted(),
        case("tenant allow-list hit, tid in upper case")
            .policy(|p| p.apps[0].allowed_tenants = vec![TID.into()])
            .claims(tenant(&TID.to_uppercase()))
            .accepted(),
        case("tenant allow-list hit, list in upper case")
            .policy(|p| p.apps[0].allowed_tenants = vec![TID.to_uppercase()])
            .accepted(),
        case("tenant allow-list miss")
            .policy(|p| p.apps[0].allowed_tenants = vec![OTHER_TID.into()])
            .form_post(E::TenantNotAllowed, "tenant_not_allowed"),
        // sub, oid
        case("sub missing")
            .claims(without("sub"))
            .form_post(E::MissingSubject, "missing_sub"),
        case("sub empty")
            .claims(with("sub", ""))
            .form_post(E::MissingSubject, "missing_sub"),
        case("sub a number")
            .claims(with("sub", 7))
            .form_post(E::MissingSubject, "missing_sub"),
        case("oid missing")
            .claims(without("oid"))
            .form_post(E::MissingObjectId, "missing_oid"),
        case("oid empty")
            .claims(with("oid", ""))
            .form_post(E::MissingObjectId, "missing_oid"),
        case("oid null")
            .claims(with("oid", Value::Null))
            .form_post(E::MissingObjectId, "missing_oid"),
        case("preferred_username absent is fine")
            .claims(without("preferred_username"))
            .accepted(),
    ]);
}

// ---------------------------------------------------------------------------------------------
// §3.6 The hint: time window, L = 300
// ---------------------------------------------------------------------------------------------

#[test]
fn hint_time_window() {
    const L: u64 = 300;
    let normal = || with("exp", NOW + 3600);
    let iat_at = |iat: u64| {
        move |c: &mut Map<String, Value>| {
            c.insert("iat".into(), iat.into());
            c.insert("nbf".into(), iat.into());
            c.insert("exp".into(), (iat + 3600).into());
        }
    };
    let expired = |name: &str| case(name).form_post(E::Expired, "expired");
    let not_yet = |name: &str| case(name).form_post(E::NotYetValid, "not_yet_valid");
    let malformed = |name: &str| case(name).form_post(E::MalformedClaims, "malformed_claims");

    check_all(vec![
        // Microsoft's hint is issued with exp = iat - 1: valid for L after iat, not longer.
        case("pre-expired hint at now = iat").at(NOW).accepted(),
        case("pre-expired hint at now = iat + L")
            .at(NOW + L)
            .accepted(),
        expired("pre-expired hint at now = iat + L + 1").at(NOW + L + 1),
        case("pre-expired hint at now = iat - L")
            .at(NOW - L)
            .accepted(),
        not_yet("pre-expired hint at now = iat - L - 1").at(NOW - L - 1),
        case("iat = now + L").claims(iat_at(NOW + L)).accepted(),
        not_yet("iat = now + L + 1").claims(iat_at(NOW + L + 1)),
        case("nbf = now + L")
            .claims(with("nbf", NOW + L))
            .accepted(),
        not_yet("nbf = now + L + 1").claims(with("nbf", NOW + L + 1)),
        case("nbf absent").claims(without("nbf")).accepted(),
        // A Microsoft-signed id_token that is not pre-expired is no hint Microsoft made for
        // this: by default its window ends at iat + L too, whatever its exp says.
        case("not pre-expired hint at now = iat + L")
            .claims(normal())
            .at(NOW + L)
            .accepted(),
        expired("not pre-expired hint at now = iat + L + 1")
            .claims(normal())
            .at(NOW + L + 1),
        expired("not pre-expired hint at now = exp")
            .claims(normal())
            .at(NOW + 3600),
        // authorize.accept_hints_until_exp restores the rule before issue 18.
        case("until exp: not pre-expired hint at now = exp + L")
            .claims(normal())
            .policy(|p| p.authorize.accept_hints_until_exp = true)
            .at(NOW + 3600 + L)
            .accepted(),
        expired("until exp: not pre-expired hint at now = exp + L + 1")
            .claims(normal())
            .policy(|p| p.authorize.accept_hints_until_exp = true)
            .at(NOW + 3600 + L + 1),
        expired("until exp: pre-expired hint at now = iat + L + 1")
            .policy(|p| p.authorize.accept_hints_until_exp = true)
            .at(NOW + L + 1),
        expired("hint a day old").at(NOW + 86_400),
        case("leeway 0: pre-expired hint at now = iat")
            .policy(|p| p.authorize.leeway_seconds = 0)
            .accepted(),
        expired("leeway 0: pre-expired hint at now = iat + 1")
            .policy(|p| p.authorize.leeway_seconds = 0)
            .at(NOW + 1),
        case("iat missing")
            .claims(without("iat"))
            .form_post(E::MissingTimeClaim, "missing_time_claim"),
        case("exp missing")
            .claims(without("exp"))
            .form_post(E::MissingTimeClaim, "missing_time_claim"),
        malformed("iat as a string").claims(with("iat", NOW.to_string())),
        malformed("exp as a string").claims(with("exp", NOW.to_string())),
        malformed("nbf as a boolean").claims(with("nbf", true)),
        malformed("iat null").claims(with("iat", Value::Null)),
        // Extreme numbers must neither panic nor overflow into acceptance.
        not_yet("iat 1e300").claims(with("iat", 1e300)),
        not_yet("iat u64::MAX").claims(with("iat", u64::MAX)),
        not_yet("nbf i64::MAX").claims(with("nbf", i64::MAX)),
        expired("iat and exp negative").claims(|c| {
            c.insert("iat".into(), (-1).into());
            c.insert("nbf".into(), (-1).into());
            c.insert("exp".into(), (-2).into());
        }),
        expired("iat and exp i64::MIN").claims(|c| {
            c.insert("iat".into(), i64::MIN.into());
            c.insert("nbf".into(), i64::MIN.into());
            c.insert("exp".into(), i64::MIN.into());
        }),
        expired("iat and exp -1e300").claims(|c| {
            c.insert("iat".into(), (-1e300).into());
            c.insert("nbf".into(), (-1e300).into());
            c.insert("exp".into(), (-1e300).into());
        }),
        // A far exp is Entra's call to make (the hint is signed): accepted, without overflow.
        case("exp u64::MAX")
            .claims(with("exp", u64::MAX))
            .accepted(),
        case("exp 1e300").claims(with("exp", 1e300)).accepted(),
        case("fractional iat and exp")
            .claims(|c| {
                c.insert("iat".into(), (NOW as f64 + 0.5).into());
                c.insert("exp".into(), (NOW as f64 - 0.5).into());
            })
            .accepted(),
        expired("fractional exp past the window").claims(|c| {
            c.insert("iat".into(), (NOW as f64 - 400.5).into());
            c.insert("nbf".into(), (NOW as f64 - 400.5).into());
            c.insert("exp".into(), (NOW as f64 - 301.5).into());
        }),
    ]);
}

// ---------------------------------------------------------------------------------------------
// §3.8 / §5 Key sets: missing or stale → temporarily_unavailable
// ---------------------------------------------------------------------------------------------

#[test]
fn key_set_availability() {
    let stale_by = |extra: u64| keys_for("global", signer_set(NOW - 604_800 - extra));
    let unlisted = Req::post(entra_body_with(&valid_hint(), |p| {
        set(p, "redirect_uri", "https://rp.example/cb")
    }));
    let unavailable = |name: &str| case(name).form_post(E::KeysUnavailable, "keys_unavailable");

    check_all(vec![
        unavailable("no key set loaded").keys(HashMap::new()),
        unavailable("only another cloud's key set").keys(keys_for("usgov", signer_set(NOW))),
        unavailable("key set one second past max_stale_seconds").keys(stale_by(1)),
        case("key set exactly max_stale_seconds old")
            .keys(stale_by(0))
            .accepted(),
        case("no key set, redirect_uri not Entra's")
            .keys(HashMap::new())
            .req(unlisted.clone())
            .json(503, E::KeysUnavailable, "keys_unavailable"),
        case("stale key set, redirect_uri not Entra's")
            .keys(stale_by(1))
            .req(unlisted)
            .json(503, E::KeysUnavailable, "keys_unavailable"),
        case("no key set, error_delivery = status")
            .keys(HashMap::new())
            .policy(|p| p.authorize.error_delivery = ErrorDelivery::Status)
            .json(503, E::KeysUnavailable, "keys_unavailable"),
        // A usgov app reads the usgov set, whose keys sign for the usgov issuer.
        case("usgov app with its own key set")
            .policy(|p| p.apps[0].cloud = 1)
            .keys(keys_for("usgov", {
                let mut jwk = SIGNER.jwk(SIGNER.kid);
                jwk["issuer"] = "https://login.microsoftonline.us/{tenantid}/v2.0".into();
                key_set(vec![jwk], NOW)
            }))
            .req(Req::post(entra_body_with(
                &hint(with("iss", issuer("login.microsoftonline.us", TID))),
                |p| set(p, "redirect_uri", USGOV_REDIRECT),
            )))
            .accepted(),
        case("usgov app with only the global key set")
            .policy(|p| p.apps[0].cloud = 1)
            .params(|p| set(p, "redirect_uri", USGOV_REDIRECT))
            .form_post_to(
                USGOV_REDIRECT,
                Some(STATE),
                E::KeysUnavailable,
                "keys_unavailable",
            ),
    ]);
}

// ---------------------------------------------------------------------------------------------
// §3.1 Reading: content type, size, encoding (every authorize request, Entra or not)
// ---------------------------------------------------------------------------------------------

/// docs/SECURITY.md "One reading": what a framework behind the proxy would read differently is
/// refused, or (for structure bytes in a pair) re-encoded so that every framework reads it as
/// the proxy did.
#[test]
fn one_reading_for_every_framework() {
    let body = entra_body(&valid_hint());
    let query = body.clone();
    let ambiguous = |name: &str, extra: &str| {
        case(name).req(Req::post(format!("{body}&{extra}"))).json(
            400,
            E::AmbiguousParameterName,
            "ambiguous_parameter_name",
        )
    };
    let params = |n: usize| {
        (0..n)
            .map(|i| format!("p{i}=x"))
            .collect::<Vec<_>>()
            .join("&")
    };
    let other_client = "client_id=other&response_type=code";
    check_all(vec![
        ambiguous("PHP reads a dot as _", "entra.sub=x"),
        ambiguous("PHP reads an encoded dot as _", "client%2Eid=x"),
        ambiguous("PHP drops a leading space", "+client_id=x"),
        ambiguous("PHP reads an unmatched [ as _", "redirect_uri[=x"),
        ambiguous("qs and Rack read name[]", "client_id%5B%5D=x"),
        ambiguous("qs reads [name]", "[client_id]=x"),
        ambiguous("Rack strips a leading ]", "]response_mode=x"),
        ambiguous("ASP.NET ignores case", "Client_Id=x"),
        ambiguous("ASP.NET ignores case, upper", "REDIRECT_URI=x"),
        ambiguous("an empty name", "=x"),
        ambiguous("a non-ASCII name", "%C3%A9=x"),
        case("a plain name in upper case is fine")
            .req(Req::post(format!("{body}&X-Client-SKU=a")))
            .accepted(),
        case("names are checked on requests that are not Entra's too")
            .req(Req::post(format!("{other_client}&entra.sub=x")))
            .json(400, E::AmbiguousParameterName, "ambiguous_parameter_name"),
        case("names are checked in the query of a POST")
            .req(Req::post(body.clone()).query("entra.sub=x"))
            .json(400, E::AmbiguousParameterName, "ambiguous_parameter_name"),
        case("100 parameters")
            .req(Req::post(format!("{other_client}&{}", params(98))))
            .passes(),
        case("101 parameters")
            .req(Req::post(format!("{other_client}&{}", params(99))))
            .json(400, E::TooManyParameters, "too_many_parameters"),
        case("a GET whose HTTP/2 stream ended with an empty DATA frame")
            .req(Req::get(query.clone()).framed(Framing::Open, b""))
            .accepted(),
        case("a GET with a body in HTTP/2 DATA frames")
            .req(Req::get(query.clone()).framed(Framing::Open, b"client_id=x"))
            .json(400, E::UnexpectedBody, "unexpected_body"),
        case("a GET announcing a chunked body")
            .req(Req::get(query.clone()).framed(Framing::Chunked, b""))
            .json(400, E::UnexpectedBody, "unexpected_body"),
        case("a deflated form")
            .req(Req::post(body.clone()).content_encoding(Field::One("deflate")))
            .json(
                400,
                E::UnsupportedContentEncoding,
                "unsupported_content_encoding",
            ),
        case("Content-Encoding: identity")
            .req(Req::post(body.clone()).content_encoding(Field::One("Identity")))
            .accepted(),
        case("a charset on a GET that Django would decode the query with")
            .req(Req::get(query.clone()).content_type(Some("text/plain; charset=utf-16")))
            .json(400, E::UnsupportedCharset, "unsupported_charset"),
        case("a form with a boundary")
            .req(
                Req::post(body.clone())
                    .content_type(Some("application/x-www-form-urlencoded; boundary=x")),
            )
            .json(400, E::UnsupportedContentType, "unsupported_content_type"),
        case("PUT")
            .req(Req {
                method: Method::Other,
                ..Req::get(query.clone())
            })
            .json(405, E::MethodNotAllowed, "method_not_allowed"),
    ]);

    // Rack splits a query on `;`, Go drops the pair, qs ends a name at `]=`: such pairs are
    // forwarded encoded, so each framework reads the one pair the proxy read.
    let out = run(
        &policy(),
        &keys(),
        &Req::post(format!("{body}&x=1;client_id=evil&y=a]=b")),
        NOW,
    );
    assert_eq!(out.summary.outcome, Outcome::Accepted);
    let sent = forwarded_body(&out);
    assert!(
        sent.contains("&x=1%3Bclient_id%3Devil&y=a%5D%3Db&"),
        "{sent}"
    );
    let out = run(
        &policy(),
        &keys(),
        &Req::get(format!("{other_client}&x=a;entra_sub=y")),
        NOW,
    );
    assert_eq!(
        out.decision,
        AuthorizeDecision::Forward {
            query: Some(format!("{other_client}&x=a%3Bentra_sub%3Dy")),
            body: None
        }
    );
    let out = run(
        &policy(),
        &keys(),
        &Req::post(other_client).query("next=/a;b"),
        NOW,
    );
    assert_eq!(
        out.decision,
        AuthorizeDecision::Forward {
            query: Some("next=%2Fa%3Bb".into()),
            body: None
        }
    );
}

#[test]
fn reading_the_request() {
    let body = entra_body(&valid_hint());
    let max = AuthorizeSettings::default().max_body_bytes;
    let padded = |len: usize| {
        let mut b = format!("{body}&pad=");
        b.push_str(&"x".repeat(len - b.len()));
        b
    };
    let unsupported = |name: &str, content_type: Option<&'static str>| {
        case(name)
            .req(Req::post(body.clone()).content_type(content_type))
            .json(400, E::UnsupportedContentType, "unsupported_content_type")
    };
    // Malformed input is answered with JSON even when it names Entra's redirect_uri: a
    // request that cannot be read cannot be trusted to say where errors go.
    let encoding = |name: &str, req: Req| {
        case(name)
            .req(req)
            .json(400, E::MalformedEncoding, "malformed_encoding")
    };
    let appended = |suffix: &[u8]| {
        let mut b = body.clone().into_bytes();
        b.extend_from_slice(suffix);
        Req::post(b)
    };
    let other_client = "client_id=other&response_type=code&state=s";

    check_all(vec![
        unsupported("POST text/plain", Some("text/plain")),
        unsupported("POST application/json", Some("application/json")),
        unsupported("POST without content type", None),
        unsupported(
            "POST multipart/form-data",
            Some("multipart/form-data; boundary=x"),
        ),
        unsupported(
            "POST form type with a suffix",
            Some("application/x-www-form-urlencodedx"),
        ),
        case("POST text/plain, not Entra")
            .req(Req::post(other_client).content_type(Some("text/plain")))
            .json(400, E::UnsupportedContentType, "unsupported_content_type"),
        case("charset=UTF-8 accepted")
            .req(
                Req::post(body.clone())
                    .content_type(Some("application/x-www-form-urlencoded; charset=UTF-8")),
            )
            .accepted(),
        case("charset=utf-8, any spacing, accepted")
            .req(
                Req::post(body.clone())
                    .content_type(Some(" application/x-www-form-urlencoded ;charset=utf-8")),
            )
            .accepted(),
        case("another charset refused")
            .req(Req::post(body.clone()).content_type(Some(
                " application/x-www-form-urlencoded ;charset=ISO-8859-1",
            )))
            .json(400, E::UnsupportedCharset, "unsupported_charset"),
        case("media type in upper case accepted")
            .req(Req::post(body.clone()).content_type(Some("APPLICATION/X-WWW-FORM-URLENCODED")))
            .accepted(),
        case("body of exactly max_body_bytes")
            .req(Req::post(padded(max)))
            .accepted(),
        case("body one byte over max_body_bytes")
            .req(Req::post(padded(max + 1)))
            .json(413, E::BodyTooLarge, "body_too_large"),
        case("oversized body, not Entra")
            .req(Req::post(format!("{other_client}&pad={}", "x".repeat(max))))
            .json(413, E::BodyTooLarge, "body_too_large"),
        case("body over a small max_body_bytes")
            .policy(|p| p.authorize.max_body_bytes = 64)
            .json(413, E::BodyTooLarge, "body_too_large"),
        encoding("%zz in a value", appended(b"&x=%zz")),
        encoding("trailing %", appended(b"&x=%")),
        encoding("truncated %4", appended(b"&x=%4")),
        encoding("%zz in a name", appended(b"&%zz=1")),
        encoding("raw non-UTF-8 byte", appended(b"&x=\xff")),
        encoding("percent-encoded non-UTF-8", appended(b"&x=%C3%28")),
        encoding("percent-encoded surrogate", appended(b"&x=%ED%A0%80")),
        encoding("non-UTF-8 name", appended(b"&%FF=1")),
        encoding(
            "malformed id_token_hint encoding",
            Req::post(body.replace("id_token_hint=", "id_token_hint=%")),
        ),
        encoding(
            "malformed query of a valid POST",
            Req::post(body.clone()).query("x=%zz"),
        ),
        encoding(
            "GET with %zz, not Entra",
            Req::get(format!("{other_client}&x=%zz")),
        ),
        encoding(
            "GET with non-UTF-8, Entra",
            Req::get(format!("{body}&x=%FF")),
        ),
    ]);
}

// ---------------------------------------------------------------------------------------------
// §3.5 Entra parameters: present, single-valued, not smuggled through a POST's query
// ---------------------------------------------------------------------------------------------

#[test]
fn entra_parameters() {
    let single_valued = [
        "client_id",
        "redirect_uri",
        "response_type",
        "response_mode",
        "scope",
        "state",
        "nonce",
        "claims",
        "prompt",
        "id_token_hint",
        "client-request-id",
    ];
    let mut cases = Vec::new();
    for name in single_valued {
        let error = E::DuplicateParameter(name);
        let c = case(&format!("duplicate {name}")).params(|p| {
            if name == "prompt" {
                p.push(("prompt".into(), "login".into()));
            }
            duplicate(p, name)
        });
        cases.push(match name {
            // Which of two redirect_uris is Entra's? Neither: JSON.
            "redirect_uri" => c.json(400, error, "duplicate_parameter"),
            // The error still ends the attempt, but no state can be echoed.
            "state" => c.form_post_to(GLOBAL_REDIRECT, None, error, "duplicate_parameter"),
            _ => c.form_post(error, "duplicate_parameter"),
        });
    }
    let spoofed_query = |name: &str, value: &str| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair(name, value);
        Req::post(entra_body(&valid_hint())).query(&query.finish())
    };
    cases.extend([
        // An unknown client_id first must not dodge detection, nor a valid one second help.
        case("duplicate client_id, unknown value first")
            .params(|p| p.insert(0, ("client_id".into(), "other".into())))
            .form_post(E::DuplicateParameter("client_id"), "duplicate_parameter"),
        case("duplicate redirect_uri, attacker's second")
            .params(|p| p.push(("redirect_uri".into(), "https://attacker.example/cb".into())))
            .json(
                400,
                E::DuplicateParameter("redirect_uri"),
                "duplicate_parameter",
            ),
        case("duplicate id_token_hint, forged second")
            .params(|p| p.push(("id_token_hint".into(), "e30.e30.".into())))
            .form_post(
                E::DuplicateParameter("id_token_hint"),
                "duplicate_parameter",
            ),
        case("duplicate state in a GET")
            .req(Req::get(format!("{}&state=x", entra_body(&valid_hint()))))
            .form_post_to(
                GLOBAL_REDIRECT,
                None,
                E::DuplicateParameter("state"),
                "duplicate_parameter",
            ),
        case("missing id_token_hint")
            .params(|p| remove(p, "id_token_hint"))
            .form_post(E::MissingParameter("id_token_hint"), "missing_parameter"),
        case("missing redirect_uri")
            .params(|p| remove(p, "redirect_uri"))
            .json(
                400,
                E::MissingParameter("redirect_uri"),
                "missing_parameter",
            ),
        case("missing client_id, detected by client-request-id")
            .policy(|p| p.authorize.detect = DetectMode::ClientRequestId)
            .params(|p| remove(p, "client_id"))
            .form_post(E::MissingParameter("client_id"), "missing_parameter"),
        case("POST with state also in the query")
            .req(spoofed_query("state", "other"))
            .form_post(E::ParameterInQuery("state"), "parameter_in_query"),
        case("POST with the same state in the query")
            .req(spoofed_query("state", STATE))
            .form_post(E::ParameterInQuery("state"), "parameter_in_query"),
        case("POST with id_token_hint in the query")
            .req(spoofed_query("id_token_hint", "e30.e30.e30"))
            .form_post(E::ParameterInQuery("id_token_hint"), "parameter_in_query"),
        case("POST with redirect_uri in the query")
            .req(spoofed_query("redirect_uri", "https://attacker.example/cb"))
            .form_post(E::ParameterInQuery("redirect_uri"), "parameter_in_query"),
        case("POST with prompt in the query")
            .req(spoofed_query("prompt", "none"))
            .form_post(E::ParameterInQuery("prompt"), "parameter_in_query"),
        case("POST with an unrelated parameter in the query")
            .req(spoofed_query("ui_locales", "de"))
            .accepted(),
        // An upstream that merges query and body would see an EAM request nobody validated.
        case("POST whose EAM client_id is only in the query")
            .req(
                Req::post(format!(
                    "scope=openid&redirect_uri={GLOBAL_REDIRECT}&state={STATE}"
                ))
                .query(&format!("client_id={CLIENT_ID}&id_token_hint=e30.e30.e30")),
            )
            .form_post(E::ParameterInQuery("client_id"), "parameter_in_query"),
        // A request object or a PAR reference would override the checked parameters at the OP
        // (OIDC Core 6.1), entra_* included; Entra sends neither.
        case("Entra POST with a request object")
            .params(|p| {
                p.push((
                    "request".into(),
                    "e30.eyJlbnRyYV9zdWIiOiJ2aWN0aW0ifQ.".into(),
                ))
            })
            .form_post(E::RequestObject, "request_object"),
        case("Entra POST with a PAR request_uri")
            .params(|p| {
                p.push((
                    "request_uri".into(),
                    "urn:ietf:params:oauth:request_uri:x".into(),
                ))
            })
            .form_post(E::RequestObject, "request_object"),
        case("Entra POST with request_uri in another case")
            .params(|p| p.push(("Request_Uri".into(), "https://rp.example/r".into())))
            .form_post(E::RequestObject, "request_object"),
        case("Entra POST with request in the query")
            .req(spoofed_query("request", "e30.e30."))
            .form_post(E::RequestObject, "request_object"),
        case("POST whose client-request-id is only in the query, detect = client_request_id")
            .policy(|p| p.authorize.detect = DetectMode::ClientRequestId)
            .req(
                Req::post("scope=openid&client_id=other")
                    .query(&format!("client-request-id={CRID}")),
            )
            .json(
                400,
                E::ParameterInQuery("client-request-id"),
                "parameter_in_query",
            ),
    ]);
    check_all(cases);
}

// ---------------------------------------------------------------------------------------------
// §3.8 Where errors go: only exactly Entra's redirect_uri gets a form_post
// ---------------------------------------------------------------------------------------------

#[test]
fn error_delivery() {
    // An expired hint stands for any rejection here.
    let expired_to = |name: &str, redirect_uri: &str| {
        case(name)
            .params(|p| set(p, "redirect_uri", redirect_uri))
            .at(NOW + 10_000)
    };
    let json = |name: &str, redirect_uri: &str| {
        expired_to(name, redirect_uri).json(400, E::Expired, "expired")
    };
    let xss = r#""><script>alert(1)</script>"#;

    check_all(vec![
        expired_to("Entra's redirect_uri", GLOBAL_REDIRECT).form_post(E::Expired, "expired"),
        json("unlisted redirect_uri", "https://attacker.example/cb"),
        json("trailing slash", &format!("{GLOBAL_REDIRECT}/")),
        json(
            "upper-case host",
            &GLOBAL_REDIRECT.replace("login.microsoftonline.com", "LOGIN.microsoftonline.com"),
        ),
        json(
            "http instead of https",
            &GLOBAL_REDIRECT.replace("https://", "http://"),
        ),
        json("extra query", &format!("{GLOBAL_REDIRECT}?x=1")),
        json("fragment", &format!("{GLOBAL_REDIRECT}#x")),
        json(
            "lookalike host",
            &GLOBAL_REDIRECT.replace(".com/", ".com.attacker.example/"),
        ),
        json("empty redirect_uri", ""),
        // The app is global: another cloud's Entra URI is not its redirect_uri.
        json("usgov redirect_uri for a global app", USGOV_REDIRECT),
        expired_to("error_delivery = status", GLOBAL_REDIRECT)
            .policy(|p| p.authorize.error_delivery = ErrorDelivery::Status)
            .json(400, E::Expired, "expired"),
        expired_to("HTML in state is escaped", GLOBAL_REDIRECT)
            .params(|p| set(p, "state", xss))
            .form_post_to(GLOBAL_REDIRECT, Some(xss), E::Expired, "expired"),
        expired_to("usgov app, usgov redirect_uri", USGOV_REDIRECT)
            .policy(|p| p.apps[0].cloud = 1)
            .keys(HashMap::new())
            .at(NOW)
            .form_post_to(
                USGOV_REDIRECT,
                Some(STATE),
                E::KeysUnavailable,
                "keys_unavailable",
            ),
    ]);

    // The page itself: the state cannot break out of its attribute, one script only.
    let out = run(
        &policy(),
        &keys(),
        &Req::post(entra_body_with(&valid_hint(), |p| set(p, "state", xss))),
        NOW + 10_000,
    );
    let AuthorizeDecision::Reject(page) = out.decision else {
        panic!("expected a rejection")
    };
    let html = String::from_utf8(page.body).unwrap();
    assert!(!html.contains(xss));
    assert!(!html.contains("<script>alert"));
    assert_eq!(html.matches("<script").count(), 1);
    assert!(html.contains(r#"value="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;""#));
}

// ---------------------------------------------------------------------------------------------
// §3.3 / §3.4 Detection and pass-through
// ---------------------------------------------------------------------------------------------

#[test]
fn detection() {
    let detect = |mode: DetectMode| move |p: &mut Policy| p.authorize.detect = mode;
    // A hint no validator would accept: if the request is detected, it is rejected.
    let forged = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(claims_json()));
    // An unrelated client (B2C / External ID code flow) that also sends client-request-id.
    let b2c = encode_form(&[
        (
            "client_id".into(),
            "0f3e1c2d-aaaa-bbbb-cccc-000000000001".into(),
        ),
        ("response_type".into(), "code".into()),
        ("scope".into(), "openid profile".into()),
        (
            "redirect_uri".into(),
            "https://contoso.b2clogin.com/contoso.onmicrosoft.com/oauth2/authresp".into(),
        ),
        ("state".into(), STATE.into()),
        ("client-request-id".into(), CRID.into()),
        ("id_token_hint".into(), forged.clone()),
    ]);
    let unknown_with_crid = |redirect_uri: &str| {
        Req::post(entra_body_with(&valid_hint(), |p| {
            set(p, "client_id", "0f3e1c2d-aaaa-bbbb-cccc-000000000001");
            set(p, "redirect_uri", redirect_uri);
        }))
    };
    let no_crid = Req::post(entra_body_with(&valid_hint(), |p| {
        remove(p, "client-request-id")
    }));
    let no_crid_forged = Req::post(entra_body_with(&forged, |p| remove(p, "client-request-id")));
    let unknown = |name: &str, mode: DetectMode| {
        case(name)
            .policy(detect(mode))
            .req(unknown_with_crid(GLOBAL_REDIRECT))
            .form_post(E::UnknownClient, "unknown_client")
    };
    let forged_rejected = |name: &str, mode: DetectMode| {
        case(name)
            .policy(detect(mode))
            .hint(forged.clone())
            .form_post(E::MalformedToken, "malformed_token")
    };

    check_all(vec![
        // client_id (default)
        case("client_id: unrelated client with client-request-id passes untouched")
            .req(Req::post(b2c.clone()))
            .passes(),
        case("client_id: same as a GET")
            .req(Req::get(b2c.clone()))
            .passes(),
        forged_rejected(
            "client_id: configured client is validated",
            DetectMode::ClientId,
        ),
        case("client_id: configured client without client-request-id is validated")
            .req(no_crid_forged.clone())
            .form_post(E::MalformedToken, "malformed_token"),
        case("client_id: configured client in upper case is not configured")
            .params(|p| set(p, "client_id", &CLIENT_ID.to_uppercase()))
            .passes(),
        // client_request_id
        unknown(
            "client_request_id: unknown client_id",
            DetectMode::ClientRequestId,
        ),
        case("client_request_id: unknown client_id, usgov redirect_uri")
            .policy(detect(DetectMode::ClientRequestId))
            .req(unknown_with_crid(USGOV_REDIRECT))
            .form_post_to(
                USGOV_REDIRECT,
                Some(STATE),
                E::UnknownClient,
                "unknown_client",
            ),
        case("client_request_id: unknown client_id, china redirect_uri")
            .policy(detect(DetectMode::ClientRequestId))
            .req(unknown_with_crid(
                "https://login.partner.microsoftonline.cn/common/federation/externalauthprovider",
            ))
            .form_post_to(
                "https://login.partner.microsoftonline.cn/common/federation/externalauthprovider",
                Some(STATE),
                E::UnknownClient,
                "unknown_client",
            ),
        case("client_request_id: unknown client_id, unlisted redirect_uri")
            .policy(detect(DetectMode::ClientRequestId))
            .req(unknown_with_crid("https://attacker.example/cb"))
            .json(400, E::UnknownClient, "unknown_client"),
        case("client_request_id: B2C flow is detected")
            .policy(detect(DetectMode::ClientRequestId))
            .req(Req::post(b2c.clone()))
            .json(400, E::UnknownClient, "unknown_client"),
        case("client_request_id: configured client without it passes")
            .policy(detect(DetectMode::ClientRequestId))
            .req(no_crid_forged.clone())
            .passes(),
        case("client_request_id: valid request accepted")
            .policy(detect(DetectMode::ClientRequestId))
            .accepted(),
        // either
        unknown(
            "either: unknown client_id with client-request-id",
            DetectMode::Either,
        ),
        case("either: configured client without client-request-id is validated")
            .policy(detect(DetectMode::Either))
            .req(no_crid.clone())
            .accepted(),
        case("either: unknown client without client-request-id passes")
            .policy(detect(DetectMode::Either))
            .req(Req::post(entra_body_with(&forged, |p| {
                set(p, "client_id", "other");
                remove(p, "client-request-id");
            })))
            .passes(),
        // both
        case("both: valid request accepted")
            .policy(detect(DetectMode::Both))
            .accepted(),
        forged_rejected(
            "both: configured client with client-request-id is validated",
            DetectMode::Both,
        ),
        case("both: configured client without client-request-id passes")
            .policy(detect(DetectMode::Both))
            .req(no_crid_forged)
            .passes(),
        case("both: B2C flow passes untouched")
            .policy(detect(DetectMode::Both))
            .req(Req::post(b2c))
            .passes(),
        // Non-Entra requests are not held to Entra's rules (§3.4).
        case("non-Entra POST with duplicates passes")
            .req(Req::post(
                "client_id=other&state=a&state=b&prompt=none&prompt=login",
            ))
            .passes(),
        case("non-Entra GET passes")
            .req(Req::get("client_id=other&response_type=code"))
            .passes(),
        case("GET without query passes")
            .req(Req {
                query: None,
                ..Req::get("")
            })
            .passes(),
        case("empty POST passes").req(Req::post("")).passes(),
    ]);
}

#[test]
fn entra_get_is_forwarded_as_a_rewritten_query() {
    let out = run(
        &policy(),
        &keys(),
        &Req::get(entra_body(&valid_hint())),
        NOW,
    );
    let AuthorizeDecision::Forward {
        query: Some(query),
        body: None,
    } = &out.decision
    else {
        panic!(
            "expected Forward {{ query: Some, body: None }}, got {:?}",
            out.decision
        );
    };
    let params = parse(query);
    assert_eq!(values(&params, "entra_sub"), [SUB]);
    assert_eq!(
        values(&params, "entra_id_token_hint"),
        [valid_hint().as_str()]
    );
    assert_eq!(values(&params, "prompt"), ["login"]);
    assert_eq!(out.summary.outcome, Outcome::Accepted);
}

// ---------------------------------------------------------------------------------------------
// §3.2 Spoofed reserved parameters
// ---------------------------------------------------------------------------------------------

/// Raw pairs that all decode to a reserved name (`entra_` prefix, any case, or `hint_param`).
const SPOOFS: [&str; 5] = [
    "entra_sub=attacker",
    "ENTRA_oid=attacker",
    "%65ntra_tid=9188040d-6c67-4c5b-b112-36a304b66dad",
    "entra%5Fiss=https%3A%2F%2Fattacker.example",
    "entra_id_token_hint=e30.e30.e30",
];

#[test]
fn spoofed_params_are_stripped_from_every_authorize_request() {
    let spoofs = SPOOFS.join("&");
    let non_entra = "client_id=other&response_type=code&state=s&claims=%7B%22a%22%3A1%7D";

    // Not Entra, POST: the rest of the body is forwarded byte for byte.
    let body = format!("{}&{non_entra}&entra_preferred_username=x", SPOOFS[0]);
    let out = run(&policy(), &keys(), &Req::post(body), NOW);
    assert_eq!(
        out.decision,
        AuthorizeDecision::Forward {
            query: None,
            body: Some(non_entra.as_bytes().to_vec())
        }
    );
    assert_eq!(out.summary.stripped, 2);
    assert_eq!(out.summary.outcome, Outcome::Passed);
    assert_eq!(out.summary.preferred_username, None);

    // Not Entra, GET.
    let out = run(
        &policy(),
        &keys(),
        &Req::get(format!("{non_entra}&{spoofs}")),
        NOW,
    );
    assert_eq!(
        out.decision,
        AuthorizeDecision::Forward {
            query: Some(non_entra.into()),
            body: None
        }
    );
    assert_eq!(out.summary.stripped, SPOOFS.len());

    // Not Entra, POST with spoofs only in the query: the body is kept as received.
    let out = run(
        &policy(),
        &keys(),
        &Req::post(non_entra).query(&format!("{spoofs}&x=1")),
        NOW,
    );
    assert_eq!(
        out.decision,
        AuthorizeDecision::Forward {
            query: Some("x=1".into()),
            body: None
        }
    );
    assert_eq!(out.summary.stripped, SPOOFS.len());

    // Entra, valid hint, spoofs in both body and query: only the proxy's entra_* survive.
    let body = format!("{spoofs}&{}&{spoofs}", entra_body(&valid_hint()));
    let out = run(
        &policy(),
        &keys(),
        &Req::post(body).query(&format!("{spoofs}&x=1")),
        NOW,
    );
    assert_eq!(
        out.summary.outcome,
        Outcome::Accepted,
        "{:?}",
        out.summary.error
    );
    assert_eq!(out.summary.stripped, 3 * SPOOFS.len());
    let AuthorizeDecision::Forward {
        query: Some(query),
        body: Some(body),
    } = &out.decision
    else {
        panic!("{:?}", out.decision)
    };
    assert_eq!(query, "x=1");
    let params = parse(std::str::from_utf8(body).unwrap());
    assert_eq!(values(&params, "entra_sub"), [SUB]);
    assert_eq!(values(&params, "entra_oid"), [OID]);
    assert_eq!(values(&params, "entra_tid"), [TID]);
    assert_eq!(
        values(&params, "entra_iss"),
        [issuer("login.microsoftonline.com", TID).as_str()]
    );
    assert_eq!(
        values(&params, "entra_id_token_hint"),
        [valid_hint().as_str()]
    );
    let entra: Vec<_> = params
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("entra_"))
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        entra,
        [
            "entra_id_token_hint",
            "entra_iss",
            "entra_tid",
            "entra_oid",
            "entra_preferred_username",
            "entra_sub"
        ]
    );

    // Entra, rejected: stripping is still counted, and nothing is forwarded.
    let body = format!("{spoofs}&{}", entra_body(&valid_hint()));
    let out = run(&policy(), &keys(), &Req::post(body), NOW + 10_000);
    assert_eq!(out.summary.reason(), Some("expired"));
    assert_eq!(out.summary.stripped, SPOOFS.len());
    assert!(matches!(out.decision, AuthorizeDecision::Reject(_)));

    // Each spoof on its own, Entra or not, POST or GET.
    for spoof in SPOOFS {
        for (label, base) in [
            ("non-Entra", non_entra.to_string()),
            ("Entra", entra_body(&valid_hint())),
        ] {
            for req in [
                Req::post(format!("{base}&{spoof}")),
                Req::get(format!("{spoof}&{base}")),
            ] {
                let out = run(&policy(), &keys(), &req, NOW);
                assert_eq!(out.summary.stripped, 1, "{label} {spoof}");
                assert_eq!(out.summary.error, None, "{label} {spoof}");
                let params = forwarded(&out.decision, req.method);
                let name = parse(spoof).remove(0).0;
                let value = parse(spoof).remove(0).1;
                assert!(
                    !params
                        .iter()
                        .any(|(n, v)| n.eq_ignore_ascii_case(&name) && *v == value),
                    "{label} {spoof} forwarded"
                );
            }
        }
    }
}

#[test]
fn custom_hint_param_is_reserved_too() {
    let mut p = policy();
    p.authorize.hint_param = "upstream_hint".into();
    let body = format!("UPSTREAM_HINT=forged&{}", entra_body(&valid_hint()));
    let out = run(&p, &keys(), &Req::post(body), NOW);
    assert_eq!(out.summary.stripped, 1);
    let params = forwarded(&out.decision, Method::Post);
    assert_eq!(values(&params, "upstream_hint"), [valid_hint().as_str()]);
    assert!(values(&params, "UPSTREAM_HINT").is_empty());
    assert!(values(&params, "entra_id_token_hint").is_empty());
}

// ---------------------------------------------------------------------------------------------
// §3.7 Rewrite
// ---------------------------------------------------------------------------------------------

/// Entra's POST written by hand, with encodings `form_urlencoded` would not produce (lower-case
/// hex, `+`, unencoded `:`), to prove untouched pairs are forwarded byte for byte.
fn raw_entra_body(hint: &str, prompt: Option<&str>) -> String {
    let prompt = prompt.map(|p| format!("&prompt={p}")).unwrap_or_default();
    format!(
        "scope=openid&response_type=id_token&response_mode=form_post&client_id={CLIENT_ID}\
         &redirect_uri=https%3A%2F%2Flogin.microsoftonline.com%2Fcommon%2Ffederation%2Fexternalauthprovider\
         &claims=%7b%22id_token%22:%7b%22acr%22:%7b%22essential%22:true,%22values%22:[%22possessionorinherence%22]%7d%7d%7d\
         {prompt}&nonce={NONCE}&state={STATE}+x&client-request-id={CRID}&id_token_hint={hint}&ui_locales=de"
    )
}

#[test]
fn rewrite_keeps_order_and_bytes_and_appends_identity() {
    let hint = valid_hint();
    let out = run(
        &policy(),
        &keys(),
        &Req::post(raw_entra_body(&hint, None)),
        NOW,
    );
    // Every pair keeps its bytes but `claims`, whose raw `[` `]` qs would read as a name's
    // brackets: it is re-encoded.
    let expected = format!(
        "scope=openid&response_type=id_token&response_mode=form_post&client_id={CLIENT_ID}\
         &redirect_uri=https%3A%2F%2Flogin.microsoftonline.com%2Fcommon%2Ffederation%2Fexternalauthprovider\
         &claims=%7B%22id_token%22%3A%7B%22acr%22%3A%7B%22essential%22%3Atrue%2C%22values%22%3A%5B%22possessionorinherence%22%5D%7D%7D%7D\
         &nonce={NONCE}&state={STATE}+x&client-request-id={CRID}&entra_id_token_hint={hint}&ui_locales=de\
         &prompt=login\
         &entra_iss=https%3A%2F%2Flogin.microsoftonline.com%2F{TID}%2Fv2.0\
         &entra_tid={TID}&entra_oid={OID}&entra_preferred_username=testuser2%40contoso.com&entra_sub={SUB}"
    );
    assert_eq!(forwarded_body(&out), expected);
}

#[test]
fn rewrite_prompt() {
    let hint = valid_hint();
    let rewrite = |p: &Policy, prompt: Option<&str>| {
        forwarded_body(&run(
            p,
            &keys(),
            &Req::post(raw_entra_body(&hint, prompt)),
            NOW,
        ))
    };
    let prompts = |body: &str| {
        values(&parse(body), "prompt")
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };

    // Replaced in place: still right after claims, before nonce.
    let body = rewrite(&policy(), Some("select_account"));
    assert!(body.contains("%7D%7D%7D&prompt=login&nonce="), "{body}");
    assert_eq!(prompts(&body), ["login"]);
    // Even an encoded, multi-valued prompt becomes exactly `login`.
    let body = rewrite(&policy(), Some("none+consent"));
    assert_eq!(prompts(&body), ["login"]);
    // Appended when absent (covered byte-exactly above).
    assert_eq!(prompts(&rewrite(&policy(), None)), ["login"]);

    let mut keep = policy();
    keep.authorize.force_prompt_login = false;
    let body = rewrite(&keep, Some("select_account"));
    assert!(
        body.contains("%7D%7D%7D&prompt=select_account&nonce="),
        "{body}"
    );
    assert_eq!(prompts(&body), ["select_account"]);
    assert!(prompts(&rewrite(&keep, None)).is_empty());
}

#[test]
fn rewrite_identity_and_extra_claims() {
    let mut p = policy();
    p.authorize.extra_claims = [
        ("name", "entra_name"),
        ("groups", "entra_groups"),
        ("amr", "entra_amr_obj"),
        ("age", "entra_age"),
        ("absent", "entra_absent"),
    ]
    .map(|(claim, param)| ExtraClaim {
        claim: claim.into(),
        param: param.into(),
    })
    .into();
    let token = hint(|c| {
        c.remove("preferred_username");
        c.insert("groups".into(), json!(["g1", "g 2"]));
        c.insert("amr".into(), json!({"m": ["pwd", "mfa"]}));
        c.insert("age".into(), json!(42));
    });
    let out = run(&p, &keys(), &Req::post(entra_body(&token)), NOW);
    let body = forwarded_body(&out);
    let params = parse(&body);
    assert!(values(&params, "entra_preferred_username").is_empty());
    assert_eq!(out.summary.preferred_username, None);
    assert_eq!(values(&params, "entra_name"), ["Test User 2"]);
    assert_eq!(values(&params, "entra_groups"), [r#"["g1","g 2"]"#]);
    assert_eq!(values(&params, "entra_amr_obj"), [r#"{"m":["pwd","mfa"]}"#]);
    assert_eq!(values(&params, "entra_age"), ["42"]);
    assert!(values(&params, "entra_absent").is_empty());
    // Extra claims follow the identity, in configuration order.
    let tail: Vec<_> = params
        .iter()
        .rev()
        .take(5)
        .rev()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        tail,
        [
            "entra_sub",
            "entra_name",
            "entra_groups",
            "entra_amr_obj",
            "entra_age"
        ]
    );
    // The hint is forwarded renamed, with its raw value.
    assert!(body.contains(&format!("&entra_id_token_hint={token}&")));
}

#[test]
fn rewrite_custom_hint_param() {
    let mut p = policy();
    p.authorize.hint_param = "entra_hint".into();
    let token = valid_hint();
    let body = forwarded_body(&run(
        &p,
        &keys(),
        &Req::post(raw_entra_body(&token, None)),
        NOW,
    ));
    assert!(
        body.contains(&format!("&entra_hint={token}&ui_locales=de&")),
        "{body}"
    );
    assert!(!body.contains("id_token_hint"));
}

// ---------------------------------------------------------------------------------------------
// Summary (decision log line and metrics)
// ---------------------------------------------------------------------------------------------

#[test]
fn summary_fields() {
    let accepted = run(
        &policy(),
        &keys(),
        &Req::post(entra_body(&valid_hint())),
        NOW,
    )
    .summary;
    assert_eq!(
        accepted,
        Summary {
            outcome: Outcome::Accepted,
            error: None,
            entra: true,
            hint_checked: true,
            stripped: 0,
            client_id: Some(CLIENT_ID.into()),
            client_request_id: Some(CRID.into()),
            tid: Some(TID.into()),
            oid: Some(OID.into()),
            preferred_username: Some(USERNAME.into()),
        }
    );
    assert_eq!(accepted.outcome.as_str(), "accepted");
    assert_eq!(accepted.reason(), None);

    // A rejected hint yields no identity, even the parts that were readable.
    let body = format!(
        "entra_preferred_username=evil&{}",
        entra_body(&valid_hint())
    );
    let rejected = run(&policy(), &keys(), &Req::post(body), NOW + 10_000).summary;
    assert_eq!(
        rejected,
        Summary {
            outcome: Outcome::Rejected,
            error: Some(E::Expired),
            entra: true,
            hint_checked: true,
            stripped: 1,
            client_id: Some(CLIENT_ID.into()),
            client_request_id: Some(CRID.into()),
            tid: None,
            oid: None,
            preferred_username: None,
        }
    );
    assert_eq!(rejected.outcome.as_str(), "rejected");
    assert_eq!(rejected.reason(), Some("expired"));

    // An unknown kid is reported, so the proxy can fetch that key and decide again.
    let unknown = run(
        &policy(),
        &keys(),
        &Req::post(entra_body(
            &SIGNER.sign("rotated", &Value::Object(claims())),
        )),
        NOW,
    );
    assert_eq!(unknown.summary.reason(), Some("unknown_kid"));
    assert_eq!(
        unknown.keys_wanted,
        Some(KeyFetch {
            cloud: "global".into(),
            kid: Some("rotated".into())
        })
    );

    // Parameter errors stop before the hint is looked at.
    let body = entra_body_with(&valid_hint(), |p| duplicate(p, "nonce"));
    let dup = run(&policy(), &keys(), &Req::post(body), NOW).summary;
    assert!(!dup.hint_checked);
    assert_eq!(dup.reason(), Some("duplicate_parameter"));
    assert_eq!(dup.client_request_id.as_deref(), Some(CRID));

    // Unknown client: no cloud, no hint check.
    let mut p = policy();
    p.authorize.detect = DetectMode::ClientRequestId;
    let body = entra_body_with(&valid_hint(), |p| set(p, "client_id", "other"));
    let unknown = run(&p, &keys(), &Req::post(body), NOW);
    assert_eq!(unknown.summary.reason(), Some("unknown_client"));
    assert_eq!(
        (unknown.keys_wanted, unknown.summary.hint_checked),
        (None, false)
    );
    assert_eq!(unknown.summary.client_id.as_deref(), Some("other"));

    // Not Entra: the outcome, the strip count, and which client and request it was.
    let body = "client_id=other&client-request-id=x&entra_preferred_username=evil";
    let passed = run(&policy(), &keys(), &Req::post(body), NOW).summary;
    assert_eq!(
        passed,
        Summary {
            outcome: Outcome::Passed,
            stripped: 1,
            client_id: Some("other".into()),
            client_request_id: Some("x".into()),
            ..Summary::default()
        }
    );
    assert_eq!(passed.outcome.as_str(), "passed");

    // User-supplied identifiers are capped before they reach the log.
    let long = "é".repeat(300);
    let body = entra_body_with(&valid_hint(), |p| set(p, "client-request-id", &long));
    let capped = run(&policy(), &keys(), &Req::post(body), NOW).summary;
    assert_eq!(capped.client_request_id, Some("é".repeat(128)));
    assert_eq!(capped.outcome, Outcome::Accepted);
}

// ---------------------------------------------------------------------------------------------
// Library bugs: documented behaviour, ignored until fixed
// ---------------------------------------------------------------------------------------------

/// README "How a request is handled", step 8: an Entra request's error is form_posted only when `redirect_uri` is one of *the
/// app's* cloud redirect URIs; §3.5 widens that to every configured cloud only for a
/// `client_id` no app configures. Here the single `client_id` names the global app.
#[test]
fn parameter_errors_of_a_configured_app_use_its_own_cloud() {
    let usgov = |name: &str, tweak: fn(&mut Vec<(String, String)>)| {
        case(name).params(|p| {
            set(p, "redirect_uri", USGOV_REDIRECT);
            tweak(p);
        })
    };
    check_all(vec![
        usgov("missing id_token_hint, usgov redirect_uri", |p| {
            remove(p, "id_token_hint")
        })
        .json(
            400,
            E::MissingParameter("id_token_hint"),
            "missing_parameter",
        ),
        usgov("duplicate nonce, usgov redirect_uri", |p| {
            duplicate(p, "nonce")
        })
        .json(400, E::DuplicateParameter("nonce"), "duplicate_parameter"),
        // Baseline: a hint error of the same request already gets JSON.
        usgov("expired hint, usgov redirect_uri", |_| {})
            .at(NOW + 10_000)
            .json(400, E::Expired, "expired"),
    ]);
}

/// README "How a request is handled", step 6: `iat - L <= now` and `nbf - L <= now`. NumericDate may be fractional; flooring
/// it admits a hint up to one second before its window opens.
#[test]
fn fractional_iat_and_nbf_just_beyond_the_leeway() {
    let beyond = NOW as f64 + 300.5;
    check_all(vec![
        case("iat = now + L + 0.5")
            .claims(|c| {
                c.insert("iat".into(), beyond.into());
                c.insert("nbf".into(), beyond.into());
            })
            .form_post(E::NotYetValid, "not_yet_valid"),
        case("nbf = now + L + 0.5")
            .claims(with("nbf", beyond))
            .form_post(E::NotYetValid, "not_yet_valid"),
    ]);
}

#[test]
fn accepted_entra_request_is_remembered_for_the_response_guard() {
    let out = run(
        &policy(),
        &keys(),
        &Req::post(entra_body_with(&valid_hint(), |p| {
            p.push((
                "acr_values".into(),
                "knowledge possessionorinherence".into(),
            ));
        })),
        NOW,
    );
    let remember = out
        .remember
        .expect("an accepted request with a state is remembered");
    let e = remember.expectation;
    assert_eq!(e.state.as_deref(), Some(STATE));
    assert_eq!(e.client_id, CLIENT_ID);
    assert_eq!(e.redirect_uri, GLOBAL_REDIRECT);
    assert_eq!(e.client_request_id.as_deref(), Some(CRID));
    assert_eq!(e.sub, SUB);
    assert_eq!(e.nonce.as_deref(), Some(NONCE));
    // claims first, then acr_values, without repeats.
    assert_eq!(e.acr_values, ["possessionorinherence", "knowledge"]);

    // Without a state it is remembered by its nonce, and no state is expected of the answer.
    let no_state = entra_body_with(&valid_hint(), |p| p.retain(|(n, _)| n != "state"));
    let remember = run(&policy(), &keys(), &Req::post(no_state), NOW)
        .remember
        .expect("remembered by its nonce");
    assert_eq!(remember.expectation.state, None);
    assert_eq!(remember.expectation.nonce.as_deref(), Some(NONCE));

    // Nothing to remember: neither state nor nonce, an oversized value, a rejected or a
    // non-Entra request.
    let neither = entra_body_with(&valid_hint(), |p| {
        p.retain(|(n, _)| n != "state" && n != "nonce")
    });
    let huge_nonce = entra_body_with(&valid_hint(), |p| {
        p.iter_mut().find(|(n, _)| n == "nonce").unwrap().1 = "n".repeat(4096);
    });
    for body in [
        neither,
        huge_nonce,
        entra_body("not.a.jws"),
        "client_id=other&state=s".into(),
    ] {
        assert_eq!(
            run(&policy(), &keys(), &Req::post(body.clone()), NOW).remember,
            None,
            "{body}"
        );
    }
}

#[test]
fn single_valued_index_is_the_position_in_single_valued() {
    for (i, (name, _)) in SINGLE_VALUED.into_iter().enumerate() {
        assert_eq!(single_valued_index(name), Some(i), "{name}");
    }
    for other in ["Client_id", "client_id ", "acr_values", ""] {
        assert_eq!(single_valued_index(other), None, "{other:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Steps: the I/O the decision asks for
// ---------------------------------------------------------------------------------------------

fn step(req: &Req, keys: &Keys, progress: Progress) -> Step {
    policy().step(&req.as_request(), keys, NOW, progress)
}

#[test]
fn a_head_is_judged_before_its_body_is_read() {
    let unread = Progress::default();
    // Refused on its head: nothing is read.
    let mut put = Req::post(entra_body(&valid_hint()));
    put.method = Method::Other;
    match step(&put, &keys(), unread) {
        Step::Done(ruling) => assert_eq!(ruling.summary.error, Some(E::MethodNotAllowed)),
        other => panic!("{other:?}"),
    }
    // A body to read, bounded by max_body_bytes.
    let post = Req::post(entra_body(&valid_hint()));
    assert_eq!(
        step(&post, &keys(), unread),
        Step::ReadBody {
            limit: policy().authorize.max_body_bytes
        }
    );
    // Read: the ruling; a bodiless GET needs no read at all.
    let read = Progress {
        body_read: true,
        ..unread
    };
    assert!(
        matches!(step(&post, &keys(), read), Step::Done(r) if r.summary.outcome == Outcome::Accepted)
    );
    let get = Req::get(entra_body(&valid_hint()));
    assert!(
        matches!(step(&get, &keys(), unread), Step::Done(r) if r.summary.outcome == Outcome::Accepted)
    );
}

#[test]
fn a_missing_key_is_fetched_once_then_ruled_on() {
    let read = Progress {
        body_read: true,
        ..Progress::default()
    };
    let fetched = Progress {
        keys_fetched: true,
        ..read
    };
    let rotated = Req::post(entra_body(
        &SIGNER.sign("rotated", &Value::Object(claims())),
    ));
    let wanted = KeyFetch {
        cloud: "global".into(),
        kid: Some("rotated".into()),
    };
    assert_eq!(step(&rotated, &keys(), read), Step::FetchKeys(wanted));
    match step(&rotated, &keys(), fetched) {
        Step::Done(ruling) => assert_eq!(ruling.summary.error, Some(E::UnknownKid)),
        other => panic!("{other:?}"),
    }
    // No usable set at all: the whole set is asked for.
    let valid = Req::post(entra_body(&valid_hint()));
    let none = Keys::new();
    assert_eq!(
        step(&valid, &none, read),
        Step::FetchKeys(KeyFetch {
            cloud: "global".into(),
            kid: None
        })
    );
    // Any other refusal is final at once.
    let expired = policy().step(&valid.as_request(), &keys(), NOW + 10_000, read);
    assert!(matches!(expired, Step::Done(r) if r.summary.error == Some(E::Expired)));
}

// ---------------------------------------------------------------------------------------------
// Abuse limits: the proxy counts, the decision refuses (README "Abuse limits")
// ---------------------------------------------------------------------------------------------

const OVER_FAILURES: Exceeded = Exceeded {
    limit: Limit::FailedValidations,
    retry_after: 17,
};
const OVER_REFETCHES: Exceeded = Exceeded {
    limit: Limit::KeyRefetches,
    retry_after: 3,
};

fn done(step: Step) -> Ruling {
    match step {
        Step::Done(ruling) => ruling,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_client_over_its_failure_limit_costs_no_key_and_no_fetch() {
    let limited = Progress {
        body_read: true,
        over_limit: Some(OVER_FAILURES),
        ..Progress::default()
    };
    // No key set at all: were the hint looked at, the decision would ask for a fetch.
    for hint in [
        valid_hint(),
        SIGNER.sign("rotated", &Value::Object(claims())),
    ] {
        let ruling = done(step(&Req::post(entra_body(&hint)), &Keys::new(), limited));
        assert_eq!(
            ruling.summary.error,
            Some(E::RateLimited(Limit::FailedValidations))
        );
        assert_eq!(ruling.summary.reason(), Some("rate_limited"));
        assert!(!ruling.summary.hint_checked);
        assert_eq!(ruling.keys_wanted, None);
        assert!(!ruling.summary.counts_as_failure());
        let AuthorizeDecision::Reject(page) = ruling.decision else {
            panic!("not refused")
        };
        // Delivered to Entra like any refusal of its request, with the limit named.
        assert_eq!(page.status, 200);
        assert_eq!(header(&page, "retry-after"), Some("17"));
        let fields = hidden_fields(std::str::from_utf8(&page.body).unwrap());
        assert!(fields.contains(&("error".into(), "temporarily_unavailable".into())));
        assert!(fields
            .iter()
            .any(|(n, v)| n == "error_description" && v.contains("failed_validations")));
        assert!(fields.contains(&("state".into(), STATE.into())));
    }
}

#[test]
fn a_limited_client_gets_429_where_errors_are_not_posted_to_entra() {
    let mut policy = policy();
    policy.authorize.error_delivery = ErrorDelivery::Status;
    let limited = Progress {
        body_read: true,
        over_limit: Some(OVER_FAILURES),
        ..Progress::default()
    };
    let req = Req::post(entra_body(&valid_hint()));
    let ruling = done(policy.step(&req.as_request(), &keys(), NOW, limited));
    let AuthorizeDecision::Reject(json) = ruling.decision else {
        panic!("not refused")
    };
    assert_eq!(json.status, 429);
    assert_eq!(header(&json, "retry-after"), Some("17"));
    let body: Value = serde_json::from_slice(&json.body).unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
}

#[test]
fn the_limits_leave_pass_through_alone() {
    let limited = Progress {
        over_limit: Some(OVER_FAILURES),
        fetch_refused: Some(OVER_REFETCHES),
        ..Progress::default()
    };
    let openid = Req::get("client_id=web&redirect_uri=https%3A%2F%2Fapp%2Fcb&response_type=code");
    let ruling = done(step(&openid, &Keys::new(), limited));
    assert_eq!(ruling.summary.outcome, Outcome::Passed);
    assert!(!ruling.summary.counts_as_failure());
}

#[test]
fn a_declined_key_fetch_is_refused_by_the_refetch_limit() {
    let rotated = Req::post(entra_body(
        &SIGNER.sign("rotated", &Value::Object(claims())),
    ));
    let declined = Progress {
        body_read: true,
        fetch_refused: Some(OVER_REFETCHES),
        ..Progress::default()
    };
    let ruling = done(step(&rotated, &keys(), declined));
    assert_eq!(
        ruling.summary.error,
        Some(E::RateLimited(Limit::KeyRefetches))
    );
    assert_eq!(ruling.keys_wanted, None);
    assert!(!ruling.summary.counts_as_failure());
    let AuthorizeDecision::Reject(page) = ruling.decision else {
        panic!("not refused")
    };
    assert_eq!(header(&page, "retry-after"), Some("3"));
    // A hint whose key is known needs no fetch: the refetch limit does not touch it.
    let valid = Req::post(entra_body(&valid_hint()));
    assert_eq!(
        done(step(&valid, &keys(), declined)).summary.outcome,
        Outcome::Accepted
    );
    // Once fetched, the ruling is on the hint, as without limits.
    let fetched = Progress {
        keys_fetched: true,
        ..declined
    };
    assert_eq!(
        done(step(&rotated, &keys(), fetched)).summary.error,
        Some(E::UnknownKid)
    );
}

#[test]
fn refusals_for_what_the_client_sent_count_as_failures() {
    let read = Progress {
        body_read: true,
        ..Progress::default()
    };
    let forged = Req::post(entra_body(
        &hint_with_header(|h| {
            h.insert("kid".into(), SIGNER.kid.into());
        })
        .replace('.', ".x"),
    ));
    let cases: [(Req, &Keys, bool); 4] = [
        (Req::post(entra_body(&valid_hint())), &keys(), false),
        (forged, &keys(), true),
        (
            Req::post(entra_body(&hmac_hint("HS256", b"secret"))),
            &keys(),
            true,
        ),
        // The keys are missing: the proxy's trouble, not the client's.
        (Req::post(entra_body(&valid_hint())), &Keys::new(), false),
    ];
    for (i, (req, keys, counts)) in cases.iter().enumerate() {
        let fetched = Progress {
            keys_fetched: true,
            ..read
        };
        let ruling = done(step(req, keys, fetched));
        assert_eq!(
            ruling.summary.counts_as_failure(),
            *counts,
            "case {i}: {ruling:?}"
        );
    }
}
