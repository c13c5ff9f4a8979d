//! The response guard's side in the proxy: a bounded, TTL-limited memory of accepted Entra
//! requests, which responses are inspected, and the per-response buffer that feeds
//! `filters::guard`.
//!
//! The OP's form_post to Entra does not answer the authorize request itself but whichever request
//! ends the login (oidc-provider resumes on `/auth/<uid>`, Keycloak on `/login-actions/…`), so the
//! candidates are chosen by the response: a `200` `text/html` page, uncompressed or in a coding
//! browsers ask for, no larger than `response_guard_max_body_bytes` (compressed and decoded). Its
//! state then says which request it answers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use bytes::Bytes;
use filters::render::csp_allowing_auto_post;
use filters::sealed::{SealKeys, Unsealed};
use filters::{AnswerContext, Expectation, Remembered, ResponseGuard};
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use sha2::{Digest, Sha256};

use crate::config::GuardMode;
use crate::content_coding::Coding;
use crate::discovery::Discovery;
use crate::metrics::{GuardResult, GuardSkip, Metrics, SealResult, UnsealResult};

mod cookies;
pub use cookies::{add_set_cookies, strip as strip_cookies, GuardCookies};

/// The response guard as the proxy runs it, on the OP's answers: `filters`' checks, the memory
/// of accepted requests they are checked against, and the mode. Absent when
/// `response_guard = "off"`.
pub struct GuardStage {
    pub mode: GuardMode,
    pub max_body_bytes: usize,
    pub checks: ResponseGuard,
    pub memory: Memory,
    /// The OP's issuer comes from its discovery document (`None`: not read, `iss` unchecked).
    pub discovery: Option<Arc<Discovery>>,
    /// Seals the expectation into a cookie for the replica that carries the answer: the key
    /// file's keys, or a random key of this process.
    pub seal: SealKeys,
    pub rng: SystemRandom,
}

/// Where the expectation of a judged answer came from, for its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Memory,
    Cookie,
    None,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Memory => "memory",
            Source::Cookie => "cookie",
            Source::None => "none",
        }
    }
}

impl GuardStage {
    /// Checks a complete HTML answer; logs and counts the verdict. The replacement page when the
    /// guard enforces and the answer would be refused by Entra.
    pub fn judge(&self, html: &[u8], cookies: &GuardCookies, metrics: &Metrics) -> Option<Bytes> {
        let post = self.checks.find(html)?;
        let now = Instant::now();
        let state = post.state.as_deref().filter(|s| !s.is_empty());
        let nonce = ResponseGuard::nonce_of(&post);
        // By the answer's state; by its id_token's nonce when the OP dropped or changed it.
        let remembered = state
            .and_then(|state| self.memory.recall(Key::State(state), now))
            .or_else(|| {
                let nonce = nonce.as_deref()?;
                self.memory.recall(Key::Nonce(nonce), now)
            });
        let (expected, source) = match remembered {
            Some(e) => (Some(e), Source::Memory),
            None => {
                let (result, opened) = self.unseal(cookies, state, nonce.as_deref());
                metrics.guard_unsealed(result);
                match opened {
                    Some(e) => (Some(e), Source::Cookie),
                    None => (None, Source::None),
                }
            }
        };
        let expectation = source.as_str();
        let issuer = self.discovery.as_ref().and_then(|d| d.issuer());
        let context = AnswerContext {
            issuer: issuer.as_deref(),
            now: crate::unix_now(),
        };
        let verdict = self.checks.check(&post, expected.as_ref(), &context)?;
        let scope = verdict.scope.as_str();
        let (result, reason) = match verdict.first() {
            Some(violation) => (GuardResult::Violation, violation.reason()),
            None => (GuardResult::Ok, scope),
        };
        metrics.guard(result, reason);
        let result = result.as_str();
        let replace = self.mode == GuardMode::Enforce && !verdict.passed();
        let field = |f: fn(&filters::Expectation) -> Option<&str>| {
            expected
                .as_ref()
                .and_then(f)
                .unwrap_or_default()
                .to_string()
        };
        let client_request_id = field(|e| e.client_request_id.as_deref());
        let client_id = field(|e| Some(e.client_id.as_str()));
        let state_hash = post.state.as_deref().map(state_hash).unwrap_or_default();
        let reasons: Vec<&str> = verdict.violations.iter().map(|v| v.reason()).collect();
        let reasons = reasons.join(",");
        let action = if replace { "replaced" } else { "unchanged" };
        if verdict.passed() {
            tracing::info!(target: "eam_proxy::response_guard", client_request_id, client_id, state_hash,
                scope, expectation, result, action, "response guard");
        } else {
            tracing::warn!(target: "eam_proxy::response_guard", client_request_id, client_id, state_hash,
                scope, expectation, result, reason, reasons, action, "response guard");
        }
        let violation = verdict.first().filter(|_| replace)?;
        Some(Bytes::from(self.checks.denial(&post, violation).body))
    }

    /// The expectation sealed in the request's cookies: the one named by the answer's state, or
    /// when there is none of that name, any whose nonce is the id_token's.
    fn unseal(
        &self,
        cookies: &GuardCookies,
        state: Option<&str>,
        nonce: Option<&str>,
    ) -> (UnsealResult, Option<Expectation>) {
        let now = crate::unix_now();
        let open = |name: &str, value: &str| self.seal.open(value, name, state, now);
        let named = cookies::name(state, None).and_then(|n| Some((cookies.named(&n)?, n)));
        if let Some((value, name)) = named {
            return match open(&name, value) {
                Unsealed::Opened(e) => (UnsealResult::Opened, Some(e)),
                Unsealed::Unreadable => (UnsealResult::Unreadable, None),
                Unsealed::Expired => (UnsealResult::Expired, None),
            };
        }
        let mut result = UnsealResult::Missing;
        for (name, value) in cookies.iter() {
            match open(name, value) {
                Unsealed::Opened(e) if nonce.is_some() && e.nonce.as_deref() == nonce => {
                    return (UnsealResult::Opened, Some(e));
                }
                Unsealed::Opened(_) => {}
                Unsealed::Unreadable => result = UnsealResult::Unreadable,
                Unsealed::Expired if result == UnsealResult::Missing => {
                    result = UnsealResult::Expired
                }
                Unsealed::Expired => {}
            }
        }
        (result, None)
    }

    /// Remembers an accepted Entra request in this replica's memory and seals it for the others:
    /// the `Set-Cookie` values for the answer (the new cookie, and the oldest expired so that at
    /// most four live). `remember` is `None` for a request the guard cannot match an answer to.
    pub fn remember(
        &self,
        remember: Option<Remembered>,
        sent: &GuardCookies,
        metrics: &Metrics,
    ) -> Vec<String> {
        let Some(remembered) = remember else {
            metrics.guard_sealed(SealResult::NotRememberable);
            return Vec::new();
        };
        // Sealed before the memory takes the expectation, which then needs no copy.
        let cookie = self.sealed_cookie(&remembered.expectation, metrics);
        let count = self.memory.remember(remembered, Instant::now());
        metrics.response_guard_remembered.set(count as i64);
        let Some((name, value)) = cookie else {
            return Vec::new();
        };
        // Unreadable cookies (another key, forged) count as the oldest.
        let age = |n: &str, v: &str| self.seal.expiry(v, n).unwrap_or(0);
        let mut set: Vec<String> = cookies::to_expire(sent, &name, age)
            .into_iter()
            .map(|old| cookies::set_cookie(old, "", 0))
            .collect();
        set.push(cookies::set_cookie(
            &name,
            &value,
            self.memory.ttl.as_secs(),
        ));
        set
    }

    /// The guard cookie's name and sealed value for `e`, counted; `None` when it is not set.
    fn sealed_cookie(&self, e: &Expectation, metrics: &Metrics) -> Option<(String, String)> {
        let Some(name) = cookies::name(e.state.as_deref(), e.nonce.as_deref()) else {
            metrics.guard_sealed(SealResult::NotRememberable);
            return None;
        };
        let mut nonce = [0u8; filters::sealed::NONCE_LEN];
        if self.rng.fill(&mut nonce).is_err() {
            tracing::warn!("no randomness for the response guard's cookie; not set");
            return None;
        }
        let expires = crate::unix_now() + self.memory.ttl.as_secs();
        let Ok(value) = self.seal.seal(e, expires, &name, nonce) else {
            metrics.guard_sealed(SealResult::TooLarge);
            return None;
        };
        metrics.guard_sealed(SealResult::Sealed);
        Some((name, value))
    }
}

/// Headers of a page held back in `enforce`. The page may be replaced after its header left:
/// its length is unknown until then, and the OP's CSP must let the replacement's script run.
pub fn prepare_held_headers(resp: &mut ResponseHeader) -> pingora::Result<()> {
    resp.remove_header(&header::CONTENT_LENGTH);
    resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    let policies: Vec<String> = resp
        .headers
        .get_all(header::CONTENT_SECURITY_POLICY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(csp_allowing_auto_post)
        .collect();
    resp.remove_header(&header::CONTENT_SECURITY_POLICY);
    for policy in policies {
        resp.append_header(header::CONTENT_SECURITY_POLICY, policy)?;
    }
    Ok(())
}

/// How a remembered request is found again: by its `state`, or by its `nonce` when the answer
/// lost the state.
#[derive(Debug, Clone, Copy)]
pub enum Key<'a> {
    State(&'a str),
    Nonce(&'a str),
}

/// SHA-256 of the key (fixed size, whatever Entra sends); state and nonce hashed apart.
type KeyHash = [u8; 32];

impl Key<'_> {
    fn hash(self) -> KeyHash {
        let (domain, value) = match self {
            Key::State(v) => (b's', v),
            Key::Nonce(v) => (b'n', v),
        };
        let mut h = Sha256::new();
        h.update([domain]);
        h.update(value.as_bytes());
        h.finalize().into()
    }
}

/// The first 16 hex digits of the state's SHA-256: the state's name in log lines, which never
/// carry the state itself.
pub fn state_hash(state: &str) -> String {
    let mut out = String::with_capacity(16);
    push_hex(&mut out, &Sha256::digest(state.as_bytes())[..8]);
    out
}

/// Lowercase hex without a `format!` per byte: this runs on every accepted Entra request.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

struct Entry {
    seq: u64,
    at: Instant,
    /// The entry that counts the request (its state's, or its nonce's without a state).
    primary: bool,
    expectation: Expectation,
}

#[derive(Default)]
struct Inner {
    map: HashMap<KeyHash, Entry>,
    /// Insertion order, which is also expiry order (one TTL for all). A key remembered again
    /// leaves a stale pair behind, recognised by its `seq`.
    order: VecDeque<(KeyHash, u64)>,
    seq: u64,
    /// Requests remembered (primary entries).
    requests: usize,
}

impl Inner {
    fn remove(&mut self, key: &KeyHash) {
        if let Some(entry) = self.map.remove(key) {
            self.requests -= usize::from(entry.primary);
        }
    }
}

/// Accepted Entra requests, by state and by nonce: at most `max_entries` requests (oldest
/// evicted first), each for `ttl`. One replica's memory only: a request accepted by another
/// replica is not here.
pub struct Memory {
    inner: Mutex<Inner>,
    /// Keys held at most: two per request.
    max_keys: usize,
    /// Also the sealed cookie's lifetime.
    pub ttl: Duration,
}

impl Memory {
    pub fn new(max_entries: usize, ttl: Duration) -> Memory {
        Memory {
            inner: Mutex::new(Inner::default()),
            max_keys: 2 * max_entries.max(1),
            ttl,
        }
    }

    /// Remembers one request; returns how many are remembered now.
    pub fn remember(&self, remembered: Remembered, now: Instant) -> usize {
        let mut inner = self.lock();
        self.purge(&mut inner, now);
        let e = &remembered.expectation;
        let keys: Vec<KeyHash> = [
            e.state.as_deref().map(Key::State),
            e.nonce.as_deref().map(Key::Nonce),
        ]
        .into_iter()
        .flatten()
        .map(Key::hash)
        .collect();
        for key in &keys {
            inner.remove(key);
        }
        while inner.map.len() + keys.len() > self.max_keys {
            let Some((old, seq)) = inner.order.pop_front() else {
                break;
            };
            if inner.map.get(&old).is_some_and(|e| e.seq == seq) {
                inner.remove(&old);
            }
        }
        inner.seq += 1;
        let seq = inner.seq;
        for (i, key) in keys.iter().enumerate() {
            inner.map.insert(
                *key,
                Entry {
                    seq,
                    at: now,
                    primary: i == 0,
                    expectation: remembered.expectation.clone(),
                },
            );
            inner.order.push_back((*key, seq));
        }
        inner.requests += usize::from(!keys.is_empty());
        // Repeated keys leave stale pairs; never let them outgrow the live entries.
        if inner.order.len() > 2 * self.max_keys {
            let Inner { map, order, .. } = &mut *inner;
            order.retain(|(k, s)| map.get(k).is_some_and(|e| e.seq == *s));
        }
        inner.requests
    }

    /// What was remembered under `key`, if this replica accepted the request within the TTL.
    pub fn recall(&self, key: Key<'_>, now: Instant) -> Option<Expectation> {
        let inner = self.lock();
        inner
            .map
            .get(&key.hash())
            .filter(|e| now.duration_since(e.at) < self.ttl)
            .map(|e| e.expectation.clone())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().requests
    }

    fn purge(&self, inner: &mut Inner, now: Instant) {
        while let Some(&(key, seq)) = inner.order.front() {
            let live = inner.map.get(&key).filter(|e| e.seq == seq);
            match live {
                Some(e) if now.duration_since(e.at) < self.ttl => break,
                Some(_) => inner.remove(&key),
                None => {}
            }
            inner.order.pop_front();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent map: keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether an upstream response is one the guard reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidate {
    /// Not a page that can be a form_post to Entra.
    No,
    /// A page the guard cannot read: counted, passed unchanged.
    Skip(GuardSkip),
    Inspect(Coding),
}

pub fn candidate(req: &RequestHeader, resp: &ResponseHeader, max_body_bytes: usize) -> Candidate {
    let html = resp
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/html"));
    if req.method == http::Method::HEAD || resp.status.as_u16() != 200 || !html {
        return Candidate::No;
    }
    let Some(coding) = Coding::of(resp) else {
        return Candidate::Skip(GuardSkip::UnknownEncoding);
    };
    let announced = resp
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if announced.is_some_and(|len| len > max_body_bytes) {
        return Candidate::Skip(GuardSkip::TooLarge);
    }
    Candidate::Inspect(coding)
}

impl GuardStage {
    /// Whether the guard reads this answer; a page it holds back (`enforce`) gets the headers
    /// of a page replaced late.
    pub fn inspect(
        &self,
        req: &RequestHeader,
        resp: &mut ResponseHeader,
        metrics: &Metrics,
        cookies: GuardCookies,
    ) -> pingora::Result<Option<Inspection>> {
        Ok(match candidate(req, resp, self.max_body_bytes) {
            Candidate::No => None,
            Candidate::Skip(skip) => {
                metrics.guard_skipped(skip);
                None
            }
            Candidate::Inspect(coding) => {
                let hold = self.mode == GuardMode::Enforce;
                if hold {
                    prepare_held_headers(resp)?;
                }
                Some(Inspection {
                    buf: Vec::new(),
                    coding,
                    hold,
                    cookies,
                })
            }
        })
    }
}

/// The body of one inspected response, as it streams by.
pub struct Inspection {
    /// The body as it came, in its coding.
    buf: Vec<u8>,
    coding: Coding,
    /// `enforce`: chunks are held back until the verdict, so a violating page never reaches the
    /// browser. `monitor` copies them and lets them through at once.
    hold: bool,
    /// The request's guard cookies: the expectation when another replica accepted the request.
    cookies: GuardCookies,
}

impl Inspection {
    /// Takes one chunk of the body (`body` is what goes on to the client); false once the
    /// inspection is over: judged at the end, or too large to be a form_post.
    pub fn feed(
        &mut self,
        guard: &GuardStage,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        metrics: &Metrics,
    ) -> bool {
        if let Some(chunk) = body.as_ref() {
            if self.buf.len() + chunk.len() > guard.max_body_bytes {
                // Too large to be a form_post: let it through unread, held bytes first.
                metrics.guard_skipped(GuardSkip::TooLarge);
                if self.hold {
                    let mut all = std::mem::take(&mut self.buf);
                    all.extend_from_slice(chunk);
                    *body = Some(Bytes::from(all));
                }
                return false;
            }
            self.buf.extend_from_slice(chunk);
            if self.hold {
                *body = None;
            }
        }
        if !end_of_stream {
            return true;
        }
        let buf = std::mem::take(&mut self.buf);
        let verdict = match self.coding.decode(&buf, guard.max_body_bytes) {
            Some(html) => guard.judge(&html, &self.cookies, metrics),
            None => {
                // Not valid in its coding, or larger decoded than a form_post can be.
                metrics.guard_skipped(GuardSkip::Undecodable);
                None
            }
        };
        match verdict {
            // The header left with the OP's Content-Encoding: the replacement wears it too.
            Some(replacement) => *body = Some(Bytes::from(self.coding.encode(&replacement))),
            None if self.hold => *body = Some(Bytes::from(buf)),
            None => {}
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remembered(state: &str, sub: &str) -> Remembered {
        Remembered {
            expectation: Expectation {
                state: Some(state.into()),
                client_id: "c".into(),
                redirect_uri: "https://entra.example/cb".into(),
                client_request_id: None,
                sub: sub.into(),
                nonce: Some(format!("nonce-of-{state}")),
                acr_values: vec![],
            },
        }
    }

    #[test]
    fn a_request_is_found_by_its_state_or_its_nonce() {
        let memory = Memory::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(memory.remember(remembered("s1", "alice"), t0), 1);
        assert_eq!(
            memory.recall(Key::Nonce("nonce-of-s1"), t0).unwrap().sub,
            "alice"
        );
        // A state is not a nonce: the two are hashed apart.
        assert!(memory.recall(Key::Nonce("s1"), t0).is_none());
        let mut stateless = remembered("x", "bob");
        stateless.expectation.state = None;
        stateless.expectation.nonce = Some("n2".into());
        assert_eq!(memory.remember(stateless, t0), 2);
        assert_eq!(memory.recall(Key::Nonce("n2"), t0).unwrap().sub, "bob");
    }

    #[test]
    fn recall_within_the_ttl_only() {
        let memory = Memory::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        memory.remember(remembered("s1", "alice"), t0);
        assert_eq!(memory.recall(Key::State("s1"), t0).unwrap().sub, "alice");
        assert!(memory.recall(Key::State("s2"), t0).is_none());
        assert!(memory
            .recall(Key::State("s1"), t0 + Duration::from_secs(60))
            .is_none());
        // Expired entries leave at the next remember.
        memory.remember(remembered("s2", "bob"), t0 + Duration::from_secs(61));
        assert_eq!(memory.len(), 1);
    }

    #[test]
    fn the_oldest_is_evicted_at_the_bound() {
        let memory = Memory::new(3, Duration::from_secs(600));
        let t0 = Instant::now();
        for i in 0..5 {
            let n = memory.remember(remembered(&format!("s{i}"), "u"), t0);
            assert!(n <= 3);
        }
        assert_eq!(memory.len(), 3);
        assert!(memory.recall(Key::State("s0"), t0).is_none());
        assert!(memory.recall(Key::State("s1"), t0).is_none());
        assert!(memory.recall(Key::State("s4"), t0).is_some());
    }

    #[test]
    fn a_state_remembered_again_is_replaced_and_stale_order_stays_bounded() {
        let memory = Memory::new(2, Duration::from_secs(600));
        let t0 = Instant::now();
        memory.remember(remembered("keep", "a"), t0);
        for i in 0..100 {
            memory.remember(remembered("again", &format!("u{i}")), t0);
        }
        assert_eq!(memory.recall(Key::State("again"), t0).unwrap().sub, "u99");
        assert_eq!(memory.recall(Key::State("keep"), t0).unwrap().sub, "a");
        let inner = memory.lock();
        assert!(inner.order.len() <= 4, "{}", inner.order.len());
    }

    #[test]
    fn state_hash_is_short_and_not_the_state() {
        let h = state_hash("opaque-state-1");
        assert_eq!(h.len(), 16);
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(h, state_hash("opaque-state-2"));
    }

    fn response(status: u16, headers: &[(&'static str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (n, v) in headers {
            r.append_header(*n, *v).unwrap();
        }
        r
    }

    #[test]
    fn candidates_are_html_pages_in_a_readable_coding() {
        let get = RequestHeader::build("GET", b"/auth/x", None).unwrap();
        let head = RequestHeader::build("HEAD", b"/auth/x", None).unwrap();
        let html = [("content-type", "text/html; charset=utf-8")];
        assert_eq!(
            candidate(&get, &response(200, &html), 100),
            Candidate::Inspect(Coding::Identity)
        );
        assert_eq!(candidate(&head, &response(200, &html), 100), Candidate::No);
        assert_eq!(candidate(&get, &response(302, &html), 100), Candidate::No);
        let json = [("content-type", "application/json")];
        assert_eq!(candidate(&get, &response(200, &json), 100), Candidate::No);
        let gzip = [("content-type", "text/html"), ("content-encoding", "gzip")];
        assert_eq!(
            candidate(&get, &response(200, &gzip), 100),
            Candidate::Inspect(Coding::Gzip)
        );
        let unknown = [
            ("content-type", "text/html"),
            ("content-encoding", "compress"),
        ];
        assert_eq!(
            candidate(&get, &response(200, &unknown), 100),
            Candidate::Skip(GuardSkip::UnknownEncoding)
        );
        let big = [("content-type", "TEXT/HTML"), ("content-length", "101")];
        assert_eq!(
            candidate(&get, &response(200, &big), 100),
            Candidate::Skip(GuardSkip::TooLarge)
        );
    }
}
