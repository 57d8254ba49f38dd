//! The object store: log-structured, checksummed, crash-safe.
//!
//! Data is appended into large regions (sequential writes). An in-memory
//! index (`index.rs`) maps (object, offset) to (region, offset, length); a crc32c
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

mod catalog;
mod config;
mod durability;
mod error;
mod extent_map;
mod index;
mod read;
mod read_queue;
mod recovery;
mod space;
mod view;
mod write;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use ringcache_ondisk::superblock::SuperblockInfo;

use crate::io::{IoEngine, IoError};
pub use catalog::ObjectInfo;
pub use config::{CullThresholds, StoreConfig};
pub use error::{Result, StoreError};
use index::Index;
pub use index::{ObjectId, VolumeId};
pub use read::{DataBuf, Segment, Segments};
pub use read_queue::{PendingRead, ReadAt, ReadQueue, StartedRead, read_key_of};
pub use recovery::{FormatOptions, Loaded, LogLoss, RecoveryReport, format, load};
pub use view::{ExtentView, IndexProbe, IndexView, ObjectView, RegionState, RegionView};
pub use write::PendingWrite;

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
    /// Bytes of one region (regions × this: the data capacity).
    pub region_bytes: u64,
    pub regions_free: u32,
    pub objects: u64,
    pub max_objects: u64,
    pub extents: u64,
    pub live_bytes: u64,
    pub checkpoint_bytes: u64,
    pub checkpoint_capacity: u64,
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
    /// The newest block written (durable at the next flush).
    written_through: u64,
    /// The newest block a completed flush made durable; the superblock
    /// records it (`durable_log_seq`) with the next log write.
    durable_through: u64,
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
}

impl Store {
    /// Space and object counts.
    pub fn occupancy_summary(&self) -> Occupancy {
        let inner = self.lock();
        Occupancy {
            regions: inner.ix.geometry.region_count,
            region_bytes: inner.ix.geometry.region_bytes,
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
}

impl Store {
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
