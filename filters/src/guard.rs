//! The response guard: the OP's answer to Entra, checked the way Entra will check it.
//!
//! Entra refuses an EAM's `id_token` whose `sub`, `nonce`, `aud`, `acr` or `amr` is not what it
//! asked for, with opaque errors (AADSTS50027, AADSTS5001257, AADSTS5001258) and nothing in the
//! provider's logs. The proxy saw the request, so it can name the wrong claim before the attempt
//! is lost, and (in `enforce`) end the attempt with a clear `access_denied` instead.
//!
//! The id_token's signature is not verified: it is the OP's, and Entra checks it against the OP's
//! key set. Only claims are read, from an unverified payload, and only to compare them with what
//! the request asked for; nothing here trusts them.
//!
//! Sans-IO like the rest of the crate: the proxy hands in the HTML page it buffered and what it
//! remembered about the request (an [`Expectation`]); a [`GuardVerdict`] comes out.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use html5gum::{DefaultEmitter, Token, Tokenizer};
use serde_json::{Map, Value};

use crate::acr_request::requested_in_claims;
use crate::error::reasons;
use crate::params::Params;
use crate::policy::Policy;
use crate::render::{form_post_fields, ErrorResponse};

/// Microsoft's list of `amr` values an EAM may answer with (EAM provider reference,
/// "Supported amr claims").
pub const ALLOWED_AMR: [&str; 13] = [
    "face", "fido", "fpt", "hwk", "iris", "otp", "pop", "retina", "sc", "sms", "swk", "tel", "vbm",
];

/// Entra's values are short (a 43-character `sub`, a GUID-sized nonce, one acr): a request whose
/// values add up to more is not remembered, so the memory's size is bounded by its entry count.
pub const MAX_REMEMBERED_BYTES: usize = 2048;
const MAX_ACR_VALUES: usize = 16;

/// What Entra will expect of the answer to one request it sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// The request's `state`, when it had one: the answer must carry the same.
    pub state: Option<String>,
    pub client_id: String,
    /// Where Entra asked for the answer: the form must post there.
    pub redirect_uri: String,
    /// For the log line of the answer; Entra's correlation id.
    pub client_request_id: Option<String>,
    /// The hint's `sub`: the id_token must be issued for it.
    pub sub: String,
    pub nonce: Option<String>,
    /// The acr values requested (the `claims` parameter's `id_token.acr`, and `acr_values`).
    /// Empty when none were requested: then any single acr passes.
    pub acr_values: Vec<String>,
}

/// An accepted Entra request, for the proxy's memory: found again by the answer's `state`, or by
/// its id_token's `nonce` when the OP dropped or changed the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub expectation: Expectation,
}

impl Remembered {
    /// `None` when the request has neither a single `state` nor a single `nonce` (its answer
    /// cannot be matched to it) or carries values too large to keep.
    pub(crate) fn from_request(params: &Params<'_>, sub: String) -> Option<Self> {
        let single = |name| params.only(name);
        let state = single("state").filter(|s| !s.is_empty());
        let nonce = single("nonce").filter(|n| !n.is_empty());
        if state.is_none() && nonce.is_none() {
            return None;
        }
        let expectation = Expectation {
            state: state.map(str::to_string),
            client_id: single("client_id")?.to_string(),
            redirect_uri: single("redirect_uri")?.to_string(),
            client_request_id: single("client-request-id").map(str::to_string),
            sub,
            nonce: nonce.map(str::to_string),
            acr_values: requested_acr(single("claims"), single("acr_values")),
        };
        let size = state.map_or(0, str::len)
            + expectation.client_id.len()
            + expectation.redirect_uri.len()
            + expectation.sub.len()
            + expectation.nonce.as_ref().map_or(0, String::len)
            + expectation
                .client_request_id
                .as_ref()
                .map_or(0, String::len)
            + expectation
                .acr_values
                .iter()
                .map(String::len)
                .sum::<usize>();
        let fits = size <= MAX_REMEMBERED_BYTES && expectation.acr_values.len() <= MAX_ACR_VALUES;
        fits.then_some(Remembered { expectation })
    }
}

/// The acr values of `claims` (`id_token.acr.values`, or `.value`) and of `acr_values`, in that
/// order, without repeats. A `claims` that is not JSON requests nothing.
fn requested_acr(claims: Option<&str>, acr_values: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |v: &str| {
        if !v.is_empty() && !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
    };
    claims
        .map(requested_in_claims)
        .unwrap_or_default()
        .iter()
        .for_each(|v| push(v));
    acr_values
        .unwrap_or_default()
        .split(' ')
        .for_each(&mut push);
    out
}

/// A form on the OP's page that POSTs to one of Entra's redirect URIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraFormPost {
    pub redirect_uri: String,
    pub state: Option<String>,
    pub id_token: Option<String>,
}

/// How much of the answer could be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Against the remembered request.
    Full,
    /// The state is not in this replica's memory (another replica accepted the request, or the
    /// entry expired or was evicted): only the checks that need no request.
    Stateless,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::Full, Scope::Stateless];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Full => "full",
            Scope::Stateless => "stateless",
        }
    }
}

reasons! {
    /// A claim Entra will refuse. Each has a stable `reason` for logs and metric labels.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Violation {
        /// The request had a `state` and the answer has none: Entra cannot match it to its attempt.
        MissingState => "missing_state",
        /// The answer's `state` is not the request's (the request was found by its nonce).
        StateMismatch => "state_mismatch",
        /// The form posts to another of Entra's redirect URIs than the request named.
        RedirectUriMismatch => "redirect_uri_mismatch",
        /// `iss` is not the OP's issuer (its discovery document's).
        IssuerMismatch => "iss_mismatch",
        /// `exp` has passed or `iat` is in the future (beyond five minutes of clock skew), or either
        /// is not a number.
        TimeInvalid => "time_invalid",
        /// Not a compact JWS with a JSON object payload.
        MalformedIdToken => "malformed_id_token",
        /// `aud` is not the request's `client_id` (stateless: not any configured client_id).
        AudienceMismatch => "aud_mismatch",
        /// `sub` is not the hint's `sub`.
        SubjectMismatch => "sub_mismatch",
        /// The request's `nonce` is not echoed.
        NonceMismatch => "nonce_mismatch",
        /// `acr` is absent or not a single string.
        AcrNotSingle => "acr_not_single",
        /// `acr` is not among the requested values.
        AcrNotRequested => "acr_not_requested",
        /// `amr` is not an array of exactly one value.
        AmrNotSingle => "amr_not_single",
        /// The one `amr` value is not in Microsoft's list.
        AmrNotAllowed => "amr_not_allowed",
    }
}

impl Violation {
    /// The `error_description` Entra receives in `enforce`: names the claim, never its value.
    pub fn description(self) -> &'static str {
        use Violation::*;
        match self {
            MissingState => "the provider's answer has no state",
            StateMismatch => "the provider's answer carries another state than the request",
            RedirectUriMismatch => {
                "the provider's answer posts to another redirect_uri than the request's"
            }
            IssuerMismatch => "the provider's id_token iss is not the provider's issuer",
            TimeInvalid => "the provider's id_token is expired or issued in the future",
            MalformedIdToken => "the provider's id_token is not a well-formed JWT",
            AudienceMismatch => "the provider's id_token aud is not the client_id",
            SubjectMismatch => "the provider's id_token sub is not the id_token_hint's sub",
            NonceMismatch => "the provider's id_token does not echo the request's nonce",
            AcrNotSingle => "the provider's id_token must carry exactly one acr",
            AcrNotRequested => "the provider's id_token acr is not one of the requested values",
            AmrNotSingle => "the provider's id_token amr must be an array of exactly one method",
            AmrNotAllowed => "the provider's id_token amr is not a method Entra accepts",
        }
    }
}

/// The outcome of checking one answer. No violations: Entra's checks of these claims will pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardVerdict {
    pub scope: Scope,
    /// In check order; the first is the one reported to Entra in `enforce`.
    pub violations: Vec<Violation>,
}

impl GuardVerdict {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn first(&self) -> Option<Violation> {
        self.violations.first().copied()
    }
}

/// The checks, bound to the configured redirect URIs and client ids.
#[derive(Debug, Clone)]
pub struct ResponseGuard {
    redirect_uris: Vec<String>,
    client_ids: Vec<String>,
}

impl ResponseGuard {
    pub fn new(policy: &Policy) -> Self {
        ResponseGuard {
            redirect_uris: policy
                .clouds
                .iter()
                .flat_map(|c| c.redirect_uris.iter().cloned())
                .collect(),
            client_ids: policy.apps.iter().map(|a| a.client_id.clone()).collect(),
        }
    }

    /// The first POST form of `html` whose action is exactly one of Entra's redirect URIs, with
    /// the fields a browser would submit. `None` for any other page.
    pub fn find(&self, html: &[u8]) -> Option<EntraFormPost> {
        parse_forms(html)
            .into_iter()
            .find(|f| f.post && self.redirect_uris.contains(&f.action))
            .map(|f| EntraFormPost {
                state: f.field("state").map(str::to_string),
                id_token: f.field("id_token").map(str::to_string),
                redirect_uri: f.action,
            })
    }

    /// The id_token's `nonce`, unverified: how an answer whose state the OP dropped is matched
    /// to the request.
    pub fn nonce_of(post: &EntraFormPost) -> Option<String> {
        let claims = unverified_claims(post.id_token.as_deref()?)?;
        claims.get("nonce")?.as_str().map(str::to_string)
    }

    /// Checks the id_token of `post` against `expected` (the remembered request), or only
    /// statelessly when there is none. `None` when the form carries no id_token (an error answer
    /// or another form): there is nothing for Entra to refuse.
    pub fn check(
        &self,
        post: &EntraFormPost,
        expected: Option<&Expectation>,
        context: &AnswerContext<'_>,
    ) -> Option<GuardVerdict> {
        let token = post.id_token.as_deref()?;
        let scope = if expected.is_some() {
            Scope::Full
        } else {
            Scope::Stateless
        };
        let mut violations = Vec::new();
        // Microsoft returns state only when the request had one: required only then.
        let sent = post.state.as_deref().filter(|s| !s.is_empty());
        match (expected.and_then(|e| e.state.as_deref()), sent) {
            (Some(_), None) => violations.push(Violation::MissingState),
            (Some(requested), Some(sent)) if requested != sent => {
                violations.push(Violation::StateMismatch)
            }
            _ => {}
        }
        if expected.is_some_and(|e| e.redirect_uri != post.redirect_uri) {
            violations.push(Violation::RedirectUriMismatch);
        }
        match unverified_claims(token) {
            Some(claims) => {
                self.check_claims(&claims, expected, &mut violations);
                check_issuer_and_time(&claims, context, &mut violations);
            }
            None => violations.push(Violation::MalformedIdToken),
        }
        Some(GuardVerdict { scope, violations })
    }

    fn check_claims(
        &self,
        claims: &Map<String, Value>,
        expected: Option<&Expectation>,
        violations: &mut Vec<Violation>,
    ) {
        let aud_ok = match expected {
            Some(e) => audience_contains(claims, |aud| aud == e.client_id),
            None => audience_contains(claims, |aud| self.client_ids.iter().any(|c| c == aud)),
        };
        if !aud_ok {
            violations.push(Violation::AudienceMismatch);
        }
        let str_claim = |name: &str| claims.get(name).and_then(Value::as_str);
        if let Some(e) = expected {
            if str_claim("sub") != Some(e.sub.as_str()) {
                violations.push(Violation::SubjectMismatch);
            }
            if e.nonce.is_some() && str_claim("nonce") != e.nonce.as_deref() {
                violations.push(Violation::NonceMismatch);
            }
        }
        match str_claim("acr") {
            None => violations.push(Violation::AcrNotSingle),
            Some(acr) => {
                let requested = expected.map_or(&[][..], |e| e.acr_values.as_slice());
                if !requested.is_empty() && !requested.iter().any(|v| v == acr) {
                    violations.push(Violation::AcrNotRequested);
                }
            }
        }
        match claims.get("amr") {
            Some(Value::Array(amr)) if amr.len() == 1 => {
                if !amr[0].as_str().is_some_and(|m| ALLOWED_AMR.contains(&m)) {
                    violations.push(Violation::AmrNotAllowed);
                }
            }
            _ => violations.push(Violation::AmrNotSingle),
        }
    }

    /// The `enforce` answer: an `access_denied` form_post to the same Entra redirect URI, with
    /// the state, so Entra ends the attempt at once with a reason instead of an AADSTS code.
    pub fn denial(&self, post: &EntraFormPost, violation: Violation) -> ErrorResponse {
        let mut fields = vec![
            ("error", "access_denied"),
            ("error_description", violation.description()),
        ];
        if let Some(state) = post.state.as_deref() {
            fields.push(("state", state));
        }
        form_post_fields(&post.redirect_uri, &fields)
    }
}

fn audience_contains(claims: &Map<String, Value>, accept: impl Fn(&str) -> bool) -> bool {
    match claims.get("aud") {
        Some(Value::String(aud)) => accept(aud),
        Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(accept),
        _ => false,
    }
}

/// The payload of a compact JWS, read without verifying anything (see the module docs).
fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    // The hint's splitter: three non-empty parts (an unsigned token is malformed to Entra too).
    let payload = crate::jws::CompactJws::split(token).ok()?.payload;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// What the guard knows besides the request: the OP's issuer (from its discovery document;
/// `None` when it could not be read, then `iss` is not checked) and the time.
#[derive(Debug, Clone, Copy)]
pub struct AnswerContext<'a> {
    pub issuer: Option<&'a str>,
    /// Unix seconds.
    pub now: u64,
}

/// Entra's tolerance for clock skew between it and the OP.
const CLOCK_SKEW_SECONDS: f64 = 300.0;

fn check_issuer_and_time(
    claims: &Map<String, Value>,
    context: &AnswerContext<'_>,
    violations: &mut Vec<Violation>,
) {
    if let Some(issuer) = context.issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
            violations.push(Violation::IssuerMismatch);
        }
    }
    let now = context.now as f64;
    let date = |name: &str| claims.get(name).and_then(Value::as_f64);
    let in_time = match (date("iat"), date("exp")) {
        (Some(iat), Some(exp)) => {
            iat - CLOCK_SKEW_SECONDS <= now && now <= exp + CLOCK_SKEW_SECONDS
        }
        _ => false,
    };
    if !in_time {
        violations.push(Violation::TimeInvalid);
    }
}

/// A form as a browser would submit it: method, action, and named `<input>` fields.
struct HtmlForm {
    post: bool,
    action: String,
    fields: Vec<(String, String)>,
}

impl HtmlForm {
    /// The first value of `name`; a browser submits every one, Entra reads the first.
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Input types a browser submits without user action (checkboxes and radios only when checked,
/// which a form_post page does not use; buttons only when they are the submitter).
fn submitted_input(tag_type: Option<&str>) -> bool {
    tag_type.is_none_or(|t| {
        ["hidden", "text", ""]
            .iter()
            .any(|k| t.eq_ignore_ascii_case(k))
    })
}

/// Every form of the page, by a WHATWG tokenizer (entities decoded, `<script>` and
/// `<noscript>` contents treated as text as a scripting browser does). A form nested in
/// another is ignored, as the HTML parser does.
fn parse_forms(html: &[u8]) -> Vec<HtmlForm> {
    let mut emitter = DefaultEmitter::default();
    emitter.naively_switch_states(true);
    let mut forms = Vec::new();
    let mut current: Option<HtmlForm> = None;
    for token in Tokenizer::new_with_emitter(html, emitter).flatten() {
        match token {
            Token::StartTag(tag) => {
                let attr = |name: &str| {
                    tag.attributes
                        .get(name.as_bytes())
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                };
                match (tag.name.as_slice(), current.as_mut()) {
                    (b"form", None) => {
                        current = Some(HtmlForm {
                            post: attr("method").is_some_and(|m| m.eq_ignore_ascii_case("post")),
                            action: attr("action").unwrap_or_default().trim().to_string(),
                            fields: Vec::new(),
                        });
                    }
                    (b"input", Some(form)) if submitted_input(attr("type").as_deref()) => {
                        if let Some(name) = attr("name").filter(|n| !n.is_empty()) {
                            form.fields.push((name, attr("value").unwrap_or_default()));
                        }
                    }
                    _ => {}
                }
            }
            Token::EndTag(tag) if tag.name.as_slice() == b"form" => {
                forms.extend(current.take());
            }
            _ => {}
        }
    }
    forms.extend(current);
    forms
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
