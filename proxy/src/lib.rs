//! eam-proxy's parts, for its binary (`main.rs`: the command line, and the server assembled
//! from a `config::Plan`) and for their own unit tests. Pingora glue lives here; the request
//! logic is the `filters` crate's.

pub mod admin;
pub mod cert;
pub mod config;
mod content_coding;
pub mod deadline;
pub mod decision_log;
pub mod discovery;
pub mod doctor;
mod failure;
mod forwarded;
pub mod heap;
mod hop;
pub mod inject;
pub mod keystore;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod response_guard;
mod schedule;
pub mod service;
pub mod tls;
pub mod upstream_client;

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch: the proxy's only clock for token validation.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
