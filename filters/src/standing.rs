//! A client's standing under the abuse limits (README "Abuse limits"). The proxy counts, per
//! client and window, the Entra requests that failed validation and the key fetches they set
//! off; this module only says which outcomes count and carries what the proxy found, so the
//! refusal itself is made by the decision core like every other.

use crate::authorize::{Outcome, Summary};
use crate::error::AuthorizeError;

/// The limits a client can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Entra requests refused for their hint or their parameters.
    FailedValidations,
    /// Entra requests whose hint named a `kid` the key set lacked, each a key fetch.
    KeyRefetches,
}

impl Limit {
    pub const ALL: [Limit; 2] = [Limit::FailedValidations, Limit::KeyRefetches];

    /// Stable label value (`eam_rate_limited_total{limit}`).
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::FailedValidations => "failed_validations",
            Limit::KeyRefetches => "key_refetches",
        }
    }
}

/// A limit the client has reached in the current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub limit: Limit,
    /// Seconds until the window that holds the client's count ends (`Retry-After`), at least 1.
    pub retry_after: u64,
}

impl Summary {
    /// Whether this ruling counts against the client's failed-validation limit: an Entra request
    /// refused for what the client sent. Missing keys are the proxy's trouble, and a refusal by
    /// the limit itself costs nothing, so neither counts.
    pub fn counts_as_failure(&self) -> bool {
        self.entra
            && self.outcome == Outcome::Rejected
            && !matches!(
                self.error,
                None | Some(AuthorizeError::KeysUnavailable | AuthorizeError::RateLimited(_))
            )
    }
}
