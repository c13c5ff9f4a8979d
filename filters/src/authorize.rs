//! The authorize decision (README "How a request is handled"): read, strip spoofing, detect, check, validate, rewrite.
//!
//! `Policy::authorize` is the single entry point the proxy calls; it returns what to do with
//! the request plus a summary for the decision log line and metrics.

use crate::detect;
use crate::error::AuthorizeError;
use crate::guard::Remembered;
use crate::hint::{kid_of, HintIdentity, HintValidator};
use crate::keys::KeyLookup;
use crate::params::{is_plain_name, Params};
use crate::policy::{AppPolicy, ErrorDelivery, Policy};
use crate::render::{form_post_error, json_error, ErrorResponse};
use crate::request::{AuthorizeRequest, Method};
use crate::rewrite::rewrite_entra;

/// Parameters that must appear at most once in an Entra request (README "How a request is handled", step 5).
pub const SINGLE_VALUED: [&str; 11] = [
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
/// All of them are single-valued.
const REQUIRED: [&str; 3] = ["client_id", "redirect_uri", "id_token_hint"];

/// The position of `name` in `SINGLE_VALUED`: a `match` compiles to a length switch, where a
/// search of the array would compare every name with every pair.
fn single_valued_index(name: &str) -> Option<usize> {
    Some(match name {
        "client_id" => 0,
        "redirect_uri" => 1,
        "response_type" => 2,
        "response_mode" => 3,
        "scope" => 4,
        "state" => 5,
        "nonce" => 6,
        "claims" => 7,
        "prompt" => 8,
        "id_token_hint" => 9,
        "client-request-id" => 10,
        _ => return None,
    })
}

/// Parameters an authorize request may carry, query and body together: Entra sends eleven, an
/// OpenID request rarely thirty. PHP, qs, Jetty and Django stop at 1,000, silently or not, and
/// the rewrite adds up to seven plus the extra claims.
pub const MAX_PARAMETERS: usize = 100;

/// User-supplied identifiers are logged, so they are capped to keep one request from
/// flooding the log.
const MAX_LOGGED_LEN: usize = 128;

/// What to do with an authorize request. Every POST that is not refused is forwarded with
/// `Content-Type:` [`crate::request::FORM_CONTENT_TYPE`], the reading the proxy checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeDecision {
    /// Forward the request exactly as received.
    PassThrough,
    /// Forward with these replacements; `None` keeps that part as received.
    Forward {
        query: Option<String>,
        body: Option<Vec<u8>>,
    },
    /// Answer with this response; nothing reaches the upstream.
    Reject(ErrorResponse),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    /// Not an Entra request: forwarded, with spoofed parameters removed.
    #[default]
    Passed,
    /// Entra request with a valid hint: rewritten and forwarded.
    Accepted,
    Rejected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Accepted => "accepted",
            Outcome::Rejected => "rejected",
        }
    }
}

/// What happened, for the decision log line and the metrics. Holds no token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub outcome: Outcome,
    pub error: Option<AuthorizeError>,
    pub entra: bool,
    /// The hint was inspected (for the validation-time histogram).
    pub hint_checked: bool,
    /// Spoofed reserved parameters removed.
    pub stripped: usize,
    /// The cloud of the matched app.
    pub cloud: Option<String>,
    /// The `kid` of a hint refused as `unknown_kid`: the key a refetch should bring.
    pub unknown_kid: Option<String>,
    pub client_id: Option<String>,
    pub client_request_id: Option<String>,
    pub tid: Option<String>,
    pub oid: Option<String>,
    pub preferred_username: Option<String>,
}

impl Summary {
    pub fn reason(&self) -> Option<&'static str> {
        self.error.map(AuthorizeError::reason)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorized {
    pub decision: AuthorizeDecision,
    pub summary: Summary,
    /// For an accepted Entra request with a `state`: what the response guard expects of the
    /// OP's answer.
    pub remember: Option<Remembered>,
}

/// The parameters of a request after reading: those that carry the request, and for a POST
/// the query string's, which are stripped too so nothing spoofed slips through either channel.
struct ReadParams<'a> {
    main: Params<'a>,
    post_query: Option<Params<'a>>,
}

impl Policy {
    pub fn authorize(
        &self,
        req: &AuthorizeRequest<'_>,
        keys: &dyn KeyLookup,
        now: u64,
    ) -> Authorized {
        let mut summary = Summary::default();
        let mut remember = None;
        let decision = match self.decide(req, keys, now, &mut summary, &mut remember) {
            Ok(decision) => decision,
            Err((error, response)) => {
                summary.outcome = Outcome::Rejected;
                summary.error = Some(error);
                AuthorizeDecision::Reject(response)
            }
        };
        Authorized {
            decision,
            summary,
            remember,
        }
    }

    /// `max_body_bytes` applies to authorize bodies only; the proxy enforces it while reading.
    pub fn body_fits(&self, len: usize) -> bool {
        len <= self.authorize.max_body_bytes
    }

    fn decide(
        &self,
        req: &AuthorizeRequest<'_>,
        keys: &dyn KeyLookup,
        now: u64,
        summary: &mut Summary,
        remember: &mut Option<Remembered>,
    ) -> Result<AuthorizeDecision, (AuthorizeError, ErrorResponse)> {
        let ReadParams {
            mut main,
            mut post_query,
        } = self.read(req).map_err(|e| (e, json_error(e)))?;

        let stripped_main = main.remove_where(|n| self.is_reserved_param(n));
        let stripped_query = post_query
            .as_mut()
            .map_or(0, |q| q.remove_where(|n| self.is_reserved_param(n)));
        summary.stripped = stripped_main + stripped_query;
        let new_post_query = post_query
            .as_ref()
            .filter(|q| stripped_query > 0 || q.has_structure_bytes())
            .map(Params::to_forwarded_string);

        // A POST is judged by its body, but Entra's parameters in its query would reach an
        // upstream that merges the two: such a request is treated as Entra's, and refused.
        let entra_in_query = post_query
            .as_ref()
            .is_some_and(|q| detect::is_entra(self, q));
        // Logged for every decision: they tell which flow a passed request belonged to.
        summary.client_id = main.first("client_id").map(capped);
        summary.client_request_id = main.first("client-request-id").map(capped);
        if !detect::is_entra(self, &main) && !entra_in_query {
            let sanitized = (stripped_main > 0 || main.has_structure_bytes())
                .then(|| main.to_forwarded_string());
            return Ok(match (req.method, sanitized, new_post_query) {
                (_, None, None) => AuthorizeDecision::PassThrough,
                (Method::Post, body, query) => AuthorizeDecision::Forward {
                    query,
                    body: body.map(String::into_bytes),
                },
                (_, query, _) => AuthorizeDecision::Forward { query, body: None },
            });
        }

        summary.entra = true;
        // The app named by a single client_id decides where errors may go, even when other
        // checks of the request fail.
        let named_app = main.only("client_id").and_then(|id| self.app(id));
        summary.cloud = named_app.map(|app| self.cloud_of(app).name.clone());
        let identity = self.entra_app(&main, post_query.as_ref()).and_then(|app| {
            summary.hint_checked = true;
            self.validate_hint(app, &main, keys, now)
        });
        let identity = match identity {
            Ok(identity) => identity,
            Err(error) => {
                if error == AuthorizeError::UnknownKid {
                    summary.unknown_kid = main
                        .first("id_token_hint")
                        .and_then(kid_of)
                        .map(|k| capped(&k));
                }
                let response = self.entra_error(named_app, &main, error);
                return Err((error, response));
            }
        };

        summary.outcome = Outcome::Accepted;
        let rewritten = rewrite_entra(&main, &identity, &self.authorize);
        // The identity's strings move on to the guard's memory and the log line.
        let HintIdentity {
            tid,
            oid,
            sub,
            preferred_username,
            ..
        } = identity;
        *remember = Remembered::from_request(&main, sub);
        summary.tid = Some(tid);
        summary.oid = Some(oid);
        summary.preferred_username = preferred_username;
        Ok(match req.method {
            Method::Post => AuthorizeDecision::Forward {
                query: new_post_query,
                body: Some(rewritten.into_bytes()),
            },
            _ => AuthorizeDecision::Forward {
                query: Some(rewritten),
                body: None,
            },
        })
    }

    /// The parameters of a request whose head [`Policy::admit`] accepts: a POST's form body
    /// (plus its query), a GET's query, read one way by every framework (docs/SECURITY.md,
    /// "One reading").
    fn read<'a>(&self, req: &AuthorizeRequest<'a>) -> Result<ReadParams<'a>, AuthorizeError> {
        self.admit(req)?;
        let query = req.query.map(|q| Params::parse(q.as_bytes())).transpose()?;
        let read = match req.method {
            Method::Get if !req.body.is_empty() => return Err(AuthorizeError::UnexpectedBody),
            Method::Get => ReadParams {
                main: query.unwrap_or_default(),
                post_query: None,
            },
            Method::Post if !self.body_fits(req.body.len()) => {
                return Err(AuthorizeError::BodyTooLarge)
            }
            Method::Post => ReadParams {
                main: Params::parse(req.body)?,
                post_query: query,
            },
            Method::Other => return Err(AuthorizeError::MethodNotAllowed),
        };
        let all = || {
            read.main
                .iter()
                .chain(read.post_query.iter().flat_map(Params::iter))
        };
        if all().count() > MAX_PARAMETERS {
            return Err(AuthorizeError::TooManyParameters);
        }
        if !all().all(|p| name_reads_alike(&p.name)) {
            return Err(AuthorizeError::AmbiguousParameterName);
        }
        Ok(read)
    }

    /// README "How a request is handled", step 5: the parameters of an Entra request are unambiguous and name a configured app.
    fn entra_app(
        &self,
        params: &Params<'_>,
        post_query: Option<&Params<'_>>,
    ) -> Result<&AppPolicy, AuthorizeError> {
        // One pass over the pairs instead of a scan per name; the checks below then run in
        // the order of SINGLE_VALUED, so the reason given for a request is unchanged.
        let mut counts = [0usize; SINGLE_VALUED.len()];
        for param in params.iter() {
            if let Some(i) = single_valued_index(&param.name) {
                counts[i] += 1;
            }
        }
        for (name, count) in SINGLE_VALUED.into_iter().zip(counts) {
            if count > 1 {
                return Err(AuthorizeError::DuplicateParameter(name));
            }
            if post_query.is_some_and(|q| q.contains(name)) {
                return Err(AuthorizeError::ParameterInQuery(name));
            }
        }
        for name in REQUIRED {
            if single_valued_index(name).is_none_or(|i| counts[i] == 0) {
                return Err(AuthorizeError::MissingParameter(name));
            }
        }
        let request_object = |p: &Params<'_>| {
            p.iter().any(|param| {
                ["request", "request_uri"]
                    .iter()
                    .any(|n| param.name.eq_ignore_ascii_case(n))
            })
        };
        if request_object(params) || post_query.is_some_and(request_object) {
            return Err(AuthorizeError::RequestObject);
        }
        let client_id = params.first("client_id").unwrap_or_default();
        self.app(client_id).ok_or(AuthorizeError::UnknownClient)
    }

    fn validate_hint(
        &self,
        app: &AppPolicy,
        params: &Params<'_>,
        keys: &dyn KeyLookup,
        now: u64,
    ) -> Result<HintIdentity, AuthorizeError> {
        let cloud = self.cloud_of(app);
        let validator = HintValidator {
            app,
            cloud,
            leeway_seconds: self.authorize.leeway_seconds,
            until_exp: self.authorize.accept_hints_until_exp,
            max_stale_seconds: self.max_stale_seconds,
            all_claims: !self.authorize.extra_claims.is_empty(),
        };
        let token = params.first("id_token_hint").unwrap_or_default();
        validator.validate(token, keys.key_set(&cloud.name).as_deref(), now)
    }

    /// README "How a request is handled", step 8: a form_post to Entra when the redirect_uri is exactly one Entra uses for this
    /// app's cloud (any configured cloud when the app is unknown), JSON otherwise.
    fn entra_error(
        &self,
        app: Option<&AppPolicy>,
        params: &Params<'_>,
        error: AuthorizeError,
    ) -> ErrorResponse {
        let unique = |name| params.only(name);
        let allowed = |uri: &str| match app {
            Some(app) => self.cloud_of(app).redirect_uris.iter().any(|u| u == uri),
            None => self
                .clouds
                .iter()
                .any(|c| c.redirect_uris.iter().any(|u| u == uri)),
        };
        match unique("redirect_uri") {
            Some(redirect_uri)
                if self.authorize.error_delivery == ErrorDelivery::FormPost
                    && allowed(redirect_uri) =>
            {
                form_post_error(redirect_uri, error, unique("state"))
            }
            _ => json_error(error),
        }
    }
}

/// Whether every framework reads `name` as this same parameter: a plain name (ASCII letters,
/// digits, `_`, `-`), and not a single-valued OAuth name in another letter case, which ASP.NET's
/// case-insensitive collections read as that parameter.
fn name_reads_alike(name: &str) -> bool {
    is_plain_name(name)
        && (!name.bytes().any(|b| b.is_ascii_uppercase())
            || !SINGLE_VALUED.iter().any(|s| s.eq_ignore_ascii_case(name)))
}

fn capped(value: &str) -> String {
    if value.len() <= MAX_LOGGED_LEN {
        return value.to_string();
    }
    match value.char_indices().nth(MAX_LOGGED_LEN) {
        Some((end, _)) => value[..end].to_string(),
        None => value.to_string(),
    }
}

#[cfg(test)]
#[path = "authorize_tests.rs"]
mod tests;
