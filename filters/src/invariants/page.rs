//! The form_post error page: what [`check_page`] asserts, and the readers it (and the tests of
//! `authorize`) take a page apart with.

use crate::error::AuthorizeError;
use crate::render::{escape_html, form_post_error, ErrorResponse};

/// Checks a form_post error page rendered for `redirect_uri`, `error` and `state`: it has
/// exactly as many `<`, `>`, `"` and `'` as the template with a benign state (so nothing of the
/// input reached it unescaped), its headers are the template's, it posts to `redirect_uri`, and
/// its hidden fields unescape to exactly the error code, the fixed description and the state.
pub fn check_page(
    page: &ErrorResponse,
    redirect_uri: &str,
    error: AuthorizeError,
    state: Option<&str>,
) {
    let template = form_post_error(redirect_uri, error, state.map(|_| "x"));
    assert_eq!(page.status, 200, "a form_post page is a 200");
    assert_eq!(
        page.headers, template.headers,
        "the page's headers depend on its input"
    );
    let body = std::str::from_utf8(&page.body).expect("the page is UTF-8");
    let benign = std::str::from_utf8(&template.body).expect("the template is UTF-8");
    let specials = |text: &str| {
        let mut counts = [0usize; 4];
        for b in text.bytes() {
            match b {
                b'<' => counts[0] += 1,
                b'>' => counts[1] += 1,
                b'"' => counts[2] += 1,
                b'\'' => counts[3] += 1,
                _ => {}
            }
        }
        counts
    };
    assert_eq!(
        specials(body),
        specials(benign),
        "the page's count of < > \" ' differs from the template's: input reached it \
         unescaped\n{body}"
    );
    assert_eq!(
        form_action(body).as_deref(),
        Some(redirect_uri),
        "the form posts elsewhere"
    );
    let mut expected = vec![
        ("error".to_string(), error.oauth_error().code().to_string()),
        ("error_description".to_string(), error.description()),
    ];
    if let Some(state) = state {
        expected.push(("state".to_string(), state.to_string()));
    }
    assert_eq!(
        hidden_fields(body),
        expected,
        "the hidden fields do not carry exactly the error and the state"
    );
}

/// `escape_html` leaves none of `<>"'` and loses nothing: unescaping gives the input back.
pub fn check_escape_html(input: &str) {
    let escaped = escape_html(input);
    assert!(
        !escaped.contains(['<', '>', '"', '\'']),
        "escape_html({input:?}) = {escaped:?}"
    );
    assert_eq!(unescape_html(&escaped), input, "escape_html is lossy");
}

pub(crate) fn header<'r>(response: &'r ErrorResponse, name: &str) -> Option<&'r str> {
    response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

pub(crate) fn unescape_html(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

pub(crate) fn form_action(html: &str) -> Option<String> {
    let (_, rest) = html.split_once("<form method=\"post\" action=\"")?;
    Some(unescape_html(rest.split_once('"')?.0))
}

/// The hidden inputs of a form_post page, unescaped, in order.
pub(crate) fn hidden_fields(html: &str) -> Vec<(String, String)> {
    html.split("<input type=\"hidden\" name=\"")
        .skip(1)
        .map(|rest| {
            let (name, rest) = rest.split_once('"').unwrap_or_default();
            let value = rest.strip_prefix(" value=\"").unwrap_or_default();
            let (value, _) = value.split_once('"').unwrap_or_default();
            (unescape_html(name), unescape_html(value))
        })
        .collect()
}
