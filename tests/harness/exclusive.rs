//! Tests that load the machine, and tests whose assertions depend on timing, never run beside
//! one another: in one test process on two cores, a connection flood next to the upgrade drill
//! starves the drill's clients between `connect` and their first byte, and Pingora drops a
//! connection that has sent nothing when its graceful shutdown begins (docs/PINGORA.md).

use std::sync::{Mutex, MutexGuard};

static HEAVY: Mutex<()> = Mutex::new(());

/// Held for the whole of a heavy or timing-sensitive test.
pub fn heavy() -> MutexGuard<'static, ()> {
    // A test that failed while holding it leaves nothing to repair.
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}
