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
use crate::request::{AuthorizeRequest, Framing, Method};
use crate::rewrite::rewrite_entra;
use crate::standing::Exceeded;

/// Whether an Entra request must carry a single-valued parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Required,
    Optional,
}

/// The one table of the OAuth parameters an Entra request carries at most once (README "How a
/// request is handled", step 5), in the order their checks run: the reason a request gets does
/// not depend on the order of its pairs.
pub const SINGLE_VALUED: [(&str, Presence); 11] = [
    ("client_id", Presence::Required),
    ("redirect_uri", Presence::Required),
    ("response_type", Presence::Optional),
    ("response_mode", Presence::Optional),
    ("scope", Presence::Optional),
    ("state", Presence::Optional),
    ("nonce", Presence::Optional),
    ("claims", Presence::Optional),
    ("prompt", Presence::Optional),
    ("id_token_hint", Presence::Required),
    ("client-request-id", Presence::Optional),
];

fn single_valued_index(name: &str) -> Option<usize> {
    SINGLE_VALUED.iter().position(|(n, _)| *n == name)
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
    pub const ALL: [Outcome; 3] = [Outcome::Passed, Outcome::Accepted, Outcome::Rejected];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Accepted => "accepted",
            Outcome::Rejected => "rejected",
        }
    }
}

/// What happened, for the decision log line and the metrics: a record, never read to decide
/// what happens next. Holds no token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub outcome: Outcome,
    pub error: Option<AuthorizeError>,
    pub entra: bool,
    /// The hint was inspected (for the validation-time histogram).
    pub hint_checked: bool,
    /// Spoofed reserved parameters removed.
    pub stripped: usize,
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

/// The ruling on an authorize request, whatever it is (forward, pass, refuse), with its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruling {
    pub decision: AuthorizeDecision,
    pub summary: Summary,
    /// For an accepted Entra request with a `state`: what the response guard expects of the
    /// OP's answer.
    pub remember: Option<Remembered>,
    /// Refused for want of a key: the fetch that may let the request through.
    pub keys_wanted: Option<KeyFetch>,
}

/// A fetch of Microsoft's keys the decision waits for: the hint names a `kid` the cloud's key set
/// lacks (Microsoft rotated its keys), or the cloud has no usable set (the last refresh failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFetch {
    /// The cloud's name, as configured.
    pub cloud: String,
    /// The `kid` the set should bring; `None` when the whole set is missing.
    pub kid: Option<String>,
}

/// What the proxy does next with an authorize request. As quinn-proto does, the core says which
/// I/O it lacks; the proxy carries it out and asks again with [`Progress`] updated.
// Returned and matched at once, never stored: boxing the ruling would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Read the body, at most `limit` bytes (more is refused as too large, the rest unread).
    ReadBody { limit: usize },
    /// Fetch this key set, then ask again.
    FetchKeys(KeyFetch),
    /// The final word.
    Done(Ruling),
}

/// The I/O done so far for one request, and what the proxy counted of its client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// `AuthorizeRequest::body` holds the whole body (or what was read of a too large one).
    pub body_read: bool,
    /// A key fetch was made for this request (whatever it brought): do not ask again.
    pub keys_fetched: bool,
    /// The client has reached its failed-validation limit: an Entra request is refused before
    /// its hint is looked at, so it costs no signature check.
    pub over_limit: Option<Exceeded>,
    /// The proxy declined the [`Step::FetchKeys`] asked for: the client has reached its
    /// key-refetch limit.
    pub fetch_refused: Option<Exceeded>,
}

impl Ruling {
    /// A ruling to fill in: the record as the decision goes, then the decision itself.
    fn blank() -> Ruling {
        Ruling {
            decision: AuthorizeDecision::PassThrough,
            summary: Summary::default(),
            remember: None,
            keys_wanted: None,
        }
    }

    fn refuse(&mut self, error: AuthorizeError, response: ErrorResponse) {
        self.summary.outcome = Outcome::Rejected;
        self.summary.error = Some(error);
        self.decision = AuthorizeDecision::Reject(response);
    }
}

/// The parameters of a request after reading: those that carry the request, and for a POST
/// the query string's, which are stripped too so nothing spoofed slips through either channel.
struct ReadParams<'a> {
    main: Params<'a>,
    post_query: Option<Params<'a>>,
}

impl Policy {
    /// The next step for an authorize request: its head is judged before any body is read
    /// ([`Policy::admit`]); then the whole request; a refusal for want of keys is held back once
    /// for a fetch.
    pub fn step(
        &self,
        req: &AuthorizeRequest<'_>,
        keys: &dyn KeyLookup,
        now: u64,
        progress: Progress,
    ) -> Step {
        if !progress.body_read {
            if let Err(error) = self.admit(req) {
                let mut ruling = Ruling::blank();
                ruling.refuse(error, json_error(error));
                return Step::Done(ruling);
            }
            if req.framing != Framing::None {
                return Step::ReadBody {
                    limit: self.authorize.max_body_bytes,
                };
            }
        }
        let ruling = self.rule_on(req, keys, now, progress);
        match &ruling.keys_wanted {
            Some(fetch) if !progress.keys_fetched => Step::FetchKeys(fetch.clone()),
            _ => Step::Done(ruling),
        }
    }

    /// The ruling on a request read whole, with the keys at hand, for a client under its limits.
    pub fn authorize(&self, req: &AuthorizeRequest<'_>, keys: &dyn KeyLookup, now: u64) -> Ruling {
        self.rule_on(req, keys, now, Progress::default())
    }

    fn rule_on(
        &self,
        req: &AuthorizeRequest<'_>,
        keys: &dyn KeyLookup,
        now: u64,
        progress: Progress,
    ) -> Ruling {
        let mut ruling = Ruling::blank();
        match self.decide(req, keys, now, progress, &mut ruling) {
            Ok(decision) => ruling.decision = decision,
            Err((error, response)) => ruling.refuse(error, response),
        }
        ruling
    }

    fn decide(
        &self,
        req: &AuthorizeRequest<'_>,
        keys: &dyn KeyLookup,
        now: u64,
        progress: Progress,
        ruling: &mut Ruling,
    ) -> Result<AuthorizeDecision, (AuthorizeError, ErrorResponse)> {
        let summary = &mut ruling.summary;
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
        // Before the hint is parsed: a client past its limit costs no signature check.
        if let Some(exceeded) = progress.over_limit {
            return Err(self.rate_limited(named_app, &main, exceeded));
        }
        let identity = self.entra_app(&main, post_query.as_ref()).and_then(|app| {
            summary.hint_checked = true;
            self.validate_hint(app, &main, keys, now)
                .inspect_err(|error| {
                    ruling.keys_wanted = self.key_fetch(app, &main, *error);
                })
        });
        let identity = match identity {
            Ok(identity) => identity,
            Err(error) => {
                // The fetch this refusal waits for, declined by the proxy: the limit answers.
                let declined = progress
                    .fetch_refused
                    .filter(|_| ruling.keys_wanted.is_some() && !progress.keys_fetched);
                if let Some(exceeded) = declined {
                    ruling.keys_wanted = None;
                    return Err(self.rate_limited(named_app, &main, exceeded));
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
        ruling.remember = Remembered::from_request(&main, sub);
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
            Method::Post if req.body.len() > self.authorize.max_body_bytes => {
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
        for ((name, _), count) in SINGLE_VALUED.into_iter().zip(counts) {
            if count > 1 {
                return Err(AuthorizeError::DuplicateParameter(name));
            }
            if post_query.is_some_and(|q| q.contains(name)) {
                return Err(AuthorizeError::ParameterInQuery(name));
            }
        }
        for ((name, presence), count) in SINGLE_VALUED.into_iter().zip(counts) {
            if presence == Presence::Required && count == 0 {
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

    /// The fetch that may turn a refusal for want of a key into a ruling on the hint itself.
    fn key_fetch(
        &self,
        app: &AppPolicy,
        params: &Params<'_>,
        error: AuthorizeError,
    ) -> Option<KeyFetch> {
        let kid = match error {
            AuthorizeError::UnknownKid => params
                .first("id_token_hint")
                .and_then(kid_of)
                .map(|k| capped(&k)),
            AuthorizeError::KeysUnavailable => None,
            _ => return None,
        };
        Some(KeyFetch {
            cloud: self.cloud_of(app).name.clone(),
            kid,
        })
    }

    /// The answer to a client past a limit: delivered as any other refusal of an Entra request
    /// (a form_post error to Entra, or a `429`), with `Retry-After`.
    fn rate_limited(
        &self,
        app: Option<&AppPolicy>,
        params: &Params<'_>,
        exceeded: Exceeded,
    ) -> (AuthorizeError, ErrorResponse) {
        let error = AuthorizeError::RateLimited(exceeded.limit);
        let mut response = self.entra_error(app, params, error);
        response
            .headers
            .push(("retry-after", exceeded.retry_after.max(1).to_string()));
        (error, response)
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
            || !SINGLE_VALUED
                .iter()
                .any(|(s, _)| s.eq_ignore_ascii_case(name)))
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
