//! Formatting a device, and opening one: recovery.
//!
//! Open = pick the newest valid superblock copy; load the newest checkpoint
//! whose header and payload verify; replay the metadata log from the
//! checkpoint's log_seq until the first block that is invalid or out of
//! sequence; drop extents of regions whose header does not carry the
//! region_seq they were written under; then write a fresh checkpoint whose
//! log_seq skips a whole lap of the log ring, so that no block written
//! before the crash can ever be replayed after a later one.
//!
//! If the block where replay stops is valid but carries a seq *greater*
//! than expected, the log was overwritten after a newer checkpoint that is
//! now unreadable: the index cannot be trusted, and the cache starts empty
//! (it is a cache: losing content is allowed, serving wrong content is not).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

use ringcache_ondisk::checkpoint::{CheckpointInfo, check_payload};
use ringcache_ondisk::metalog::parse_block;
use ringcache_ondisk::record::OBJECT_FLAG_DIRTY;
use ringcache_ondisk::superblock::{GeometryParams, SuperblockInfo};
use ringcache_ondisk::{
    BLOCK_BYTES, BLOCK_BYTES_U64, CheckpointHeader, FormatVersion, Geometry, RecordIter,
    RegionHeader, Superblock,
};
use zerocopy::IntoBytes;

use super::index::{Index, RegionState};
use super::{Inner, LogState, Result, Store, StoreConfig, StoreError, StoreStats};
use crate::io::{self, CompletionQueue, IoBuf, IoEngine, IoError, IoHint, Op};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How to format a device.
#[derive(Debug, Clone, Default)]
pub struct FormatOptions {
    /// A name for the cache (at most 32 bytes of UTF-8).
    pub tag: String,
    /// Layout overrides.
    pub geometry: GeometryParams,
    /// Overwrite a device that holds a cache or other data.
    pub force: bool,
}

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The cache was closed cleanly last time.
    pub clean_shutdown: bool,
    /// Superblock copies that did not verify.
    pub superblock_errors: Vec<String>,
    /// (slot, ckpt_seq) of the checkpoint loaded.
    pub checkpoint: Option<(usize, u64)>,
    /// Checkpoint slots that did not verify.
    pub checkpoint_errors: Vec<String>,
    pub log_blocks_replayed: u64,
    pub log_records_replayed: u64,
    /// Why replay stopped where it did.
    pub log_stop: String,
    /// The index was reset to empty, and why.
    pub reset: Option<String>,
    /// Regions whose header did not match their extents (their data dropped).
    pub regions_dropped: u32,
    /// Which regions those were, in index order (for fsck).
    pub dropped_regions: Vec<u32>,
    /// Objects marked dirty (modified locally when the cache went down).
    pub dirty_objects: u64,
    /// Replay stopped at a block that does not verify, and that lost
    /// more than a torn last write does (see [`LogLoss`]).
    pub log_loss: Option<LogLoss>,
}

/// What replay left out when it stopped at a block that does not verify
/// although the log had gone on, or although the block had been flushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLoss {
    /// The block replay stopped at.
    pub at_seq: u64,
    /// The superblock says a completed flush had made the block durable
    /// (`durable_log_seq`): it was damaged afterwards, not torn by a crash,
    /// and records acknowledged as durable were rolled back.
    pub durable: bool,
    /// Valid blocks in sequence after it, and their records, that replay
    /// could not use.
    pub later_blocks: u64,
    pub later_records: u64,
}

impl LogLoss {
    /// One line for the log and for fsck.
    pub fn describe(&self) -> String {
        let why = if self.durable {
            "was damaged after a flush made it durable"
        } else {
            "does not verify (torn by a crash, or damaged)"
        };
        format!(
            "metadata log block {} {why}: replay stopped there and rolled back its records and \
             {} later block(s) holding {} record(s)",
            self.at_seq, self.later_blocks, self.later_records
        )
    }
}

fn read(engine: &dyn IoEngine, offset: u64, len: usize, hint: IoHint) -> Result<crate::io::IoBuf> {
    Ok(io::read_at(engine, offset, len, hint)?)
}

/// Where `sb` goes (the copy its sb_seq selects) and its bytes.
pub(crate) fn superblock_write(engine: &dyn IoEngine, sb: &SuperblockInfo) -> (u64, IoBuf) {
    let block = Superblock::new(sb);
    let mut buf = engine.alloc(BLOCK_BYTES);
    buf.copy_from_slice(block.as_bytes());
    let at = ringcache_ondisk::superblock::SUPERBLOCK_OFFSETS[(sb.sb_seq % 2) as usize];
    (at, buf)
}

/// Write `sb` to the copy its sb_seq selects.
pub(crate) fn write_superblock(engine: &dyn IoEngine, sb: &SuperblockInfo) -> Result<()> {
    let (at, buf) = superblock_write(engine, sb);
    io::write_at(engine, at, buf, IoHint::Superblock)?;
    Ok(())
}

/// Write a checkpoint (header block + payload) into `slot`. Not flushed.
pub(crate) fn write_checkpoint(
    engine: &dyn IoEngine,
    g: &Geometry,
    slot: usize,
    uuid: [u8; 16],
    info: &CheckpointInfo,
    payload: &[u8],
) -> std::result::Result<(), IoError> {
    let total = BLOCK_BYTES + payload.len().div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
    let mut buf = engine.alloc(total);
    buf.fill(0);
    let h = CheckpointHeader::new(info, uuid);
    buf[..h.as_bytes().len()].copy_from_slice(h.as_bytes());
    buf[BLOCK_BYTES..BLOCK_BYTES + payload.len()].copy_from_slice(payload);
    io::write_at(engine, g.ckpt_slot_offset(slot), buf, IoHint::Checkpoint)
}

/// The index addresses at most `MAX_REGIONS` regions: one rule for format
/// (which must not make a cache that open refuses) and open.
fn check_region_count(g: &Geometry) -> std::result::Result<(), String> {
    if g.region_count > super::extent_map::MAX_REGIONS {
        return Err(format!(
            "{} regions is more than this build addresses ({}); format with larger regions",
            g.region_count,
            super::extent_map::MAX_REGIONS
        ));
    }
    Ok(())
}

/// Format the device under `engine` as an empty cache.
pub fn format(engine: &dyn IoEngine, opts: &FormatOptions) -> Result<SuperblockInfo> {
    let device_bytes = engine.device_bytes();
    let geometry = Geometry::plan(device_bytes, opts.geometry)?;
    check_region_count(&geometry).map_err(StoreError::Invalid)?;
    if opts.tag.len() > 32 {
        return Err(StoreError::Invalid("tag is longer than 32 bytes".into()));
    }
    if !opts.force {
        let head = read(engine, 0, 64 << 10, IoHint::Superblock)?;
        if let Ok((sb, _)) = Superblock::pick(
            &head[..BLOCK_BYTES],
            &head[BLOCK_BYTES..2 * BLOCK_BYTES],
            device_bytes,
        ) {
            return Err(StoreError::Invalid(format!(
                "the device already holds a ringcache cache (tag {:?}); use force to reformat",
                sb.tag
            )));
        }
        if head.iter().any(|&b| b != 0) {
            return Err(StoreError::Invalid(
                "the device holds data that is not a ringcache cache; use force to overwrite it"
                    .into(),
            ));
        }
    }
    let sb = SuperblockInfo {
        version: FormatVersion::CURRENT,
        clean: true,
        sb_seq: 1,
        uuid: rand::random(),
        geometry,
        created_unix_secs: now_secs(),
        tag: opts.tag.clone(),
        durable_log_seq: 0,
    };
    // Slot 1 gets a zero header so a checkpoint of an earlier format there
    // cannot be mistaken for ours (its uuid would differ anyway).
    let zero = engine.alloc(BLOCK_BYTES);
    let mut zero = zero;
    zero.fill(0);
    io::write_at(
        engine,
        geometry.ckpt_slot_offset(1),
        zero,
        IoHint::Checkpoint,
    )?;
    let info = CheckpointInfo {
        ckpt_seq: 1,
        log_seq: 1,
        next_object_id: 1,
        next_region_seq: 1,
        next_volume_id: 1,
        created_unix_secs: sb.created_unix_secs,
        payload_crc: ringcache_ondisk::crc32c(&[]),
        ..Default::default()
    };
    write_checkpoint(engine, &geometry, 0, sb.uuid, &info, &[])?;
    write_superblock(engine, &sb)?;
    write_superblock(
        engine,
        &SuperblockInfo {
            sb_seq: 2,
            ..sb.clone()
        },
    )?;
    io::flush(engine)?;
    Ok(SuperblockInfo { sb_seq: 2, ..sb })
}

/// Load the checkpoint in `slot`: its header, payload and the index it holds.
fn load_checkpoint(
    engine: &dyn IoEngine,
    sb: &SuperblockInfo,
    slot: usize,
) -> Result<(CheckpointInfo, Index)> {
    let g = &sb.geometry;
    let head = read(
        engine,
        g.ckpt_slot_offset(slot),
        BLOCK_BYTES,
        IoHint::Checkpoint,
    )?;
    let info = CheckpointHeader::parse(&head, &sb.uuid, g.ckpt_slot_bytes)?;
    let len = info.payload_bytes as usize;
    let mut ix = Index::new(*g);
    if len > 0 {
        let io_len = len.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
        let body = read(
            engine,
            g.ckpt_slot_offset(slot) + BLOCK_BYTES_U64,
            io_len,
            IoHint::Checkpoint,
        )?;
        let payload = &body[..len];
        check_payload(&info, payload)?;
        for rec in RecordIter::new(payload) {
            let rec = rec?;
            rec.check_geometry(g)?;
            ix.apply(&rec);
        }
    }
    ix.next_object_id = ix.next_object_id.max(info.next_object_id);
    ix.next_volume_id = ix.next_volume_id.max(info.next_volume_id);
    ix.next_region_seq = ix.next_region_seq.max(info.next_region_seq);
    Ok((info, ix))
}

/// Read a batch of blocks at the given device offsets, in order.
fn read_blocks(
    engine: &dyn IoEngine,
    offsets: &[u64],
    hint: IoHint,
) -> Vec<std::result::Result<crate::io::IoBuf, IoError>> {
    let cq = CompletionQueue::new();
    let mut ops: Vec<Op> = offsets
        .iter()
        .enumerate()
        .map(|(i, &off)| Op::read(off, engine.alloc(BLOCK_BYTES), i as u64, hint))
        .collect();
    engine.submit(&mut ops, &cq);
    let mut done = Vec::with_capacity(offsets.len());
    while done.len() < offsets.len() {
        cq.wait_into(&mut done);
    }
    let mut out: Vec<Option<std::result::Result<crate::io::IoBuf, IoError>>> =
        (0..offsets.len()).map(|_| None).collect();
    for c in done {
        if let Some(slot) = out.get_mut(c.tag as usize) {
            *slot = Some(c.result.map(|_| c.buf));
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or(Err(IoError::Stopped)))
        .collect()
}

/// Replay stopped at block `seq` (bytes `buf`), which does not verify:
/// what that lost beyond a torn last write, if anything. A block of zeros
/// was never written (the end of a fresh log).
fn log_loss(engine: &dyn IoEngine, sb: &SuperblockInfo, seq: u64, buf: &[u8]) -> Option<LogLoss> {
    if buf.iter().all(|&b| b == 0) && sb.durable_log_seq < seq {
        return None;
    }
    let durable = sb.durable_log_seq >= seq;
    let (later_blocks, later_records) = blocks_after(engine, sb, seq);
    (durable || later_blocks > 0).then_some(LogLoss {
        at_seq: seq,
        durable,
        later_blocks,
        later_records,
    })
}

/// Valid log blocks in sequence after `seq`, and their records (reading
/// one block at a time: this runs only when replay stopped early).
fn blocks_after(engine: &dyn IoEngine, sb: &SuperblockInfo, seq: u64) -> (u64, u64) {
    let g = sb.geometry;
    let n = g.metalog_blocks();
    let (mut blocks, mut records) = (0u64, 0u64);
    while blocks + 1 < n {
        let next = seq + blocks + 1;
        let Ok(buf) = read(
            engine,
            g.metalog_block_offset(next),
            BLOCK_BYTES,
            IoHint::Log,
        ) else {
            break;
        };
        match parse_block(&buf, &sb.uuid) {
            Ok(b) if b.seq == next => {
                blocks += 1;
                records += u64::from(b.record_count);
            }
            _ => break,
        }
    }
    (blocks, records)
}

/// The state recovery rebuilds, before anything is written (what the
/// offline tools inspect).
pub struct Loaded {
    pub sb: SuperblockInfo,
    pub(super) ix: Index,
    pub ckpt_seq: u64,
    pub ckpt_slot: Option<usize>,
    /// The seq replay stopped at: the first block not replayed.
    pub log_end: u64,
    pub report: RecoveryReport,
}

/// Rebuild the index from the device without writing anything.
pub fn load(engine: &dyn IoEngine) -> Result<Loaded> {
    let device_bytes = engine.device_bytes();
    if device_bytes < 2 * BLOCK_BYTES_U64 {
        return Err(StoreError::NotACache(format!(
            "device of {device_bytes} bytes is too small"
        )));
    }
    let head = read(engine, 0, 2 * BLOCK_BYTES, IoHint::Superblock)?;
    let mut report = RecoveryReport::default();
    let (sb, sb_errs) = Superblock::pick(&head[..BLOCK_BYTES], &head[BLOCK_BYTES..], device_bytes)
        .map_err(|[a, b]| StoreError::NotACache(format!("superblock A: {a}; superblock B: {b}")))?;
    report.clean_shutdown = sb.clean;
    for (i, e) in sb_errs.iter().enumerate() {
        if let Some(e) = e {
            report
                .superblock_errors
                .push(format!("copy {}: {e}", ["A", "B"][i]));
        }
    }
    let g = sb.geometry;
    let n = g.metalog_blocks();
    check_region_count(&g).map_err(StoreError::NotACache)?;

    // The newest checkpoint that verifies.
    let mut candidates = Vec::new();
    for slot in 0..2 {
        match load_checkpoint(engine, &sb, slot) {
            Ok((info, ix)) => candidates.push((info, ix, slot)),
            Err(StoreError::Io(e)) => return Err(StoreError::Io(e)),
            // A slot never written since format holds zeros: not damage.
            Err(StoreError::Corrupt(ringcache_ondisk::FormatError::BadMagic {
                found: 0, ..
            })) => {}
            Err(e) => report.checkpoint_errors.push(format!("slot {slot}: {e}")),
        }
    }
    candidates.sort_by_key(|(info, _, _)| std::cmp::Reverse(info.ckpt_seq));
    let (mut ix, mut expected, ckpt_seq, ckpt_slot) = match candidates.into_iter().next() {
        Some((info, ix, slot)) => {
            report.checkpoint = Some((slot, info.ckpt_seq));
            (ix, info.log_seq, info.ckpt_seq, Some(slot))
        }
        None => {
            report.reset = Some("no valid checkpoint".into());
            (Index::new(g), 0, 0, None)
        }
    };

    // Replay the log.
    if ckpt_slot.is_some() {
        const BATCH: u64 = 64;
        'replay: loop {
            let offsets: Vec<u64> = (0..BATCH.min(n))
                .map(|i| g.metalog_block_offset(expected + i))
                .collect();
            let blocks = read_blocks(engine, &offsets, IoHint::Log);
            for buf in blocks {
                let buf = buf?;
                match parse_block(&buf, &sb.uuid) {
                    Ok(b) if b.seq == expected => {
                        let mut bad = None;
                        let mut recs = Vec::new();
                        for rec in RecordIter::new(b.payload) {
                            match rec.and_then(|r| r.check_geometry(&g).map(|_| r)) {
                                Ok(r) => recs.push(r),
                                Err(e) => {
                                    bad = Some(e);
                                    break;
                                }
                            }
                        }
                        if bad.is_none() && recs.len() != b.record_count as usize {
                            bad = Some(ringcache_ondisk::FormatError::OutOfRange {
                                what: "metadata log block",
                                field: "record_count",
                                value: u64::from(b.record_count),
                                why: "does not match the records in the block",
                            });
                        }
                        if let Some(e) = bad {
                            // A block that verifies but holds a bad record was
                            // not written by us: stop before it.
                            report.log_stop = format!("block {expected}: {e}");
                            let (later_blocks, later_records) = blocks_after(engine, &sb, expected);
                            report.log_loss = Some(LogLoss {
                                at_seq: expected,
                                durable: sb.durable_log_seq >= expected,
                                later_blocks,
                                later_records,
                            });
                            break 'replay;
                        }
                        for r in &recs {
                            ix.apply(r);
                        }
                        report.log_records_replayed += recs.len() as u64;
                        report.log_blocks_replayed += 1;
                        expected += 1;
                    }
                    Ok(b) if b.seq > expected => {
                        report.reset = Some(format!(
                            "metadata log overwritten past the checkpoint (found block {} where {expected} belongs)",
                            b.seq
                        ));
                        ix = Index::new(g);
                        report.log_stop = "log overwritten".into();
                        break 'replay;
                    }
                    Ok(b) => {
                        report.log_stop =
                            format!("block {expected}: end of log (older block {} there)", b.seq);
                        if sb.durable_log_seq >= expected {
                            // A flushed block gone back to an older one.
                            let (later_blocks, later_records) = blocks_after(engine, &sb, expected);
                            report.log_loss = Some(LogLoss {
                                at_seq: expected,
                                durable: true,
                                later_blocks,
                                later_records,
                            });
                        }
                        break 'replay;
                    }
                    Err(e) => {
                        report.log_stop = format!("block {expected}: {e}");
                        report.log_loss = log_loss(engine, &sb, expected, &buf);
                        break 'replay;
                    }
                }
            }
        }
    } else {
        // No checkpoint: find the highest seq in the log so the new log
        // starts past everything there.
        let offsets: Vec<u64> = (0..n)
            .map(|i| g.metalog_offset + i * BLOCK_BYTES_U64)
            .collect();
        let mut max_seq = 0;
        for buf in read_blocks(engine, &offsets, IoHint::Log)
            .into_iter()
            .flatten()
        {
            if let Ok(b) = parse_block(&buf, &sb.uuid) {
                max_seq = max_seq.max(b.seq);
            }
        }
        expected = max_seq + 1;
        report.log_stop = "no checkpoint to replay from".into();
    }

    // Region headers: extents count only where the header carries their seq.
    let offsets: Vec<u64> = (0..g.region_count).map(|r| g.region_offset(r)).collect();
    let headers = read_blocks(engine, &offsets, IoHint::RegionHeader);
    let mut max_header_seq = 0;
    for (r, h) in headers.into_iter().enumerate() {
        let h = h?;
        let seq = RegionHeader::parse(&h, r as u32, &sb.uuid).ok();
        if let Some(s) = seq {
            max_header_seq = max_header_seq.max(s);
        }
        let region_seq = ix.regions.get(r).map(|x| x.seq).unwrap_or(0);
        let live = ix.regions.get(r).is_some_and(|x| x.live_bytes > 0);
        if live && seq != Some(region_seq) {
            ix.evict_region_extents(r as u32);
            report.regions_dropped += 1;
            report.dropped_regions.push(r as u32);
        }
    }
    ix.next_region_seq = ix.next_region_seq.max(max_header_seq + 1);
    report.dirty_objects = ix
        .objects
        .values()
        .filter(|o| o.flags & OBJECT_FLAG_DIRTY != 0)
        .count() as u64;
    Ok(Loaded {
        sb,
        ix,
        ckpt_seq,
        ckpt_slot,
        log_end: expected,
        report,
    })
}

/// Open a store: load, then make the recovered state the new durable base.
pub(super) fn open(engine: Arc<dyn IoEngine>, cfg: StoreConfig) -> Result<Store> {
    let Loaded {
        mut sb,
        mut ix,
        ckpt_seq,
        ckpt_slot,
        log_end,
        report,
    } = load(engine.as_ref())?;
    let g = sb.geometry;
    let n = g.metalog_blocks();
    // Region states: anything with live data is sealed (appends go to fresh
    // regions); the rest is free.
    let mut free = VecDeque::new();
    let mut fifo = BTreeMap::new();
    for (r, region) in ix.regions.iter_mut().enumerate() {
        if region.live_bytes > 0 {
            region.state = RegionState::Sealed;
            fifo.insert(region.seq, r as u32);
        } else {
            region.state = RegionState::Free;
            region.objects.clear();
            free.push_back(r as u32);
        }
    }
    ix.clock = 0;
    let max_objects = cfg.max_objects.unwrap_or((g.ckpt_slot_bytes / 256).max(16));
    let new_log_seq = log_end + n;
    let store = Store {
        engine,
        cfg,
        inner: Mutex::new(Inner {
            inflight: vec![0; g.region_count as usize],
            headers_inflight: 0,
            ix,
            log: LogState {
                payload: Vec::new(),
                records: 0,
                next_seq: new_log_seq,
                // Until the new checkpoint is durable nothing may be written
                // to the log; it is written below before any operation.
                ckpt_log_seq: new_log_seq,
                sealed: VecDeque::new(),
                // Every block replayed was read back from the device.
                written_through: log_end.saturating_sub(1),
                durable_through: log_end.saturating_sub(1),
            },
            active: None,
            free,
            fifo,
            ckpt_seq,
            ckpt_slot: ckpt_slot.unwrap_or(1),
            failed: None,
            consecutive_errors: 0,
            stats: StoreStats::default(),
            max_objects,
            object_pressure: false,
            writes_at_flush: 0,
            space_waiters: 0,
            sb: sb.clone(),
        }),
        log_io: Mutex::new(()),
        space: Condvar::new(),
        report,
    };
    store.checkpoint()?;
    sb.clean = false;
    sb.sb_seq += 1;
    sb.durable_log_seq = log_end.saturating_sub(1);
    write_superblock(store.engine.as_ref(), &sb)?;
    io::flush(store.engine.as_ref())?;
    store.lock().sb = sb;
    match &store.report.log_loss {
        Some(l) if l.durable => tracing::error!("{}", l.describe()),
        Some(l) => tracing::warn!("{}", l.describe()),
        None => {}
    }
    if store.report.reset.is_some() || !store.report.checkpoint_errors.is_empty() {
        tracing::warn!(report = ?store.report, "recovered with damage");
    } else {
        tracing::info!(
            blocks = store.report.log_blocks_replayed,
            records = store.report.log_records_replayed,
            "recovered"
        );
    }
    Ok(store)
}

impl Loaded {
    /// The index recovery rebuilt, read-only.
    pub fn index(&self) -> super::IndexView<'_> {
        super::IndexView::new(&self.ix)
    }
}
