//! The fscache cookie layer: volumes, cookies, their state machine and
//! access gate, over a [`CacheBackend`] (the store).
//!
//! A cookie stands for one netfs file in the cache. Its life, as in the
//! kernel's fscache:
//!
//! ```text
//! QUIESCENT --use--> LOOKING_UP --> ACTIVE
//!                        |  (miss) -> CREATING --> ACTIVE
//!                        `-------> FAILED
//! ACTIVE --invalidate--> INVALIDATING --> ACTIVE
//! ACTIVE --idle on the LRU--> LRU_DISCARDING --> QUIESCENT
//! ACTIVE/FAILED --cache withdrawn--> WITHDRAWING --> QUIESCENT
//! any --relinquish--> RELINQUISHING --> DROPPED
//! ```
//!
//! Rules that make it race-free by construction:
//! - Every state change goes through [`transition`], which checks it
//!   against the table of allowed changes.
//! - Only one thread runs a cookie's state machine at a time (the `working`
//!   flag); a request that arrives meanwhile sets a flag and the running
//!   thread loops once more. Work on one cookie is never re-entered.
//! - The access gate: `n_accesses` counts operations in flight, plus one
//!   while the cookie is usable (`nacc_elevated`), so the count cannot
//!   reach zero, and wake the state machine, while the cookie is bound to
//!   the cache. Withdrawal, relinquishment and LRU discard drop that bias
//!   and proceed only when the count reaches zero.
//! - The invalidation counter is snapshotted by every operation when it
//!   begins and checked when it ends: an operation that straddled an
//!   invalidation returns `Stale`, never old data.
//! - An LRU discard that started before a relinquishment never overrides
//!   it: after the withdrawal the pending relinquishment is carried out.

pub mod backend;
mod cookies;
mod operation;
mod state;
mod stats;
mod store_backend;
mod volume;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

pub use backend::{CacheBackend, Lookup};
pub use cookies::Cookie;
pub use operation::{Operation, ReadOutcome, WriteOutcome};
pub use state::{CookieState, allowed};
pub use stats::FscacheStats;
pub use volume::Volume;

use crate::store::StoreError;
/// The object key under which the cookie layer keeps a volume's coherency
/// data, as an object of the volume (a key no netfs produces: it starts
/// with a NUL byte). `ringcache inspect` marks that object as internal.
pub const VOLUME_COHERENCY_KEY: &[u8] = b"\0volume-coherency";

/// The store's types, re-exported on purpose: the cookie layer's users name
/// objects, volumes and data segments by them (see `backend.rs`).
pub use crate::store::{ObjectId, Segment, Segments, StoreError as BackendError, VolumeId};

/// Errors of the cookie layer.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A live cookie or volume with this key exists (and is not going away).
    #[error("busy: {0}")]
    Busy(String),
    /// A bad argument.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The cookie was relinquished.
    #[error("the cookie has been relinquished")]
    Relinquished,
    /// The volume was relinquished.
    #[error("the volume has been relinquished")]
    VolumeRelinquished,
    /// The backend failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Result of the cookie layer.
pub type Result<T> = std::result::Result<T, CacheError>;

/// Configuration of the cookie layer.
#[derive(Debug, Clone)]
pub struct FscacheConfig {
    /// An unused cookie is discarded after this long on the LRU.
    pub lru_timeout: Duration,
}

impl Default for FscacheConfig {
    fn default() -> Self {
        FscacheConfig {
            lru_timeout: Duration::from_secs(10),
        }
    }
}

type CookieKey = (VolumeId, Vec<u8>);

struct Tables {
    volumes: HashMap<Vec<u8>, Arc<Volume>>,
    cookies: HashMap<CookieKey, Arc<Cookie>>,
}

/// The cookie layer over one cache.
pub struct Fscache {
    backend: Arc<dyn CacheBackend>,
    cfg: FscacheConfig,
    tables: Mutex<Tables>,
    tables_changed: Condvar,
    stats: FscacheStats,
    /// Persistent errors withdrew the cache: nothing is bound any more.
    withdrawn: Mutex<Option<String>>,
}

impl Fscache {
    /// A cookie layer over `backend`.
    pub fn new(backend: Arc<dyn CacheBackend>, cfg: FscacheConfig) -> Fscache {
        Fscache {
            backend,
            cfg,
            tables: Mutex::new(Tables {
                volumes: HashMap::new(),
                cookies: HashMap::new(),
            }),
            tables_changed: Condvar::new(),
            stats: FscacheStats::default(),
            withdrawn: Mutex::new(None),
        }
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters.
    pub fn stats(&self) -> &FscacheStats {
        &self.stats
    }

    /// Why the cache was withdrawn, if it was.
    pub fn withdrawn(&self) -> Option<String> {
        self.withdrawn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Fscache {
    /// Cookies currently known (acquired and not yet dropped).
    pub fn cookie_count(&self) -> usize {
        self.tables().cookies.len()
    }
}
