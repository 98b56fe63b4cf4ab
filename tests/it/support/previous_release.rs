//! The previous release of the worker, the one a rolling update replaces: built by
//! `scripts/previous-release.sh` from this clone's history (the commit pinned in
//! `scripts/tools/previous-release/commit`) into a cache on the machine. A release that cannot be
//! built fails the test.

use std::path::PathBuf;
use std::sync::OnceLock;

/// The previous release's binary: built once per test run (a no-op when the cache has it).
pub fn path() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| super::built_by("scripts/previous-release.sh"))
}
