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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use backend::{CacheBackend, Lookup};

use crate::store::{ObjectId, Segment, StoreError, VolumeId};

/// A cookie's state, after fscache's `enum fscache_cookie_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CookieState {
    Quiescent,
    LookingUp,
    Creating,
    Active,
    Invalidating,
    Failed,
    LruDiscarding,
    Withdrawing,
    Relinquishing,
    Dropped,
}

use CookieState as S;

/// Whether `from -> to` is a change the state machine may make.
pub fn allowed(from: CookieState, to: CookieState) -> bool {
    matches!(
        (from, to),
        (S::Quiescent, S::LookingUp)
            | (S::Quiescent, S::Relinquishing)
            | (S::LookingUp, S::Creating)
            | (S::LookingUp, S::Active)
            | (S::LookingUp, S::Failed)
            | (S::Creating, S::Active)
            | (S::Creating, S::Failed)
            | (S::Active, S::Invalidating)
            | (S::Invalidating, S::Active)
            | (S::Invalidating, S::Failed)
            | (S::Active, S::LruDiscarding)
            | (S::Active, S::Withdrawing)
            | (S::Active, S::Relinquishing)
            | (S::Failed, S::Withdrawing)
            | (S::Failed, S::Relinquishing)
            | (S::Failed, S::Quiescent)
            | (S::LruDiscarding, S::Quiescent)
            | (S::LruDiscarding, S::Relinquishing)
            | (S::Withdrawing, S::Quiescent)
            | (S::Withdrawing, S::Relinquishing)
            | (S::Relinquishing, S::Dropped)
    )
}

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
    fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    fn dec(c: &AtomicU64) {
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

struct VolumeInner {
    n_cookies: u32,
    relinquished: bool,
}

/// A volume: the parent of cookies, with its own key and coherency data.
pub struct Volume {
    key: Vec<u8>,
    id: VolumeId,
    inner: Mutex<VolumeInner>,
}

impl Volume {
    /// The volume's key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
    /// The backend's id for it.
    pub fn id(&self) -> VolumeId {
        self.id
    }
}

#[derive(Debug)]
struct CookieInner {
    state: CookieState,
    /// Users (use/unuse).
    n_active: u32,
    /// Operations in flight, plus one while `nacc_elevated`.
    n_accesses: u32,
    /// The cookie is bound to the cache: new accesses may begin, and the
    /// access count holds a bias so the state machine is not woken by it.
    nacc_elevated: bool,
    inval_counter: u64,
    object: Option<ObjectId>,
    aux: Vec<u8>,
    size: u64,
    /// Nothing to read: a miss, a fresh invalidation or a withdrawal.
    no_data_to_read: bool,
    // Requests for the state machine.
    do_relinquish: bool,
    do_retire: bool,
    do_withdraw: bool,
    do_lru_discard: bool,
    do_invalidate: bool,
    do_prepare_to_write: bool,
    do_resize: bool,
    /// Set when a user with will_modify needs prepare_to_write once.
    local_write: bool,
    /// When the cookie went on the LRU (n_active reached 0).
    lru_since: Option<Instant>,
    /// A thread is running this cookie's state machine.
    working: bool,
    /// Run the state machine again before leaving it.
    again: bool,
    /// Transitions made, for tests.
    history_len: u64,
}

/// A cookie: one netfs object in the cache.
pub struct Cookie {
    volume: Arc<Volume>,
    key: Vec<u8>,
    inner: Mutex<CookieInner>,
    changed: Condvar,
}

impl std::fmt::Debug for Cookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cookie")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("state", &self.state())
            .finish()
    }
}

impl Cookie {
    fn lock(&self) -> MutexGuard<'_, CookieInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current state.
    pub fn state(&self) -> CookieState {
        self.lock().state
    }

    /// Operations in flight (without the bias).
    pub fn accesses(&self) -> u32 {
        let g = self.lock();
        g.n_accesses - u32::from(g.nacc_elevated)
    }

    /// Users of the cookie.
    pub fn users(&self) -> u32 {
        self.lock().n_active
    }

    /// The invalidation counter.
    pub fn inval_counter(&self) -> u64 {
        self.lock().inval_counter
    }

    /// The backend object, while bound.
    pub fn object(&self) -> Option<ObjectId> {
        self.lock().object
    }

    /// The cookie's key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The volume the cookie is in.
    pub fn volume(&self) -> &Arc<Volume> {
        &self.volume
    }

    /// Number of state changes so far.
    pub fn transitions(&self) -> u64 {
        self.lock().history_len
    }
}

/// The one way to change a cookie's state.
fn transition(c: &Cookie, g: &mut CookieInner, to: CookieState) {
    let from = g.state;
    if !allowed(from, to) {
        // A bug: refuse the change (never crash the daemon) and say so.
        tracing::error!(key = %String::from_utf8_lossy(&c.key), ?from, ?to, "illegal cookie state change refused");
        debug_assert!(false, "illegal cookie state change {from:?} -> {to:?}");
        return;
    }
    g.state = to;
    g.history_len += 1;
    c.changed.notify_all();
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

/// What a read found.
#[derive(Debug)]
pub enum ReadOutcome {
    /// Cached data and holes, covering the range.
    Data(Vec<Segment>),
    /// Nothing to read from the cache: fetch from the server.
    NoData,
    /// The object was invalidated during the read: discard and refetch.
    Stale,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// Not cached (cache withdrawn, cookie not bound, no space): counted.
    Dropped,
    /// The object was invalidated during the write: the data is not cached.
    Stale,
}

/// One access to a cookie's data: holds the access gate open until dropped.
pub struct Operation<'a> {
    cache: &'a Fscache,
    cookie: Arc<Cookie>,
    object: Option<ObjectId>,
    /// The object's data generation when the access began.
    data_gen: u64,
    inval_counter: u64,
    no_data: bool,
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

    // ------------------------------------------------------------ volumes

    /// Acquire a volume by printable key. A second acquire of a live
    /// volume fails with `Busy`.
    pub fn acquire_volume(&self, key: &str, aux: &[u8]) -> Result<Arc<Volume>> {
        ringcache_ondisk::check_volume_key(key.as_bytes())
            .map_err(|e| CacheError::Invalid(e.to_string()))?;
        if let Some(why) = self.withdrawn() {
            return Err(CacheError::Store(StoreError::Failed(why)));
        }
        {
            let t = self.tables();
            if t.volumes.contains_key(key.as_bytes()) {
                return Err(CacheError::Busy(format!(
                    "volume {key:?} is already acquired"
                )));
            }
        }
        let id = self.backend.acquire_volume(key.as_bytes(), aux)?;
        let v = Arc::new(Volume {
            key: key.as_bytes().to_vec(),
            id,
            inner: Mutex::new(VolumeInner {
                n_cookies: 0,
                relinquished: false,
            }),
        });
        let mut t = self.tables();
        if t.volumes.contains_key(key.as_bytes()) {
            return Err(CacheError::Busy(format!(
                "volume {key:?} is already acquired"
            )));
        }
        t.volumes.insert(v.key.clone(), v.clone());
        FscacheStats::inc(&self.stats.volumes);
        Ok(v)
    }

    /// Relinquish a volume whose cookies are all relinquished; with
    /// `invalidate`, everything cached in it is deleted.
    pub fn relinquish_volume(&self, volume: &Arc<Volume>, invalidate: bool) -> Result<()> {
        {
            let mut vi = volume.inner.lock().unwrap_or_else(|e| e.into_inner());
            if vi.relinquished {
                return Err(CacheError::VolumeRelinquished);
            }
            if vi.n_cookies > 0 {
                return Err(CacheError::Busy(format!(
                    "volume still has {} cookies",
                    vi.n_cookies
                )));
            }
            vi.relinquished = true;
        }
        let r = self.backend.relinquish_volume(volume.id, invalidate);
        let mut t = self.tables();
        if t.volumes
            .get(&volume.key)
            .is_some_and(|v| Arc::ptr_eq(v, volume))
        {
            t.volumes.remove(&volume.key);
        }
        FscacheStats::dec(&self.stats.volumes);
        drop(t);
        self.tables_changed.notify_all();
        r.map_err(CacheError::from)
    }

    // ------------------------------------------------------------ cookies

    /// Acquire a cookie for `key` in `volume`. If a cookie with the same
    /// key is being relinquished, wait for it to be dropped; if one is
    /// live, fail with `Busy`.
    pub fn acquire_cookie(
        &self,
        volume: &Arc<Volume>,
        key: &[u8],
        aux: &[u8],
        size: u64,
    ) -> Result<Arc<Cookie>> {
        if key.is_empty() || key.len() > ringcache_ondisk::OBJECT_KEY_MAX {
            return Err(CacheError::Invalid(format!(
                "cookie key must be 1..={} bytes",
                ringcache_ondisk::OBJECT_KEY_MAX
            )));
        }
        if aux.len() > ringcache_ondisk::AUX_MAX {
            return Err(CacheError::Invalid(format!(
                "coherency data must be at most {} bytes",
                ringcache_ondisk::AUX_MAX
            )));
        }
        {
            let mut vi = volume.inner.lock().unwrap_or_else(|e| e.into_inner());
            if vi.relinquished {
                return Err(CacheError::VolumeRelinquished);
            }
            vi.n_cookies += 1;
        }
        let cookie = Arc::new(Cookie {
            volume: volume.clone(),
            key: key.to_vec(),
            inner: Mutex::new(CookieInner {
                state: S::Quiescent,
                n_active: 0,
                n_accesses: 0,
                nacc_elevated: false,
                inval_counter: 0,
                object: None,
                aux: aux.to_vec(),
                size,
                no_data_to_read: true,
                do_relinquish: false,
                do_retire: false,
                do_withdraw: false,
                do_lru_discard: false,
                do_invalidate: false,
                do_prepare_to_write: false,
                do_resize: false,
                local_write: false,
                lru_since: None,
                working: false,
                again: false,
                history_len: 0,
            }),
            changed: Condvar::new(),
        });
        let hkey = (volume.id, key.to_vec());
        let mut t = self.tables();
        while let Some(old) = t.cookies.get(&hkey).cloned() {
            let st = old.state();
            if matches!(st, S::Relinquishing | S::Dropped) || old.lock().do_relinquish {
                // Wait for the old one to be dropped: it may be deleting the
                // object, which the new cookie must never see.
                FscacheStats::inc(&self.stats.acquire_waits);
                t = self
                    .tables_changed
                    .wait(t)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            drop(t);
            let mut vi = volume.inner.lock().unwrap_or_else(|e| e.into_inner());
            vi.n_cookies -= 1;
            return Err(CacheError::Busy(format!(
                "a live cookie for key {:?} exists",
                String::from_utf8_lossy(key)
            )));
        }
        t.cookies.insert(hkey, cookie.clone());
        drop(t);
        FscacheStats::inc(&self.stats.acquires);
        FscacheStats::inc(&self.stats.cookies);
        Ok(cookie)
    }

    /// Start using a cookie (a file was opened). The first user triggers
    /// the lookup. `will_modify`: local modifications are coming, so the
    /// object is marked dirty (prepare_to_write) before the first write.
    pub fn use_cookie(&self, cookie: &Arc<Cookie>, will_modify: bool) {
        let mut g = cookie.lock();
        if g.do_relinquish || g.state == S::Dropped {
            return;
        }
        g.n_active += 1;
        g.lru_since = None;
        if g.do_lru_discard {
            // A use that races an LRU discard that has not begun cancels it.
            g.do_lru_discard = false;
            FscacheStats::inc(&self.stats.lru_removed);
        }
        if will_modify && !g.local_write {
            g.local_write = true;
            g.do_prepare_to_write = true;
        }
        drop(g);
        self.run(cookie);
    }

    /// Local modifications are coming: mark the object dirty (durably)
    /// before the first one, if that was not asked for at use.
    pub fn prepare_to_write(&self, cookie: &Arc<Cookie>) {
        {
            let mut g = cookie.lock();
            if g.local_write || g.do_relinquish || g.state == S::Dropped {
                return;
            }
            g.local_write = true;
            g.do_prepare_to_write = true;
        }
        self.run(cookie);
    }

    /// Stop using a cookie, optionally updating its coherency data and size.
    /// The last user puts it on the LRU.
    pub fn unuse_cookie(&self, cookie: &Arc<Cookie>, aux: Option<&[u8]>, size: Option<u64>) {
        let mut g = cookie.lock();
        if let Some(a) = aux
            && a.len() <= ringcache_ondisk::AUX_MAX
        {
            g.aux = a.to_vec();
        }
        if let Some(s) = size {
            g.size = s;
        }
        if g.n_active == 0 {
            return;
        }
        g.n_active -= 1;
        if g.n_active == 0 {
            g.lru_since = Some(Instant::now());
        }
    }

    /// Relinquish a cookie: it is withdrawn (deleted from the cache if
    /// `retire`) once no access is in flight, then dropped. Returns when it
    /// is dropped.
    pub fn relinquish_cookie(&self, cookie: &Arc<Cookie>, retire: bool) {
        {
            let mut g = cookie.lock();
            if g.do_relinquish {
                return;
            }
            g.do_relinquish = true;
            g.do_retire = retire;
            g.n_active = 0;
            g.lru_since = None;
        }
        FscacheStats::inc(&self.stats.relinquishes);
        if retire {
            FscacheStats::inc(&self.stats.relinquishes_retired);
        }
        self.run(cookie);
        let mut g = cookie.lock();
        while g.state != S::Dropped {
            g = cookie.changed.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// New coherency data and size: cached data is discarded, and any
    /// operation in flight will report `Stale`.
    pub fn invalidate(&self, cookie: &Arc<Cookie>, aux: &[u8], size: u64) -> Result<()> {
        if aux.len() > ringcache_ondisk::AUX_MAX {
            return Err(CacheError::Invalid("coherency data too long".into()));
        }
        {
            let mut g = cookie.lock();
            if g.do_relinquish || g.state == S::Dropped {
                return Err(CacheError::Relinquished);
            }
            g.inval_counter += 1;
            g.aux = aux.to_vec();
            g.size = size;
            g.no_data_to_read = true;
            g.do_invalidate = true;
        }
        FscacheStats::inc(&self.stats.invalidations);
        self.run(cookie);
        Ok(())
    }

    /// New object size.
    pub fn resize(&self, cookie: &Arc<Cookie>, size: u64) -> Result<()> {
        {
            let mut g = cookie.lock();
            if g.do_relinquish || g.state == S::Dropped {
                return Err(CacheError::Relinquished);
            }
            g.size = size;
            g.do_resize = true;
        }
        FscacheStats::inc(&self.stats.resizes);
        self.run(cookie);
        Ok(())
    }

    /// Begin an operation on the cookie's data: waits for a lookup in
    /// progress, snapshots the invalidation counter and takes an access.
    /// A cookie that is not bound gives an operation that reads no data
    /// and drops writes.
    ///
    /// `for_write`: the operation will write, so it waits for a creation or
    /// an invalidation in progress too (a read is answered "no data" at
    /// once instead).
    pub fn begin_operation(&self, cookie: &Arc<Cookie>, for_write: bool) -> Operation<'_> {
        let mut g = cookie.lock();
        loop {
            match g.state {
                S::LookingUp => {
                    g = cookie.changed.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                S::Creating | S::Invalidating if for_write => {
                    g = cookie.changed.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                S::Active | S::Creating | S::Invalidating if g.nacc_elevated => {
                    g.n_accesses += 1;
                    let no_data = g.no_data_to_read || g.state != S::Active;
                    let object = g.object;
                    let inval_counter = g.inval_counter;
                    drop(g);
                    let (object, data_gen) =
                        match object.map(|o| self.backend.begin_operation(o).map(|g| (o, g))) {
                            Some(Ok((o, g))) => (Some(o), g),
                            _ => (None, 0),
                        };
                    if object.is_none() {
                        // The object is gone (culled or failed): no cache.
                        self.end_access(cookie);
                        return Operation {
                            cache: self,
                            cookie: cookie.clone(),
                            object: None,
                            data_gen: 0,
                            inval_counter,
                            no_data: true,
                        };
                    }
                    return Operation {
                        cache: self,
                        cookie: cookie.clone(),
                        object,
                        data_gen,
                        inval_counter,
                        no_data,
                    };
                }
                _ => {
                    let inval_counter = g.inval_counter;
                    return Operation {
                        cache: self,
                        cookie: cookie.clone(),
                        object: None,
                        data_gen: 0,
                        inval_counter,
                        no_data: true,
                    };
                }
            }
        }
    }

    fn end_access(&self, cookie: &Arc<Cookie>) {
        let mut g = cookie.lock();
        g.n_accesses = g.n_accesses.saturating_sub(1);
        let wake = g.n_accesses == 0 && !g.nacc_elevated;
        drop(g);
        if wake {
            self.run(cookie);
        }
    }

    /// Discard cookies that have been unused for the LRU timeout as of
    /// `now` (or, under space pressure, every unused cookie). Returns how
    /// many discards were started.
    pub fn lru_scan(&self, now: Instant) -> usize {
        let pressure = self.backend.under_pressure();
        let cookies: Vec<Arc<Cookie>> = self.tables().cookies.values().cloned().collect();
        let mut n = 0;
        for c in cookies {
            let mut g = c.lock();
            let expired = g
                .lru_since
                .is_some_and(|t| pressure || now.duration_since(t) >= self.cfg.lru_timeout);
            if g.n_active == 0
                && expired
                && g.state == S::Active
                && !g.do_relinquish
                && !g.do_lru_discard
            {
                g.do_lru_discard = true;
                g.lru_since = None;
                drop(g);
                if pressure {
                    FscacheStats::inc(&self.stats.culled);
                } else {
                    FscacheStats::inc(&self.stats.lru_expired);
                }
                self.run(&c);
                n += 1;
            }
        }
        n
    }

    /// Withdraw the whole cache (persistent device errors): every cookie
    /// leaves ACTIVE; reads then find no data and writes are dropped.
    pub fn withdraw_cache(&self, why: &str) {
        {
            let mut w = self.withdrawn.lock().unwrap_or_else(|e| e.into_inner());
            if w.is_some() {
                return;
            }
            *w = Some(why.to_string());
        }
        tracing::error!(reason = why, "withdrawing the cache");
        let cookies: Vec<Arc<Cookie>> = self.tables().cookies.values().cloned().collect();
        for c in cookies {
            c.lock().do_withdraw = true;
            FscacheStats::inc(&self.stats.withdrawals);
            self.run(&c);
        }
    }

    fn note_backend_error(&self, e: &StoreError) {
        if let StoreError::Failed(why) = e {
            self.withdraw_cache(why);
        }
    }

    // ------------------------------------------------------------ state machine

    /// Run the cookie's state machine until it has nothing more to do.
    /// Only one thread runs it at a time; others leave a note and return.
    fn run(&self, cookie: &Arc<Cookie>) {
        let mut g = cookie.lock();
        if g.working {
            g.again = true;
            return;
        }
        g.working = true;
        loop {
            g.again = false;
            let (g2, progressed) = self.step(cookie, g);
            g = g2;
            if !progressed && !g.again {
                break;
            }
        }
        g.working = false;
        cookie.changed.notify_all();
        let dropped = g.state == S::Dropped;
        drop(g);
        if dropped {
            self.unhash(cookie);
        }
    }

    /// One step of the state machine. Returns whether anything changed.
    fn step<'a>(
        &self,
        c: &'a Arc<Cookie>,
        mut g: MutexGuard<'a, CookieInner>,
    ) -> (MutexGuard<'a, CookieInner>, bool) {
        match g.state {
            S::Quiescent => {
                if g.do_relinquish {
                    transition(c, &mut g, S::Relinquishing);
                    return (g, true);
                }
                if g.n_active > 0 && self.withdrawn().is_none() && !g.do_withdraw {
                    transition(c, &mut g, S::LookingUp);
                    let (aux, size) = (g.aux.clone(), g.size);
                    drop(g);
                    FscacheStats::inc(&self.stats.lookups);
                    let mut on_negative = || {
                        let mut g = c.lock();
                        if g.state == S::LookingUp {
                            g.no_data_to_read = true;
                            transition(c, &mut g, S::Creating);
                            // Readers need not wait for the creation.
                            g.nacc_elevated = true;
                            g.n_accesses += 1;
                        }
                    };
                    let r = self.backend.lookup_cookie(
                        c.volume.id,
                        &c.key,
                        &aux,
                        size,
                        &mut on_negative,
                    );
                    let mut g = c.lock();
                    match r {
                        Ok(l) => {
                            if l.positive {
                                FscacheStats::inc(&self.stats.lookups_positive);
                            } else {
                                FscacheStats::inc(&self.stats.lookups_negative);
                            }
                            g.object = Some(l.object);
                            g.no_data_to_read = !l.positive;
                            if !g.nacc_elevated {
                                g.nacc_elevated = true;
                                g.n_accesses += 1;
                            }
                            transition(c, &mut g, S::Active);
                        }
                        Err(e) => {
                            FscacheStats::inc(&self.stats.lookups_failed);
                            tracing::warn!(error = %e, "cookie lookup failed");
                            if g.nacc_elevated {
                                g.nacc_elevated = false;
                                g.n_accesses -= 1;
                            }
                            transition(c, &mut g, S::Failed);
                            drop(g);
                            self.note_backend_error(&e);
                            g = c.lock();
                        }
                    }
                    return (g, true);
                }
                (g, false)
            }
            S::Active => {
                if let Some(obj) = g.object {
                    if g.do_prepare_to_write {
                        g.do_prepare_to_write = false;
                        drop(g);
                        FscacheStats::inc(&self.stats.prepare_to_write);
                        let r = self.backend.prepare_to_write(obj);
                        if let Err(e) = &r {
                            self.note_backend_error(e);
                        }
                        return (c.lock(), true);
                    }
                    if g.do_invalidate {
                        g.do_invalidate = false;
                        transition(c, &mut g, S::Invalidating);
                        let (aux, size) = (g.aux.clone(), g.size);
                        drop(g);
                        let r = self.backend.invalidate_cookie(obj, &aux, size);
                        let mut g = c.lock();
                        match r {
                            Ok(()) => {
                                g.no_data_to_read = true;
                                transition(c, &mut g, S::Active);
                            }
                            Err(e) => {
                                transition(c, &mut g, S::Failed);
                                drop(g);
                                self.note_backend_error(&e);
                                g = c.lock();
                            }
                        }
                        return (g, true);
                    }
                    if g.do_resize {
                        g.do_resize = false;
                        let size = g.size;
                        drop(g);
                        if let Err(e) = self.backend.resize_cookie(obj, size) {
                            self.note_backend_error(&e);
                        }
                        return (c.lock(), true);
                    }
                }
                if g.do_lru_discard && g.n_active > 0 {
                    g.do_lru_discard = false;
                }
                let teardown = g.do_relinquish || g.do_withdraw || g.do_lru_discard;
                if !teardown {
                    if !g.nacc_elevated {
                        // A discard was cancelled by a new use: open the gate.
                        g.nacc_elevated = true;
                        g.n_accesses += 1;
                        return (g, true);
                    }
                    return (g, false);
                }
                // Close the gate: no new accesses; the last one wakes us.
                if g.nacc_elevated {
                    g.nacc_elevated = false;
                    g.n_accesses -= 1;
                }
                if g.n_accesses > 0 {
                    return (g, false);
                }
                let to = if g.do_relinquish {
                    S::Relinquishing
                } else if g.do_withdraw {
                    S::Withdrawing
                } else {
                    S::LruDiscarding
                };
                transition(c, &mut g, to);
                (g, true)
            }
            S::Failed => {
                g.do_invalidate = false;
                g.do_prepare_to_write = false;
                g.do_resize = false;
                if g.n_accesses > 0 {
                    return (g, false);
                }
                if g.do_relinquish {
                    transition(c, &mut g, S::Relinquishing);
                    return (g, true);
                }
                if g.do_withdraw {
                    transition(c, &mut g, S::Withdrawing);
                    return (g, true);
                }
                (g, false)
            }
            S::LruDiscarding | S::Withdrawing | S::Relinquishing => {
                let state = g.state;
                if let Some(obj) = g.object.take() {
                    let retire = state == S::Relinquishing && g.do_retire;
                    let (aux, size) = (g.aux.clone(), g.size);
                    drop(g);
                    let r = self.backend.withdraw_cookie(obj, retire, &aux, size);
                    if let Err(e) = &r {
                        tracing::warn!(error = %e, "withdrawing a cookie failed");
                        self.note_backend_error(e);
                    }
                    g = c.lock();
                } else if state == S::Relinquishing && g.do_retire {
                    // Not bound (never looked up, or discarded before the
                    // relinquishment came): retire whatever the cache holds
                    // under this key, so a new cookie never sees it.
                    drop(g);
                    if let Err(e) = self.backend.retire(c.volume.id, &c.key) {
                        tracing::warn!(error = %e, "retiring a cookie's object failed");
                        self.note_backend_error(&e);
                    }
                    g = c.lock();
                }
                g.no_data_to_read = true;
                g.do_lru_discard = false;
                g.do_prepare_to_write = false;
                g.do_invalidate = false;
                g.do_resize = false;
                g.local_write = false;
                match state {
                    S::Relinquishing => {
                        transition(c, &mut g, S::Dropped);
                        if g.do_retire {
                            // counted at request time
                        } else {
                            FscacheStats::inc(&self.stats.relinquishes_dropped);
                        }
                    }
                    // A relinquishment that came in during the discard or the
                    // withdrawal is carried out now, never lost.
                    _ if g.do_relinquish => transition(c, &mut g, S::Relinquishing),
                    S::LruDiscarding => {
                        FscacheStats::inc(&self.stats.lru_dropped);
                        transition(c, &mut g, S::Quiescent);
                    }
                    _ => {
                        g.do_withdraw = false;
                        transition(c, &mut g, S::Quiescent);
                    }
                }
                (g, true)
            }
            S::LookingUp | S::Creating | S::Invalidating | S::Dropped => (g, false),
        }
    }

    fn unhash(&self, cookie: &Arc<Cookie>) {
        let hkey = (cookie.volume.id, cookie.key.clone());
        let mut t = self.tables();
        let mine = t.cookies.get(&hkey).is_some_and(|c| Arc::ptr_eq(c, cookie));
        if mine {
            t.cookies.remove(&hkey);
            FscacheStats::dec(&self.stats.cookies);
            let mut vi = cookie
                .volume
                .inner
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            vi.n_cookies = vi.n_cookies.saturating_sub(1);
        }
        drop(t);
        self.tables_changed.notify_all();
    }

    /// Cookies currently known (acquired and not yet dropped).
    pub fn cookie_count(&self) -> usize {
        self.tables().cookies.len()
    }
}

impl Operation<'_> {
    /// The invalidation counter this operation was begun under.
    pub fn inval_counter(&self) -> u64 {
        self.inval_counter
    }

    /// Whether this operation is bound to cached data at all.
    pub fn is_cached(&self) -> bool {
        self.object.is_some()
    }

    fn stale(&self) -> bool {
        self.cookie.lock().inval_counter != self.inval_counter
    }

    /// Read `len` bytes at `offset`.
    pub fn read(&self, offset: u64, len: u64) -> Result<ReadOutcome> {
        match self.read_target() {
            None => Ok(ReadOutcome::NoData),
            Some((obj, data_gen)) => {
                self.read_done(self.cache.backend.read(obj, data_gen, offset, len))
            }
        }
    }

    /// For a read done outside this operation (a daemon that keeps many
    /// reads in flight): the object and data generation to read, or `None`
    /// when there is no data to read (counted as such). Hand the result to
    /// [`Operation::read_done`] while this operation is still held.
    pub fn read_target(&self) -> Option<(ObjectId, u64)> {
        let stats = &self.cache.stats;
        FscacheStats::inc(&stats.reads);
        match self.object {
            Some(obj) if !self.no_data => Some((obj, self.data_gen)),
            _ => {
                FscacheStats::inc(&stats.read_nodata);
                None
            }
        }
    }

    /// What the backend's read of [`Operation::read_target`] means: data,
    /// stale (invalidated meanwhile), no data, or an error.
    pub fn read_done(
        &self,
        result: std::result::Result<Vec<Segment>, StoreError>,
    ) -> Result<ReadOutcome> {
        let stats = &self.cache.stats;
        match result {
            Ok(segs) => {
                if self.stale() {
                    FscacheStats::inc(&stats.stale);
                    return Ok(ReadOutcome::Stale);
                }
                let bytes: u64 = segs
                    .iter()
                    .filter(|s| matches!(s, Segment::Data { .. }))
                    .map(Segment::len)
                    .sum();
                FscacheStats::add(&stats.read_bytes, bytes);
                Ok(ReadOutcome::Data(segs))
            }
            Err(StoreError::Stale) => {
                FscacheStats::inc(&stats.stale);
                Ok(ReadOutcome::Stale)
            }
            Err(StoreError::NoSuchObject) => {
                FscacheStats::inc(&stats.read_nodata);
                Ok(ReadOutcome::NoData)
            }
            Err(e) => {
                self.cache.note_backend_error(&e);
                if matches!(e, StoreError::Failed(_) | StoreError::Io(_)) {
                    // A netfs falls back to its server.
                    FscacheStats::inc(&stats.read_nodata);
                    return Ok(ReadOutcome::NoData);
                }
                Err(e.into())
            }
        }
    }

    /// Cache `data` at `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<WriteOutcome> {
        let stats = &self.cache.stats;
        let Some(obj) = self.object else {
            FscacheStats::inc(&stats.writes_dropped);
            return Ok(WriteOutcome::Dropped);
        };
        if self.stale() {
            FscacheStats::inc(&stats.stale);
            return Ok(WriteOutcome::Stale);
        }
        match self.cache.backend.write(obj, self.data_gen, offset, data) {
            Ok(()) => {
                {
                    let mut g = self.cookie.lock();
                    if g.inval_counter != self.inval_counter {
                        drop(g);
                        FscacheStats::inc(&stats.stale);
                        return Ok(WriteOutcome::Stale);
                    }
                    // There is data to read now.
                    g.no_data_to_read = false;
                }
                FscacheStats::inc(&stats.writes);
                FscacheStats::add(&stats.write_bytes, data.len() as u64);
                Ok(WriteOutcome::Written)
            }
            Err(StoreError::Stale) => {
                FscacheStats::inc(&stats.stale);
                Ok(WriteOutcome::Stale)
            }
            Err(StoreError::NoSpace) => {
                FscacheStats::inc(&stats.nospace);
                FscacheStats::inc(&stats.writes_dropped);
                Ok(WriteOutcome::Dropped)
            }
            Err(StoreError::Invalid(m)) => Err(CacheError::Invalid(m)),
            Err(e) => {
                self.cache.note_backend_error(&e);
                FscacheStats::inc(&stats.writes_dropped);
                Ok(WriteOutcome::Dropped)
            }
        }
    }

    /// Which byte ranges are cached.
    pub fn query_occupancy(&self) -> Result<Vec<(u64, u64)>> {
        match self.object {
            Some(o) if !self.no_data => Ok(self.cache.backend.query_occupancy(o)?),
            _ => Ok(Vec::new()),
        }
    }
}

impl Drop for Operation<'_> {
    fn drop(&mut self) {
        if let Some(o) = self.object {
            self.cache.backend.end_operation(o);
            self.cache.end_access(&self.cookie);
        }
    }
}
