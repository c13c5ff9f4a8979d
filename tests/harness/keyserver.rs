//! A loopback key server standing in for `login.microsoftonline.com/.../discovery/v2.0/keys`.
//!
//! It can be switched, while the proxy runs, to every way a real key endpoint fails: down
//! (connection refused), an error status, garbage, an oversized body, a slow answer. It records
//! every fetch with the mode it was answered in, so that tests can count fetches exactly.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::header;
use crate::upstream::{pause, read_request, server_halves};

pub const KEYS_PATH: &str = "/keys";

/// Bodies of [`KeyMode::Oversized`] exceed the proxy's 1 MiB cap by this much.
const OVERSIZE_MARGIN: usize = 64 * 1024;
const ONE_MIB: usize = 1024 * 1024;

/// How the key server answers `GET /keys`. Modes other than [`KeyMode::Serve`] still use the
/// current key set where they send one, so that a proxy which wrongly accepted the answer would
/// visibly switch to that set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    /// `200`, the current key set.
    Serve,
    /// Listener closed and open connections shut: connection refused.
    Down,
    /// This status, with the current key set as its body.
    Status(u16),
    /// `200 application/json` whose body is an HTML error page.
    Garbage,
    /// `200`, the current key set padded with an unknown member to more than 1 MiB: announced
    /// by `Content-Length`, or chunked so that only counting the bytes can catch it.
    Oversized { chunked: bool },
    /// The current key set, after this delay before the status line.
    SlowHeaders(Duration),
    /// Headers and half the body at once, the rest after this delay.
    SlowBody(Duration),
    /// `302` to the key path of this loopback port (another key server).
    Redirect(u16),
}

impl KeyMode {
    pub fn label(&self) -> &'static str {
        match self {
            KeyMode::Serve => "serve",
            KeyMode::Down => "down",
            KeyMode::Status(_) => "status",
            KeyMode::Garbage => "garbage",
            KeyMode::Oversized { chunked: false } => "oversized",
            KeyMode::Oversized { chunked: true } => "oversized-chunked",
            KeyMode::SlowHeaders(_) => "slow-headers",
            KeyMode::SlowBody(_) => "slow-body",
            KeyMode::Redirect(_) => "redirect",
        }
    }
}

/// One `GET /keys` as the server received it.
#[derive(Debug, Clone)]
pub struct Fetch {
    pub at: Instant,
    /// The mode it was answered in (its [`KeyMode::label`]).
    pub mode: &'static str,
}

struct State {
    jwks: Value,
    mode: KeyMode,
    fetches: Vec<Fetch>,
}

struct Shared {
    state: Mutex<State>,
    fetched: Condvar,
    /// `None` while the server is down.
    listener: Mutex<Option<TcpListener>>,
    /// Open connections by id, shut when the server goes down (so that pooled ones die too).
    connections: Mutex<Vec<(u64, TcpStream)>>,
    next_connection: AtomicU64,
    stop: AtomicBool,
}

/// Serves a JWKS at [`KEYS_PATH`]; the set and the [`KeyMode`] can be swapped while the proxy
/// runs (key rotation, outages).
pub struct KeyServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl KeyServer {
    pub fn start(jwks: Value) -> KeyServer {
        let listener = crate::ports::listen();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                jwks,
                mode: KeyMode::Serve,
                fetches: Vec::new(),
            }),
            fetched: Condvar::new(),
            listener: Mutex::new(Some(listener)),
            connections: Mutex::new(Vec::new()),
            next_connection: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let accept_shared = shared.clone();
        let acceptor = std::thread::spawn(move || accept_loop(&accept_shared));
        KeyServer {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Starts a server that is already down: its address is known, connections are refused
    /// until [`KeyServer::set_mode`] brings it up.
    pub fn start_down(jwks: Value) -> KeyServer {
        let server = KeyServer::start(jwks);
        server.set_mode(KeyMode::Down);
        server
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/keys`: plain HTTP, which the proxy allows for loopback only.
    pub fn url(&self) -> String {
        format!("http://{}{KEYS_PATH}", self.addr)
    }

    pub fn set_jwks(&self, jwks: Value) {
        self.shared.state.lock().unwrap().jwks = jwks;
    }

    /// Switches the answer of the next fetches. `Down` closes the listening socket and every
    /// open connection; any other mode reopens the listener on the same port if it was down.
    pub fn set_mode(&self, mode: KeyMode) {
        let mut listener = self.shared.listener.lock().unwrap();
        self.shared.state.lock().unwrap().mode = mode;
        if mode == KeyMode::Down {
            *listener = None;
            for (_, connection) in self.shared.connections.lock().unwrap().drain(..) {
                let _ = connection.shutdown(Shutdown::Both);
            }
        } else if listener.is_none() {
            *listener = Some(rebind(self.addr));
        }
    }

    pub fn mode(&self) -> KeyMode {
        self.shared.state.lock().unwrap().mode
    }

    /// How many times the key set was requested (in any mode).
    pub fn fetches(&self) -> usize {
        self.shared.state.lock().unwrap().fetches.len()
    }

    /// Every fetch so far, in arrival order.
    pub fn fetch_log(&self) -> Vec<Fetch> {
        self.shared.state.lock().unwrap().fetches.clone()
    }

    /// Waits until `count` fetches in total have arrived; panics after `timeout`.
    pub fn wait_for_fetches(&self, count: usize, timeout: Duration) -> Vec<Fetch> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.state.lock().unwrap();
        while state.fetches.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "key server fetched {} time(s) within {timeout:?}, expected {count}: {:?}",
                    state.fetches.len(),
                    state.fetches
                );
            }
            state = self.shared.fetched.wait_timeout(state, left).unwrap().0;
        }
        state.fetches.clone()
    }
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for (_, connection) in self.shared.connections.lock().unwrap().drain(..) {
            let _ = connection.shutdown(Shutdown::Both);
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Binds `addr` again after a `Down` period.
fn rebind(addr: SocketAddr) -> TcpListener {
    let listener = crate::ports::rebind(addr, Duration::from_secs(5));
    listener.set_nonblocking(true).unwrap();
    listener
}

/// Polls the (non-blocking) listener, so that `set_mode(Down)` can close it at any time.
fn accept_loop(shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let accepted = match shared.listener.lock().unwrap().as_ref() {
            Some(listener) => listener.accept().ok(),
            None => None,
        };
        let Some((stream, _)) = accepted else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        if stream.set_nonblocking(false).is_err() {
            continue;
        }
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
        shared.connections.lock().unwrap().push((id, clone));
        let shared = shared.clone();
        std::thread::spawn(move || {
            serve(stream, &shared);
            shared.connections.lock().unwrap().retain(|(i, _)| *i != id);
        });
    }
}

fn head(status: u16, content_type: &str, framing: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status} Status\r\nContent-Type: {content_type}\r\n{framing}\r\n")
        .into_bytes()
}

fn fixed(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = head(
        status,
        content_type,
        &format!("Content-Length: {}\r\n", body.len()),
    );
    out.extend_from_slice(body);
    out
}

/// The key set with an unknown member that takes it past 1 MiB; still a valid JWKS.
fn oversized(jwks: &Value) -> Vec<u8> {
    let mut padded = jwks.clone();
    padded["padding"] = Value::String("x".repeat(ONE_MIB + OVERSIZE_MARGIN));
    padded.to_string().into_bytes()
}

/// Answers one key request per the mode; `false` when the connection must end.
fn answer(writer: &mut TcpStream, shared: &Shared, mode: KeyMode, jwks: &Value) -> bool {
    const JSON: &str = "application/json";
    let body = jwks.to_string().into_bytes();
    let written = match mode {
        KeyMode::Serve => writer.write_all(&fixed(200, JSON, &body)),
        KeyMode::Down => return false,
        KeyMode::Status(status) => writer.write_all(&fixed(status, JSON, &body)),
        KeyMode::Redirect(port) => {
            let location = format!("Location: http://127.0.0.1:{port}{KEYS_PATH}\r\n");
            let out = head(302, JSON, &format!("{location}Content-Length: 0\r\n"));
            writer.write_all(&out)
        }
        KeyMode::Garbage => writer.write_all(&fixed(
            200,
            JSON,
            b"<html><body><h1>502 Bad Gateway</h1>captive portal</body></html>",
        )),
        KeyMode::Oversized { chunked: false } => {
            writer.write_all(&fixed(200, JSON, &oversized(jwks)))
        }
        KeyMode::Oversized { chunked: true } => {
            let body = oversized(jwks);
            let mut result = writer.write_all(&head(200, JSON, "Transfer-Encoding: chunked\r\n"));
            for chunk in body.chunks(64 * 1024) {
                if result.is_err() {
                    break;
                }
                let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                framed.extend_from_slice(chunk);
                framed.extend_from_slice(b"\r\n");
                result = writer.write_all(&framed);
            }
            result.and_then(|()| writer.write_all(b"0\r\n\r\n"))
        }
        KeyMode::SlowHeaders(delay) => {
            pause(&shared.stop, delay);
            writer.write_all(&fixed(200, JSON, &body))
        }
        KeyMode::SlowBody(delay) => {
            let (first, rest) = body.split_at(body.len() / 2);
            let mut out = head(200, JSON, &format!("Content-Length: {}\r\n", body.len()));
            out.extend_from_slice(first);
            writer
                .write_all(&out)
                .and_then(|()| writer.flush())
                .and_then(|()| {
                    pause(&shared.stop, delay);
                    writer.write_all(rest)
                })
        }
    };
    written.is_ok()
}

/// Serves one connection (keep-alive honoured) until the peer closes it, the server goes down
/// or stops, or an error occurs.
fn serve(stream: TcpStream, shared: &Shared) {
    let Some((mut reader, mut writer)) = server_halves(stream) else {
        return;
    };
    while !shared.stop.load(Ordering::SeqCst) {
        let Some(request) = read_request(&mut reader, None) else {
            return;
        };
        let path = request.target.split('?').next().unwrap_or("");
        let is_fetch = request.method == "GET" && path == KEYS_PATH;
        let (mode, jwks) = {
            let mut state = shared.state.lock().unwrap();
            if is_fetch {
                let fetch = Fetch {
                    at: Instant::now(),
                    mode: state.mode.label(),
                };
                state.fetches.push(fetch);
                shared.fetched.notify_all();
            }
            (state.mode, state.jwks.clone())
        };
        let keep_going = if is_fetch {
            answer(&mut writer, shared, mode, &jwks)
        } else if mode == KeyMode::Down {
            false
        } else {
            writer
                .write_all(&fixed(404, "text/plain", b"not found"))
                .is_ok()
        };
        let close =
            header(&request.headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if !keep_going || close {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}
