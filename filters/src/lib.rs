//! All request logic of eam-proxy, free of I/O: parameters, a key set and `now` go in, an
//! [`AuthorizeDecision`] comes out. Nothing here knows about Pingora, sockets or clocks, so every
//! rule of the product specification is tested (and fuzzed) with plain values.
//!
//! One module per concern: [`params`] (form codec), [`policy`] (validated configuration),
//! [`keys`] (parsed key sets), [`hint`] (id_token_hint validation), [`rewrite`] (what the
//! upstream receives), [`render`] (error responses), [`error`] (reasons), [`request`] (the
//! request's head and the rules on it), [`detect`] (which
//! requests are Entra's), [`authorize`] (the decision that ties them together), and [`guard`]
//! (the OP's answer to Entra, checked as Entra will check it), with [`sealed`] (its expectation
//! sealed into a cookie for another replica); [`discovery`] reads the OP's endpoints that take
//! authorization requests.

mod acr_request;
pub mod authorize;
pub mod detect;
pub mod discovery;
pub mod doctor;
pub mod error;
pub mod guard;
pub mod headers;
pub mod hint;
mod jws;
pub mod keys;
pub mod params;
pub mod policy;
pub mod render;
pub mod request;
pub mod rewrite;
pub mod sealed;
pub mod standing;
pub mod x5c;

// The fuzz targets in `fuzz/` reach the property checks through this (cargo-fuzz builds with
// `--cfg fuzzing`); not part of the supported API.
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod invariants;

pub use authorize::{
    AuthorizeDecision, KeyFetch, Outcome, Progress, Ruling, Step, Summary, MAX_PARAMETERS,
};
pub use error::{AuthorizeError, OAuthError};
pub use guard::{
    AnswerContext, EntraFormPost, Expectation, GuardVerdict, Remembered, ResponseGuard, Scope,
    Violation,
};
pub use headers::HeaderPolicy;
pub use hint::{HintIdentity, HintValidator};
pub use keys::{KeyLookup, KeySet, KeySetError, VerifyingKey};
pub use policy::{
    AppPolicy, AuthorizeSettings, CloudPolicy, DetectMode, ErrorDelivery, ExtraClaim, Policy,
};
pub use render::ErrorResponse;
pub use request::{
    is_form_content_type, AuthorizeRequest, Field, Framing, Method, FORM_CONTENT_TYPE,
};
pub use standing::{Exceeded, Limit};
