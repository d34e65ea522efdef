//! Shared helpers for integration tests: locating `../shared/data` beside the repository.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

/// `<repo>/../shared/data/<rel>`, or `None` (with a message) when that folder is absent.
pub fn shared_data(rel: &str) -> Option<PathBuf> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = repo.join("../shared/data").join(rel);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("SKIPPED: {} not found (the shared/ folder is expected beside the repository)", path.display());
        None
    }
}
