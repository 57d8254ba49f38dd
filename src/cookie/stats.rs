//! The cookie layer's counters, in the spirit of `/proc/fs/fscache/stats`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters, in the spirit of `/proc/fs/fscache/stats`.
#[derive(Debug, Default)]
pub struct FscacheStats {
    pub cookies: AtomicU64,
    pub volumes: AtomicU64,
    pub acquires: AtomicU64,
    pub acquire_waits: AtomicU64,
    pub lookups: AtomicU64,
    pub lookups_positive: AtomicU64,
    pub lookups_negative: AtomicU64,
    pub lookups_failed: AtomicU64,
    pub lru_expired: AtomicU64,
    pub lru_removed: AtomicU64,
    pub lru_dropped: AtomicU64,
    pub invalidations: AtomicU64,
    pub resizes: AtomicU64,
    pub relinquishes: AtomicU64,
    pub relinquishes_retired: AtomicU64,
    pub relinquishes_dropped: AtomicU64,
    pub withdrawals: AtomicU64,
    pub nospace: AtomicU64,
    pub culled: AtomicU64,
    pub reads: AtomicU64,
    pub read_bytes: AtomicU64,
    pub read_nodata: AtomicU64,
    pub writes: AtomicU64,
    pub write_bytes: AtomicU64,
    pub writes_dropped: AtomicU64,
    pub stale: AtomicU64,
    pub prepare_to_write: AtomicU64,
}

impl FscacheStats {
    pub(super) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub(super) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub(super) fn dec(c: &AtomicU64) {
        c.fetch_sub(1, Ordering::Relaxed);
    }

    /// A snapshot as (name, value) pairs, in a stable order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("cookies", g(&self.cookies)),
            ("volumes", g(&self.volumes)),
            ("acquires", g(&self.acquires)),
            ("acquire_waits", g(&self.acquire_waits)),
            ("lookups", g(&self.lookups)),
            ("lookups_positive", g(&self.lookups_positive)),
            ("lookups_negative", g(&self.lookups_negative)),
            ("lookups_failed", g(&self.lookups_failed)),
            ("lru_expired", g(&self.lru_expired)),
            ("lru_removed", g(&self.lru_removed)),
            ("lru_dropped", g(&self.lru_dropped)),
            ("invalidations", g(&self.invalidations)),
            ("resizes", g(&self.resizes)),
            ("relinquishes", g(&self.relinquishes)),
            ("relinquishes_retired", g(&self.relinquishes_retired)),
            ("relinquishes_dropped", g(&self.relinquishes_dropped)),
            ("withdrawals", g(&self.withdrawals)),
            ("nospace", g(&self.nospace)),
            ("culled", g(&self.culled)),
            ("reads", g(&self.reads)),
            ("read_bytes", g(&self.read_bytes)),
            ("read_nodata", g(&self.read_nodata)),
            ("writes", g(&self.writes)),
            ("write_bytes", g(&self.write_bytes)),
            ("writes_dropped", g(&self.writes_dropped)),
            ("stale", g(&self.stale)),
            ("prepare_to_write", g(&self.prepare_to_write)),
        ]
    }

    /// One counter by name.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.snapshot()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }
}
