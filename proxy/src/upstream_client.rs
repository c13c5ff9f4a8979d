//! The upstream OP as the proxy reaches it: its instances, TLS settings and timeouts, for the
//! requests it proxies and for those it makes itself (a key set it rewrites whole, so that the
//! answer carries a `Content-Length` and an `ETag`). Both go through Pingora's connectors, so
//! they share one TLS stack and trust store.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::prelude::*;
use pingora::protocols::tls::CaType;
use pingora::upstreams::peer::PeerOptions;

/// How the proxy reaches the upstream OP.
pub struct UpstreamSettings {
    pub tls: bool,
    pub sni: String,
    pub verify: bool,
    /// Roots from `upstream.ca_file`, used instead of the system's.
    pub ca: Option<Arc<CaType>>,
    pub host_header: Option<String>,
    pub connect_timeout: Duration,
    /// Time to answer, and between reads of an ordinary response (`upstream.read_timeout_ms`).
    pub read_timeout: Duration,
    /// Each write to the upstream.
    pub send_timeout: Duration,
    /// Between reads of a tunnel or an event stream, either side.
    pub stream_idle_timeout: Duration,
}

/// The upstream's TLS trust: the same for proxied requests, the proxy's own, and the health
/// checks (a check that trusted less would mark a healthy upstream down).
pub fn trust(options: &mut PeerOptions, verify: bool, ca: Option<Arc<CaType>>) {
    options.verify_cert = verify;
    options.verify_hostname = verify;
    options.ca = ca;
}

/// How long a pooled upstream connection may idle.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct UpstreamClient {
    pub balancer: Arc<LoadBalancer<RoundRobin>>,
    pub settings: UpstreamSettings,
    connector: Connector,
}

/// A whole answer, read by the proxy itself.
pub struct Fetched {
    pub head: ResponseHeader,
    pub body: Bytes,
}

impl UpstreamClient {
    pub fn new(balancer: Arc<LoadBalancer<RoundRobin>>, settings: UpstreamSettings) -> Self {
        UpstreamClient {
            balancer,
            settings,
            connector: Connector::new(None),
        }
    }

    /// The next instance, with every option but the read timeout, which depends on the request.
    pub fn peer(&self) -> Result<HttpPeer> {
        // When every instance is marked down, still try one: the health check may lag, and a
        // real connection error gives the operator an accurate 502.
        let backend = self
            .balancer
            .select(b"", 256)
            .or_else(|| {
                self.balancer
                    .backends()
                    .get_backend()
                    .iter()
                    .next()
                    .cloned()
            })
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no upstream configured"))?;
        let s = &self.settings;
        let mut peer = HttpPeer::new(backend, s.tls, s.sni.clone());
        let options = &mut peer.options;
        options.connection_timeout = Some(s.connect_timeout);
        options.total_connection_timeout = Some(s.connect_timeout * 2);
        options.read_timeout = Some(s.read_timeout);
        options.write_timeout = Some(s.send_timeout);
        options.idle_timeout = Some(IDLE_TIMEOUT);
        trust(options, s.verify, s.ca.clone());
        Ok(peer)
    }

    /// Sends a bodiless request and reads the whole answer: `None` when its body is larger than
    /// `limit` (the connection is then dropped, not read to its end). Bounded as a whole by the
    /// upstream's read timeout.
    pub async fn fetch(&self, request: RequestHeader, limit: usize) -> Result<Option<Fetched>> {
        let peer = self.peer()?;
        let exchange = async {
            let (mut session, _reused) = self.connector.get_http_session(&peer).await?;
            session.write_request_header(Box::new(request)).await?;
            session.finish_request_body().await?;
            // An interim answer (103 Early Hints) is followed by the real one.
            loop {
                session.read_response_header().await?;
                let informational = session
                    .response_header()
                    .is_some_and(|h| h.status.is_informational());
                if !informational {
                    break;
                }
            }
            let head = session
                .response_header()
                .cloned()
                .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "no response"))?;
            let mut body = BytesMut::new();
            while let Some(chunk) = session.read_response_body().await? {
                if body.len() + chunk.len() > limit {
                    return Ok(None);
                }
                body.extend_from_slice(&chunk);
            }
            self.connector
                .release_http_session(session, &peer, Some(IDLE_TIMEOUT))
                .await;
            Ok(Some(Fetched {
                head,
                body: body.freeze(),
            }))
        };
        tokio::time::timeout(self.settings.read_timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Error::e_explain(
                    ErrorType::ReadTimedout,
                    "upstream answer not complete in time",
                )
            })
    }
}
