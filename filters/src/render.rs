//! OAuth error responses (SPEC §3.8): an auto-submitting form_post back to Entra, or JSON.

use crate::error::AuthorizeError;

/// The one inline script of the form_post page; its hash is pinned in the CSP.
const SUBMIT_SCRIPT: &str = "document.forms[0].submit();";
/// `base64(sha256(SUBMIT_SCRIPT))`, checked by a test.
const SUBMIT_SCRIPT_HASH: &str = "sha256-8lDeP0UDwCO6/RhblgeH/ctdBzjVpJxrXizsnIk3cEQ=";

/// A complete answer to send instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// `{"error":…,"error_description":…}` with the error's own status (400, 413 or 503).
pub fn json_error(error: AuthorizeError) -> ErrorResponse {
    let body = serde_json::json!({
        "error": error.oauth_error().code(),
        "error_description": error.description(),
    })
    .to_string()
    .into_bytes();
    let mut headers = vec![
        ("content-type", "application/json".into()),
        ("cache-control", "no-store".into()),
    ];
    if error == AuthorizeError::MethodNotAllowed {
        headers.push(("allow", "GET, POST".into()));
    }
    ErrorResponse {
        status: error.status(),
        headers,
        body,
    }
}

/// A `200` page that POSTs the error to Entra's `redirect_uri`, ending the sign-in attempt at once
/// instead of leaving the user on a dead end. `redirect_uri` must be one of the configured
/// (and CSP-safe, see [`is_csp_safe_uri`]) URIs; `state` is echoed, escaped.
pub fn form_post_error(
    redirect_uri: &str,
    error: AuthorizeError,
    state: Option<&str>,
) -> ErrorResponse {
    let mut fields = String::new();
    let mut hidden = |name: &str, value: &str| {
        fields.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape_html(name),
            escape_html(value)
        ));
    };
    hidden("error", error.oauth_error().code());
    hidden("error_description", &error.description());
    if let Some(state) = state {
        hidden("state", state);
    }
    let body = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Sign-in error</title></head>\
         <body><form method=\"post\" action=\"{action}\">{fields}\
         <noscript><button type=\"submit\">Continue</button></noscript></form>\
         <script>{SUBMIT_SCRIPT}</script></body></html>",
        action = escape_html(redirect_uri),
    );
    let csp = format!(
        "default-src 'none'; script-src '{SUBMIT_SCRIPT_HASH}'; form-action {redirect_uri}; \
         base-uri 'none'; frame-ancestors 'none'"
    );
    ErrorResponse {
        status: 200,
        headers: vec![
            ("content-type", "text/html; charset=utf-8".into()),
            ("cache-control", "no-store".into()),
            ("pragma", "no-cache".into()),
            ("content-security-policy", csp),
            ("x-frame-options", "DENY".into()),
            ("x-content-type-options", "nosniff".into()),
            ("referrer-policy", "no-referrer".into()),
        ],
        body: body.into_bytes(),
    }
}

/// Escapes text for both HTML content and double- or single-quoted attribute values.
pub fn escape_html(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for c in input.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            _ => out.push(c),
        }
    }
    out
}

/// A redirect URI that can stand verbatim in a CSP `form-action` source and an HTML attribute:
/// `https://` (or loopback `http://`) with no characters that would end or split a directive.
pub fn is_csp_safe_uri(uri: &str) -> bool {
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|host| {
            uri.strip_prefix(host)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
        });
    let scheme_ok = uri.starts_with("https://") || loopback;
    scheme_ok
        && uri
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, ';' | ',' | '\'' | '"' | '<' | '>'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use sha2::Digest;

    const REDIRECT: &str =
        "https://login.microsoftonline.com/common/federation/externalauthprovider";

    fn header<'a>(r: &'a ErrorResponse, name: &str) -> &'a str {
        &r.headers.iter().find(|(n, _)| *n == name).unwrap().1
    }

    #[test]
    fn csp_hash_matches_the_script() {
        let digest = sha2::Sha256::digest(SUBMIT_SCRIPT.as_bytes());
        let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
        assert_eq!(SUBMIT_SCRIPT_HASH, format!("sha256-{b64}"));
    }

    #[test]
    fn form_post_escapes_state_and_sets_headers() {
        let state = "\"><script>alert(1)</script>&'";
        let r = form_post_error(REDIRECT, AuthorizeError::BadSignature, Some(state));
        assert_eq!(r.status, 200);
        let body = String::from_utf8(r.body.clone()).unwrap();
        assert!(!body.contains("<script>alert"));
        assert!(body.contains(
            "name=\"state\" value=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;&#x27;\""
        ));
        assert!(body.contains(&format!("action=\"{REDIRECT}\"")));
        assert!(body.contains("name=\"error\" value=\"invalid_request\""));
        assert!(body.contains("id_token_hint signature is invalid"));
        assert_eq!(body.matches("<script>").count(), 1);
        assert_eq!(header(&r, "cache-control"), "no-store");
        assert_eq!(header(&r, "x-frame-options"), "DENY");
        let csp = header(&r, "content-security-policy");
        assert!(csp.contains(&format!("form-action {REDIRECT};")));
        assert!(csp.contains("default-src 'none'"));
        assert!(csp.contains(SUBMIT_SCRIPT_HASH));
        assert!(!csp.contains("unsafe-inline"));
    }

    #[test]
    fn form_post_omits_absent_state_and_carries_temporarily_unavailable() {
        let r = form_post_error(REDIRECT, AuthorizeError::KeysUnavailable, None);
        let body = String::from_utf8(r.body).unwrap();
        assert!(!body.contains("name=\"state\""));
        assert!(body.contains("value=\"temporarily_unavailable\""));
    }

    #[test]
    fn json_error_shape() {
        let r = json_error(AuthorizeError::DuplicateParameter("state"));
        assert_eq!(r.status, 400);
        assert_eq!(header(&r, "content-type"), "application/json");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error":"invalid_request","error_description":"state must not be repeated"})
        );
        let r = json_error(AuthorizeError::KeysUnavailable);
        assert_eq!(r.status, 503);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"], "temporarily_unavailable");
    }

    #[test]
    fn csp_safe_uris() {
        assert!(is_csp_safe_uri(REDIRECT));
        assert!(is_csp_safe_uri("http://127.0.0.1:9000/cb"));
        assert!(!is_csp_safe_uri("http://example.com/cb"));
        assert!(!is_csp_safe_uri("http://localhost.evil.example/cb"));
        assert!(!is_csp_safe_uri("http://127.0.0.1.nip.io/cb"));
        assert!(is_csp_safe_uri("http://localhost:8080/cb"));
        assert!(is_csp_safe_uri("http://[::1]/cb"));
        assert!(!is_csp_safe_uri("https://a.example/cb; script-src *"));
        assert!(!is_csp_safe_uri("https://a.example/c b"));
        assert!(!is_csp_safe_uri("https://a.example/\"x"));
    }
}
