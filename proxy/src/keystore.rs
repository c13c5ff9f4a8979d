//! Key sets of the clouds in use: fetched at start-up and refreshed in the background,
//! published as lock-free snapshots that the request path reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use filters::{KeyFetch, KeyLookup, KeySet};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::KeySource;
use crate::metrics::Metrics;
use crate::schedule::Schedule;
use crate::unix_now;

/// A hostile or broken key endpoint must not be able to exhaust memory.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// First retry delay after a failed fetch (`Schedule`).
const FIRST_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct KeyStoreSettings {
    pub refresh: Duration,
    /// Least time between two fetches triggered by an unknown `kid`.
    pub min_refetch: Duration,
    pub fetch_timeout: Duration,
    pub max_stale_seconds: u64,
}

/// The key set of one cloud and where it comes from.
pub struct KeyStore {
    pub cloud: String,
    source: KeySource,
    current: ArcSwapOption<KeySet>,
    /// When the last on-demand fetch started (milliseconds on the store's own clock).
    last_refetch_ms: AtomicU64,
    /// Monotonic origin of `last_refetch_ms`.
    created: std::time::Instant,
    /// Single flight for fetches triggered by unknown kids.
    refetch: tokio::sync::Mutex<()>,
    http: reqwest::Client,
    settings: KeyStoreSettings,
    metrics: Arc<Metrics>,
}

impl KeyStore {
    pub fn new(
        cloud: String,
        source: KeySource,
        http: reqwest::Client,
        settings: KeyStoreSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        KeyStore {
            cloud,
            source,
            current: ArcSwapOption::empty(),
            last_refetch_ms: AtomicU64::new(u64::MAX),
            created: std::time::Instant::now(),
            refetch: tokio::sync::Mutex::new(()),
            http,
            settings,
            metrics,
        }
    }

    pub fn snapshot(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
    }

    /// Seconds since the current set was loaded; `None` when none ever was.
    pub fn age(&self, now: u64) -> Option<u64> {
        self.current.load().as_ref().map(|set| set.age(now))
    }

    /// Keys exist and are not older than `max_stale_seconds`.
    pub fn is_usable(&self, now: u64) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|set| set.is_usable(now, self.settings.max_stale_seconds))
    }

    /// Loads the set once and publishes it; on failure the previous set stays in place.
    pub async fn refresh(&self) -> Result<usize, String> {
        let result = self.load().await;
        let label = if result.is_ok() { "success" } else { "failure" };
        self.metrics
            .jwks_refresh
            .with_label_values(&[self.cloud.as_str(), label])
            .inc();
        result
    }

    async fn load(&self) -> Result<usize, String> {
        let bytes = match &self.source {
            KeySource::Url(url) => self.fetch(url).await?,
            KeySource::File(path) => read_file(path).await?,
        };
        let set = KeySet::from_jwks(&bytes, unix_now()).map_err(|e| e.to_string())?;
        self.metrics
            .jwks_keys
            .with_label_values(&[self.cloud.as_str()])
            .set(set.len() as i64);
        let (keys, skipped) = (set.len(), set.skipped);
        self.current.store(Some(Arc::new(set)));
        tracing::info!(cloud = %self.cloud, source = %self.source, keys, skipped, "key set loaded");
        Ok(keys)
    }

    /// Called when a hint names a `kid` the current set lacks (Microsoft rotated its keys), or
    /// (`kid` = `None`) when no usable set exists. Concurrent callers share one fetch; fetches
    /// are at least `min_refetch` apart, so a flood of made-up kids costs the key endpoint
    /// nothing.
    pub async fn refetch_on_demand(&self, kid: Option<&str>) {
        // Another request's fetch may have published it since this one decided.
        if self.has(kid) {
            return;
        }
        let wait = self.settings.fetch_timeout + Duration::from_millis(100);
        let Ok(_flight) = tokio::time::timeout(wait, self.refetch.lock()).await else {
            return;
        };
        if self.has(kid) {
            return;
        }
        let now_ms = self.created.elapsed().as_millis() as u64;
        let last = self.last_refetch_ms.load(Ordering::Relaxed);
        if last != u64::MAX
            && now_ms.saturating_sub(last) < self.settings.min_refetch.as_millis() as u64
        {
            return;
        }
        self.last_refetch_ms.store(now_ms, Ordering::Relaxed);
        if let Err(error) = self.refresh().await {
            tracing::warn!(cloud = %self.cloud, source = %self.source, %error, "key set refetch on demand failed");
        }
    }

    /// A usable set is published and, when `kid` is given, holds it.
    fn has(&self, kid: Option<&str>) -> bool {
        let current = self.current.load();
        current.as_ref().is_some_and(|set| {
            set.is_usable(unix_now(), self.settings.max_stale_seconds)
                && kid.is_none_or(|kid| set.get(kid).is_some())
        })
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        let request = self
            .http
            .get(url)
            .header("accept", "application/json")
            .timeout(self.settings.fetch_timeout)
            .send();
        let mut response = request.await.map_err(|e| format!("request failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("HTTP status {}", response.status()));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
        {
            return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading body: {e}"))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

async fn read_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_JWKS_BYTES as u64 {
        return Err(format!(
            "{}: larger than {MAX_JWKS_BYTES} bytes",
            path.display()
        ));
    }
    tokio::fs::read(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// All key stores, as the request path sees them.
#[derive(Clone, Default)]
pub struct KeyStores(pub Vec<Arc<KeyStore>>);

impl KeyStores {
    pub fn get(&self, cloud: &str) -> Option<&Arc<KeyStore>> {
        self.0.iter().find(|s| s.cloud == cloud)
    }

    /// The fetch a decision waits for (`KeyStore::refetch_on_demand`).
    pub async fn fetch(&self, wanted: &KeyFetch) {
        if let Some(store) = self.get(&wanted.cloud) {
            store.refetch_on_demand(wanted.kid.as_deref()).await;
        }
    }
}

impl KeyLookup for KeyStores {
    fn key_set(&self, cloud: &str) -> Option<Arc<KeySet>> {
        self.get(cloud).and_then(|s| s.snapshot())
    }
}

/// Background refresh of one store: at start, then every `refresh` (±10 % jitter so a fleet
/// does not hit Microsoft in step); after a failure, sooner, with exponential back-off.
pub struct KeyRefresher(pub Arc<KeyStore>);

#[async_trait]
impl BackgroundService for KeyRefresher {
    async fn start(&self, shutdown: ShutdownWatch) {
        let store = &self.0;
        let schedule = Schedule {
            period: store.settings.refresh,
            first_retry: FIRST_RETRY,
        };
        let read = || async {
            let result = store.refresh().await;
            if let Err(error) = &result {
                tracing::warn!(cloud = %store.cloud, source = %store.source, %error, "key set refresh failed; keeping the last good set");
            }
            result.is_ok()
        };
        schedule.run(shutdown, read).await;
    }
}
