//! The TOML configuration (README "Configuration reference"), in two steps: `schema` (the
//! tables and their defaults) → `Config::validate` (every rule, giving a `Validated`
//! configuration and the request logic's `filters::Policy`).
//!
//! Errors name the key path (`apps[1].cloud`, `server.bogus`) and the reason, so that
//! `eam-proxy --check` can tell an operator exactly what to fix.

mod error;
mod schema;
mod validate;
mod validated;

pub use error::ConfigError;
pub use schema::{
    App, Authorize, Cloud, Config, GuardMode, Jwks, Log, LogFormat, Server, Upstream, X5cInjection,
};
pub use validate::Validate;
pub use validated::{KeySource, Validated};

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
