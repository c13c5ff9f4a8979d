//! The end-to-end tests: one test binary, one module per area. Each test starts the real
//! `eam-proxy` binary through the harness (`eam_tests`, in `harness/`).
//!
//! One binary rather than one per file: the harness and its dependencies are linked once, and
//! the tests of every area share the test threads instead of waiting for each other's slowest.
//! Tests of different areas therefore run at the same time in one process: what a test holds
//! must be its own. The harness gives each its own directory (`tempdir`) and its own loopback
//! ports (`ports`), and no test changes the environment or signals anything but its own proxy.
//!
//! `cargo test -p eam-tests --test end_to_end -- fault_drills::` runs one area.

mod config_check;
mod doctor;
mod entra_reject;
mod entra_rewrite;
mod fault_drills;
mod forwarded;
mod key_lifecycle;
mod keys;
mod limits;
mod load_balancing;
mod operations;
mod passthrough;
mod replicas;
mod response_guard;
mod spoofing;
mod tls;
mod x5c;
