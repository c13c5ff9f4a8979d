//! Loopback ports. Every end-to-end test runs in one process, so the ports of one test must
//! never be handed to another: not while a test holds them, and not while it has let one go
//! for a moment and means to bind it again (a proxy told to listen there, an upstream or a key
//! server that goes down and comes back on its address).
//!
//! Every port the harness binds or hands out is recorded for the life of the process, and
//! never given out again. Ports still come from the OS (`127.0.0.1:0`); the record only skips
//! the ones this process already gave to someone.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A listener on a loopback port no other part of this process was given.
pub fn listen() -> TcpListener {
    // Ports the OS offered that are someone else's stay bound here until the search ends, so
    // that the OS offers another.
    let mut refused = Vec::new();
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("a bound address").port();
        if GIVEN.lock().unwrap().insert(port) {
            return listener;
        }
        refused.push(listener);
    }
}

/// A loopback address nobody listens on, kept for the caller: a listener of the proxy under
/// test, or an upstream that is down (connections refused) until the test binds it with
/// [`rebind`].
pub fn closed_port() -> SocketAddr {
    listen().local_addr().expect("a bound address")
}

/// Listens on `addr` again, a port this process was given (see [`listen`], [`closed_port`]):
/// retries for a while, as the port may still be held by the connections of its last listener
/// or by a late close.
pub fn rebind(addr: SocketAddr, timeout: Duration) -> TcpListener {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpListener::bind(addr) {
            Ok(listener) => return listener,
            Err(e) if Instant::now() > deadline => panic!("cannot listen on {addr} again: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
