//! The admin listener: `/metrics`, `/healthz` (the process is up) and `/readyz` (every cloud
//! in use has a usable key set and at least one upstream is healthy).
//! It is a separate listener, never reachable through the proxy port.

use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use std::sync::Arc;

use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;

use crate::discovery::Discovery;
use crate::keystore::KeyStores;
use crate::metrics::Metrics;
use crate::unix_now;

pub struct Admin {
    pub keys: KeyStores,
    pub metrics: Arc<Metrics>,
    pub upstreams: Arc<LoadBalancer<RoundRobin>>,
    pub discovery: Option<Arc<Discovery>>,
}

impl Admin {
    /// Why the proxy cannot serve sign-ins yet; `None` when it can.
    fn not_ready(&self) -> Option<String> {
        let now = unix_now();
        let missing: Vec<&str> = self
            .keys
            .0
            .iter()
            .filter(|s| !s.is_usable(now))
            .map(|s| s.cloud.as_str())
            .collect();
        if !missing.is_empty() {
            return Some(format!("no usable key set for {}", missing.join(", ")));
        }
        let backends = self.upstreams.backends();
        if !backends.get_backend().iter().any(|b| backends.ready(b)) {
            return Some("no healthy upstream".into());
        }
        if self
            .discovery
            .as_ref()
            .is_some_and(|d| !d.first_read_done())
        {
            return Some("the OP's discovery document is being read".into());
        }
        None
    }

    /// The body of `/readyz`: the verdict, then what the proxy knows of the OP's authorize paths.
    fn readiness(&self) -> (u16, String) {
        let (status, mut body) = match self.not_ready() {
            None => (200, "ready\n".to_string()),
            Some(why) => (503, format!("not ready: {why}\n")),
        };
        if let Some(discovery) = &self.discovery {
            body.push_str(&discovery.status_line());
            body.push('\n');
        }
        (status, body)
    }

    fn metrics(&self) -> http::Response<Vec<u8>> {
        let now = unix_now();
        for store in &self.keys.0 {
            let age = store.age(now).map_or(-1.0, |a| a as f64);
            self.metrics
                .jwks_age
                .with_label_values(&[store.cloud.as_str()])
                .set(age);
        }
        let (content_type, body) = self.metrics.render();
        http::Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .header(http::header::CACHE_CONTROL, "no-store")
            .body(body)
            .expect("static response parts are valid")
    }
}

fn text(status: u16, body: &str) -> http::Response<Vec<u8>> {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body.as_bytes().to_vec())
        .expect("static response parts are valid")
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return text(405, "method not allowed\n");
        }
        match req.uri.path() {
            "/metrics" => self.metrics(),
            "/healthz" => text(200, "ok\n"),
            "/readyz" => {
                let (status, body) = self.readiness();
                text(status, &body)
            }
            _ => text(404, "not found\n"),
        }
    }
}
