//! The error renderer. Input: byte 0 picks the error (and so the description), byte 1 the
//! redirect URI (one of the configured ones, or, for values >= 4, the input's first line when it
//! is a CSP-safe URI) and whether a state is present (bit 7); the rest is the state. The page
//! passes `check_page`, `escape_html` leaves none of `<>"'`, and the JSON form parses.
#![no_main]

use filters::invariants::{check_escape_html, check_page, fixture};
use filters::render::{form_post_error, is_csp_safe_uri, json_error};
use filters::AuthorizeError;
use libfuzzer_sys::fuzz_target;

const PARAMS: [&str; 4] = ["state", "client_id", "redirect_uri", "id_token_hint"];

fn error(byte: u8) -> AuthorizeError {
    use AuthorizeError::*;
    let i = usize::from(byte);
    let name = PARAMS[(i / 3) % PARAMS.len()];
    match AuthorizeError::EXAMPLES[i % AuthorizeError::EXAMPLES.len()] {
        MissingParameter(_) => MissingParameter(name),
        DuplicateParameter(_) => DuplicateParameter(name),
        ParameterInQuery(_) => ParameterInQuery(name),
        other => other,
    }
}

fuzz_target!(|data: &[u8]| {
    let (&[error_byte, uri_byte], rest) = data.split_at(data.len().min(2)) else {
        return;
    };
    let error = error(error_byte);
    let text = String::from_utf8_lossy(rest);
    let configured = [
        fixture::GLOBAL_REDIRECT,
        fixture::USGOV_REDIRECT,
        fixture::CHINA_REDIRECT,
        fixture::LAB_REDIRECT,
    ];
    let (uri, state) = match usize::from(uri_byte & 0x7f) {
        i if i < configured.len() => (configured[i], text.as_ref()),
        _ => match text.split_once('\n') {
            Some((uri, state)) if is_csp_safe_uri(uri) => (uri, state),
            _ => (configured[0], text.as_ref()),
        },
    };
    let state = (uri_byte & 0x80 == 0).then_some(state);

    let page = form_post_error(uri, error, state);
    check_page(&page, uri, error, state);
    check_escape_html(&text);

    let json: serde_json::Value =
        serde_json::from_slice(&json_error(error).body).expect("the JSON error parses");
    assert_eq!(json["error"], error.oauth_error().code());
    assert_eq!(json["error_description"], error.description());
});
