//! The object store: log-structured, checksummed, crash-safe.
//!
//! Data is appended into large regions (sequential writes). An in-memory
//! [`index::Index`] maps (object, offset) to (region, offset, length); a crc32c
//! per 4 KiB block, seeded with the object, its data generation and the
//! logical block, is kept per region and checked on every read, so a
//! mismatch is a miss, never wrong bytes. Index changes are records
//! appended to the metadata log and periodically checkpointed; recovery is
//! the newest valid checkpoint plus a replay of the log after it
//! (`recovery.rs`, `docs/FORMAT.md`).
//!
//! Space is freed a region at a time, oldest first, ahead of need
//! (cachefilesd-style brun/bcull/bstop thresholds on free regions), skipping
//! regions that hold data of objects with accesses in flight (pinned).
//! Objects are culled least recently used first when the object count or
//! the checkpoint's size crosses frun/fcull/fstop.
//!
//! Durability: `flush` makes every completed write durable. `invalidate`,
//! `delete` and `set_dirty` are durable when they return, so a deleted or
//! invalidated object never reappears after a crash and a dirty mark is on
//! the media before the first local modification.

mod extent_map;
pub mod index;
mod recovery;

use std::collections::{BTreeMap, VecDeque};
use std::ops::Deref;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use ringcache_ondisk::metalog::{LOG_PAYLOAD_MAX, encode_block};
use ringcache_ondisk::record::{Crcs, ExtentEntry, OBJECT_FLAG_DIRTY};
use ringcache_ondisk::superblock::SuperblockInfo;
use ringcache_ondisk::{
    AUX_MAX, BLOCK_BYTES, BLOCK_BYTES_U64, FormatError, MAX_EXTENT_BLOCKS, OBJECT_KEY_MAX, Record,
    VOLUME_KEY_MAX, block_crc,
};

use crate::io::{CompletionQueue, IoBuf, IoEngine, IoError, IoHint, Op};
use index::{Index, RegionState};
pub use index::{ObjectId, VolumeId};
pub use recovery::{FormatOptions, Loaded, RecoveryReport, format, load};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The device failed an I/O.
    #[error(transparent)]
    Io(#[from] IoError),
    /// On-disk structures are damaged beyond what recovery tolerates.
    #[error("corrupt cache: {0}")]
    Corrupt(#[from] FormatError),
    /// The device does not hold a ringcache cache (or holds another thing).
    #[error("not a ringcache cache: {0}")]
    NotACache(String),
    /// No such object (deleted, culled, or never created).
    #[error("no such object")]
    NoSuchObject,
    /// No such volume.
    #[error("no such volume")]
    NoSuchVolume,
    /// An object with this key exists already.
    #[error("object exists")]
    Exists,
    /// A bad argument (key too long, unaligned offset, overflow, ...).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// Every region holds data of objects in use: nothing can be culled.
    #[error("no space: every region holds data of objects in use")]
    NoSpace,
    /// The object was invalidated while the operation ran.
    #[error("stale: the object was invalidated during the operation")]
    Stale,
    /// Persistent device errors: the store accepts nothing more.
    #[error("the cache has failed: {0}")]
    Failed(String),
}

/// Result of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// cachefilesd-style culling thresholds, in percent. Space: of regions
/// free; objects: of the object limit (or checkpoint capacity) free.
/// Culling starts below `*cull`, goes on until `*run` is free again, and
/// writers wait below `*stop`. Each needs stop < cull < run < 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CullThresholds {
    pub brun: u8,
    pub bcull: u8,
    pub bstop: u8,
    pub frun: u8,
    pub fcull: u8,
    pub fstop: u8,
}

impl Default for CullThresholds {
    /// cachefilesd's defaults: 10/7/3 percent.
    fn default() -> Self {
        CullThresholds {
            brun: 10,
            bcull: 7,
            bstop: 3,
            frun: 10,
            fcull: 7,
            fstop: 3,
        }
    }
}

impl CullThresholds {
    /// Check the ordering stop < cull < run < 100.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let check = |p: &str, run: u8, cull: u8, stop: u8| {
            if !(stop < cull && cull < run && run < 100) {
                return Err(format!(
                    "need {p}stop < {p}cull < {p}run < 100, got {p}stop={stop} {p}cull={cull} {p}run={run}"
                ));
            }
            Ok(())
        };
        check("b", self.brun, self.bcull, self.bstop)?;
        check("f", self.frun, self.fcull, self.fstop)
    }
}

/// How the store runs.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub cull: CullThresholds,
    /// Most objects the cache holds (default: derived from the checkpoint
    /// slot size, one object per 256 bytes of it).
    pub max_objects: Option<u64>,
    /// How long a writer waits for space held by objects in use.
    pub space_wait: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cull: CullThresholds::default(),
            max_objects: None,
            space_wait: Duration::from_secs(5),
        }
    }
}

/// What the store tells about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub id: ObjectId,
    pub volume: VolumeId,
    pub aux: Vec<u8>,
    pub size: u64,
    pub data_gen: u64,
    pub dirty: bool,
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub reads: u64,
    pub read_bytes: u64,
    pub read_hole_bytes: u64,
    pub writes: u64,
    pub write_bytes: u64,
    pub checksum_errors: u64,
    pub read_races: u64,
    pub io_errors: u64,
    pub regions_evicted: u64,
    pub bytes_evicted: u64,
    pub objects_culled: u64,
    pub checkpoints: u64,
    pub log_blocks_written: u64,
    pub flushes: u64,
    pub nospace_events: u64,
    pub stale_writes: u64,
}

/// A point-in-time view of space and objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occupancy {
    pub regions: u32,
    pub regions_free: u32,
    pub objects: u64,
    pub max_objects: u64,
    pub extents: u64,
    pub live_bytes: u64,
    pub checkpoint_bytes: u64,
    pub checkpoint_capacity: u64,
}

/// Bytes read: a buffer from the engine and the range of it that is data.
pub struct DataBuf {
    buf: IoBuf,
    start: usize,
    len: usize,
}

impl Deref for DataBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf
            .get(self.start..self.start + self.len)
            .unwrap_or(&[])
    }
}

impl std::fmt::Debug for DataBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataBuf({} bytes)", self.len)
    }
}

/// A piece of a read: cached bytes, or a hole the caller must fetch.
#[derive(Debug)]
pub enum Segment {
    Data { offset: u64, data: DataBuf },
    Hole { offset: u64, len: u64 },
}

impl Segment {
    /// Logical offset of the segment.
    pub fn offset(&self) -> u64 {
        match self {
            Segment::Data { offset, .. } | Segment::Hole { offset, .. } => *offset,
        }
    }
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Segment::Data { data, .. } => data.len() as u64,
            Segment::Hole { len, .. } => *len,
        }
    }
    /// Whether the segment is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct LogState {
    /// Records of the open block.
    payload: Vec<u8>,
    records: u32,
    /// Seq the next sealed block gets.
    next_seq: u64,
    /// log_seq of the newest durable checkpoint: blocks before it are free.
    ckpt_log_seq: u64,
    /// Sealed blocks not yet written: (seq, payload, records).
    sealed: VecDeque<(u64, Vec<u8>, u32)>,
}

struct Active {
    region: u32,
    next_block: u32,
}

struct Inner {
    ix: Index,
    sb: SuperblockInfo,
    log: LogState,
    active: Option<Active>,
    /// Data writes in flight per region: such a region is not evicted.
    inflight: Vec<u32>,
    /// Region header writes in flight: a flush waits for them, since data
    /// of other writers in those regions counts on them being durable.
    headers_inflight: u32,
    free: VecDeque<u32>,
    /// Sealed regions by region_seq: the eviction order.
    fifo: BTreeMap<u64, u32>,
    ckpt_seq: u64,
    ckpt_slot: usize,
    failed: Option<String>,
    consecutive_errors: u32,
    stats: StoreStats,
    max_objects: u64,
    /// Object culling wanted more than it could take (held objects).
    object_pressure: bool,
    /// `stats.writes` at the last successful flush.
    writes_at_flush: u64,
    /// Threads waiting on `space`.
    space_waiters: usize,
}

/// A region just opened for appends: (index, region_seq); its header must
/// be written.
type OpenedRegion = (u32, u64);

/// Consecutive I/O errors after which the store declares itself failed.
const MAX_CONSECUTIVE_ERRORS: u32 = 8;

/// The object store. Share it between threads by reference or `Arc`.
pub struct Store {
    engine: Arc<dyn IoEngine>,
    cfg: StoreConfig,
    inner: Mutex<Inner>,
    /// Serializes log block writes, flushes and checkpoints.
    log_io: Mutex<()>,
    /// Signalled when space may have become available (unpin, eviction).
    space: Condvar,
    report: RecoveryReport,
}

fn invalid(msg: impl Into<String>) -> StoreError {
    StoreError::Invalid(msg.into())
}

fn check_volume_key(key: &[u8]) -> Result<()> {
    if key.is_empty() || key.len() > VOLUME_KEY_MAX {
        return Err(invalid(format!(
            "volume key must be 1..={VOLUME_KEY_MAX} bytes, got {}",
            key.len()
        )));
    }
    if key.iter().any(|&b| !(0x21..0x7f).contains(&b) || b == b'/') {
        return Err(invalid(
            "volume key must be printable ASCII without '/' or spaces",
        ));
    }
    Ok(())
}

fn check_object_key(key: &[u8]) -> Result<()> {
    if key.is_empty() || key.len() > OBJECT_KEY_MAX {
        return Err(invalid(format!(
            "object key must be 1..={OBJECT_KEY_MAX} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

fn check_aux(aux: &[u8]) -> Result<()> {
    if aux.len() > AUX_MAX {
        return Err(invalid(format!(
            "coherency data must be at most {AUX_MAX} bytes, got {}",
            aux.len()
        )));
    }
    Ok(())
}

/// One planned piece of a write.
struct WritePiece {
    entry: ExtentEntry,
    crcs: Vec<u32>,
}

/// One planned piece of a read.
struct ReadPiece {
    offset: u64,
    len: usize,
    /// Device offset of the first block read.
    dev_off: u64,
    io_len: usize,
    /// Bytes from the start of the I/O to the first wanted byte.
    skip: usize,
    region: u32,
    region_seq: u64,
    first_block: usize,
    logical_block0: u64,
}

enum PlanItem {
    Hole { offset: u64, len: u64 },
    Piece(ReadPiece),
}

struct ReadPlan {
    tag: u64,
    object: ObjectId,
    data_gen: u64,
    items: Vec<PlanItem>,
    bufs: Vec<Option<IoBuf>>,
    waiting: usize,
    error: Option<IoError>,
}

impl Store {
    /// Open the cache on `engine`, recovering from a crash if need be.
    pub fn open(engine: Arc<dyn IoEngine>, cfg: StoreConfig) -> Result<Store> {
        cfg.cull.validate().map_err(StoreError::Invalid)?;
        recovery::open(engine, cfg)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What recovery found when the store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The superblock of the open cache.
    pub fn superblock(&self) -> SuperblockInfo {
        self.lock().sb.clone()
    }

    /// The I/O engine underneath.
    pub fn engine(&self) -> &Arc<dyn IoEngine> {
        &self.engine
    }

    fn check_failed(inner: &Inner) -> Result<()> {
        match &inner.failed {
            Some(why) => Err(StoreError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Whether persistent errors made the store give up, and why.
    pub fn failed(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    fn note_io_error(inner: &mut Inner, err: &IoError, metadata: bool) {
        inner.stats.io_errors += 1;
        inner.consecutive_errors += 1;
        if metadata || inner.consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
            if inner.failed.is_none() {
                tracing::error!(error = %err, "cache failed after I/O errors; refusing further operations");
            }
            inner
                .failed
                .get_or_insert_with(|| format!("persistent I/O errors, last: {err}"));
        }
    }

    // ---------------------------------------------------------------- volumes

    /// The volume with `key`, created if `create` and absent.
    pub fn volume(&self, key: &[u8], create: bool) -> Result<VolumeId> {
        check_volume_key(key)?;
        let mut inner = self.lock();
        Self::check_failed(&inner)?;
        if let Some(&id) = inner.ix.volume_by_key.get(key) {
            return Ok(id);
        }
        if !create {
            return Err(StoreError::NoSuchVolume);
        }
        let volume_id = inner.ix.next_volume_id;
        let rec = Record::Volume { volume_id, key };
        self.commit(&mut inner, &rec);
        Ok(volume_id)
    }

    /// Delete a volume and every object in it (durable on return).
    pub fn delete_volume(&self, volume_id: VolumeId) -> Result<()> {
        {
            let mut inner = self.lock();
            Self::check_failed(&inner)?;
            if !inner.ix.volumes.contains_key(&volume_id) {
                return Err(StoreError::NoSuchVolume);
            }
            self.commit(&mut inner, &Record::VolumeDelete { volume_id });
        }
        self.flush()
    }

    /// Key of every volume.
    pub fn volumes(&self) -> Vec<(VolumeId, Vec<u8>)> {
        let inner = self.lock();
        let mut v: Vec<_> = inner
            .ix
            .volumes
            .iter()
            .map(|(&id, k)| (id, k.to_vec()))
            .collect();
        v.sort();
        v
    }

    // ---------------------------------------------------------------- objects

    fn info(id: ObjectId, o: &index::Object) -> ObjectInfo {
        ObjectInfo {
            id,
            volume: o.volume,
            aux: o.aux.to_vec(),
            size: o.size,
            data_gen: o.data_gen,
            dirty: o.flags & OBJECT_FLAG_DIRTY != 0,
        }
    }

    /// Look an object up by key.
    pub fn lookup(&self, volume: VolumeId, key: &[u8]) -> Result<Option<ObjectInfo>> {
        check_object_key(key)?;
        let mut inner = self.lock();
        Self::check_failed(&inner)?;
        let Some(&id) = inner.ix.object_by_key.get(&(volume, Box::from(key))) else {
            return Ok(None);
        };
        inner.ix.clock += 1;
        let clock = inner.ix.clock;
        Ok(inner.ix.objects.get_mut(&id).map(|o| {
            o.last_use = clock;
            Self::info(id, o)
        }))
    }

    /// What the store knows of object `id`.
    pub fn stat(&self, id: ObjectId) -> Result<ObjectInfo> {
        let inner = self.lock();
        inner
            .ix
            .objects
            .get(&id)
            .map(|o| Self::info(id, o))
            .ok_or(StoreError::NoSuchObject)
    }

    /// Every object of a volume (or of all volumes), sorted by id.
    pub fn objects(&self, volume: Option<VolumeId>) -> Vec<(ObjectId, Vec<u8>)> {
        let inner = self.lock();
        let mut v: Vec<_> = inner
            .ix
            .objects
            .iter()
            .filter(|(_, o)| volume.is_none_or(|vol| o.volume == vol))
            .map(|(&id, o)| (id, o.key.to_vec()))
            .collect();
        v.sort();
        v
    }

    /// Create an object. Fails with [`StoreError::Exists`] if the key is
    /// taken. Not durable by itself: a crash may forget a new object.
    pub fn create(&self, volume: VolumeId, key: &[u8], aux: &[u8], size: u64) -> Result<ObjectId> {
        check_object_key(key)?;
        check_aux(aux)?;
        let mut inner = self.lock();
        Self::check_failed(&inner)?;
        if !inner.ix.volumes.contains_key(&volume) {
            return Err(StoreError::NoSuchVolume);
        }
        if inner
            .ix
            .object_by_key
            .contains_key(&(volume, Box::from(key)))
        {
            return Err(StoreError::Exists);
        }
        self.cull_objects_if_needed(&mut inner, 1 + key.len() as u64 + aux.len() as u64)?;
        let object_id = inner.ix.next_object_id;
        let rec = Record::Object {
            object_id,
            volume_id: volume,
            data_gen: 1,
            size,
            flags: 0,
            key,
            aux,
        };
        self.commit(&mut inner, &rec);
        drop(inner);
        self.after_op()?;
        Ok(object_id)
    }

    /// Pin an object (an access in flight): it is not culled until unpinned.
    /// Returns the object's data generation at this moment.
    pub fn pin(&self, id: ObjectId) -> Result<u64> {
        let mut inner = self.lock();
        let o = inner
            .ix
            .objects
            .get_mut(&id)
            .ok_or(StoreError::NoSuchObject)?;
        o.pins += 1;
        Ok(o.data_gen)
    }

    /// Hold an object for a live cookie: it is not culled until released
    /// (its data may still be evicted).
    pub fn hold(&self, id: ObjectId) -> Result<()> {
        let mut inner = self.lock();
        let o = inner
            .ix
            .objects
            .get_mut(&id)
            .ok_or(StoreError::NoSuchObject)?;
        o.holds += 1;
        Ok(())
    }

    /// Release a hold taken with [`Store::hold`].
    pub fn release(&self, id: ObjectId) {
        let mut inner = self.lock();
        if let Some(o) = inner.ix.objects.get_mut(&id) {
            o.holds = o.holds.saturating_sub(1);
        }
    }

    /// Whether object culling found nothing it may cull the last time it
    /// needed to (objects held by idle cookies should be let go).
    pub fn under_object_pressure(&self) -> bool {
        self.lock().object_pressure
    }

    /// Release a pin taken with [`Store::pin`].
    pub fn unpin(&self, id: ObjectId) {
        let mut inner = self.lock();
        if let Some(o) = inner.ix.objects.get_mut(&id) {
            o.pins = o.pins.saturating_sub(1);
        }
        self.wake_space_waiters(inner);
    }

    /// New coherency data and size: every byte cached before is gone at
    /// once. Durable on return.
    pub fn invalidate(&self, id: ObjectId, aux: &[u8], size: u64) -> Result<u64> {
        check_aux(aux)?;
        let new_gen = {
            let mut inner = self.lock();
            Self::check_failed(&inner)?;
            let o = inner.ix.objects.get(&id).ok_or(StoreError::NoSuchObject)?;
            let data_gen = o.data_gen + 1;
            let rec = Record::Invalidate {
                object_id: id,
                data_gen,
                size,
                aux,
            };
            self.commit(&mut inner, &rec);
            data_gen
        };
        self.flush()?;
        Ok(new_gen)
    }

    /// New coherency data and size for content that is still current (the
    /// netfs changed the file itself and cached the new content): nothing
    /// is discarded but bytes past the new size.
    pub fn update_aux(&self, id: ObjectId, aux: &[u8], size: u64) -> Result<()> {
        check_aux(aux)?;
        let mut inner = self.lock();
        Self::check_failed(&inner)?;
        let o = inner.ix.objects.get(&id).ok_or(StoreError::NoSuchObject)?;
        let (volume_id, key, data_gen, flags) = (o.volume, o.key.clone(), o.data_gen, o.flags);
        let rec = Record::Object {
            object_id: id,
            volume_id,
            data_gen,
            size,
            flags,
            key: &key,
            aux,
        };
        self.commit(&mut inner, &rec);
        Ok(())
    }

    /// New object size; bytes past it are gone.
    pub fn resize(&self, id: ObjectId, size: u64) -> Result<()> {
        let mut inner = self.lock();
        Self::check_failed(&inner)?;
        if !inner.ix.objects.contains_key(&id) {
            return Err(StoreError::NoSuchObject);
        }
        self.commit(
            &mut inner,
            &Record::Resize {
                object_id: id,
                size,
            },
        );
        Ok(())
    }

    /// Delete an object. Durable on return.
    pub fn delete(&self, id: ObjectId) -> Result<()> {
        {
            let mut inner = self.lock();
            Self::check_failed(&inner)?;
            if !inner.ix.objects.contains_key(&id) {
                return Err(StoreError::NoSuchObject);
            }
            self.commit(&mut inner, &Record::Delete { object_id: id });
        }
        self.flush()
    }

    /// Mark an object dirty (durable on return when set) or clean.
    pub fn set_dirty(&self, id: ObjectId, dirty: bool) -> Result<()> {
        {
            let mut inner = self.lock();
            Self::check_failed(&inner)?;
            let o = inner.ix.objects.get(&id).ok_or(StoreError::NoSuchObject)?;
            let flags = if dirty {
                o.flags | OBJECT_FLAG_DIRTY
            } else {
                o.flags & !OBJECT_FLAG_DIRTY
            };
            if flags == o.flags {
                return Ok(());
            }
            self.commit(
                &mut inner,
                &Record::Flags {
                    object_id: id,
                    flags,
                },
            );
        }
        if dirty { self.flush() } else { Ok(()) }
    }

    /// Which byte ranges of the object are cached, merged.
    pub fn occupancy(&self, id: ObjectId) -> Result<Vec<(u64, u64)>> {
        self.lock().ix.occupancy(id).ok_or(StoreError::NoSuchObject)
    }

    /// Apply a record to the index and append it to the log.
    fn commit(&self, inner: &mut Inner, rec: &Record<'_>) {
        inner.ix.apply(rec);
        Self::log_append(inner, rec);
    }

    fn log_append(inner: &mut Inner, rec: &Record<'_>) {
        if inner.log.payload.len() + rec.encoded_len() > LOG_PAYLOAD_MAX {
            Self::seal_log_block(inner);
        }
        rec.encode(&mut inner.log.payload);
        inner.log.records += 1;
    }

    fn seal_log_block(inner: &mut Inner) {
        if inner.log.records == 0 {
            return;
        }
        let seq = inner.log.next_seq;
        inner.log.next_seq += 1;
        let payload = std::mem::take(&mut inner.log.payload);
        let records = std::mem::take(&mut inner.log.records);
        inner.log.sealed.push_back((seq, payload, records));
    }

    // ---------------------------------------------------------------- space

    fn space_free_percent(inner: &Inner) -> u64 {
        inner.free.len() as u64 * 100 / u64::from(inner.ix.geometry.region_count.max(1))
    }

    /// Evict the oldest sealed region that holds no data in use. Returns
    /// whether one was freed.
    fn evict_one(inner: &mut Inner) -> bool {
        let victim = inner.fifo.iter().map(|(&s, &r)| (s, r)).find(|&(_, r)| {
            if inner.inflight.get(r as usize).copied().unwrap_or(0) > 0 {
                return false;
            }
            let Some(region) = inner.ix.regions.get(r as usize) else {
                return false;
            };
            !region.objects.iter().any(|id| {
                inner
                    .ix
                    .objects
                    .get(id)
                    .is_some_and(|o| o.pins > 0 && o.extents.iter().any(|(_, e)| e.region == r))
            })
        });
        let Some((seq, r)) = victim else {
            return false;
        };
        inner.fifo.remove(&seq);
        let bytes = inner.ix.evict_region_extents(r);
        if let Some(region) = inner.ix.regions.get_mut(r as usize) {
            region.state = RegionState::Free;
        }
        inner.free.push_back(r);
        inner.stats.regions_evicted += 1;
        inner.stats.bytes_evicted += bytes;
        true
    }

    /// Cull regions ahead of need: below bcull percent free, evict until
    /// brun percent is free (or nothing more can go).
    fn cull_space(&self, inner: &mut Inner) {
        if Self::space_free_percent(inner) >= u64::from(self.cfg.cull.bcull) {
            return;
        }
        while Self::space_free_percent(inner) < u64::from(self.cfg.cull.brun) {
            if !Self::evict_one(inner) {
                break;
            }
        }
    }

    /// A region to append to, opening (and if need be freeing) one. Returns
    /// the region header to write when a region was opened.
    fn active_region<'a>(
        &self,
        mut inner: MutexGuard<'a, Inner>,
    ) -> Result<(MutexGuard<'a, Inner>, Option<OpenedRegion>)> {
        if let Some(a) = &inner.active {
            if a.next_block < inner.ix.geometry.region_blocks() {
                return Ok((inner, None));
            }
            let r = a.region;
            let seq = inner.ix.regions.get(r as usize).map(|x| x.seq).unwrap_or(0);
            if let Some(region) = inner.ix.regions.get_mut(r as usize) {
                region.state = RegionState::Sealed;
            }
            inner.fifo.insert(seq, r);
            inner.active = None;
        }
        let deadline = std::time::Instant::now() + self.cfg.space_wait;
        loop {
            Self::check_failed(&inner)?;
            if inner.free.is_empty() {
                Self::evict_one(&mut inner);
            }
            if let Some(r) = inner.free.pop_front() {
                let seq = inner.ix.next_region_seq;
                inner.ix.next_region_seq += 1;
                if let Some(region) = inner.ix.regions.get_mut(r as usize) {
                    region.seq = seq;
                    region.state = RegionState::Open;
                    region.crcs.fill(0);
                    region.objects.clear();
                    region.live_bytes = 0;
                }
                inner.active = Some(Active {
                    region: r,
                    next_block: 1,
                });
                self.cull_space(&mut inner);
                return Ok((inner, Some((r, seq))));
            }
            // Everything left is in use: wait for an unpin (back-pressure).
            inner.stats.nospace_events += 1;
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(StoreError::NoSpace);
            }
            inner.space_waiters += 1;
            inner = self
                .space
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            inner.space_waiters -= 1;
        }
    }

    /// Cull least recently used objects if adding one of `bytes` record
    /// bytes would cross fcull; fail if over fstop with nothing cullable.
    fn cull_objects_if_needed(&self, inner: &mut Inner, bytes: u64) -> Result<()> {
        let cap_objects = inner.max_objects;
        let cap_ckpt = self.checkpoint_capacity(inner);
        let used_pct = |inner: &Inner, extra: u64| -> u64 {
            let by_objects = (inner.ix.objects.len() as u64 + 1) * 100 / cap_objects.max(1);
            let by_ckpt = (inner.ix.checkpoint_bytes() + extra + 64) * 100 / cap_ckpt.max(1);
            by_objects.max(by_ckpt)
        };
        let c = self.cfg.cull;
        if used_pct(inner, bytes) <= u64::from(100 - c.fcull) {
            inner.object_pressure = false;
            return Ok(());
        }
        let mut candidates: Vec<(u64, ObjectId)> = inner
            .ix
            .objects
            .iter()
            .filter(|(_, o)| o.pins == 0 && o.holds == 0)
            .map(|(&id, o)| (o.last_use, id))
            .collect();
        candidates.sort_unstable();
        for (_, id) in candidates {
            if used_pct(inner, bytes) <= u64::from(100 - c.frun) {
                break;
            }
            self.commit(inner, &Record::Delete { object_id: id });
            inner.stats.objects_culled += 1;
        }
        inner.object_pressure = used_pct(inner, bytes) > u64::from(100 - c.frun);
        if used_pct(inner, bytes) > u64::from(100 - c.fstop) {
            inner.stats.nospace_events += 1;
            return Err(StoreError::NoSpace);
        }
        Ok(())
    }

    fn checkpoint_capacity(&self, inner: &Inner) -> u64 {
        inner.ix.geometry.ckpt_slot_bytes - BLOCK_BYTES_U64
    }

    /// Space and object counts.
    pub fn occupancy_summary(&self) -> Occupancy {
        let inner = self.lock();
        Occupancy {
            regions: inner.ix.geometry.region_count,
            regions_free: inner.free.len() as u32,
            objects: inner.ix.objects.len() as u64,
            max_objects: inner.max_objects,
            extents: inner.ix.extent_count,
            live_bytes: inner.ix.regions.iter().map(|r| r.live_bytes).sum(),
            checkpoint_bytes: inner.ix.checkpoint_bytes(),
            checkpoint_capacity: self.checkpoint_capacity(&inner),
        }
    }

    /// Counters since open.
    pub fn stats(&self) -> StoreStats {
        self.lock().stats.clone()
    }

    // ---------------------------------------------------------------- write

    /// Write `data` at `offset` (a multiple of 4096) of object `id`. The
    /// write must end on a 4096-byte boundary or exactly at the object's
    /// size (the tail of a file). The data is cached when this returns; it
    /// is durable after [`Store::flush`].
    pub fn write(&self, id: ObjectId, offset: u64, data: &[u8]) -> Result<()> {
        self.write_gen(id, None, offset, data)
    }

    /// [`Store::write`], but only into data generation `expected_gen` when
    /// given: if the object was invalidated since, nothing is cached and
    /// the answer is [`StoreError::Stale`].
    pub fn write_gen(
        &self,
        id: ObjectId,
        expected_gen: Option<u64>,
        offset: u64,
        data: &[u8],
    ) -> Result<()> {
        if !offset.is_multiple_of(BLOCK_BYTES_U64) {
            return Err(invalid(format!(
                "write offset {offset} is not a multiple of 4096"
            )));
        }
        if data.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| invalid("offset + length overflows"))?;
        // Plan: carve the write into pieces of at most one extent, each in
        // the active region.
        let mut pieces: Vec<WritePiece> = Vec::new();
        let mut headers: Vec<(u32, u64)> = Vec::new();
        let mut plan_err = None;
        {
            let mut inner = self.lock();
            Self::check_failed(&inner)?;
            let o = inner.ix.objects.get(&id).ok_or(StoreError::NoSuchObject)?;
            if end > o.size {
                return Err(invalid(format!(
                    "write of {offset}..{end} past the object size {}",
                    o.size
                )));
            }
            if end % BLOCK_BYTES_U64 != 0 && end != o.size {
                return Err(invalid(format!(
                    "a write must end on a 4096-byte boundary or at the object size ({}); this one ends at {end}",
                    o.size
                )));
            }
            let data_gen = o.data_gen;
            if expected_gen.is_some_and(|g| g != data_gen) {
                return Err(StoreError::Stale);
            }
            let mut pos = 0usize;
            while pos < data.len() {
                match self.active_region(inner) {
                    Ok((g, header)) => {
                        inner = g;
                        if let Some(h) = header {
                            inner.headers_inflight += 1;
                            headers.push(h);
                        }
                    }
                    Err(e) => {
                        // Regions opened so far still get their header
                        // written below: other writers may be using them.
                        plan_err = Some(e);
                        break;
                    }
                }
                let region_blocks = inner.ix.geometry.region_blocks();
                let Some(a) = inner.active.as_mut() else {
                    plan_err = Some(StoreError::NoSpace);
                    break;
                };
                let room = (region_blocks - a.next_block) as usize;
                let want = (data.len() - pos).div_ceil(BLOCK_BYTES);
                let blocks = want.min(room).min(MAX_EXTENT_BLOCKS);
                let len = (blocks * BLOCK_BYTES).min(data.len() - pos);
                let region = a.region;
                let region_block = a.next_block;
                a.next_block += blocks as u32;
                let region_seq = inner
                    .ix
                    .regions
                    .get(region as usize)
                    .map(|r| r.seq)
                    .unwrap_or(0);
                if let Some(n) = inner.inflight.get_mut(region as usize) {
                    *n += 1;
                }
                pieces.push(WritePiece {
                    entry: ExtentEntry {
                        object_id: id,
                        object_gen: data_gen,
                        logical_offset: offset + pos as u64,
                        region_seq,
                        length: len as u32,
                        region_index: region,
                        region_block,
                    },
                    crcs: Vec::with_capacity(blocks),
                });
                pos += len;
            }
        }
        if plan_err.is_some() {
            // Give back the space reserved so far: nothing of this write is
            // written.
            let mut inner = self.lock();
            for p in pieces.drain(..) {
                if let Some(n) = inner.inflight.get_mut(p.entry.region_index as usize) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        // Fill buffers and crcs outside the lock; submit everything at once.
        let (geometry, uuid) = {
            let inner = self.lock();
            (inner.ix.geometry, inner.sb.uuid)
        };
        let mut ops = Vec::with_capacity(pieces.len() + headers.len());
        for &(r, seq) in &headers {
            let mut buf = self.engine.alloc(BLOCK_BYTES);
            buf.fill(0);
            let h = ringcache_ondisk::RegionHeader::new(r, seq, uuid);
            buf[..64].copy_from_slice(zerocopy::IntoBytes::as_bytes(&h));
            ops.push(Op::write(
                geometry.region_offset(r),
                buf,
                u64::MAX,
                IoHint::RegionHeader,
            ));
        }
        let mut pos = 0usize;
        for (i, p) in pieces.iter_mut().enumerate() {
            let len = p.entry.length as usize;
            let io_len = len.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
            let mut buf = self.engine.alloc(io_len);
            buf[..len].copy_from_slice(&data[pos..pos + len]);
            buf[len..].fill(0);
            let lb0 = p.entry.logical_offset / BLOCK_BYTES_U64;
            for (b, chunk) in buf.chunks(BLOCK_BYTES).enumerate() {
                p.crcs
                    .push(block_crc(id, p.entry.object_gen, lb0 + b as u64, chunk));
            }
            let dev = geometry.region_offset(p.entry.region_index)
                + u64::from(p.entry.region_block) * BLOCK_BYTES_U64;
            ops.push(Op::write(dev, buf, i as u64, IoHint::Data));
            pos += len;
        }
        let cq = CompletionQueue::new();
        let n_ops = ops.len();
        self.engine.submit(&mut ops, &cq);
        let mut done = Vec::with_capacity(n_ops);
        while done.len() < n_ops {
            cq.wait_into(&mut done);
        }
        let mut inner = self.lock();
        inner.headers_inflight -= headers.len() as u32;
        for p in &pieces {
            if let Some(n) = inner.inflight.get_mut(p.entry.region_index as usize) {
                *n = n.saturating_sub(1);
            }
        }
        let mut first_err = None;
        for c in done {
            if let Err(e) = c.result {
                Self::note_io_error(&mut inner, &e, c.tag == u64::MAX);
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            self.wake_space_waiters(inner);
            return Err(e.into());
        }
        inner.consecutive_errors = 0;
        let current_gen = inner.ix.objects.get(&id).map(|o| o.data_gen);
        let mut stale = false;
        for p in &pieces {
            // The region may have been reused by the time we got here only
            // if we released it, which we did not (in flight): seq holds.
            if current_gen != Some(p.entry.object_gen) {
                stale = true;
                continue;
            }
            let rec = Record::Extent {
                entry: p.entry,
                crcs: Crcs::Native(&p.crcs),
            };
            self.commit(&mut inner, &rec);
        }
        inner.stats.writes += 1;
        inner.stats.write_bytes += data.len() as u64;
        if stale {
            inner.stats.stale_writes += 1;
        }
        self.wake_space_waiters(inner);
        if let Some(e) = plan_err {
            return Err(e);
        }
        self.after_op()?;
        match current_gen {
            None => Err(StoreError::NoSuchObject),
            Some(_) if stale => Err(StoreError::Stale),
            Some(_) => Ok(()),
        }
    }

    // ---------------------------------------------------------------- read

    /// Read `len` bytes at `offset` of object `id` (clamped to its size).
    /// Returns data and holes covering the range in order.
    pub fn read(&self, id: ObjectId, offset: u64, len: u64) -> Result<Vec<Segment>> {
        self.read_gen(id, None, offset, len)
    }

    /// [`Store::read`], but of data generation `expected_gen` when given:
    /// [`StoreError::Stale`] if the object was invalidated since.
    pub fn read_gen(
        &self,
        id: ObjectId,
        expected_gen: Option<u64>,
        offset: u64,
        len: u64,
    ) -> Result<Vec<Segment>> {
        let mut q = ReadQueue::new(self);
        q.submit_gen(0, id, expected_gen, offset, len)?;
        let mut out = Vec::with_capacity(1);
        while out.is_empty() {
            q.wait(&mut out);
        }
        out.pop()
            .map(|(_, r)| r)
            .unwrap_or(Err(StoreError::Io(IoError::Stopped)))
    }

    fn plan_read(
        &self,
        tag: u64,
        id: ObjectId,
        expected_gen: Option<u64>,
        offset: u64,
        len: u64,
    ) -> Result<ReadPlan> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| invalid("offset + length overflows"))?;
        let mut inner = self.lock();
        Self::check_failed(&inner)?;
        inner.ix.clock += 1;
        let clock = inner.ix.clock;
        let o = inner
            .ix
            .objects
            .get_mut(&id)
            .ok_or(StoreError::NoSuchObject)?;
        o.last_use = clock;
        if expected_gen.is_some_and(|g| g != o.data_gen) {
            return Err(StoreError::Stale);
        }
        if offset > o.size {
            return Err(invalid(format!(
                "read at {offset} past the object size {}",
                o.size
            )));
        }
        let end = end.min(o.size);
        let inner = &*inner;
        let Some(o) = inner.ix.objects.get(&id) else {
            return Err(StoreError::NoSuchObject);
        };
        let mut items = Vec::new();
        let mut at = offset;
        let mut add = |at: &mut u64, s: u64, e: &index::Extent| {
            let e_end = s + u64::from(e.len);
            if e_end <= *at || s >= end {
                return;
            }
            let a = s.max(*at);
            let b = e_end.min(end);
            if a > *at {
                items.push(PlanItem::Hole {
                    offset: *at,
                    len: a - *at,
                });
            }
            let reg_a = u64::from(e.region_off) + (a - s);
            let reg_b = u64::from(e.region_off) + (b - s);
            let io_a = reg_a & !(BLOCK_BYTES_U64 - 1);
            let io_b = reg_b.div_ceil(BLOCK_BYTES_U64) * BLOCK_BYTES_U64;
            let skip = (reg_a - io_a) as usize;
            items.push(PlanItem::Piece(ReadPiece {
                offset: a,
                len: (b - a) as usize,
                dev_off: inner.ix.geometry.region_offset(e.region) + io_a,
                io_len: (io_b - io_a) as usize,
                skip,
                region: e.region,
                region_seq: inner
                    .ix
                    .regions
                    .get(e.region as usize)
                    .map(|r| r.seq)
                    .unwrap_or(0),
                first_block: index::block_of(io_a),
                logical_block0: (a - skip as u64) / BLOCK_BYTES_U64,
            }));
            *at = b;
        };
        if let Some((s, e)) = o.extents.last_before(offset) {
            add(&mut at, s, &e);
        }
        for (s, e) in o.extents.range(offset, end) {
            add(&mut at, s, &e);
        }
        if at < end {
            items.push(PlanItem::Hole {
                offset: at,
                len: end - at,
            });
        }
        let n = items.len();
        Ok(ReadPlan {
            tag,
            object: id,
            data_gen: o.data_gen,
            items,
            bufs: (0..n).map(|_| None).collect(),
            waiting: 0,
            error: None,
        })
    }

    /// Verify completed plans' blocks and build their segments, under one
    /// lock; (tag, result) pairs go to `out`.
    fn finish_reads(
        &self,
        plans: impl Iterator<Item = ReadPlan>,
        out: &mut Vec<(u64, Result<Vec<Segment>>)>,
    ) {
        // The crcs of what was read depend only on the plan and the bytes:
        // computed before the lock, only compared under it.
        let plans: Vec<(ReadPlan, Vec<Option<Vec<u32>>>)> = plans
            .map(|p| {
                let crcs = Self::block_crcs(&p);
                (p, crcs)
            })
            .collect();
        let mut inner = self.lock();
        for (plan, crcs) in plans {
            let tag = plan.tag;
            out.push((tag, Self::finish_read(&mut inner, plan, &crcs)));
        }
    }

    /// Per plan item: the crc of each block read for it (`None` for holes
    /// and pieces whose I/O failed).
    fn block_crcs(plan: &ReadPlan) -> Vec<Option<Vec<u32>>> {
        plan.items
            .iter()
            .zip(&plan.bufs)
            .map(|(item, buf)| match (item, buf) {
                (PlanItem::Piece(p), Some(buf)) => Some(
                    buf.chunks(BLOCK_BYTES)
                        .enumerate()
                        .map(|(i, chunk)| {
                            block_crc(
                                plan.object,
                                plan.data_gen,
                                p.logical_block0 + i as u64,
                                chunk,
                            )
                        })
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }

    /// Verify a completed plan's blocks (`crcs`: [`Store::block_crcs`] of
    /// it) and build its segments.
    fn finish_read(
        inner: &mut Inner,
        mut plan: ReadPlan,
        crcs: &[Option<Vec<u32>>],
    ) -> Result<Vec<Segment>> {
        if let Some(e) = plan.error.take() {
            Self::note_io_error(inner, &e, false);
            return Err(e.into());
        }
        // The crcs were computed with the plan's data generation: it must
        // still be the object's.
        match inner.ix.objects.get(&plan.object) {
            None => return Err(StoreError::NoSuchObject),
            Some(o) if o.data_gen != plan.data_gen => return Err(StoreError::Stale),
            Some(_) => {}
        }
        let mut out = Vec::with_capacity(plan.items.len());
        let mut damaged: Vec<(u64, u64)> = Vec::new();
        for ((item, buf), got) in plan.items.into_iter().zip(plan.bufs).zip(crcs) {
            match item {
                PlanItem::Hole { offset, len } => {
                    inner.stats.read_hole_bytes += len;
                    out.push(Segment::Hole { offset, len });
                }
                PlanItem::Piece(p) => {
                    let region = inner.ix.regions.get(p.region as usize);
                    let same_region = region.is_some_and(|r| r.seq == p.region_seq);
                    let ok = match (region, &buf, got) {
                        (Some(r), Some(_), Some(got)) if same_region => got
                            .iter()
                            .enumerate()
                            .all(|(i, &crc)| r.crcs.get(p.first_block + i).copied() == Some(crc)),
                        _ => false,
                    };
                    match (ok, buf) {
                        (true, Some(buf)) => {
                            inner.stats.read_bytes += p.len as u64;
                            out.push(Segment::Data {
                                offset: p.offset,
                                data: DataBuf {
                                    buf,
                                    start: p.skip,
                                    len: p.len,
                                },
                            });
                        }
                        _ => {
                            if same_region {
                                inner.stats.checksum_errors += 1;
                                damaged.push((p.offset, p.len as u64));
                            } else {
                                inner.stats.read_races += 1;
                            }
                            inner.stats.read_hole_bytes += p.len as u64;
                            out.push(Segment::Hole {
                                offset: p.offset,
                                len: p.len as u64,
                            });
                        }
                    }
                }
            }
        }
        inner.stats.reads += 1;
        inner.consecutive_errors = 0;
        // Damaged data is dropped from the index in memory so it is not read
        // again; it is never served. (Not logged: after a crash the same
        // check drops it again.)
        for (off, len) in damaged {
            tracing::warn!(
                object = plan.object,
                offset = off,
                len,
                "checksum mismatch: dropping cached data"
            );
            // The crc covers whole blocks: drop every block the damage touched.
            let start = off & !(BLOCK_BYTES_U64 - 1);
            let end = (off + len).div_ceil(BLOCK_BYTES_U64) * BLOCK_BYTES_U64;
            inner.ix.remove_range(plan.object, start, end);
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- durability

    /// Write sealed log blocks. Caller holds `log_io`. Returns false when
    /// the ring has no room (a checkpoint must come first).
    fn write_sealed_blocks(&self) -> Result<bool> {
        let (blocks, uuid, geometry) = {
            let mut inner = self.lock();
            Self::check_failed(&inner)?;
            let n = inner.ix.geometry.metalog_blocks();
            let limit = inner.log.ckpt_log_seq + n - 1;
            if inner.log.sealed.back().is_some_and(|(s, _, _)| *s >= limit) {
                return Ok(false);
            }
            let blocks: Vec<_> = inner.log.sealed.drain(..).collect();
            (blocks, inner.sb.uuid, inner.ix.geometry)
        };
        if blocks.is_empty() {
            return Ok(true);
        }
        // Barrier: the data (and region headers) these records describe must
        // be durable before the records can be, or a crash could keep a
        // record whose data never arrived, hiding the durable data it
        // overwrote.
        self.barrier()?;
        let mut ops = Vec::with_capacity(blocks.len());
        for (seq, payload, records) in &blocks {
            let mut buf = self.engine.alloc(BLOCK_BYTES);
            encode_block(&mut buf, *seq, uuid, *records, payload);
            ops.push(Op::write(
                geometry.metalog_block_offset(*seq),
                buf,
                *seq,
                IoHint::Log,
            ));
        }
        let n = ops.len();
        let cq = CompletionQueue::new();
        self.engine.submit(&mut ops, &cq);
        let mut done = Vec::with_capacity(n);
        while done.len() < n {
            cq.wait_into(&mut done);
        }
        let mut inner = self.lock();
        inner.stats.log_blocks_written += n as u64;
        for c in done {
            if let Err(e) = c.result {
                Self::note_io_error(&mut inner, &e, true);
                return Err(e.into());
            }
        }
        Ok(true)
    }

    /// Make every write that has returned durable, with its metadata.
    pub fn flush(&self) -> Result<()> {
        let _io = self.log_io.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut inner = self.lock();
            Self::check_failed(&inner)?;
            Self::seal_log_block(&mut inner);
        }
        if !self.write_sealed_blocks()? {
            return self.checkpoint_locked();
        }
        let writes_before = self.lock().stats.writes;
        let r = crate::io::flush(self.engine.as_ref());
        let mut inner = self.lock();
        inner.stats.flushes += 1;
        if r.is_ok() {
            inner.writes_at_flush = writes_before;
        }
        if let Err(e) = r {
            Self::note_io_error(&mut inner, &e, true);
            return Err(e.into());
        }
        Ok(())
    }

    /// Make every completed data and region-header write durable before
    /// metadata that refers to it is written.
    fn barrier(&self) -> Result<()> {
        self.wait_for_region_headers();
        let r = crate::io::flush(self.engine.as_ref());
        if let Err(e) = r {
            let mut inner = self.lock();
            Self::note_io_error(&mut inner, &e, true);
            return Err(e.into());
        }
        Ok(())
    }

    /// Wake threads waiting for space or region headers, if there are any
    /// (a notify is a syscall; most operations have nobody to wake).
    fn wake_space_waiters(&self, inner: MutexGuard<'_, Inner>) {
        let waiters = inner.space_waiters > 0;
        drop(inner);
        if waiters {
            self.space.notify_all();
        }
    }

    /// Wait until no region header write is in flight.
    fn wait_for_region_headers(&self) {
        let mut inner = self.lock();
        while inner.headers_inflight > 0 {
            inner.space_waiters += 1;
            inner = self.space.wait(inner).unwrap_or_else(|e| e.into_inner());
            inner.space_waiters -= 1;
        }
    }

    /// Flush if anything was written or logged since the last flush.
    /// Returns whether it flushed. The daemon calls this periodically so
    /// that data does not stay volatile for long.
    pub fn flush_if_dirty(&self) -> Result<bool> {
        let dirty = {
            let inner = self.lock();
            inner.log.records > 0
                || !inner.log.sealed.is_empty()
                || inner.stats.writes != inner.writes_at_flush
        };
        if !dirty {
            return Ok(false);
        }
        self.flush()?;
        Ok(true)
    }

    /// Write a checkpoint of the whole index (durable on return) and free
    /// the log before it.
    pub fn checkpoint(&self) -> Result<()> {
        let _io = self.log_io.lock().unwrap_or_else(|e| e.into_inner());
        self.checkpoint_locked()
    }

    fn checkpoint_locked(&self) -> Result<()> {
        let (payload, info, slot, uuid, geometry) = {
            let mut inner = self.lock();
            Self::check_failed(&inner)?;
            Self::seal_log_block(&mut inner);
            // Everything sealed so far is covered by this checkpoint.
            inner.log.sealed.clear();
            let log_seq = inner.log.next_seq;
            let mut payload = Vec::with_capacity(inner.ix.checkpoint_bytes() as usize);
            let (volume_count, object_count, extent_count) =
                inner.ix.encode_checkpoint(&mut payload);
            let info = ringcache_ondisk::checkpoint::CheckpointInfo {
                ckpt_seq: inner.ckpt_seq + 1,
                log_seq,
                next_object_id: inner.ix.next_object_id,
                next_region_seq: inner.ix.next_region_seq,
                next_volume_id: inner.ix.next_volume_id,
                payload_bytes: payload.len() as u64,
                payload_crc: ringcache_ondisk::crc32c(&payload),
                volume_count,
                object_count,
                extent_count,
                created_unix_secs: recovery::now_secs(),
            };
            (
                payload,
                info,
                1 - inner.ckpt_slot,
                inner.sb.uuid,
                inner.ix.geometry,
            )
        };
        if payload.len() as u64 > geometry.ckpt_slot_bytes - BLOCK_BYTES_U64 {
            let mut inner = self.lock();
            let why = format!(
                "checkpoint of {} bytes does not fit its slot of {}",
                payload.len(),
                geometry.ckpt_slot_bytes
            );
            inner.failed.get_or_insert(why.clone());
            return Err(StoreError::Failed(why));
        }
        self.barrier()?;
        let r = recovery::write_checkpoint(
            self.engine.as_ref(),
            &geometry,
            slot,
            uuid,
            &info,
            &payload,
        )
        .and_then(|_| crate::io::flush(self.engine.as_ref()));
        let mut inner = self.lock();
        if let Err(e) = r {
            Self::note_io_error(&mut inner, &e, true);
            return Err(e.into());
        }
        inner.ckpt_seq = info.ckpt_seq;
        inner.ckpt_slot = slot;
        inner.log.ckpt_log_seq = info.log_seq;
        inner.stats.checkpoints += 1;
        Ok(())
    }

    /// Housekeeping after an operation: write out sealed log blocks when
    /// many are waiting, checkpoint when the log ring is half used.
    fn after_op(&self) -> Result<()> {
        let (sealed, used, n) = {
            let inner = self.lock();
            (
                inner.log.sealed.len(),
                inner.log.next_seq - inner.log.ckpt_log_seq,
                inner.ix.geometry.metalog_blocks(),
            )
        };
        if used >= n / 2 {
            // Another writer may have checkpointed while we waited for
            // `log_io`: look again under it.
            let _io = self.log_io.lock().unwrap_or_else(|e| e.into_inner());
            let still = {
                let inner = self.lock();
                inner.log.next_seq - inner.log.ckpt_log_seq >= n / 2
            };
            return if still {
                self.checkpoint_locked()
            } else {
                Ok(())
            };
        }
        // Sealed blocks wait in memory (at most 1 MiB of them) so that the
        // barrier their write needs is paid rarely.
        if sealed >= 256 {
            let _io = self.log_io.lock().unwrap_or_else(|e| e.into_inner());
            if !self.write_sealed_blocks()? {
                return self.checkpoint_locked();
            }
        }
        Ok(())
    }

    /// Close cleanly: checkpoint, then mark the superblock clean.
    pub fn close(self) -> Result<()> {
        self.checkpoint()?;
        let sb = {
            let mut inner = self.lock();
            inner.sb.clean = true;
            inner.sb.sb_seq += 1;
            inner.sb.clone()
        };
        recovery::write_superblock(self.engine.as_ref(), &sb)?;
        crate::io::flush(self.engine.as_ref())?;
        Ok(())
    }
}

/// Bits of a read completion's tag that number the read's pieces; the
/// rest is the key the caller gave [`Store::start_read`].
const PIECE_BITS: u32 = 20;

/// The key of the read a completion of [`Store::start_read`] belongs to.
pub fn read_key_of(completion_tag: u64) -> u64 {
    completion_tag >> PIECE_BITS
}

/// A read whose I/O is in flight: give it its completions
/// ([`PendingRead::absorb`]) until it is whole, then have the store check
/// it ([`Store::finish_reads`]). Lets one thread submit reads and another
/// reap them.
pub struct PendingRead {
    plan: ReadPlan,
}

impl PendingRead {
    /// The tag given to [`Store::start_read`].
    pub fn tag(&self) -> u64 {
        self.plan.tag
    }

    /// Take one of this read's completions; true once all have arrived.
    pub fn absorb(&mut self, c: crate::io::Completion) -> bool {
        let i = (c.tag & ((1 << PIECE_BITS) - 1)) as usize;
        match c.result {
            Ok(_) => {
                if let Some(slot) = self.plan.bufs.get_mut(i) {
                    *slot = Some(c.buf);
                }
            }
            Err(e) => {
                self.plan.error.get_or_insert(e);
            }
        }
        self.plan.waiting = self.plan.waiting.saturating_sub(1);
        self.plan.waiting == 0
    }
}

/// What [`Store::start_read`] reads: `len` bytes at `offset` of `object`,
/// of data generation `data_gen` when given ([`StoreError::Stale`] if it
/// was invalidated since).
#[derive(Debug, Clone, Copy)]
pub struct ReadAt {
    pub object: ObjectId,
    pub data_gen: Option<u64>,
    pub offset: u64,
    pub len: u64,
}

/// What [`Store::start_read`] did.
pub enum StartedRead {
    /// Nothing to read from the device (all holes): already finished.
    Done(Result<Vec<Segment>>),
    /// I/O in flight; its completions arrive on the queue given.
    Pending(PendingRead),
}

impl Store {
    /// Plan the read `at` and send its I/O to the engine now, completions
    /// to `cq` tagged with `key` (see [`read_key_of`]; `key` below 2^44).
    /// `tag` comes back with the result.
    pub fn start_read(
        &self,
        key: u64,
        tag: u64,
        at: ReadAt,
        cq: &CompletionQueue,
    ) -> Result<StartedRead> {
        let mut plan = self.plan_read(tag, at.object, at.data_gen, at.offset, at.len)?;
        let mut ops = Vec::new();
        for (i, item) in plan.items.iter().enumerate() {
            if let PlanItem::Piece(p) = item {
                let buf = self.engine.alloc(p.io_len);
                ops.push(Op::read(
                    p.dev_off,
                    buf,
                    (key << PIECE_BITS) | i as u64,
                    IoHint::Data,
                ));
                plan.waiting += 1;
            }
        }
        if plan.waiting == 0 {
            let mut out = Vec::with_capacity(1);
            self.finish_reads(std::iter::once(plan), &mut out);
            let r = out.pop().map(|(_, r)| r);
            return Ok(StartedRead::Done(
                r.unwrap_or(Err(StoreError::Io(IoError::Stopped))),
            ));
        }
        // To the device at once, as fio does: holding reads back to batch
        // them with the next ones only delays them (on a virtualised disk,
        // 0.8 of fio's IOPS at queue depth 32 instead of par).
        self.engine.submit(&mut ops, cq);
        Ok(StartedRead::Pending(PendingRead { plan }))
    }

    /// Check reads whose I/O is whole and append their (tag, result) pairs
    /// to `out` (one lock for them all).
    pub fn finish_pending(
        &self,
        reads: impl Iterator<Item = PendingRead>,
        out: &mut Vec<(u64, Result<Vec<Segment>>)>,
    ) {
        self.finish_reads(reads.map(|r| r.plan), out);
    }
}

/// Reads kept in flight together: submit many, then wait for whichever
/// complete. Each read's I/O goes to the engine when it is submitted (the
/// pieces of one read in one batch); waiting reaps for the engine.
pub struct ReadQueue<'a> {
    store: &'a Store,
    cq: CompletionQueue,
    plans: slab::Slab<PendingRead>,
    done: Vec<crate::io::Completion>,
    /// Reads whose I/O is done, not verified yet.
    landed: Vec<PendingRead>,
    ready: Vec<(u64, Result<Vec<Segment>>)>,
}

impl<'a> ReadQueue<'a> {
    /// An empty queue on `store`.
    pub fn new(store: &'a Store) -> Self {
        ReadQueue {
            store,
            cq: CompletionQueue::new(),
            plans: slab::Slab::new(),
            done: Vec::new(),
            landed: Vec::new(),
            ready: Vec::new(),
        }
    }

    /// Reads queued or in flight.
    pub fn in_flight(&self) -> usize {
        self.plans.len() + self.landed.len() + self.ready.len()
    }

    /// Reads whose I/O is still at the device (the queue depth it sees).
    pub fn io_in_flight(&self) -> usize {
        self.plans.len()
    }

    /// Queue a read of object `id`; `tag` comes back with its result.
    pub fn submit(&mut self, tag: u64, id: ObjectId, offset: u64, len: u64) -> Result<()> {
        self.submit_gen(tag, id, None, offset, len)
    }

    /// Queue a read of data generation `expected_gen` (see [`Store::read_gen`]).
    pub fn submit_gen(
        &mut self,
        tag: u64,
        id: ObjectId,
        expected_gen: Option<u64>,
        offset: u64,
        len: u64,
    ) -> Result<()> {
        let key = self.plans.vacant_key() as u64;
        let at = ReadAt {
            object: id,
            data_gen: expected_gen,
            offset,
            len,
        };
        match self.store.start_read(key, tag, at, &self.cq)? {
            StartedRead::Done(r) => self.ready.push((tag, r)),
            StartedRead::Pending(p) => {
                self.plans.insert(p);
            }
        }
        Ok(())
    }

    /// Wait until the I/O of at least one read is done (if any is in
    /// flight), without verifying it yet, and return how many reads
    /// [`ReadQueue::take`] would hand over now. A caller that keeps a queue
    /// depth puts new reads in flight before it takes the finished ones, so
    /// the device does not wait while blocks are checked.
    pub fn reap(&mut self) -> usize {
        while self.ready.is_empty() && self.landed.is_empty() && !self.plans.is_empty() {
            self.cq.wait_into(&mut self.done);
            for c in self.done.drain(..) {
                let key = read_key_of(c.tag) as usize;
                if let Some(read) = self.plans.get_mut(key)
                    && read.absorb(c)
                {
                    self.landed.push(self.plans.remove(key));
                }
            }
        }
        self.landed.len() + self.ready.len()
    }

    /// Verify the reads whose I/O is done and append their (tag, result)
    /// pairs to `out`. Does not wait.
    pub fn take(&mut self, out: &mut Vec<(u64, Result<Vec<Segment>>)>) {
        if !self.landed.is_empty() {
            self.store
                .finish_pending(self.landed.drain(..), &mut self.ready);
        }
        out.append(&mut self.ready);
    }

    /// Wait until at least one read is complete (if any is in flight) and
    /// append the completed (tag, result) pairs to `out`: [`ReadQueue::reap`]
    /// then [`ReadQueue::take`].
    pub fn wait(&mut self, out: &mut Vec<(u64, Result<Vec<Segment>>)>) {
        self.reap();
        self.take(out);
    }
}
