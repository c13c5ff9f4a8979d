//! The TOML configuration (README "Configuration reference"), in three steps:
//! `schema` (the tables and their defaults) → `Config::validate` (every rule, giving a
//! `Validated` configuration and the request logic's `filters::Policy`) → `Validated::plan`
//! (the server's parts: Pingora's settings, listeners, upstream, key sets, the proxy's own).
//!
//! Errors name the key path (`apps[1].cloud`, `server.bogus`) and the reason, so that
//! `eam-proxy --check` can tell an operator exactly what to fix.

mod error;
mod plan;
mod schema;
mod upstream;
mod validate;
mod validated;

pub use error::{CaProblem, ConfigError, PlanError};
pub use plan::{
    DiscoveryPlan, GuardPlan, KeySets, Launch, Listeners, Plan, ProxyPlan, TlsListeners,
};
pub use schema::{
    App, Authorize, Cloud, Config, GuardMode, Jwks, Limits, Log, LogFormat, Server, Upstream,
    X5cInjection,
};
pub use upstream::UpstreamPlan;
pub use validate::Validate;
pub use validated::{KeySource, Validated};

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;

#[cfg(test)]
mod example_tests;

#[cfg(test)]
mod plan_tests;
