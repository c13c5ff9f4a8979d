//! The admin listener: `/metrics`, `/healthz` (the process is up) and `/readyz` (key sets
//! usable).
//! It is a separate listener, never reachable through the proxy port.

use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use std::sync::Arc;

use crate::keystore::KeyStores;
use crate::metrics::Metrics;
use crate::unix_now;

pub struct Admin {
    pub keys: KeyStores,
    pub metrics: Arc<Metrics>,
}

impl Admin {
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
            "/readyz" if self.keys.all_usable(unix_now()) => text(200, "ready\n"),
            "/readyz" => {
                let missing: Vec<&str> = self
                    .keys
                    .0
                    .iter()
                    .filter(|s| !s.is_usable(unix_now()))
                    .map(|s| s.cloud.as_str())
                    .collect();
                text(
                    503,
                    &format!("not ready: no usable key set for {}\n", missing.join(", ")),
                )
            }
            _ => text(404, "not found\n"),
        }
    }
}
