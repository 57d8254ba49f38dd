//! Operations: `begin_operation` takes an access through the gate and
//! snapshots the invalidation counter and the data generation; reads and
//! writes under it report `Stale` when an invalidation came in between.

use std::sync::Arc;

use super::state::CookieState as S;
use super::*;

/// What a read found.
#[derive(Debug)]
pub enum ReadOutcome {
    /// Cached data and holes, covering the range.
    Data(Segments),
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
    pub(super) cache: &'a Fscache,
    pub(super) cookie: Arc<Cookie>,
    pub(super) object: Option<ObjectId>,
    /// The object's data generation when the access began.
    pub(super) data_gen: u64,
    pub(super) inval_counter: u64,
    pub(super) no_data: bool,
}

impl Fscache {
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
            // An invalidation asked for while another thread runs the state
            // machine is pending: the object is still on its old data
            // generation, so this counts as INVALIDATING already (a write
            // would land in the generation about to be discarded and mark
            // the cookie as having data to read).
            let pending_invalidation = g.do_invalidate && g.state == S::Active;
            match g.state {
                S::LookingUp => {
                    g = cookie.changed.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                S::Creating | S::Invalidating if for_write => {
                    g = cookie.changed.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                S::Active if for_write && pending_invalidation => {
                    g = cookie.changed.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                S::Active | S::Creating | S::Invalidating if g.nacc_elevated => {
                    g.n_accesses += 1;
                    let no_data = g.no_data_to_read || g.state != S::Active || pending_invalidation;
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

    pub(super) fn end_access(&self, cookie: &Arc<Cookie>) {
        let mut g = cookie.lock();
        g.n_accesses = g.n_accesses.saturating_sub(1);
        let wake = g.n_accesses == 0 && !g.nacc_elevated;
        drop(g);
        if wake {
            self.run(cookie);
        }
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

    pub(super) fn stale(&self) -> bool {
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
        result: std::result::Result<Segments, StoreError>,
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
        match self.write_target() {
            Err(outcome) => Ok(outcome),
            Ok((obj, data_gen)) => self.write_done(
                self.cache.backend.write(obj, data_gen, offset, data),
                data.len() as u64,
            ),
        }
    }

    /// For a write done outside this operation (a daemon that keeps many
    /// writes in flight): the object and data generation to write into,
    /// or what to answer at once (no object: dropped; invalidated
    /// meanwhile: stale), counted as such. Hand the result of the write to
    /// [`Operation::write_done`] while this operation is still held.
    pub fn write_target(&self) -> std::result::Result<(ObjectId, u64), WriteOutcome> {
        let stats = &self.cache.stats;
        let Some(obj) = self.object else {
            FscacheStats::inc(&stats.writes_dropped);
            return Err(WriteOutcome::Dropped);
        };
        if self.stale() {
            FscacheStats::inc(&stats.stale);
            return Err(WriteOutcome::Stale);
        }
        Ok((obj, self.data_gen))
    }

    /// What the backend's write of `len` bytes into
    /// [`Operation::write_target`] means: written, stale (invalidated
    /// meanwhile, so not cached), dropped (no room, or the cache failing),
    /// or an error in the request.
    pub fn write_done(
        &self,
        result: std::result::Result<(), StoreError>,
        len: u64,
    ) -> Result<WriteOutcome> {
        let stats = &self.cache.stats;
        match result {
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
                FscacheStats::add(&stats.write_bytes, len);
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
