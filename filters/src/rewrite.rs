//! The rewritten Entra request (README "How a request is handled", step 7): what the upstream receives for a valid hint.

use serde_json::Value;

use crate::hint::HintIdentity;
use crate::params::{push_encoded, push_renamed, Params};
use crate::policy::AuthorizeSettings;

/// The hint's claims every accepted request carries as `<param_prefix><claim>`, in this order
/// (README "How a request is handled", step 7); `preferred_username` only when the hint has it.
pub const IDENTITY_CLAIMS: [&str; 5] = ["iss", "tid", "oid", "preferred_username", "sub"];

/// Renames `id_token_hint`, forces `prompt=login`, and appends the hint's identity.
/// Untouched pairs keep their order, and their bytes unless `Param::push_forwarded` re-encodes them. The identity parameters are named with
/// `param_prefix`, the same prefix that is stripped from clients, so the upstream can trust them.
pub fn rewrite_entra(
    params: &Params<'_>,
    identity: &HintIdentity,
    settings: &AuthorizeSettings,
) -> String {
    let mut out =
        String::with_capacity(params.iter().map(|p| p.raw.len() + 1).sum::<usize>() + 512);
    let mut prompt_set = false;
    for param in params.iter() {
        match param.name.as_ref() {
            "id_token_hint" => push_renamed(&mut out, &settings.hint_param, param.raw_value),
            "prompt" if settings.force_prompt_login => {
                push_encoded(&mut out, "prompt", "login");
                prompt_set = true;
            }
            _ => param.push_forwarded(&mut out),
        }
    }
    if settings.force_prompt_login && !prompt_set {
        push_encoded(&mut out, "prompt", "login");
    }

    let prefix = &settings.param_prefix;
    let mut name = String::with_capacity(prefix.len() + "preferred_username".len());
    let mut push_identity = |suffix: &str, value: &str| {
        name.clear();
        name.push_str(prefix);
        name.push_str(suffix);
        push_encoded(&mut out, &name, value);
    };
    let values = [
        Some(identity.iss()),
        Some(identity.tid()),
        Some(identity.oid()),
        identity.preferred_username(),
        Some(identity.sub()),
    ];
    for (claim, value) in IDENTITY_CLAIMS.into_iter().zip(values) {
        if let Some(value) = value {
            push_identity(claim, value);
        }
    }

    for extra in &settings.extra_claims {
        match identity.claim(&extra.claim) {
            Some(Value::String(s)) => push_encoded(&mut out, &extra.param, s),
            Some(other) => push_encoded(&mut out, &extra.param, &other.to_string()),
            None => {}
        }
    }
    out
}
