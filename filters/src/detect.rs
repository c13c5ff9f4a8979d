//! Which authorize requests come from Entra's EAM flow (README "How a request is handled", step 3).

use crate::params::Params;
use crate::policy::{DetectMode, Policy};

/// Any `client_id` value counts, so repeating the parameter cannot dodge detection (the
/// duplicate is then refused). Detection runs after spoofed parameters are stripped.
pub fn is_entra(policy: &Policy, params: &Params<'_>) -> bool {
    let by_client_id = || params.all("client_id").any(|id| policy.app(id).is_some());
    let by_request_id = || params.contains("client-request-id");
    match policy.authorize.detect {
        DetectMode::ClientId => by_client_id(),
        DetectMode::ClientRequestId => by_request_id(),
        DetectMode::Either => by_client_id() || by_request_id(),
        DetectMode::Both => by_client_id() && by_request_id(),
    }
}
