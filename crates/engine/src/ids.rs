//! Identifiers: run ids and message ids that are unique without coordination.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// A per-process random number, mixed into generated ids so two processes do not collide.
pub(crate) fn process_nonce() -> u32 {
    static NONCE: OnceLock<u32> = OnceLock::new();
    *NONCE.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
        );
        h.write_u32(std::process::id());
        h.finish() as u32
    })
}

static RUN_SEQ: AtomicU64 = AtomicU64::new(1);

/// A new run id: `run_` followed by hex digits.
pub fn new_run_id() -> String {
    format!("run_{:08x}{:06x}", process_nonce(), RUN_SEQ.fetch_add(1, Ordering::Relaxed))
}
