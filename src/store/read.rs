//! The read path: a read is planned against the index into pieces (device
//! reads) and holes, the pieces read, and every 4 KiB block's crc checked
//! (seeded with object, data generation and logical block) before a byte
//! is returned: a mismatch is a miss and a counter, never wrong bytes.

use std::cell::RefCell;
use std::ops::Deref;

use smallvec::SmallVec;

use ringcache_ondisk::{BLOCK_BYTES, BLOCK_BYTES_U64, block_crc};

use super::error::invalid;
use super::*;
use crate::io::{IoBuf, IoError};

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

/// The segments of a read, in order: inline up to two (a 4 KiB read is one
/// or two), so a read's answer costs no allocation.
pub type Segments = SmallVec<[Segment; 2]>;

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

/// One planned piece of a read.
pub(super) struct ReadPiece {
    pub(super) offset: u64,
    pub(super) len: usize,
    /// Device offset of the first block read.
    pub(super) dev_off: u64,
    pub(super) io_len: usize,
    /// Bytes from the start of the I/O to the first wanted byte.
    pub(super) skip: usize,
    pub(super) region: u32,
    pub(super) region_seq: u64,
    pub(super) first_block: usize,
    pub(super) logical_block0: u64,
    /// The bytes read, once the piece's I/O completed.
    pub(super) buf: Option<IoBuf>,
}

pub(super) enum PlanItem {
    Hole { offset: u64, len: u64 },
    Piece(ReadPiece),
}

pub(super) struct ReadPlan {
    pub(super) tag: u64,
    pub(super) object: ObjectId,
    pub(super) data_gen: u64,
    /// Inline for a read of up to two pieces and holes.
    pub(super) items: SmallVec<[PlanItem; 2]>,
    pub(super) waiting: usize,
    pub(super) error: Option<IoError>,
}

impl Store {
    /// Read `len` bytes at `offset` of object `id` (clamped to its size).
    /// Returns data and holes covering the range in order.
    pub fn read(&self, id: ObjectId, offset: u64, len: u64) -> Result<Segments> {
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
    ) -> Result<Segments> {
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

    pub(super) fn plan_read(
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
        let mut items = SmallVec::new();
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
                buf: None,
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
        Ok(ReadPlan {
            tag,
            object: id,
            data_gen: o.data_gen,
            items,
            waiting: 0,
            error: None,
        })
    }

    /// Verify completed plans' blocks and build their segments, under one
    /// lock; (tag, result) pairs go to `out`.
    pub(super) fn finish_reads(
        &self,
        plans: impl Iterator<Item = ReadPlan>,
        out: &mut Vec<(u64, Result<Segments>)>,
    ) {
        SCRATCH.with(|scratch| {
            // A reentrant call (none is made today) gets fresh vectors
            // instead of a borrow panic.
            let mut fresh = None;
            let mut guard = scratch.try_borrow_mut();
            let s = match guard.as_mut() {
                Ok(s) => &mut **s,
                Err(_) => fresh.insert(FinishScratch::new()),
            };
            // The crcs of what was read depend only on the plan and the
            // bytes: computed before the lock, only compared under it.
            for p in plans {
                let first = s.crcs.len();
                Self::block_crcs(&p, &mut s.crcs);
                s.plans.push((p, first));
            }
            let mut inner = self.lock();
            for (plan, first) in s.plans.drain(..) {
                let tag = plan.tag;
                let crcs = s.crcs.get(first..).unwrap_or(&[]);
                out.push((tag, Self::finish_read(&mut inner, plan, crcs)));
            }
            drop(inner);
            s.crcs.clear();
        })
    }

    /// Append the crc of each block read for the plan's pieces to `crcs`,
    /// piece after piece in plan order (nothing for holes and for pieces
    /// whose I/O failed).
    pub(super) fn block_crcs(plan: &ReadPlan, crcs: &mut Vec<u32>) {
        for item in &plan.items {
            if let PlanItem::Piece(p) = item
                && let Some(buf) = &p.buf
            {
                crcs.extend(buf.chunks(BLOCK_BYTES).enumerate().map(|(i, chunk)| {
                    block_crc(
                        plan.object,
                        plan.data_gen,
                        p.logical_block0 + i as u64,
                        chunk,
                    )
                }));
            }
        }
    }

    /// Verify a completed plan's blocks (`crcs`: what
    /// [`Store::block_crcs`] appended for it, and possibly more after) and
    /// build its segments.
    pub(super) fn finish_read(
        inner: &mut Inner,
        mut plan: ReadPlan,
        mut crcs: &[u32],
    ) -> Result<Segments> {
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
        let mut out = Segments::new();
        let mut damaged: SmallVec<[(u64, u64); 2]> = SmallVec::new();
        for item in plan.items {
            match item {
                PlanItem::Hole { offset, len } => {
                    inner.stats.read_hole_bytes += len;
                    out.push(Segment::Hole { offset, len });
                }
                PlanItem::Piece(p) => {
                    // This piece's crcs, if its I/O completed.
                    let got = match &p.buf {
                        Some(buf) => {
                            let n = buf.len().div_ceil(BLOCK_BYTES).min(crcs.len());
                            let (mine, rest) = crcs.split_at(n);
                            crcs = rest;
                            Some(mine)
                        }
                        None => None,
                    };
                    let region = inner.ix.regions.get(p.region as usize);
                    let same_region = region.is_some_and(|r| r.seq == p.region_seq);
                    let ok = match (region, &p.buf, got) {
                        (Some(r), Some(buf), Some(got)) if same_region => {
                            got.len() == buf.len().div_ceil(BLOCK_BYTES)
                                && got.iter().enumerate().all(|(i, &crc)| {
                                    r.crcs.get(p.first_block + i).copied() == Some(crc)
                                })
                        }
                        _ => false,
                    };
                    match (ok, p.buf) {
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
}

/// What [`Store::finish_reads`] reuses from one batch to the next on a
/// thread: the batch's plans and their blocks' crcs.
struct FinishScratch {
    plans: Vec<(ReadPlan, usize)>,
    crcs: Vec<u32>,
}

impl FinishScratch {
    /// Sized up front for a full [`ReadQueue`](super::ReadQueue) of small
    /// reads (or a few large ones), so that a batch bigger than any before
    /// it does not make the steady state allocate.
    fn new() -> Self {
        FinishScratch {
            plans: Vec::with_capacity(super::ReadQueue::ROOM),
            crcs: Vec::with_capacity(1024),
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<FinishScratch> = RefCell::new(FinishScratch::new());
}
