//! The cache backend operations the cookie layer drives
//! ([`CacheBackend`]); `store_backend.rs` implements them for the store.
//!
//! The trait speaks the cookie layer's types: [`ObjectId`], [`VolumeId`],
//! [`Segments`] and [`BackendError`] are the store's, re-exported by
//! `cookie` on purpose (a cookie names a store object; a backend that is not
//! the store would hand out the same shapes), so that users of the cookie
//! layer need not reach into `store`.

use super::{BackendError as StoreError, ObjectId, Segments, VolumeId};

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup {
    pub object: ObjectId,
    /// The object existed with matching coherency data: it may hold data.
    /// Otherwise it was created (or its stale content discarded) and holds
    /// nothing to read.
    pub positive: bool,
}

/// The operations a cache backend provides to the cookie layer, after
/// fscache's `struct fscache_cache_ops`. Every call may block on I/O; the
/// cookie layer never calls them with a lock held.
pub trait CacheBackend: Send + Sync + 'static {
    /// Find or create a volume; if its coherency data differs from `aux`,
    /// everything cached in it is discarded first.
    fn acquire_volume(&self, key: &[u8], aux: &[u8]) -> Result<VolumeId, StoreError>;
    /// Forget a volume; with `invalidate`, delete everything in it.
    fn relinquish_volume(&self, volume: VolumeId, invalidate: bool) -> Result<(), StoreError>;
    /// Look an object up; on a miss, call `on_negative` (readers need not
    /// wait for the creation) and create it. A positive match with other
    /// coherency data, or one left dirty by a crash, is discarded.
    fn lookup_cookie(
        &self,
        volume: VolumeId,
        key: &[u8],
        aux: &[u8],
        size: u64,
        on_negative: &mut dyn FnMut(),
    ) -> Result<Lookup, StoreError>;
    /// Free the object's in-memory resources; delete it if `retire`.
    fn withdraw_cookie(
        &self,
        object: ObjectId,
        retire: bool,
        aux: &[u8],
        size: u64,
    ) -> Result<(), StoreError>;
    /// Delete whatever the cache holds under (volume, key), if anything.
    fn retire(&self, volume: VolumeId, key: &[u8]) -> Result<(), StoreError>;
    /// Mark the object dirty, durably, before its first local modification.
    fn prepare_to_write(&self, object: ObjectId) -> Result<(), StoreError>;
    /// New coherency data and size; old content gone.
    fn invalidate_cookie(&self, object: ObjectId, aux: &[u8], size: u64) -> Result<(), StoreError>;
    /// New object size.
    fn resize_cookie(&self, object: ObjectId, size: u64) -> Result<(), StoreError>;
    /// An access starts: the object's data must not be culled until it
    /// ends. Returns the object's data generation, which the access's reads
    /// and writes are bound to.
    fn begin_operation(&self, object: ObjectId) -> Result<u64, StoreError>;
    /// The access ends.
    fn end_operation(&self, object: ObjectId);
    /// Read cached data and holes of data generation `data_gen` (stale if
    /// the object was invalidated since).
    fn read(
        &self,
        object: ObjectId,
        data_gen: u64,
        offset: u64,
        len: u64,
    ) -> Result<Segments, StoreError>;
    /// Cache data into data generation `data_gen` (stale if the object was
    /// invalidated since: then nothing is cached).
    fn write(
        &self,
        object: ObjectId,
        data_gen: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StoreError>;
    /// Which byte ranges are cached.
    fn query_occupancy(&self, object: ObjectId) -> Result<Vec<(u64, u64)>, StoreError>;
    /// Objects held by idle cookies should be let go: the cache is short
    /// of room for objects.
    fn under_pressure(&self) -> bool;
}
