//! Every way an authorize request can be refused, each with a stable `reason` string.
//!
//! The `reason` is shared by logs and metrics (`eam_hint_rejections_total{reason}`), so it is a
//! bounded set and must never change once released. The description sent to the client names the
//! failed check only: no token content, no parameter value is ever echoed.

use std::fmt;

use crate::standing::Limit;

/// An enum of refusals whose every variant has its stable reason written beside it, once: the
/// macro makes the enum, `reason()`, `ALL_REASONS` (to pre-register metric labels) and
/// `EXAMPLES` (one value of each variant, with an example payload, for tests and fuzzing).
macro_rules! reasons {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$doc:meta])* $variant:ident $(($payload:ty = $example:expr))? => $reason:literal,)*
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $($(#[$doc])* $variant $(($payload))?,)*
        }

        impl $name {
            /// Stable identifier for logs and metric labels.
            pub fn reason(self) -> &'static str {
                match self {
                    $($name::$variant { .. } => $reason,)*
                }
            }

            /// Every `reason()` value, for pre-registering metric label values.
            pub const ALL_REASONS: &'static [&'static str] = &[$($reason),*];

            /// One value of each variant, in declaration order.
            pub const EXAMPLES: &'static [$name] = &[$($name::$variant $(($example))?),*];
        }
    };
}
pub(crate) use reasons;

/// Parameters whose duplication or absence makes an Entra request ambiguous (README "How a request is handled", step 5).
/// Kept as `&'static str` so errors carry no request data.
pub type ParamName = &'static str;
/// A request header's lower-case name.
pub type HeaderName = &'static str;

reasons! {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum AuthorizeError {
        // --- request shape (every authorize request) ---
        /// A POST body larger than `server.max_body_bytes`.
        BodyTooLarge => "body_too_large",
        /// A POST whose content type is not `application/x-www-form-urlencoded`.
        UnsupportedContentType => "unsupported_content_type",
        /// Malformed percent-encoding or bytes that are not UTF-8.
        MalformedEncoding => "malformed_encoding",
        /// A method other than GET or POST: an OP may route it (HEAD, PUT…) to its authorize
        /// handler with parameters the proxy never read.
        MethodNotAllowed => "method_not_allowed",
        /// A GET with a body, announced or arriving in HTTP/2 DATA frames: Rack, werkzeug and
        /// Express read form parameters from the body of any method.
        UnexpectedBody => "unexpected_body",
        /// `Content-Type` or `Content-Encoding` repeated or unreadable: frameworks differ in which
        /// one they use.
        RepeatedHeader(HeaderName = "content-type") => "repeated_header",
        /// A `charset` other than UTF-8 on the `Content-Type`: servlet containers decode a form's
        /// names with it, Django even a GET's query.
        UnsupportedCharset => "unsupported_charset",
        /// A `Content-Encoding` other than `identity`: Express inflates a deflated form.
        UnsupportedContentEncoding => "unsupported_content_encoding",
        /// More parameters than any authorize request needs: PHP, qs and others silently drop the
        /// ones past their limit.
        TooManyParameters => "too_many_parameters",
        /// A parameter name that frameworks rewrite or read as structure (anything but ASCII
        /// letters, digits, `_` and `-`), or a single-valued OAuth name in another letter case.
        AmbiguousParameterName => "ambiguous_parameter_name",

        // --- Entra request parameters ---
        /// Detected as Entra, but no `[[apps]]` entry has this `client_id`.
        UnknownClient => "unknown_client",
        MissingParameter(ParamName = "client_id") => "missing_parameter",
        DuplicateParameter(ParamName = "client_id") => "duplicate_parameter",
        /// A POST that also carries an OAuth parameter in its query string: which one wins
        /// depends on the upstream, so the request is ambiguous.
        ParameterInQuery(ParamName = "client_id") => "parameter_in_query",
        /// `request` or `request_uri` (a JAR request object, a PAR reference) on an Entra request:
        /// the OP would take parameters from it over the checked ones (OIDC Core 6.1), `entra_*`
        /// included, and Entra never sends either.
        RequestObject => "request_object",

        // --- id_token_hint ---
        /// No usable key set for the app's cloud (never loaded, or stale).
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

        // --- abuse limits (README "Abuse limits") ---
        /// The client reached one of its per-window limits: refused before any signature check.
        RateLimited(Limit = Limit::FailedValidations) => "rate_limited",
    }
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
    pub fn oauth_error(self) -> OAuthError {
        match self {
            AuthorizeError::KeysUnavailable | AuthorizeError::RateLimited(_) => {
                OAuthError::TemporarilyUnavailable
            }
            _ => OAuthError::InvalidRequest,
        }
    }

    /// HTTP status when the error is not delivered as a form_post.
    pub fn status(self) -> u16 {
        match self {
            AuthorizeError::BodyTooLarge => 413,
            AuthorizeError::MethodNotAllowed => 405,
            AuthorizeError::KeysUnavailable => 503,
            AuthorizeError::RateLimited(_) => 429,
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
            RateLimited(Limit::FailedValidations) => {
                "too many failed sign-in requests from this client: limit failed_validations \
                 reached, retry later"
                    .into()
            }
            RateLimited(Limit::KeyRefetches) => {
                "too many requests naming unknown signing keys from this client: limit \
                 key_refetches reached, retry later"
                    .into()
            }
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
    fn every_variant_has_a_distinct_reason() {
        let reasons: Vec<_> = AuthorizeError::EXAMPLES
            .iter()
            .map(|e| e.reason())
            .collect();
        assert_eq!(reasons, AuthorizeError::ALL_REASONS);
        let mut dedup = reasons.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), reasons.len(), "reasons must be distinct");
    }

    #[test]
    fn rate_limited_is_429_and_temporarily_unavailable() {
        for limit in Limit::ALL {
            let error = AuthorizeError::RateLimited(limit);
            assert_eq!(error.status(), 429);
            assert_eq!(error.oauth_error(), OAuthError::TemporarilyUnavailable);
            assert_eq!(error.reason(), "rate_limited");
            assert!(error.description().contains(limit.as_str()));
        }
    }

    #[test]
    fn missing_keys_is_temporarily_unavailable() {
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
