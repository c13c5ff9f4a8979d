//! The Pingora glue: moves authorize requests through `filters` and streams everything else.
//!
//! Every decision is made in `request_filter` (an error raised later would still send the
//! request upstream, pingora #692); the body of an authorize POST is read whole under retry
//! buffering so that the bytes `filters` chose can replace it (PINGORA_NOTES.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use filters::{
    AuthorizeDecision, AuthorizeRequest, ErrorResponse, Field, Framing, HeaderPolicy, Method,
    Outcome, Policy, Progress, Ruling, Step, Summary, FORM_CONTENT_TYPE,
};
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::ErrorSource;

use crate::decision_log::DecisionLog;
use crate::discovery::Discovery;
use crate::failure::{self, Circumstances, Failure};
use crate::forwarded::{self, Peer};
use crate::hop;
use crate::inject::{self, X5cRoute};
use crate::keystore::KeyStores;
use crate::limits::{ClientKey, Limits};
use crate::metrics::{Forwarding, Metrics, Route, UpstreamClass, X5cResult};
use crate::response_guard::{self, GuardCookies, GuardStage, Inspection};
use crate::unix_now;
use crate::upstream_client::UpstreamClient;

pub struct EamProxy {
    pub policy: Arc<Policy>,
    pub keys: KeyStores,
    pub upstream: Arc<UpstreamClient>,
    /// A whole authorize body.
    pub client_read_timeout: Duration,
    /// The longest pause in a streamed upload.
    pub client_body_timeout: Duration,
    pub decision_log: DecisionLog,
    pub metrics: Arc<Metrics>,
    /// Direct peers whose `X-Forwarded-*` and routing headers are kept (cloud load balancers).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Client headers removed before the request goes upstream.
    pub headers: HeaderPolicy,
    /// Key-set paths that get `x5c` (`[[upstream.x5c]]`).
    pub x5c: Arc<Vec<X5cRoute>>,
    /// `None` when `authorize.response_guard = "off"`.
    pub guard: Option<Arc<GuardStage>>,
    /// `None` when `authorize.discovery_path` is empty.
    pub discovery: Option<Arc<Discovery>>,
    /// Per-client abuse limits; `None` when `limits.enabled = false`.
    pub limits: Option<Limits>,
}

pub struct RequestCtx {
    started: Instant,
    route: Route,
    /// Set once an authorize decision is made (and counted).
    decided: bool,
    /// Replacement body for the upstream (authorize POSTs only).
    new_body: Option<Bytes>,
    /// Replacement query string for the upstream.
    new_query: Option<String>,
    /// The response body the guard is reading.
    inspection: Option<Inspection>,
    /// A pass-through tunnel (WebSocket) or event stream: long idle periods are normal.
    stream: bool,
    /// A pass-through request whose body is streamed to the upstream as it arrives.
    uploads: bool,
    /// The proxy answered `Expect: 100-continue` itself: the upstream does not get `Expect`.
    continued: bool,
    /// Why the request could not be proxied, once `fail_to_proxy` has said.
    failure: Option<Failure>,
    /// The response guard's cookies the request carried (never sent upstream).
    guard_cookies: GuardCookies,
    /// `Set-Cookie` values the response guard adds to the answer.
    set_cookies: Vec<String>,
}

impl EamProxy {
    /// Reads an authorize request's body: bounded by `limit` (past it, the bytes read so far go
    /// to `filters`, which refuses them as too large) and, as a whole, by
    /// `client_read_timeout_ms`: a per-read timeout alone would let a client trickle one byte
    /// at a time for hours. Failures are the client's (408, or a silent close). A POST's body
    /// is kept for the upstream (retry buffering); a GET's is read only to see that it is empty.
    async fn read_body(
        &self,
        session: &mut Session,
        method: Method,
        limit: usize,
    ) -> Result<Bytes> {
        if expects_continue(session.req_header()) && method == Method::Post {
            send_continue(session).await?;
        }
        session.set_read_timeout(Some(self.client_read_timeout));
        if method == Method::Post {
            session.enable_retry_buffering();
        }
        let read_all = async {
            // A form body usually arrives in one chunk: keep it as it is, and copy only when a
            // second one comes.
            let mut first: Option<Bytes> = None;
            let mut more: Option<BytesMut> = None;
            let mut len = 0;
            while let Some(chunk) = session.read_request_body().await? {
                len += chunk.len();
                match (&first, &mut more) {
                    (None, _) => first = Some(chunk),
                    (Some(head), None) => {
                        let mut body = BytesMut::with_capacity(len);
                        body.extend_from_slice(head);
                        body.extend_from_slice(&chunk);
                        more = Some(body);
                    }
                    (Some(_), Some(body)) => body.extend_from_slice(&chunk),
                }
                if len > limit {
                    break;
                }
            }
            Ok(match more {
                Some(body) => body.freeze(),
                None => first.unwrap_or_default(),
            })
        };
        let read = tokio::time::timeout(self.client_read_timeout, read_all)
            .await
            .unwrap_or_else(|_| {
                Error::e_explain(
                    ErrorType::ReadTimedout,
                    "authorize body not complete within client_read_timeout_ms",
                )
            });
        let body = read.map_err(|mut e| {
            e.as_down();
            e
        })?;
        if body.len() > limit {
            // Refused as too large, the rest unread: not worth draining for a keep-alive.
            session.set_keepalive(None);
        }
        Ok(body)
    }

    /// The decision's log line and counters.
    fn record_decision(&self, summary: &Summary, started: Instant) {
        let m = &self.metrics;
        m.request(Route::Authorize, summary.outcome.as_str());
        if let Some(reason) = summary.reason() {
            m.hint_rejections.with_label_values(&[reason]).inc();
        }
        m.spoofed_params_removed.inc_by(summary.stripped as u64);
        if let Some(filters::AuthorizeError::RateLimited(limit)) = summary.error {
            m.rate_limited.with_label_values(&[limit.as_str()]).inc();
        }
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.decision_log.write(summary, latency_ms);
    }

    /// Asks `filters` for the next step until it rules, carrying out the I/O it asks for: the
    /// body, a key fetch. Returns the ruling and the body read.
    async fn rule(&self, session: &mut Session) -> Result<(Ruling, Bytes)> {
        let framing = framing(session);
        let mut body = Bytes::new();
        let client = self.limited_client(session);
        let mut progress = Progress {
            over_limit: client.and_then(|(limits, key)| limits.failures_exceeded(key)),
            ..Progress::default()
        };
        loop {
            let began = Instant::now();
            let request = authorize_request(session.req_header(), framing, &body);
            let method = request.method;
            match self.policy.step(&request, &self.keys, unix_now(), progress) {
                Step::ReadBody { limit } => {
                    body = self.read_body(session, method, limit).await?;
                    progress.body_read = true;
                }
                Step::FetchKeys(wanted) => {
                    // Only a fetch for a client's unknown kid is the client's doing; a missing
                    // set is fetched for anyone.
                    let declined = match (client, &wanted.kid) {
                        (Some((limits, key)), Some(_)) => limits.take_refetch(key).err(),
                        _ => None,
                    };
                    if declined.is_some() {
                        progress.fetch_refused = declined;
                    } else {
                        self.keys.fetch(&wanted).await;
                        progress.keys_fetched = true;
                    }
                }
                Step::Done(ruling) => {
                    if let Some((limits, key)) = client {
                        limits.settle(key, &ruling.summary);
                    }
                    if ruling.summary.hint_checked {
                        let elapsed = began.elapsed().as_secs_f64();
                        self.metrics.hint_validation.observe(elapsed);
                    }
                    if !progress.body_read && framing != Framing::None {
                        // Refused on its head, its body unread: the connection is not reused.
                        session.set_keepalive(None);
                    }
                    return Ok((ruling, body));
                }
            }
        }
    }

    /// Carries out a ruling: records it, remembers what the response guard will expect, and
    /// answers the client or sets what the upstream gets. True when answered here.
    async fn act(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        ruling: Ruling,
        body: Bytes,
    ) -> Result<bool> {
        self.record_decision(&ruling.summary, ctx.started);
        if let Some(guard) = self
            .guard
            .as_ref()
            .filter(|_| ruling.summary.outcome == Outcome::Accepted)
        {
            ctx.set_cookies = guard.remember(ruling.remember, &ctx.guard_cookies, &self.metrics);
        }
        let post = session.req_header().method == http::Method::POST;
        match ruling.decision {
            AuthorizeDecision::PassThrough => ctx.new_body = post.then_some(body),
            AuthorizeDecision::Forward {
                query,
                body: new_body,
            } => {
                ctx.new_query = query;
                ctx.new_body = post.then(|| new_body.map(Bytes::from).unwrap_or(body));
            }
            AuthorizeDecision::Reject(response) => {
                respond(session, response).await?;
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl EamProxy {
    /// A configured authorize path, or one the OP's discovery names.
    fn is_authorize_path(&self, path: &str) -> bool {
        self.policy.is_authorize_path(path)
            || self
                .discovery
                .as_ref()
                .is_some_and(|d| d.is_unlisted_authorize_path(path))
    }

    /// Timeouts and `Expect` handling of a request that is streamed through unread.
    async fn prepare_pass_through(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.stream = session.is_upgrade_req() || accepts_event_stream(session.req_header());
        ctx.uploads = !session.is_body_empty();
        if ctx.stream {
            session.set_read_timeout(Some(self.upstream.settings.stream_idle_timeout));
        } else if ctx.uploads {
            session.set_read_timeout(Some(self.client_body_timeout));
        }
        if expects_continue(session.req_header()) && !session.is_http2() {
            // As nginx: the proxy itself invites the body, which it streams on at once, rather
            // than leaving the client waiting (curl: 1 s) on an upstream that ignores `Expect`.
            send_continue(session).await?;
            ctx.continued = true;
        }
        Ok(())
    }

    /// Answers a GET of an `[[upstream.x5c]]` key set with the rewritten document, fetched by the
    /// proxy itself (`inject`). False when it could not be fetched whole: the request is then
    /// proxied as it is, without x5c, and the upstream's failure (if any) is reported as usual.
    async fn serve_key_set(&self, session: &mut Session, route: usize) -> Result<bool> {
        let request = self.key_set_request(session)?;
        let path = self.x5c[route].path.as_str();
        let fetched = match self
            .upstream
            .fetch(request, inject::MAX_KEY_SET_BYTES)
            .await
        {
            Ok(Some(fetched)) => fetched,
            Ok(None) => {
                self.metrics.x5c_result(X5cResult::TooLarge);
                tracing::warn!(
                    path,
                    "key set larger than 1 MiB; passed through without x5c"
                );
                return Ok(false);
            }
            Err(error) => {
                tracing::warn!(path, %error, "key set could not be fetched; proxied without x5c");
                return Ok(false);
            }
        };
        self.metrics.upstream_status(fetched.head.status.as_u16());
        let if_none_match =
            header_str(session.req_header(), header::IF_NONE_MATCH).map(str::to_string);
        let (head, body) = inject::answer(
            fetched,
            &self.x5c[route],
            if_none_match.as_deref(),
            &self.metrics,
        )?;
        let bodiless = body.is_empty();
        session
            .write_response_header(Box::new(head), bodiless)
            .await?;
        if !bodiless {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(true)
    }

    /// The client's key-set GET as the upstream would get it, asking for a whole, uncompressed
    /// answer.
    fn key_set_request(&self, session: &Session) -> Result<RequestHeader> {
        let req = session.req_header();
        let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut upstream = RequestHeader::build("GET", target.as_bytes(), None)?;
        for (name, value) in req.headers.iter() {
            if hop::is_end_to_end_request_header(name) {
                upstream.append_header(name.clone(), value.clone())?;
            }
        }
        if !upstream.headers.contains_key(header::HOST) {
            if let Some(authority) = req.uri.authority() {
                upstream.insert_header(header::HOST, authority.as_str())?;
            }
        }
        inject::prepare_request(&mut upstream)?;
        response_guard::strip_cookies(&mut upstream)?;
        self.set_upstream_headers(session, &mut upstream)?;
        Ok(upstream)
    }

    /// What every request the upstream gets carries, proxied or the proxy's own: no client
    /// routing headers, the proxy's `X-Forwarded-*`, and `upstream.host_header` if set.
    fn set_upstream_headers(&self, session: &Session, upstream: &mut RequestHeader) -> Result<()> {
        let peer = self.peer(session);
        forwarded::remove_client_headers(upstream, &self.headers, peer);
        forwarded::forwarded(session.req_header(), peer).apply(upstream)?;
        if let Some(host) = &self.upstream.settings.host_header {
            upstream.insert_header(header::HOST, host.as_str())?;
        }
        Ok(())
    }

    /// Client faults at info level (not an operator's error), upstream faults as warnings.
    fn log_failure(&self, failure: Failure, e: &Error) {
        match failure {
            Failure::StreamIdle => tracing::info!(
                timeout_ms = self.upstream.settings.stream_idle_timeout.as_millis() as u64,
                "stream closed: no traffic either way within stream_idle_timeout_ms"
            ),
            Failure::ClientStalled => tracing::info!(
                status = 408,
                timeout_ms = self.client_body_timeout.as_millis() as u64,
                "client stalled its upload: nothing received within client_body_timeout_ms"
            ),
            Failure::Status(code) => {
                if e.esource() == &ErrorSource::Upstream {
                    self.metrics.upstream_class(UpstreamClass::Error);
                }
                if e.esource() == &ErrorSource::Downstream {
                    tracing::info!(status = code, error = %e, "client request failed");
                }
                if matches!(code, 502 | 504) {
                    tracing::warn!(status = code, error = %e, "upstream request failed");
                }
            }
        }
    }

    /// The abuse limits and the key of this request's client; `None` when it is not limited.
    fn limited_client(&self, session: &Session) -> Option<(&Limits, ClientKey)> {
        let limits = self.limits.as_ref()?;
        let peer = self.peer(session);
        let address = forwarded::client_address(session.req_header(), peer, &self.trusted_proxies);
        Some((limits, limits.key(address)?))
    }

    fn peer(&self, session: &Session) -> Peer {
        let ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        Peer::new(ip, &self.trusted_proxies, tls)
    }
}

/// Writes a complete response; the connection stays usable when the request was read whole.
async fn respond(session: &mut Session, response: ErrorResponse) -> Result<()> {
    let mut head = ResponseHeader::build(response.status, Some(response.headers.len() + 1))?;
    for (name, value) in response.headers {
        head.insert_header(name, value)?;
    }
    head.insert_header(header::CONTENT_LENGTH, response.body.len().to_string())?;
    session.write_response_header(Box::new(head), false).await?;
    session
        .write_response_body(Some(Bytes::from(response.body)), true)
        .await
}

/// `100 Continue`. Pingora closes a connection whose answer (a 100 too) leaves before the body
/// was read; the body is read right after this one, so the rule is lifted for it alone.
async fn send_continue(session: &mut Session) -> Result<()> {
    session.set_close_on_response_before_downstream_finish(false);
    let sent = session.write_continue_response().await;
    session.set_close_on_response_before_downstream_finish(true);
    sent
}

fn expects_continue(req: &RequestHeader) -> bool {
    req.headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// An `EventSource` (and any client of `text/event-stream`) says so in `Accept`.
fn accepts_event_stream(req: &RequestHeader) -> bool {
    const EVENT_STREAM: &[u8] = b"text/event-stream";
    req.headers.get_all(header::ACCEPT).iter().any(|v| {
        v.as_bytes()
            .windows(EVENT_STREAM.len())
            .any(|w| w.eq_ignore_ascii_case(EVENT_STREAM))
    })
}

/// How the request's body is framed.
fn framing(session: &mut Session) -> Framing {
    // Asked before the head is borrowed: for HTTP/2 it tells whether the HEADERS frame ended
    // the stream (Pingora's `is_body_empty` also counts `Content-Length: 0` as empty).
    let no_body = session.is_body_empty();
    let headers = &session.req_header().headers;
    if headers.contains_key(header::TRANSFER_ENCODING) {
        Framing::Chunked
    } else if let Some(length) = headers.get(header::CONTENT_LENGTH) {
        // Pingora refuses an unreadable or conflicting length before this point.
        match length
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
            None => Framing::Chunked,
        }
    } else if no_body {
        Framing::None
    } else {
        Framing::Open
    }
}

/// The facts of an authorize request that `filters` rules on; `body` is what was read of it.
fn authorize_request<'a>(
    req: &'a RequestHeader,
    framing: Framing,
    body: &'a [u8],
) -> AuthorizeRequest<'a> {
    AuthorizeRequest {
        method: match req.method {
            http::Method::GET => Method::Get,
            http::Method::POST => Method::Post,
            _ => Method::Other,
        },
        content_type: field(req, header::CONTENT_TYPE),
        content_encoding: field(req, header::CONTENT_ENCODING),
        framing,
        query: req.uri.query(),
        body,
    }
}

/// A header field as `filters` sees it: absent, one readable value, or ambiguous.
fn field(req: &RequestHeader, name: header::HeaderName) -> Field<'_> {
    let mut values = req.headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Field::Absent,
        (Some(value), None) => value.to_str().map_or(Field::Ambiguous, Field::One),
        _ => Field::Ambiguous,
    }
}

fn header_str(req: &RequestHeader, name: header::HeaderName) -> Option<&str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

#[async_trait]
impl ProxyHttp for EamProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        // Pingora asks for a context right after parsing a request head.
        crate::deadline::head_read();
        RequestCtx {
            started: Instant::now(),
            route: Route::Other,
            decided: false,
            new_body: None,
            new_query: None,
            inspection: None,
            stream: false,
            uploads: false,
            continued: false,
            failure: None,
            guard_cookies: GuardCookies::default(),
            set_cookies: Vec::new(),
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Requests a client sends before the previous answer are served in turn, as nginx does;
        // without this Pingora drops them with the connection.
        session.set_pipelining_enabled(true);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        ctx.guard_cookies = GuardCookies::read(req);
        if let Some(route) = inject::route_for(&self.x5c, &req.method, req.uri.path()) {
            if self.serve_key_set(session, route).await? {
                return Ok(true);
            }
        }
        if !self.is_authorize_path(session.req_header().uri.path()) {
            self.prepare_pass_through(session, ctx).await?;
            return Ok(false);
        }
        ctx.route = Route::Authorize;
        ctx.decided = true;
        let (ruling, body) = self.rule(session).await?;
        self.act(session, ctx, ruling, body).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let mut peer = self.upstream.peer()?;
        let timeouts = &self.upstream.settings;
        // Pingora applies one timeout to every read of the upstream, from the request's first
        // byte on; it runs while an upload is still streaming, so it is never shorter than the
        // pause allowed to the client (a stalled client is then caught as such, fail_to_proxy).
        peer.options.read_timeout = Some(if ctx.stream {
            timeouts.stream_idle_timeout
        } else if ctx.uploads {
            timeouts.read_timeout.max(self.client_body_timeout)
        } else {
            timeouts.read_timeout
        });
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(query) = &ctx.new_query {
            let path = upstream_request.uri.path();
            let target = if query.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{query}")
            };
            let uri = target.parse::<http::Uri>().map_err(|e| {
                Error::because(
                    ErrorType::InternalError,
                    "rewritten query is not a valid URI",
                    e,
                )
            })?;
            upstream_request.set_uri(uri);
        }
        if let Some(body) = &ctx.new_body {
            upstream_request.remove_header(&header::TRANSFER_ENCODING);
            upstream_request.remove_header(&header::EXPECT);
            upstream_request.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
            upstream_request.insert_header(header::CONTENT_TYPE, FORM_CONTENT_TYPE)?;
        }

        if ctx.continued {
            upstream_request.remove_header(&header::EXPECT);
        }
        response_guard::strip_cookies(upstream_request)?;
        if session.is_http2() && upstream_request.version == http::Version::HTTP_11 {
            hop::join_cookies(upstream_request)?;
        }
        self.set_upstream_headers(session, upstream_request)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The buffered body arrives once, at end of stream; send ours instead (a clone, since a
        // retry replays it).
        if let Some(new_body) = &ctx.new_body {
            *body = end_of_stream.then(|| new_body.clone());
        }
        // Pingora 0.9.1 writes an empty last chunk to an HTTP/1 upstream as a chunked
        // terminator and then finishes the body with a second one (cloudflare/pingora#935):
        // the stray bytes desynchronise the pooled connection. `None` ends the body once. Only
        // the last: `None` before the end would end the upstream body early (Pingora skips
        // empty chunks in the middle itself). docs/PINGORA.md: remove when a fixed release is
        // pinned.
        if end_of_stream && body.as_ref().is_some_and(Bytes::is_empty) {
            *body = None;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.metrics
            .upstream_status(upstream_response.status.as_u16());
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(guard) = &self.guard {
            let cookies = std::mem::take(&mut ctx.guard_cookies);
            ctx.inspection = guard.inspect(
                session.req_header(),
                upstream_response,
                &self.metrics,
                cookies,
            )?;
        }
        response_guard::add_set_cookies(upstream_response, &ctx.set_cookies)?;
        // Pingora's HTTP/2 server drops hop-by-hop fields and never chunks: HTTP/1 only.
        if !session.is_http2() {
            hop::remove_hop_by_hop(upstream_response);
            if hop::frame_for_http10(session.req_header().version, upstream_response) {
                session.set_keepalive(None);
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        let (Some(guard), Some(inspection)) = (&self.guard, ctx.inspection.as_mut()) else {
            return Ok(None);
        };
        if !inspection.feed(guard, body, end_of_stream, &self.metrics) {
            ctx.inspection = None;
        }
        Ok(None)
    }

    async fn logging(&self, _session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        if !ctx.decided {
            let outcome = match error {
                Some(_) => Forwarding::Failed,
                None => Forwarding::Proxied,
            };
            self.metrics.request(ctx.route, outcome.as_str());
        }
        self.metrics
            .request_duration
            .with_label_values(&[ctx.route.as_str()])
            .observe(ctx.started.elapsed().as_secs_f64());
    }

    fn persist_connection_context(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
    ) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        Some(crate::deadline::kept_alive_marker())
    }

    /// Client faults are logged by `fail_to_proxy` at info level, not by Pingora as errors.
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, error: &Error) -> bool {
        error.esource() == &ErrorSource::Downstream
            || matches!(
                ctx.failure,
                Some(Failure::ClientStalled | Failure::StreamIdle)
            )
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let failure = Failure::of(
            e,
            Circumstances {
                stream: ctx.stream,
                answering: session.response_written().is_some(),
                uploads: ctx.uploads,
                body_done: session.is_body_done(),
            },
        );
        ctx.failure = Some(failure);
        self.log_failure(failure, e);
        let code = failure.status();
        if code > 0 {
            let body = Bytes::from_static(failure::body(code).as_bytes());
            if let Err(write_error) = session.respond_error_with_body(code, body).await {
                tracing::debug!(%write_error, "could not send error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}
