//! A deadline on each request head.
//!
//! Pingora bounds every read of a request head by its own 60 s, never the head as a whole, so a
//! client sending one header byte a minute (slowloris) holds a connection for days; and it waits
//! for the next request on a kept-alive HTTP/1.1 connection forever. This wrapper around the
//! proxy application gives each request until `client_header_timeout_ms` to deliver its head
//! (after up to `keepalive_timeout_ms` of idling on a reused connection, as nginx does); the proxy
//! marks the head as read (`head_read`, from `new_ctx`, which Pingora calls right after parsing
//! it), and the deadline stops mattering from then on.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::v2::server::H2Options;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;

tokio::task_local! {
    static HEAD_READ: AtomicBool;
}

/// Called once the request head is parsed.
pub fn head_read() {
    // Outside a deadline scope (never in the proxy) there is nothing to stop.
    let _ = HEAD_READ.try_with(|read| read.store(true, Ordering::Relaxed));
}

/// The marker `persist_connection_context` leaves on a connection kept alive for reuse.
pub struct KeptAlive;

pub fn kept_alive_marker() -> Box<dyn Any + Send + Sync> {
    Box::new(KeptAlive)
}

pub struct HeadDeadline<A> {
    inner: Arc<A>,
    limit: Duration,
    /// The idle wait for the next request on a kept-alive connection: not the client's head
    /// being slow, so a reused connection gets it on top of the deadline.
    keepalive: Duration,
}

impl<A> HeadDeadline<A> {
    pub fn new(inner: A, limit: Duration, keepalive: Duration) -> Self {
        HeadDeadline {
            inner: Arc::new(inner),
            limit,
            keepalive,
        }
    }
}

#[async_trait]
impl<A> HttpServerApp for HeadDeadline<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // The context is the inner application's: look at it and put it back.
        let context = session.take_connection_user_context();
        let reused = context.as_ref().is_some_and(|c| c.is::<KeptAlive>());
        session.set_connection_user_context(context);
        let limit = if reused {
            self.keepalive + self.limit
        } else {
            self.limit
        };
        HEAD_READ
            .scope(AtomicBool::new(false), async {
                let request = self.inner.process_new_http(session, shutdown);
                let deadline = async {
                    tokio::time::sleep(limit).await;
                    if HEAD_READ.with(|read| read.load(Ordering::Relaxed)) {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    biased;
                    reusable = request => reusable,
                    () = deadline => {
                        tracing::debug!(?limit, "request head not complete in time; connection closed");
                        None
                    }
                }
            })
            .await
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        self.inner.http_cleanup().await
    }
}
