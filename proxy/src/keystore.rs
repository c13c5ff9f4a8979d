//! Key sets of the clouds in use: fetched at start-up and refreshed in the background,
//! published as lock-free snapshots that the request path reads.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use filters::{KeyLookup, KeySet};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rand::Rng;

use crate::config::KeySource;
use crate::unix_now;

/// A hostile or broken key endpoint must not be able to exhaust memory.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// First retry delay after a failed fetch; doubles up to the refresh interval.
const FIRST_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct KeyStoreSettings {
    pub refresh: Duration,
    pub fetch_timeout: Duration,
    pub max_stale_seconds: u64,
}

/// The key set of one cloud and where it comes from.
pub struct KeyStore {
    pub cloud: String,
    source: KeySource,
    current: ArcSwapOption<KeySet>,
    http: reqwest::Client,
    settings: KeyStoreSettings,
}

impl KeyStore {
    pub fn new(
        cloud: String,
        source: KeySource,
        http: reqwest::Client,
        settings: KeyStoreSettings,
    ) -> Self {
        KeyStore {
            cloud,
            source,
            current: ArcSwapOption::empty(),
            http,
            settings,
        }
    }

    pub fn snapshot(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
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
        let bytes = match &self.source {
            KeySource::Url(url) => self.fetch(url).await?,
            KeySource::File(path) => read_file(path).await?,
        };
        let set = KeySet::from_jwks(&bytes, unix_now()).map_err(|e| e.to_string())?;
        let (keys, skipped) = (set.len(), set.skipped);
        self.current.store(Some(Arc::new(set)));
        tracing::info!(cloud = %self.cloud, source = %self.source, keys, skipped, "key set loaded");
        Ok(keys)
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
    /// Ready when every cloud in use has a usable key set.
    pub fn all_usable(&self, now: u64) -> bool {
        self.0.iter().all(|s| s.is_usable(now))
    }
}

impl KeyLookup for KeyStores {
    fn key_set(&self, cloud: &str) -> Option<Arc<KeySet>> {
        self.0
            .iter()
            .find(|s| s.cloud == cloud)
            .and_then(|s| s.snapshot())
    }
}

/// Background refresh of one store: at start, then every `refresh` (±10 % jitter so a fleet
/// does not hit Microsoft in step); after a failure, sooner, with exponential back-off.
pub struct KeyRefresher(pub Arc<KeyStore>);

#[async_trait]
impl BackgroundService for KeyRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let store = &self.0;
        let mut retry = FIRST_RETRY;
        loop {
            let wait = match store.refresh().await {
                Ok(_) => {
                    retry = FIRST_RETRY;
                    jittered(store.settings.refresh)
                }
                Err(error) => {
                    tracing::warn!(cloud = %store.cloud, source = %store.source, %error, "key set refresh failed; keeping the last good set");
                    let wait = retry.min(store.settings.refresh);
                    retry = (retry * 2).min(store.settings.refresh);
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

fn jittered(base: Duration) -> Duration {
    let factor = rand::rng().random_range(0.9..=1.1);
    base.mul_f64(factor)
}
