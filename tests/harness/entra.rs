//! Entra's authorize request to the EAM provider, and what the upstream must receive for it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::http::Request;
use crate::proxy::ProxyProcess;
use crate::upstream::Upstream;
use testkit::entra::encode_form;

pub const AUTHORIZE_PATH: &str = "/authorize";

/// Parameters the proxy appends for a valid hint, in README "How a request is handled", step 7 order.
pub const IDENTITY_PARAMS: [&str; 5] = [
    "entra_iss",
    "entra_tid",
    "entra_oid",
    "entra_preferred_username",
    "entra_sub",
];

static SEQUENCE: AtomicU64 = AtomicU64::new(1);

/// A GUID unique within the test run, so that each request's log line can be found by its
/// `client-request-id`.
pub fn new_guid() -> String {
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let pid = u64::from(std::process::id());
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        nanos as u32,
        (pid & 0xffff),
        seq & 0xfff,
        (seq >> 12) & 0xfff,
        (nanos >> 16) & 0xffff_ffff_ffff
    )
}

/// Decodes `application/x-www-form-urlencoded` bytes (a body or a query) into ordered pairs.
pub fn parse_form(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

/// The parameters of Entra's auto-submitted form, in Entra's order.
#[derive(Debug, Clone)]
pub struct EntraRequest {
    pub params: Vec<(String, String)>,
}

impl EntraRequest {
    /// The kit's request for the global app, with a nonce, state and client-request-id of its
    /// own: one proxy serves many requests in a test, and each must be told apart in the log and
    /// in what the upstream received.
    pub fn new(hint: &str) -> EntraRequest {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let request = testkit::EntraRequest {
            nonce: format!("nonce-{}", new_guid()),
            state: format!("opaque-state-{n}"),
            client_request_id: new_guid(),
            ..testkit::EntraRequest::new(hint)
        };
        EntraRequest {
            params: request.pairs(),
        }
    }

    /// Sets a parameter in place, or appends it when absent.
    pub fn with(mut self, name: &str, value: &str) -> EntraRequest {
        match self.params.iter_mut().find(|(n, _)| n == name) {
            Some(pair) => pair.1 = value.to_string(),
            None => self.params.push((name.to_string(), value.to_string())),
        }
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn hint(&self) -> &str {
        self.get("id_token_hint").expect("the request has a hint")
    }

    pub fn client_request_id(&self) -> &str {
        self.get("client-request-id")
            .expect("the request has a client-request-id")
    }

    pub fn encoded(&self) -> String {
        encode_form(&self.params)
    }

    /// Entra's POST to the authorize endpoint.
    pub fn post(&self) -> Request {
        Request::post(AUTHORIZE_PATH).form(&self.encoded())
    }

    /// The same parameters in the query of a GET.
    pub fn get_request(&self) -> Request {
        Request::get(&format!("{AUTHORIZE_PATH}?{}", self.encoded()))
    }
}

fn values<'a>(pairs: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    pairs
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Asserts README "How a request is handled", step 7 on the parameters the upstream received for `sent`, whose hint carries
/// `claims`: the hint renamed, `prompt=login`, the identity appended, every other parameter kept
/// with its value and in its order.
pub fn assert_entra_rewrite(received: &[(String, String)], sent: &EntraRequest, claims: &Value) {
    assert!(
        values(received, "id_token_hint").is_empty(),
        "id_token_hint must not reach the upstream: {received:#?}"
    );
    assert_eq!(
        values(received, "entra_id_token_hint"),
        vec![sent.hint()],
        "entra_id_token_hint must carry the hint once: {received:#?}"
    );
    assert_eq!(
        values(received, "prompt"),
        vec!["login"],
        "prompt=login exactly once: {received:#?}"
    );
    let claim = |name: &str| claims[name].as_str().unwrap_or_default().to_string();
    for (param, claim_name) in
        IDENTITY_PARAMS
            .iter()
            .zip(["iss", "tid", "oid", "preferred_username", "sub"])
    {
        assert_eq!(
            values(received, param),
            vec![claim(claim_name).as_str()],
            "{param} must carry the hint's {claim_name} once: {received:#?}"
        );
    }

    let added: HashSet<&str> = IDENTITY_PARAMS
        .iter()
        .copied()
        .chain(["prompt", "entra_id_token_hint"])
        .collect();
    let kept: Vec<&(String, String)> = received
        .iter()
        .filter(|(n, _)| !added.contains(n.as_str()))
        .collect();
    let expected: Vec<&(String, String)> = sent
        .params
        .iter()
        .filter(|(n, _)| n != "id_token_hint" && n != "prompt")
        .collect();
    assert_eq!(
        kept, expected,
        "every other parameter must keep its value and order"
    );

    let last_original = received
        .iter()
        .rposition(|(n, _)| !IDENTITY_PARAMS.contains(&n.as_str()) && n != "prompt")
        .unwrap_or(0);
    for param in IDENTITY_PARAMS {
        let at = received.iter().position(|(n, _)| n == param).unwrap();
        assert!(
            at > last_original,
            "{param} must be appended after the request's own parameters: {received:#?}"
        );
    }
}

/// Sends Entra's POST of `sent` and asserts that it was forwarded, rewritten for the hint's
/// `claims` (see [`assert_sent_and_forwarded`]).
pub fn assert_forwarded(
    proxy: &ProxyProcess,
    upstream: &Upstream,
    sent: &EntraRequest,
    claims: &Value,
) {
    assert_sent_and_forwarded(proxy, upstream, &sent.post(), sent, claims);
}

/// Sends `request`, which carries the parameters of `sent`, and asserts README "How a request
/// is handled", step 7: forwarded (see [`ProxyProcess::forward`]), rewritten for the hint's
/// `claims`.
pub fn assert_sent_and_forwarded(
    proxy: &ProxyProcess,
    upstream: &Upstream,
    request: &Request,
    sent: &EntraRequest,
    claims: &Value,
) {
    let received = proxy.forward(upstream, request);
    assert_entra_rewrite(&parse_form(&received.body), sent, claims);
}
