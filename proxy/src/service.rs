//! The Pingora glue: moves authorize requests through `filters` and streams everything else.
//!
//! Every decision is made in `request_filter` (an error raised later would still send the
//! request upstream, pingora #692); the body of an authorize POST is read whole under retry
//! buffering so that the bytes `filters` chose can replace it (PINGORA_NOTES.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use filters::render::json_error;
use filters::{
    AuthorizeDecision, AuthorizeError, AuthorizeRequest, ErrorResponse, Field, Framing,
    HeaderPolicy, Method, Policy, Summary, FORM_CONTENT_TYPE,
};
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::ErrorSource;

use crate::config::GuardMode;
use crate::decision_log::DecisionLog;
use crate::discovery::Discovery;
use crate::hop;
use crate::inject::{self, X5cRoute};
use crate::keystore::KeyStores;
use crate::metrics::{Metrics, GUARD_SKIPPED, ROUTE_AUTHORIZE, ROUTE_OTHER};
use crate::response_guard::{self, Candidate, Guard, Inspection};
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
    pub guard: Option<Arc<Guard>>,
    /// `None` when `authorize.discovery_path` is empty.
    pub discovery: Option<Arc<Discovery>>,
}

pub struct RequestCtx {
    started: Instant,
    route: &'static str,
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
    /// The upstream's read timeout ran out while the client had not finished its upload.
    client_stalled: bool,
    /// A tunnel or event stream, its answer under way, fell silent for `stream_idle_timeout_ms`.
    stream_idle: bool,
}

impl EamProxy {
    /// Reads an authorize request's body: bounded by `max_body_bytes` (past it, the bytes read
    /// so far go to `filters`, which refuses them as too large) and, as a whole, by
    /// `client_read_timeout_ms`: a per-read timeout alone would let a client trickle one byte
    /// at a time for hours. Failures are the client's (408, or a silent close). A POST's body
    /// is kept for the upstream (retry buffering); a GET's is read only to see that it is empty.
    async fn read_body(&self, session: &mut Session, method: Method) -> Result<Bytes> {
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
                if !self.policy.body_fits(len) {
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
        if !self.policy.body_fits(body.len()) {
            // Refused as too large, the rest unread: not worth draining for a keep-alive.
            session.set_keepalive(None);
        }
        Ok(body)
    }

    /// Refuses an authorize request without reading its body (the connection is not reused).
    async fn refuse(
        &self,
        session: &mut Session,
        error: AuthorizeError,
        started: Instant,
    ) -> Result<bool> {
        let summary = Summary {
            outcome: filters::Outcome::Rejected,
            error: Some(error),
            ..Summary::default()
        };
        self.record_decision(&summary, started);
        session.set_keepalive(None);
        respond(session, json_error(error)).await?;
        Ok(true)
    }

    /// The decision's log line and counters.
    fn record_decision(&self, summary: &Summary, started: Instant) {
        let m = &self.metrics;
        m.requests
            .with_label_values(&[ROUTE_AUTHORIZE, summary.outcome.as_str()])
            .inc();
        if let Some(reason) = summary.reason() {
            m.hint_rejections.with_label_values(&[reason]).inc();
        }
        m.spoofed_params_removed.inc_by(summary.stripped as u64);
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.decision_log.write(summary, latency_ms);
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
                self.metrics.x5c_result("too_large");
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
        self.set_upstream_headers(session, &mut upstream)?;
        Ok(upstream)
    }

    /// What every request the upstream gets carries, proxied or the proxy's own: no client
    /// routing headers, the proxy's `X-Forwarded-*`, and `upstream.host_header` if set.
    fn set_upstream_headers(&self, session: &Session, upstream: &mut RequestHeader) -> Result<()> {
        self.remove_client_headers(session, upstream);
        self.set_forwarded_headers(session, upstream)?;
        if let Some(host) = &self.upstream.settings.host_header {
            upstream.insert_header(header::HOST, host.as_str())?;
        }
        Ok(())
    }

    /// Whether the response guard reads this answer, and how (`response_guard::candidate`).
    fn choose_inspection(
        &self,
        session: &Session,
        upstream_response: &mut ResponseHeader,
        guard: &Guard,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        match response_guard::candidate(
            session.req_header(),
            upstream_response,
            guard.max_body_bytes,
        ) {
            Candidate::No => {}
            Candidate::Skip(reason) => self.count_guard_skip(reason),
            Candidate::Inspect(coding) => {
                let hold = guard.mode == GuardMode::Enforce;
                if hold {
                    response_guard::prepare_held_headers(upstream_response)?;
                }
                ctx.inspection = Some(Inspection {
                    buf: Vec::new(),
                    coding,
                    hold,
                });
            }
        }
        Ok(())
    }

    fn count_guard_skip(&self, reason: &'static str) {
        self.metrics
            .response_guard
            .with_label_values(&[GUARD_SKIPPED, reason])
            .inc();
    }

    fn peer_is_trusted(&self, session: &Session) -> bool {
        session
            .client_addr()
            .and_then(|a| a.as_inet())
            .is_some_and(|a| self.trusted_proxies.iter().any(|net| net.contains(&a.ip())))
    }

    /// Removes the client headers that frameworks route on or read the client's identity from
    /// (`filters::headers`), on every path.
    fn remove_client_headers(&self, session: &Session, upstream: &mut RequestHeader) {
        let trusted = self.peer_is_trusted(session);
        let drops = |name: &header::HeaderName| self.headers.drops(name.as_str(), trusted);
        // Most requests carry none: allocate only for those that do.
        if !upstream.headers.keys().any(drops) {
            return;
        }
        let dropped: Vec<header::HeaderName> = upstream
            .headers
            .keys()
            .filter(|n| drops(n))
            .cloned()
            .collect();
        for name in dropped {
            upstream.remove_header(&name);
        }
    }

    /// `X-Forwarded-*` as the upstream should see them. From a trusted proxy the chain is
    /// extended and its proto/host kept; from anyone else they are replaced, so a client cannot
    /// forge its address.
    fn set_forwarded_headers(&self, session: &Session, upstream: &mut RequestHeader) -> Result<()> {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let trusted = self.peer_is_trusted(session);
        let incoming = |name: header::HeaderName| {
            trusted
                .then(|| header_str(session.req_header(), name))
                .flatten()
                .map(str::to_string)
        };
        // A balancer may add its own field line: the chain is every line, in order.
        let chain = trusted
            .then(|| {
                let lines: Vec<&str> = session
                    .req_header()
                    .headers
                    .get_all(X_FORWARDED_FOR)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                (!lines.is_empty()).then(|| lines.join(", "))
            })
            .flatten();
        let peer = peer.map(|ip| ip.to_string());
        let forwarded_for = match (chain, peer) {
            (Some(chain), Some(ip)) => Some(format!("{chain}, {ip}")),
            (chain, ip) => ip.or(chain),
        };
        match forwarded_for {
            Some(value) => upstream.insert_header(X_FORWARDED_FOR, value)?,
            None => drop(upstream.remove_header(&X_FORWARDED_FOR)),
        }
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let proto = incoming(X_FORWARDED_PROTO)
            .unwrap_or_else(|| if tls { "https" } else { "http" }.into());
        upstream.insert_header(X_FORWARDED_PROTO, proto)?;
        let host = incoming(X_FORWARDED_HOST)
            .or_else(|| header_str(session.req_header(), header::HOST).map(str::to_string))
            .or_else(|| session.req_header().uri.authority().map(|a| a.to_string()));
        match host {
            Some(host) => upstream.insert_header(X_FORWARDED_HOST, host)?,
            None => drop(upstream.remove_header(&X_FORWARDED_HOST)),
        }
        Ok(())
    }
}

const X_FORWARDED_FOR: header::HeaderName = header::HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: header::HeaderName = header::HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: header::HeaderName = header::HeaderName::from_static("x-forwarded-host");

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
            route: ROUTE_OTHER,
            decided: false,
            new_body: None,
            new_query: None,
            inspection: None,
            stream: false,
            uploads: false,
            continued: false,
            client_stalled: false,
            stream_idle: false,
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
        if let Some(route) = inject::route_for(&self.x5c, &req.method, req.uri.path()) {
            if self.serve_key_set(session, route).await? {
                return Ok(true);
            }
        }
        if !self.is_authorize_path(session.req_header().uri.path()) {
            self.prepare_pass_through(session, ctx).await?;
            return Ok(false);
        }
        ctx.route = ROUTE_AUTHORIZE;
        ctx.decided = true;
        let started = ctx.started;
        let framing = framing(session);
        let head = authorize_request(session.req_header(), framing, b"");
        let method = head.method;
        if let Err(error) = self.policy.admit(&head) {
            return self.refuse(session, error, started).await;
        }
        let body = match framing {
            Framing::None => Bytes::new(),
            _ => self.read_body(session, method).await?,
        };
        let request = authorize_request(session.req_header(), framing, &body);
        let decide = || {
            let began = Instant::now();
            let authorized = self.policy.authorize(&request, &self.keys, unix_now());
            if authorized.summary.hint_checked {
                self.metrics
                    .hint_validation
                    .observe(began.elapsed().as_secs_f64());
            }
            authorized
        };
        let mut authorized = decide();
        // A new kid means Microsoft rotated its keys; no usable set means the last refresh
        // failed. Either way one coalesced, rate-limited fetch may fix it, then decide again.
        let refetch_may_help = matches!(
            authorized.summary.error,
            Some(AuthorizeError::UnknownKid | AuthorizeError::KeysUnavailable)
        );
        if refetch_may_help {
            let store = authorized
                .summary
                .cloud
                .as_deref()
                .and_then(|c| self.keys.get(c));
            if let Some(store) = store {
                if store
                    .refetch_on_demand(authorized.summary.unknown_kid.as_deref())
                    .await
                {
                    authorized = decide();
                }
            }
        }
        self.record_decision(&authorized.summary, started);
        if let (Some(guard), Some(remembered)) = (&self.guard, authorized.remember.take()) {
            let remembered = guard.memory.remember(remembered, Instant::now());
            self.metrics
                .response_guard_remembered
                .set(remembered as i64);
        }
        match authorized.decision {
            AuthorizeDecision::PassThrough => {
                if method == Method::Post {
                    ctx.new_body = Some(body);
                }
            }
            AuthorizeDecision::Forward {
                query,
                body: new_body,
            } => {
                ctx.new_query = query;
                if method == Method::Post {
                    ctx.new_body = Some(new_body.map(Bytes::from).unwrap_or(body));
                }
            }
            AuthorizeDecision::Reject(response) => {
                respond(session, response).await?;
                return Ok(true);
            }
        }
        Ok(false)
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
            self.choose_inspection(session, upstream_response, guard, ctx)?;
        }
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
        if let Some(chunk) = body.as_ref() {
            if inspection.buf.len() + chunk.len() > guard.max_body_bytes {
                // Too large to be a form_post: let it through unread, held bytes first.
                self.count_guard_skip("too_large");
                if inspection.hold {
                    let mut all = std::mem::take(&mut inspection.buf);
                    all.extend_from_slice(chunk);
                    *body = Some(Bytes::from(all));
                }
                ctx.inspection = None;
                return Ok(None);
            }
            inspection.buf.extend_from_slice(chunk);
            if inspection.hold {
                *body = None;
            }
        }
        if let Some(inspection) = ctx.inspection.take_if(|_| end_of_stream) {
            let coding = inspection.coding;
            let verdict = match coding.decode(&inspection.buf, guard.max_body_bytes) {
                Some(html) => guard.judge(&html, &self.metrics),
                None => {
                    // Not valid in its coding, or larger decoded than a form_post can be.
                    self.count_guard_skip("undecodable");
                    None
                }
            };
            match verdict {
                // The header left with the OP's Content-Encoding: the replacement wears it too.
                Some(replacement) => *body = Some(Bytes::from(coding.encode(&replacement))),
                None if inspection.hold => *body = Some(Bytes::from(inspection.buf)),
                None => {}
            }
        }
        Ok(None)
    }

    async fn logging(&self, _session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        if !ctx.decided {
            let outcome = if error.is_some() { "failed" } else { "proxied" };
            self.metrics
                .requests
                .with_label_values(&[ctx.route, outcome])
                .inc();
        }
        self.metrics
            .request_duration
            .with_label_values(&[ctx.route])
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
        error.esource() == &ErrorSource::Downstream || ctx.client_stalled || ctx.stream_idle
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        // Pingora's upstream read timeout runs while the upload streams, restarted by every
        // chunk: when it runs out before the body has ended, the client stopped sending.
        ctx.client_stalled = e.esource() == &ErrorSource::Upstream
            && e.etype() == &ErrorType::ReadTimedout
            && ctx.uploads
            && !session.is_body_done();
        ctx.stream_idle = ctx.stream
            && e.etype() == &ErrorType::ReadTimedout
            && session.response_written().is_some();
        if ctx.stream_idle {
            // Nothing to answer: the stream's head left long ago, and its end is the answer.
            tracing::info!(
                timeout_ms = self.upstream.settings.stream_idle_timeout.as_millis() as u64,
                "stream closed: no traffic either way within stream_idle_timeout_ms"
            );
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        if ctx.client_stalled {
            tracing::info!(
                status = 408,
                timeout_ms = self.client_body_timeout.as_millis() as u64,
                "client stalled its upload: nothing received within client_body_timeout_ms"
            );
            if let Err(write_error) = session
                .respond_error_with_body(408, Bytes::from_static(b"request timeout\n"))
                .await
            {
                tracing::debug!(%write_error, "could not send error response");
            }
            return FailToProxy {
                error_code: 408,
                can_reuse_downstream: false,
            };
        }
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            etype => match e.esource() {
                ErrorSource::Upstream => match etype {
                    ErrorType::ConnectTimedout
                    | ErrorType::ReadTimedout
                    | ErrorType::WriteTimedout => 504,
                    _ => 502,
                },
                ErrorSource::Downstream => match etype {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    ErrorType::ReadTimedout => 408,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if e.esource() == &ErrorSource::Upstream {
            self.metrics
                .upstream_responses
                .with_label_values(&["error"])
                .inc();
        }
        if e.esource() == &ErrorSource::Downstream {
            // The client's doing (slow, gone, malformed): not an operator's error.
            tracing::info!(status = code, error = %e, "client request failed");
        }
        if code > 0 {
            if matches!(code, 502 | 504) {
                tracing::warn!(status = code, error = %e, "upstream request failed");
            }
            let body = match code {
                502 => "upstream unavailable\n",
                504 => "upstream timed out\n",
                408 => "request timeout\n",
                400 => "bad request\n",
                _ => "internal error\n",
            };
            if let Err(write_error) = session
                .respond_error_with_body(code, Bytes::from_static(body.as_bytes()))
                .await
            {
                tracing::debug!(%write_error, "could not send error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}
