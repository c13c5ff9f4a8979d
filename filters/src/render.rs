//! OAuth error responses (README "How a request is handled", step 8): an auto-submitting form_post back to Entra, or JSON.

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
    let description = error.description();
    let mut fields = vec![
        ("error", error.oauth_error().code()),
        ("error_description", description.as_str()),
    ];
    if let Some(state) = state {
        fields.push(("state", state));
    }
    form_post_fields(redirect_uri, &fields)
}

/// The auto-submitting form_post page of `fields` to `redirect_uri` (a configured, CSP-safe
/// URI), every name and value escaped, with its own CSP and anti-framing headers.
pub fn form_post_fields(redirect_uri: &str, fields: &[(&str, &str)]) -> ErrorResponse {
    let mut inputs = String::new();
    for (name, value) in fields {
        inputs.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape_html(name),
            escape_html(value)
        ));
    }
    let body = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Sign-in error</title></head>\
         <body><form method=\"post\" action=\"{action}\">{inputs}\
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

/// The provider's `Content-Security-Policy` changed only so far that the one script of
/// [`form_post_fields`] may run: the response guard may replace a page whose headers are already
/// on their way, and must not end on a blank page. The script's hash is added where scripts are
/// governed (`script-src-elem`, `script-src`, else a new `script-src` from `default-src`), as
/// oidc-provider does for its own form_post page. A policy that already allows inline scripts,
/// or does not restrict scripts, is kept: adding a hash would disable its `'unsafe-inline'`.
pub fn csp_allowing_auto_post(header: &str) -> String {
    header
        .split(',')
        .map(|policy| allow_in_policy(policy.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn allow_in_policy(policy: &str) -> String {
    let mut directives: Vec<(String, Vec<String>)> = policy
        .split(';')
        .filter_map(|d| {
            let mut words = d.split_ascii_whitespace();
            let name = words.next()?.to_ascii_lowercase();
            Some((name, words.map(str::to_string).collect()))
        })
        .collect();
    let governing = ["script-src-elem", "script-src", "default-src"]
        .iter()
        .find_map(|name| directives.iter().position(|(n, _)| n == name));
    let Some(index) = governing else {
        return policy.to_string();
    };
    let sources = &directives[index].1;
    let lower = |s: &String| s.to_ascii_lowercase();
    let has_inline = sources.iter().any(|s| lower(s) == "'unsafe-inline'");
    let has_hash_or_nonce = sources.iter().any(|s| {
        let s = lower(s);
        s.starts_with("'nonce-") || s.starts_with("'sha") || s == "'strict-dynamic'"
    });
    if has_inline && !has_hash_or_nonce {
        return policy.to_string();
    }
    let mut sources: Vec<String> = sources
        .iter()
        .filter(|s| lower(s) != "'none'")
        .cloned()
        .collect();
    sources.push(format!("'{SUBMIT_SCRIPT_HASH}'"));
    if directives[index].0 == "default-src" {
        directives.push(("script-src".into(), sources));
    } else {
        directives[index].1 = sources;
    }
    directives
        .iter()
        .map(|(name, sources)| {
            std::iter::once(name.as_str())
                .chain(sources.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("; ")
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
    let scheme_ok = uri.starts_with("https://")
        || (uri.starts_with("http://")
            && url::Url::parse(uri).is_ok_and(|u| crate::policy::is_loopback_url(&u)));
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
    use testkit::entra::GLOBAL_REDIRECT as REDIRECT;

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
    fn form_post_fields_escapes_every_field() {
        let r = form_post_fields(REDIRECT, &[("error", "access_denied"), ("state", "a\"<b")]);
        let body = String::from_utf8(r.body).unwrap();
        assert!(body.contains("name=\"error\" value=\"access_denied\""));
        assert!(body.contains("name=\"state\" value=\"a&quot;&lt;b\""));
        assert_eq!(body.matches("<script>").count(), 1);
    }

    #[test]
    fn csp_gains_the_submit_hash_where_scripts_are_governed() {
        let hash = format!("'{SUBMIT_SCRIPT_HASH}'");
        let out = csp_allowing_auto_post("default-src 'self'; script-src 'nonce-abc'");
        assert_eq!(
            out,
            format!("default-src 'self'; script-src 'nonce-abc' {hash}")
        );
        let out = csp_allowing_auto_post("default-src 'none'; form-action https://x");
        assert_eq!(
            out,
            format!("default-src 'none'; form-action https://x; script-src {hash}")
        );
        let out = csp_allowing_auto_post("script-src-elem 'self'; script-src 'self'");
        assert_eq!(
            out,
            format!("script-src-elem 'self' {hash}; script-src 'self'")
        );
        // Two policies in one header: each must allow the script.
        let out = csp_allowing_auto_post("script-src 'self', default-src 'none'");
        assert_eq!(
            out,
            format!("script-src 'self' {hash}, default-src 'none'; script-src {hash}")
        );
    }

    #[test]
    fn csp_that_already_allows_the_script_is_kept() {
        for csp in [
            "script-src 'self' 'unsafe-inline'",
            "frame-ancestors 'none'",
            "default-src * 'unsafe-inline'",
        ] {
            assert_eq!(csp_allowing_auto_post(csp), csp);
        }
        // 'unsafe-inline' is void beside a nonce: the hash is needed.
        let out = csp_allowing_auto_post("script-src 'unsafe-inline' 'nonce-x'");
        assert!(out.contains(SUBMIT_SCRIPT_HASH), "{out}");
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
        // The same loopback rule as the configuration's and the doctor's: all of 127.0.0.0/8.
        assert!(is_csp_safe_uri("http://127.0.0.2:9000/cb"));
        assert!(!is_csp_safe_uri("http://128.0.0.1/cb"));
        assert!(!is_csp_safe_uri("https://a.example/cb; script-src *"));
        assert!(!is_csp_safe_uri("https://a.example/c b"));
        assert!(!is_csp_safe_uri("https://a.example/\"x"));
    }
}
