//! When the proxy reads what it keeps fresh (Microsoft's key sets, the OP's discovery): every
//! period after a good read, jittered by ±10 % so that a fleet does not read in step; after a
//! failure sooner, backing off exponentially up to a minute (or the period, if shorter).

use std::future::Future;
use std::time::Duration;

use pingora::server::ShutdownWatch;
use rand::Rng;

/// A source that comes back is noticed within this time.
const MAX_RETRY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub period: Duration,
    pub first_retry: Duration,
}

impl Schedule {
    /// Runs `read` (true: a good read) until shutdown.
    pub async fn run<F, Fut>(self, mut shutdown: ShutdownWatch, mut read: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let cap = MAX_RETRY.min(self.period);
        let mut retry = self.first_retry.min(cap);
        loop {
            let wait = if read().await {
                retry = self.first_retry.min(cap);
                jittered(self.period)
            } else {
                let wait = retry;
                retry = (retry * 2).min(cap);
                wait
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
