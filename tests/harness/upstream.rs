//! A recording HTTP/1.1 server standing in for the OpenID provider behind the proxy (or for a
//! load-balanced instance of it): it answers as the test says, or fails the way a real upstream
//! fails (see [`Action`]), and can be killed and brought back on its address.

use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::drills::reset;
use crate::http::{header, read_body, read_head, request_framing, Headers};

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    pub version: String,
    /// Header fields in the order received.
    pub headers: Headers,
    /// The payload (de-chunked).
    pub body: Vec<u8>,
    /// Every byte of the request as it came off the socket.
    pub raw: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the upstream answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
    /// `Some(n)`: sent chunked, `n` bytes a chunk (see [`Reply::chunked`]).
    pub chunk: Option<usize>,
}

impl Reply {
    /// `200` with `x-upstream: yes`, so that a test can tell an upstream answer from the proxy's.
    pub fn ok(body: &str) -> Reply {
        Reply::typed("text/plain", body).header("X-Upstream", "yes")
    }

    /// `200` with this `Content-Type` and no other field: not marked as [`Reply::ok`] is, for
    /// the answers a test compares whole or reads as something else than text.
    pub fn typed(content_type: &str, body: &str) -> Reply {
        Reply {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.as_bytes().to_vec(),
            chunk: None,
        }
    }

    pub fn status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The body sent with `Transfer-Encoding: chunked` in pieces of `chunk` bytes, instead of
    /// with a `Content-Length`: the proxy sees it arrive in parts, with no announced length.
    pub fn chunked(mut self, chunk: usize) -> Reply {
        self.chunk = Some(chunk.max(1));
        self
    }

    /// Status line and header fields, then `framing` (a `Content-Length` or
    /// `Transfer-Encoding` field, or nothing when the reply frames itself) and the empty line.
    fn head(&self, framing: &str) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(framing);
        out.push_str("\r\n");
        out.into_bytes()
    }

    /// The head announcing the whole body's length (unless the reply frames itself).
    fn length_head(&self) -> Vec<u8> {
        // A reply that frames itself (chunked, or a deliberately wrong length) is sent as is.
        let framed = self.headers.iter().any(|(n, _)| {
            n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
        });
        if framed {
            self.head("")
        } else {
            self.head(&format!("Content-Length: {}\r\n", self.body.len()))
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let Some(chunk) = self.chunk else {
            let mut out = self.length_head();
            out.extend_from_slice(&self.body);
            return out;
        };
        let mut out = self.head("Transfer-Encoding: chunked\r\n");
        for piece in self.body.chunks(chunk) {
            out.extend_from_slice(&chunk_bytes(piece));
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }
}

/// One chunk of a chunked body.
fn chunk_bytes(piece: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", piece.len()).into_bytes();
    out.extend_from_slice(piece);
    out.extend_from_slice(b"\r\n");
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        302 => "Found",
        400 => "Bad Request",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// The body of [`Reply::ok`] when a test does not choose one.
pub const DEFAULT_BODY: &str = "upstream says hello";

/// What the upstream does with one request (chosen per request by the test's closure, see
/// [`Upstream::with_actions`]): answer, or fail in one of the ways a real upstream fails.
#[derive(Debug, Clone)]
pub enum Action {
    /// Answers at once.
    Reply(Reply),
    /// Answers after this delay.
    Delay(Duration, Reply),
    /// Sends the head at once, then the body in `pieces` parts, `gap` apart: slow, but never
    /// silent for longer than `gap`.
    Trickle {
        reply: Reply,
        pieces: usize,
        gap: Duration,
    },
    /// Reads the request and never answers (the connection is held until the upstream stops).
    Hang,
    /// Sends the head (`Content-Length` of the whole body) and half the body, then closes
    /// (FIN).
    HalfThenClose(Reply),
    /// The same, then a TCP reset.
    HalfThenReset(Reply),
    /// A chunked head and one chunk of half the body, then a TCP reset.
    HalfChunkedThenReset(Reply),
    /// Reads the request, then a TCP reset without a byte of answer.
    ResetBeforeReply,
}

type Behaviour = dyn Fn(&Recorded) -> Action + Send + Sync;

struct Shared {
    stop: AtomicBool,
    /// How many requests the log keeps (a soak must not keep them all).
    log_cap: usize,
    count: AtomicUsize,
    /// The first `log_cap` requests, in arrival order.
    log: Mutex<Vec<Recorded>>,
    arrived: Condvar,
    /// Open connections by id, shut when the upstream stops (so that the proxy's pooled ones
    /// die with it, as when a pod dies); a connection removes itself when it ends, so that a
    /// reset really is the last close of its socket.
    connections: Mutex<Vec<(u64, TcpStream)>>,
    next_id: AtomicU64,
}

impl Shared {
    fn forget(&self, id: u64) {
        self.connections.lock().unwrap().retain(|(i, _)| *i != id);
    }
}

/// Listens on a loopback port of its own (see [`crate::ports`]); one thread per connection,
/// keep-alive honoured for the actions that complete a response. Stopped when dropped or
/// [killed](Upstream::kill): listener and every open connection closed.
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Answers every request with [`Reply::ok`]`(`[`DEFAULT_BODY`]`)`.
    pub fn start() -> Upstream {
        Upstream::with_responder(|_| Reply::ok(DEFAULT_BODY))
    }

    pub fn with_responder(
        responder: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        Upstream::with_actions(move |request| Action::Reply(responder(request)))
    }

    /// Accepts and reads requests but never answers: the proxy's read timeout must fire.
    pub fn hanging() -> Upstream {
        Upstream::with_actions(|_| Action::Hang)
    }

    pub fn with_actions(behaviour: impl Fn(&Recorded) -> Action + Send + Sync + 'static) -> Self {
        Upstream::start_with_log_cap(usize::MAX, behaviour)
    }

    /// Keeps only the first `log_cap` requests (0 for a soak: the behaviour closure counts).
    pub fn start_with_log_cap(
        log_cap: usize,
        behaviour: impl Fn(&Recorded) -> Action + Send + Sync + 'static,
    ) -> Self {
        Upstream::serve(crate::ports::listen(), log_cap, Arc::new(behaviour))
    }

    /// Starts on the address of a killed upstream: an upstream that comes back.
    pub fn start_on(
        addr: SocketAddr,
        behaviour: impl Fn(&Recorded) -> Action + Send + Sync + 'static,
    ) -> Self {
        let listener = crate::ports::rebind(addr, Duration::from_secs(10));
        Upstream::serve(listener, usize::MAX, Arc::new(behaviour))
    }

    fn serve(listener: TcpListener, log_cap: usize, behaviour: Arc<Behaviour>) -> Self {
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            log_cap,
            count: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            connections: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
        });
        let accept_shared = shared.clone();
        let acceptor = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accept_shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let Ok(clone) = stream.try_clone() else {
                    continue;
                };
                let id = accept_shared.next_id.fetch_add(1, Ordering::SeqCst);
                accept_shared.connections.lock().unwrap().push((id, clone));
                let shared = accept_shared.clone();
                let behaviour = behaviour.clone();
                std::thread::spawn(move || {
                    serve(stream, id, &shared, &*behaviour);
                    shared.forget(id);
                });
            }
        });
        Upstream {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received so far (complete heads and bodies), kept in the log or not.
    pub fn count(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// Every request received so far (up to the log cap), in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Waits until `count` requests have arrived, and returns the log; panics after `timeout`.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        let mut log = self.shared.log.lock().unwrap();
        while self.count() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "upstream received {} request(s) within {timeout:?}, expected {count}: {:#?}",
                    self.count(),
                    *log
                );
            }
            log = self.shared.arrived.wait_timeout(log, left).unwrap().0;
        }
        log.clone()
    }

    /// The one request the upstream received; panics if there is none or more than one.
    pub fn only_request(&self) -> Recorded {
        let requests = self.wait_for(1, Duration::from_secs(5));
        assert_eq!(
            requests.len(),
            1,
            "upstream received more than one request: {requests:#?}"
        );
        requests.into_iter().next().unwrap()
    }

    /// Asserts that nothing reached the upstream, after letting an in-flight request land.
    pub fn assert_untouched(&self) {
        std::thread::sleep(Duration::from_millis(200));
        let requests = self.requests();
        assert!(
            requests.is_empty(),
            "upstream must receive nothing, it received {requests:#?}"
        );
    }

    /// Stops accepting and shuts every open connection (a killed upstream); returns the
    /// address it had, for [`Upstream::start_on`].
    pub fn kill(mut self) -> SocketAddr {
        self.stop();
        self.addr
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor blocked in accept() so that it sees the stop flag and drops the
        // listener; no connection is registered after it has returned.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for (_, connection) in self.shared.connections.lock().unwrap().drain(..) {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The two halves of a server connection, bounded so that a test's server thread cannot
/// outlive a stuck peer for long. `None` when the socket cannot be cloned.
pub(crate) fn server_halves(stream: TcpStream) -> Option<(BufReader<TcpStream>, TcpStream)> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(15)));
    let reader = BufReader::new(stream.try_clone().ok()?);
    Some((reader, stream))
}

/// Sleeps `delay` in small steps, giving up early when `stop` is set.
pub(crate) fn pause(stop: &AtomicBool, delay: Duration) {
    let until = Instant::now() + delay;
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10).min(until - Instant::now()));
    }
}

/// Reads one request off a server connection: `None` when the peer closed it or sent something
/// unreadable. With `continue_to`, a client waiting for `100 Continue` gets it there before its
/// body is read.
pub(crate) fn read_request(
    reader: &mut BufReader<TcpStream>,
    continue_to: Option<&mut TcpStream>,
) -> Option<Recorded> {
    let mut raw = Vec::new();
    let head = read_head(reader, &mut raw).ok()??;
    let mut parts = head.start_line.splitn(3, ' ');
    let (method, target, version) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let framing = request_framing(&head.headers).ok()?;
    let expects_continue =
        header(&head.headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if let Some(writer) = continue_to.filter(|_| expects_continue) {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").ok()?;
    }
    let body = read_body(reader, framing, &mut raw).ok()?;
    Some(Recorded {
        method,
        target,
        version,
        headers: head.headers,
        body,
        raw,
    })
}

/// Serves one connection until the peer closes it, the upstream stops, an action ends it, or
/// an error occurs.
fn serve(stream: TcpStream, id: u64, shared: &Shared, behaviour: &Behaviour) {
    let Some((mut reader, mut writer)) = server_halves(stream) else {
        return;
    };
    while !shared.stop.load(Ordering::SeqCst) {
        // Behave like a real server: a client waiting for 100 Continue gets it.
        let Some(request) = read_request(&mut reader, Some(&mut writer)) else {
            return;
        };
        let close =
            header(&request.headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        // Recorded before the behaviour runs, which may take its time: a test waiting for the
        // request sees it in flight.
        {
            let mut log = shared.log.lock().unwrap();
            if log.len() < shared.log_cap {
                log.push(request.clone());
            }
            shared.count.fetch_add(1, Ordering::SeqCst);
            shared.arrived.notify_all();
        }
        let action = behaviour(&request);
        // The bytes of an answer cut short: the head announces the whole body.
        let half = |reply: &Reply| {
            let mut bytes = reply.length_head();
            bytes.extend_from_slice(&reply.body[..reply.body.len() / 2]);
            bytes
        };
        // A reset must be the last close of the socket: the connection list lets its clone go
        // first.
        let reset_after = |bytes: &[u8], reader: BufReader<TcpStream>, mut writer: TcpStream| {
            if !bytes.is_empty() {
                let _ = writer.write_all(bytes).and_then(|()| writer.flush());
                // Let the bytes leave before the reset discards the send buffer.
                std::thread::sleep(Duration::from_millis(50));
            }
            shared.forget(id);
            drop(reader);
            reset(writer);
        };
        let keep_going = match action {
            Action::Reply(reply) => writer.write_all(&reply.to_bytes()).is_ok(),
            Action::Delay(delay, reply) => {
                pause(&shared.stop, delay);
                writer.write_all(&reply.to_bytes()).is_ok()
            }
            Action::Trickle { reply, pieces, gap } => {
                let mut ok = writer.write_all(&reply.length_head()).is_ok();
                let size = reply.body.len().div_ceil(pieces.max(1)).max(1);
                for piece in reply.body.chunks(size) {
                    if !ok {
                        break;
                    }
                    pause(&shared.stop, gap);
                    ok = writer
                        .write_all(piece)
                        .and_then(|()| writer.flush())
                        .is_ok();
                }
                ok
            }
            Action::Hang => {
                pause(&shared.stop, Duration::from_secs(120));
                false
            }
            Action::HalfThenClose(reply) => {
                let _ = writer
                    .write_all(&half(&reply))
                    .and_then(|()| writer.flush());
                false
            }
            Action::HalfThenReset(reply) => return reset_after(&half(&reply), reader, writer),
            Action::HalfChunkedThenReset(reply) => {
                let mut bytes = reply.head("Transfer-Encoding: chunked\r\n");
                bytes.extend_from_slice(&chunk_bytes(&reply.body[..reply.body.len() / 2]));
                return reset_after(&bytes, reader, writer);
            }
            Action::ResetBeforeReply => return reset_after(&[], reader, writer),
        };
        if !keep_going || close {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}
