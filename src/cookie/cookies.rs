//! Cookies and the requests a netfs makes of them: acquire, use and unuse
//! (the LRU), prepare_to_write, relinquish, invalidate, resize. Each
//! request sets a flag under the cookie's lock and runs the state machine
//! (`worker.rs`); none does cache work itself.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::state::CookieState as S;
use super::*;

#[derive(Debug)]
pub(super) struct CookieInner {
    pub(super) state: CookieState,
    /// Users (use/unuse).
    pub(super) n_active: u32,
    /// Operations in flight, plus one while `nacc_elevated`.
    pub(super) n_accesses: u32,
    /// The cookie is bound to the cache: new accesses may begin, and the
    /// access count holds a bias so the state machine is not woken by it.
    pub(super) nacc_elevated: bool,
    pub(super) inval_counter: u64,
    pub(super) object: Option<ObjectId>,
    pub(super) aux: Vec<u8>,
    pub(super) size: u64,
    /// Nothing to read: a miss, a fresh invalidation or a withdrawal.
    pub(super) no_data_to_read: bool,
    // Requests for the state machine.
    pub(super) do_relinquish: bool,
    pub(super) do_retire: bool,
    pub(super) do_withdraw: bool,
    pub(super) do_lru_discard: bool,
    pub(super) do_invalidate: bool,
    pub(super) do_prepare_to_write: bool,
    pub(super) do_resize: bool,
    /// Set when a user with will_modify needs prepare_to_write once.
    pub(super) local_write: bool,
    /// When the cookie went on the LRU (n_active reached 0).
    pub(super) lru_since: Option<Instant>,
    /// A thread is running this cookie's state machine.
    pub(super) working: bool,
    /// Run the state machine again before leaving it.
    pub(super) again: bool,
    /// Transitions made, for tests.
    pub(super) history_len: u64,
}

/// A cookie: one netfs object in the cache.
pub struct Cookie {
    pub(super) volume: Arc<Volume>,
    pub(super) key: Vec<u8>,
    pub(super) inner: Mutex<CookieInner>,
    pub(super) changed: Condvar,
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
    pub(super) fn lock(&self) -> MutexGuard<'_, CookieInner> {
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

impl Fscache {
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

    /// Stop using a cookie, optionally updating its coherency data (kept
    /// in the object when it is withdrawn) and size (applied at once, as
    /// [`Fscache::resize`]). The last user puts it on the LRU.
    pub fn unuse_cookie(&self, cookie: &Arc<Cookie>, aux: Option<&[u8]>, size: Option<u64>) {
        let mut g = cookie.lock();
        if let Some(a) = aux
            && a.len() <= ringcache_ondisk::AUX_MAX
        {
            // Coherency data is committed when the object is withdrawn,
            // as fscache does.
            g.aux = a.to_vec();
        }
        // A new size takes effect at once, as a resize: data past it is
        // gone now, not cut at withdrawal after writes accepted meanwhile.
        let resize = match size {
            Some(s) if s != g.size && !g.do_relinquish && g.state != S::Dropped => {
                g.size = s;
                g.do_resize = true;
                true
            }
            Some(s) => {
                g.size = s;
                false
            }
            None => false,
        };
        if g.n_active > 0 {
            g.n_active -= 1;
            if g.n_active == 0 {
                g.lru_since = Some(Instant::now());
            }
        }
        drop(g);
        if resize {
            FscacheStats::inc(&self.stats.resizes);
            self.run(cookie);
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
}
