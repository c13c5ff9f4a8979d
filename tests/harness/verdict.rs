//! What the proxy did with a request, read from the answer the client got: most tests assert
//! that, before they look at what the upstream received.

use crate::html::parse_html_form;
use crate::http::Response;
use crate::GLOBAL_REDIRECT;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forwarded: the answer is the upstream's, marked `X-Upstream: yes` (see
    /// [`Reply::ok`](crate::Reply::ok)).
    Forwarded,
    /// A form_post error page to Entra, made by the proxy: its `error` field and its form's
    /// action.
    FormPost { error: String, action: String },
    /// Any other answer: its status and the `error` of its JSON body (empty when there is
    /// none).
    Status { status: u16, error: String },
}

impl Verdict {
    pub fn form_post(error: &str, action: &str) -> Verdict {
        Verdict::FormPost {
            error: error.to_string(),
            action: action.to_string(),
        }
    }

    /// An Entra request refused for its hint: `invalid_request` posted back to Entra's
    /// redirect_uri of the global cloud.
    pub fn refused() -> Verdict {
        Verdict::form_post("invalid_request", GLOBAL_REDIRECT)
    }

    pub fn status(status: u16, error: &str) -> Verdict {
        Verdict::Status {
            status,
            error: error.to_string(),
        }
    }
}

impl Response {
    /// Asserts the upstream's own `200`, not an answer made up by the proxy.
    pub fn assert_upstream_ok(&self) {
        assert_eq!(self.status, 200, "{}", self.describe());
        assert_eq!(self.verdict(), Verdict::Forwarded, "{}", self.describe());
    }

    pub fn verdict(&self) -> Verdict {
        if self.header("x-upstream") == Some("yes") {
            return Verdict::Forwarded;
        }
        if self.status == 200 {
            if let Some(form) = parse_html_form(&self.text()) {
                return Verdict::form_post(form.field("error").unwrap_or_default(), &form.action);
            }
        }
        let error = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|body| body["error"].as_str().map(str::to_string))
            .unwrap_or_default();
        Verdict::Status {
            status: self.status,
            error,
        }
    }
}
