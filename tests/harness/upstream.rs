//! A recording HTTP/1.1 server standing in for the OpenID provider behind the proxy.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
        Reply {
            status: 200,
            headers: vec![
                ("Content-Type".into(), "text/plain".into()),
                ("X-Upstream".into(), "yes".into()),
            ],
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

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        // A reply that frames itself (chunked, or a deliberately wrong length) is sent as is.
        let framed = self.headers.iter().any(|(n, _)| {
            n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
        });
        let Some(chunk) = self.chunk else {
            if !framed {
                out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
            }
            out.push_str("\r\n");
            let mut out = out.into_bytes();
            out.extend_from_slice(&self.body);
            return out;
        };
        out.push_str("Transfer-Encoding: chunked\r\n\r\n");
        let mut out = out.into_bytes();
        for piece in self.body.chunks(chunk) {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        302 => "Found",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Status",
    }
}

/// The body of [`Reply::ok`] when a test does not choose one.
pub const DEFAULT_BODY: &str = "upstream says hello";

type Responder = dyn Fn(&Recorded) -> Reply + Send + Sync;

#[derive(Clone)]
enum Mode {
    Answer(Arc<Responder>),
    /// Reads and records each request, then never answers.
    Hang,
}

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    arrived: Condvar,
    stop: AtomicBool,
}

/// Listens on `127.0.0.1:0`; one thread per connection, keep-alive honoured.
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
        Upstream::spawn(Mode::Answer(Arc::new(responder)))
    }

    /// Accepts and reads requests but never answers: the proxy's read timeout must fire.
    pub fn hanging() -> Upstream {
        Upstream::spawn(Mode::Hang)
    }

    fn spawn(mode: Mode) -> Upstream {
        let listener = crate::ports::listen();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let accept_shared = shared.clone();
        let acceptor = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accept_shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let shared = accept_shared.clone();
                let mode = mode.clone();
                std::thread::spawn(move || serve(stream, &shared, &mode));
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

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Waits until `count` requests have arrived; panics after `timeout`.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        let mut requests = self.shared.requests.lock().unwrap();
        while requests.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "upstream received {} request(s) within {timeout:?}, expected {count}: {:#?}",
                    requests.len(),
                    *requests
                );
            }
            requests = self.shared.arrived.wait_timeout(requests, left).unwrap().0;
        }
        requests.clone()
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
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor blocked in accept() so that it sees the stop flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
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

/// Serves one connection until the peer closes it, the upstream stops, or an error occurs.
fn serve(stream: TcpStream, shared: &Shared, mode: &Mode) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(15)));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        // Behave like a real server: a client waiting for 100 Continue gets it.
        let Some(request) = read_request(&mut reader, Some(&mut writer)) else {
            return;
        };
        let close =
            header(&request.headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        shared.requests.lock().unwrap().push(request.clone());
        shared.arrived.notify_all();
        match mode {
            Mode::Answer(responder) => {
                if writer.write_all(&responder(&request).to_bytes()).is_err() || close {
                    return;
                }
            }
            Mode::Hang => {
                let until = Instant::now() + Duration::from_secs(120);
                while !shared.stop.load(Ordering::SeqCst) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return;
            }
        }
    }
}
