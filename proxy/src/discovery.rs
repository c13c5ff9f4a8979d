//! The OP's discovery document, read through the upstream: at start, on the key-refresh
//! schedule, and again within seconds after a failed read. The paths where the OP takes
//! authorization requests (its `authorization_endpoint`, its PAR endpoint) are filtered on top of
//! `authorize.paths` (README "Authorize paths follow the OP"). The proxy never filters less than
//! configured: without a document it filters the configured paths (and any it discovered before).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use filters::discovery::OpEndpoints;
use filters::policy::path_is_one_of;
use http::header;
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::DiscoveryPlan;
use crate::metrics::Metrics;
use crate::schedule::Schedule;
use crate::upstream_client::UpstreamClient;

/// A larger document is not a discovery document.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
const FIRST_RETRY: Duration = Duration::from_secs(2);

/// What the last reads found.
#[derive(Default)]
struct Found {
    /// The last document read, kept when a later read fails.
    endpoints: Option<OpEndpoints>,
    /// Discovered paths that `authorize.paths` does not cover: filtered as well.
    unlisted: Vec<String>,
    /// Why the last read failed; `None` after a good one.
    error: Option<String>,
}

pub struct Discovery {
    client: Arc<UpstreamClient>,
    /// Where and how often to read; `host` is the `Host` of the proxy's own request
    /// (`upstream.host_header`, else the TLS name, else the address the OP is reached at).
    plan: DiscoveryPlan,
    found: ArcSwap<Found>,
    /// The first read has ended, well or not: `/readyz` waits for it, so that no request is
    /// served before the OP's own authorize path is known.
    first_read_done: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Discovery {
    pub fn new(
        client: Arc<UpstreamClient>,
        plan: DiscoveryPlan,
        metrics: Arc<Metrics>,
    ) -> Discovery {
        Discovery {
            client,
            plan,
            found: ArcSwap::from_pointee(Found::default()),
            first_read_done: AtomicBool::new(false),
            metrics,
        }
    }

    /// Whether `path` is one of the OP's discovered authorize paths that the configuration
    /// does not list (those it lists are `Policy::is_authorize_path`'s).
    pub fn is_unlisted_authorize_path(&self, path: &str) -> bool {
        let found = self.found.load();
        !found.unlisted.is_empty() && path_is_one_of(&found.unlisted, path)
    }

    /// The OP's issuer, from the last document read.
    pub fn issuer(&self) -> Option<String> {
        self.found.load().endpoints.as_ref()?.issuer.clone()
    }

    pub fn first_read_done(&self) -> bool {
        self.first_read_done.load(Ordering::Acquire)
    }

    /// `/readyz`'s line about discovery.
    pub fn status_line(&self) -> String {
        let found = self.found.load();
        let state = match (&found.error, &found.endpoints) {
            (None, Some(_)) => "read".to_string(),
            (Some(e), Some(_)) => format!("last read failed ({e}); using the previous document"),
            (Some(e), None) => format!("unavailable ({e}); filtering the configured paths only"),
            (None, None) => "not read yet".to_string(),
        };
        let unlisted = if found.unlisted.is_empty() {
            String::new()
        } else {
            format!(
                "; NOT in authorize.paths, filtered while discovery is read: {}",
                found.unlisted.join(", ")
            )
        };
        format!("discovery {}: {state}{unlisted}", self.plan.path)
    }

    async fn read(&self) -> Result<OpEndpoints, String> {
        let mut request = RequestHeader::build("GET", self.plan.path.as_bytes(), None)
            .map_err(|e| e.to_string())?;
        request
            .insert_header(header::HOST, self.plan.host.as_str())
            .and_then(|()| request.insert_header(header::ACCEPT, "application/json"))
            .and_then(|()| request.insert_header(header::ACCEPT_ENCODING, "identity"))
            .map_err(|e| e.to_string())?;
        let read = tokio::time::timeout(
            self.plan.fetch_timeout,
            self.client.fetch(request, MAX_DOCUMENT_BYTES),
        )
        .await
        .map_err(|_| "timed out".to_string())?;
        let fetched = read
            .map_err(|e| e.to_string())?
            .ok_or("larger than 1 MiB")?;
        if fetched.head.status != http::StatusCode::OK {
            return Err(format!("answered {}", fetched.head.status.as_u16()));
        }
        OpEndpoints::parse(&fetched.body).map_err(|e| e.reason().to_string())
    }

    /// Reads the document once and publishes what it says; true when it was read.
    async fn refresh(&self) -> bool {
        let result = self.read().await;
        let previous = self.found.load_full();
        let found = match result {
            Ok(endpoints) => {
                let unlisted = endpoints.unlisted(&self.plan.configured);
                if unlisted != previous.unlisted || previous.endpoints.is_none() {
                    self.announce(&endpoints, &unlisted);
                }
                Found {
                    endpoints: Some(endpoints),
                    unlisted,
                    error: None,
                }
            }
            Err(error) => {
                tracing::warn!(path = %self.plan.path, %error, "the OP's discovery document could not be read; authorize paths: the configured ones and any discovered before");
                Found {
                    endpoints: previous.endpoints.clone(),
                    unlisted: previous.unlisted.clone(),
                    error: Some(error),
                }
            }
        };
        let ok = found.error.is_none();
        self.metrics.discovery_up.set(i64::from(ok));
        self.metrics
            .authorize_paths_unlisted
            .set(found.unlisted.len() as i64);
        self.found.store(Arc::new(found));
        self.first_read_done.store(true, Ordering::Release);
        ok
    }

    fn announce(&self, endpoints: &OpEndpoints, unlisted: &[String]) {
        let authorization = endpoints.authorization_path.as_deref().unwrap_or_default();
        if unlisted.is_empty() {
            tracing::info!(
                authorization_endpoint = authorization,
                "the OP's authorize paths are in authorize.paths"
            );
        } else {
            tracing::warn!(
                authorization_endpoint = authorization,
                unlisted = %unlisted.join(", "),
                "the OP takes authorization requests at paths authorize.paths does not list: they are filtered while its discovery can be read; add them to authorize.paths"
            );
        }
    }
}

/// Reads the discovery document for as long as the proxy runs.
pub struct DiscoveryRefresher(pub Arc<Discovery>);

#[async_trait]
impl BackgroundService for DiscoveryRefresher {
    async fn start(&self, shutdown: ShutdownWatch) {
        let discovery = &self.0;
        let schedule = Schedule {
            period: discovery.plan.refresh,
            first_retry: FIRST_RETRY,
        };
        schedule.run(shutdown, || discovery.refresh()).await;
    }
}
