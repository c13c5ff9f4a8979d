//! Every way an authorize request can be refused, each with a stable `reason` string.
//!
//! The `reason` is shared by logs and metrics (`eam_hint_rejections_total{reason}`), so it is a
//! bounded set and must never change once released. The description sent to the client names the
//! failed check only: no token content, no parameter value is ever echoed.

use std::fmt;

/// Parameters whose duplication or absence makes an Entra request ambiguous (README "How a request is handled", step 5).
/// Kept as `&'static str` so errors carry no request data.
pub type ParamName = &'static str;
/// A request header's lower-case name.
pub type HeaderName = &'static str;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthorizeError {
    // --- request shape (every authorize request) ---
    /// A POST body larger than `server.max_body_bytes`.
    BodyTooLarge,
    /// A POST whose content type is not `application/x-www-form-urlencoded`.
    UnsupportedContentType,
    /// Malformed percent-encoding or bytes that are not UTF-8.
    MalformedEncoding,
    /// A method other than GET or POST: an OP may route it (HEAD, PUT…) to its authorize
    /// handler with parameters the proxy never read.
    MethodNotAllowed,
    /// A GET with a body, announced or arriving in HTTP/2 DATA frames: Rack, werkzeug and
    /// Express read form parameters from the body of any method.
    UnexpectedBody,
    /// `Content-Type` or `Content-Encoding` repeated or unreadable: frameworks differ in which
    /// one they use.
    RepeatedHeader(HeaderName),
    /// A `charset` other than UTF-8 on the `Content-Type`: servlet containers decode a form's
    /// names with it, Django even a GET's query.
    UnsupportedCharset,
    /// A `Content-Encoding` other than `identity`: Express inflates a deflated form.
    UnsupportedContentEncoding,
    /// More parameters than any authorize request needs: PHP, qs and others silently drop the
    /// ones past their limit.
    TooManyParameters,
    /// A parameter name that frameworks rewrite or read as structure (anything but ASCII
    /// letters, digits, `_` and `-`), or a single-valued OAuth name in another letter case.
    AmbiguousParameterName,

    // --- Entra request parameters ---
    /// Detected as Entra, but no `[[apps]]` entry has this `client_id`.
    UnknownClient,
    MissingParameter(ParamName),
    DuplicateParameter(ParamName),
    /// A POST that also carries an OAuth parameter in its query string: which one wins
    /// depends on the upstream, so the request is ambiguous.
    ParameterInQuery(ParamName),
    /// `request` or `request_uri` (a JAR request object, a PAR reference) on an Entra request:
    /// the OP would take parameters from it over the checked ones (OIDC Core 6.1), `entra_*`
    /// included, and Entra never sends either.
    RequestObject,

    // --- id_token_hint ---
    /// No usable key set for the app's cloud (never loaded, or stale).
    KeysUnavailable,
    MalformedToken,
    AlgorithmNotAllowed,
    MissingKid,
    UnknownKid,
    BadSignature,
    MalformedClaims,
    MissingTenant,
    InvalidTenant,
    MsaTenant,
    TenantNotAllowed,
    IssuerMismatch,
    KeyIssuerMismatch,
    AudienceMismatch,
    MissingTimeClaim,
    NotYetValid,
    Expired,
    MissingSubject,
    MissingObjectId,
}

/// The OAuth 2.0 error code a rejection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthError {
    InvalidRequest,
    TemporarilyUnavailable,
}

impl OAuthError {
    pub fn code(self) -> &'static str {
        match self {
            OAuthError::InvalidRequest => "invalid_request",
            OAuthError::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }
}

impl AuthorizeError {
    /// Stable identifier for logs and metric labels.
    pub fn reason(self) -> &'static str {
        use AuthorizeError::*;
        match self {
            BodyTooLarge => "body_too_large",
            UnsupportedContentType => "unsupported_content_type",
            MalformedEncoding => "malformed_encoding",
            MethodNotAllowed => "method_not_allowed",
            UnexpectedBody => "unexpected_body",
            RepeatedHeader(_) => "repeated_header",
            UnsupportedCharset => "unsupported_charset",
            UnsupportedContentEncoding => "unsupported_content_encoding",
            TooManyParameters => "too_many_parameters",
            AmbiguousParameterName => "ambiguous_parameter_name",
            UnknownClient => "unknown_client",
            MissingParameter(_) => "missing_parameter",
            DuplicateParameter(_) => "duplicate_parameter",
            ParameterInQuery(_) => "parameter_in_query",
            RequestObject => "request_object",
            KeysUnavailable => "keys_unavailable",
            MalformedToken => "malformed_token",
            AlgorithmNotAllowed => "alg_not_allowed",
            MissingKid => "missing_kid",
            UnknownKid => "unknown_kid",
            BadSignature => "bad_signature",
            MalformedClaims => "malformed_claims",
            MissingTenant => "missing_tid",
            InvalidTenant => "invalid_tid",
            MsaTenant => "msa_tenant",
            TenantNotAllowed => "tenant_not_allowed",
            IssuerMismatch => "issuer_mismatch",
            KeyIssuerMismatch => "key_issuer_mismatch",
            AudienceMismatch => "audience_mismatch",
            MissingTimeClaim => "missing_time_claim",
            NotYetValid => "not_yet_valid",
            Expired => "expired",
            MissingSubject => "missing_sub",
            MissingObjectId => "missing_oid",
        }
    }

    /// Every `reason()` value, for pre-registering metric label values.
    pub const ALL_REASONS: &'static [&'static str] = &[
        "body_too_large",
        "unsupported_content_type",
        "malformed_encoding",
        "method_not_allowed",
        "unexpected_body",
        "repeated_header",
        "unsupported_charset",
        "unsupported_content_encoding",
        "too_many_parameters",
        "ambiguous_parameter_name",
        "unknown_client",
        "missing_parameter",
        "duplicate_parameter",
        "parameter_in_query",
        "request_object",
        "keys_unavailable",
        "malformed_token",
        "alg_not_allowed",
        "missing_kid",
        "unknown_kid",
        "bad_signature",
        "malformed_claims",
        "missing_tid",
        "invalid_tid",
        "msa_tenant",
        "tenant_not_allowed",
        "issuer_mismatch",
        "key_issuer_mismatch",
        "audience_mismatch",
        "missing_time_claim",
        "not_yet_valid",
        "expired",
        "missing_sub",
        "missing_oid",
    ];

    pub fn oauth_error(self) -> OAuthError {
        match self {
            AuthorizeError::KeysUnavailable => OAuthError::TemporarilyUnavailable,
            _ => OAuthError::InvalidRequest,
        }
    }

    /// HTTP status when the error is not delivered as a form_post.
    pub fn status(self) -> u16 {
        match self {
            AuthorizeError::BodyTooLarge => 413,
            AuthorizeError::MethodNotAllowed => 405,
            AuthorizeError::KeysUnavailable => 503,
            _ => 400,
        }
    }

    /// Short, fixed `error_description`: names the failed check, never echoes input.
    pub fn description(self) -> String {
        use AuthorizeError::*;
        match self {
            BodyTooLarge => "request body too large".into(),
            UnsupportedContentType => {
                "authorization POST must be application/x-www-form-urlencoded".into()
            }
            MalformedEncoding => "malformed percent-encoding or non-UTF-8 parameter".into(),
            MethodNotAllowed => "authorization requests must use GET or POST".into(),
            UnexpectedBody => "an authorization GET must not have a body".into(),
            RepeatedHeader(name) => format!("{name} must appear once"),
            UnsupportedCharset => "authorization requests must be encoded in UTF-8".into(),
            UnsupportedContentEncoding => "authorization requests must not be compressed".into(),
            TooManyParameters => "too many parameters".into(),
            AmbiguousParameterName => {
                "parameter names must be ASCII letters, digits, _ and -, and OAuth parameters \
                 lower-case"
                    .into()
            }
            UnknownClient => "client_id is not a registered external authentication method".into(),
            MissingParameter(name) => format!("missing {name}"),
            DuplicateParameter(name) => format!("{name} must not be repeated"),
            ParameterInQuery(name) => format!("{name} must not appear in the query of a POST"),
            RequestObject => "request and request_uri are not accepted".into(),
            KeysUnavailable => "signing keys for id_token_hint are not available".into(),
            MalformedToken => "id_token_hint is not a well-formed JWS".into(),
            AlgorithmNotAllowed => "id_token_hint must be signed with RS256".into(),
            MissingKid => "id_token_hint header has no kid".into(),
            UnknownKid => "id_token_hint signing key is unknown".into(),
            BadSignature => "id_token_hint signature is invalid".into(),
            MalformedClaims => "id_token_hint claims are malformed".into(),
            MissingTenant => "id_token_hint has no tid".into(),
            InvalidTenant => "id_token_hint tid is not a GUID".into(),
            MsaTenant => "id_token_hint is from the Microsoft account tenant".into(),
            TenantNotAllowed => "id_token_hint tenant is not allowed".into(),
            IssuerMismatch => "id_token_hint issuer is not the expected issuer".into(),
            KeyIssuerMismatch => "id_token_hint issuer does not match its signing key".into(),
            AudienceMismatch => "id_token_hint audience is not accepted".into(),
            MissingTimeClaim => "id_token_hint lacks iat or exp".into(),
            NotYetValid => "id_token_hint is not yet valid".into(),
            Expired => "id_token_hint has expired".into(),
            MissingSubject => "id_token_hint has no sub".into(),
            MissingObjectId => "id_token_hint has no oid".into(),
        }
    }
}

impl fmt::Display for AuthorizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description())
    }
}

impl std::error::Error for AuthorizeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_reasons_lists_every_variant_once() {
        use AuthorizeError::*;
        let every = [
            BodyTooLarge,
            UnsupportedContentType,
            MalformedEncoding,
            MethodNotAllowed,
            UnexpectedBody,
            RepeatedHeader("x"),
            UnsupportedCharset,
            UnsupportedContentEncoding,
            TooManyParameters,
            AmbiguousParameterName,
            UnknownClient,
            MissingParameter("x"),
            DuplicateParameter("x"),
            ParameterInQuery("x"),
            RequestObject,
            KeysUnavailable,
            MalformedToken,
            AlgorithmNotAllowed,
            MissingKid,
            UnknownKid,
            BadSignature,
            MalformedClaims,
            MissingTenant,
            InvalidTenant,
            MsaTenant,
            TenantNotAllowed,
            IssuerMismatch,
            KeyIssuerMismatch,
            AudienceMismatch,
            MissingTimeClaim,
            NotYetValid,
            Expired,
            MissingSubject,
            MissingObjectId,
        ];
        let reasons: Vec<_> = every.iter().map(|e| e.reason()).collect();
        assert_eq!(reasons, AuthorizeError::ALL_REASONS);
        let mut dedup = reasons.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), reasons.len(), "reasons must be distinct");
    }

    #[test]
    fn only_missing_keys_is_temporarily_unavailable() {
        assert_eq!(
            AuthorizeError::KeysUnavailable.oauth_error(),
            OAuthError::TemporarilyUnavailable
        );
        assert_eq!(AuthorizeError::KeysUnavailable.status(), 503);
        assert_eq!(
            AuthorizeError::BadSignature.oauth_error(),
            OAuthError::InvalidRequest
        );
        assert_eq!(AuthorizeError::BodyTooLarge.status(), 413);
        assert_eq!(AuthorizeError::Expired.status(), 400);
    }
}
