//! The state machine worker: one thread at a time runs a cookie's state
//! machine (the `working` flag; a request that arrives meanwhile makes it
//! loop once more), calling the backend without the cookie's lock held.
//! Also the LRU scan and the withdrawal of the whole cache.

use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use super::cookies::CookieInner;
use super::state::{CookieState as S, transition};
use super::*;

impl Fscache {
    /// Discard cookies that have been unused for the LRU timeout as of
    /// `now` (or, under space pressure, every unused cookie). Returns how
    /// many discards were started.
    pub fn lru_scan(&self, now: Instant) -> usize {
        self.lru_scan_with(now, &mut Vec::new())
    }

    /// [`Fscache::lru_scan`] with the list of cookies to look at kept in
    /// `scratch` (left empty, its capacity kept for the next scan), so a
    /// periodic scan allocates nothing once it has seen the most cookies.
    pub fn lru_scan_with(&self, now: Instant, scratch: &mut Vec<Arc<Cookie>>) -> usize {
        let pressure = self.backend.under_pressure();
        scratch.clear();
        scratch.extend(self.tables().cookies.values().cloned());
        let mut n = 0;
        for c in scratch.drain(..) {
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

    pub(super) fn note_backend_error(&self, e: &StoreError) {
        if let StoreError::Failed(why) = e {
            self.withdraw_cache(why);
        }
    }
}

impl Fscache {
    /// Run the cookie's state machine until it has nothing more to do.
    /// Only one thread runs it at a time; others leave a note and return.
    pub(super) fn run(&self, cookie: &Arc<Cookie>) {
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
    pub(super) fn step<'a>(
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

    pub(super) fn unhash(&self, cookie: &Arc<Cookie>) {
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
}
