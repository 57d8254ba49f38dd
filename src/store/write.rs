//! The write path: a write is planned into pieces of the active region
//! (at most one extent each), crcs computed outside the store lock, the
//! data written, then the extents committed to the index and the log.
//!
//! [`Store::write`] does all of it on the caller's thread. A caller that
//! keeps many writes in flight (the daemon's connections) splits it:
//! [`Store::start_write`] plans the write and appends its I/O to the
//! caller's batch; the caller submits the batch, hands the write its
//! completions ([`PendingWrite::absorb`]) and, once it is whole, commits
//! it with [`Store::finish_write`].

use ringcache_ondisk::record::{Crcs, ExtentEntry};
use ringcache_ondisk::{
    BLOCK_BYTES, BLOCK_BYTES_U64, Geometry, MAX_EXTENT_BLOCKS, Record, block_crc,
};

use super::error::invalid;
use super::read_queue::PIECE_BITS;
use super::*;
use crate::io::{Completion, CompletionQueue, IoHint, Op};

/// One planned piece of a write.
pub(super) struct WritePiece {
    entry: ExtentEntry,
    crcs: Vec<u32>,
}

/// A write whose data I/O is in flight: give it its completions
/// ([`PendingWrite::absorb`]) until it is whole, then commit it
/// ([`Store::finish_write`]). Its space is reserved until then (the
/// regions it writes into are not evicted), and nothing of it is visible
/// to readers: a write is cached when `finish_write` returns.
pub struct PendingWrite {
    id: ObjectId,
    bytes: u64,
    pieces: Vec<WritePiece>,
    /// Completions still to come.
    waiting: usize,
    /// Errors of the write's I/O (none, almost always).
    io_errors: Vec<IoError>,
    /// Planning stopped early (no space, a failed store): the pieces
    /// planned so far were given back and this is the answer.
    plan_err: Option<StoreError>,
}

impl PendingWrite {
    /// Take one of this write's completions; true once all have arrived.
    pub fn absorb(&mut self, c: Completion) -> bool {
        if let Err(e) = c.result {
            self.io_errors.push(e);
        }
        self.waiting = self.waiting.saturating_sub(1);
        self.waiting == 0
    }

    /// Whether every completion has arrived (a write with nothing to
    /// write is whole from the start).
    pub fn is_whole(&self) -> bool {
        self.waiting == 0
    }

    /// Bytes the write caches.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Store {
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
        let mut ops = Vec::new();
        let mut w = self.start_write(0, id, expected_gen, offset, data, &mut ops)?;
        if !ops.is_empty() {
            let cq = CompletionQueue::new();
            self.engine.submit(&mut ops, &cq);
            let mut done = Vec::with_capacity(w.waiting);
            while !w.is_whole() {
                cq.wait_into(&mut done);
                for c in done.drain(..) {
                    w.absorb(c);
                }
            }
        }
        self.finish_write(w)
    }

    /// Plan a write ([`Store::write_gen`]'s arguments) and append its data
    /// I/O to `ops`, completions tagged with `key` (below 2^44, as for
    /// reads: see [`read_key_of`]). The caller submits `ops`, gives the
    /// write its completions and commits it with [`Store::finish_write`].
    /// A region the write opens has its header written (and waited for)
    /// here, so a pending write never holds up another thread's flush.
    /// Errors in the request (alignment, range, size, a stale data
    /// generation) come back at once, with nothing planned.
    pub fn start_write(
        &self,
        key: u64,
        id: ObjectId,
        expected_gen: Option<u64>,
        offset: u64,
        data: &[u8],
        ops: &mut Vec<Op>,
    ) -> Result<PendingWrite> {
        let mut w = PendingWrite {
            id,
            bytes: data.len() as u64,
            pieces: Vec::new(),
            waiting: 0,
            io_errors: Vec::new(),
            plan_err: None,
        };
        if !offset.is_multiple_of(BLOCK_BYTES_U64) {
            return Err(invalid(format!(
                "write offset {offset} is not a multiple of 4096"
            )));
        }
        if data.is_empty() {
            return Ok(w);
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| invalid("offset + length overflows"))?;
        // Plan: carve the write into pieces of at most one extent, each in
        // the active region.
        let mut headers: Vec<(u32, u64)> = Vec::new();
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
                        w.plan_err = Some(e);
                        break;
                    }
                }
                let region_blocks = inner.ix.geometry.region_blocks();
                let Some(a) = inner.active.as_mut() else {
                    w.plan_err = Some(StoreError::NoSpace);
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
                w.pieces.push(WritePiece {
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
        if w.plan_err.is_some() {
            // Give back the space reserved so far: nothing of this write
            // is written.
            let mut inner = self.lock();
            for p in w.pieces.drain(..) {
                if let Some(n) = inner.inflight.get_mut(p.entry.region_index as usize) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        let (geometry, uuid) = {
            let inner = self.lock();
            (inner.ix.geometry, inner.sb.uuid)
        };
        if !headers.is_empty()
            && let Err(e) = self.write_region_headers(&headers, geometry, uuid)
        {
            // The store has failed (a header is metadata): nothing of this
            // write is written.
            let mut inner = self.lock();
            for p in w.pieces.drain(..) {
                if let Some(n) = inner.inflight.get_mut(p.entry.region_index as usize) {
                    *n = n.saturating_sub(1);
                }
            }
            self.wake_space_waiters(inner);
            return Err(e.into());
        }
        // Fill buffers and crcs outside the lock.
        let mut pos = 0usize;
        for (i, p) in w.pieces.iter_mut().enumerate() {
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
            ops.push(Op::write(
                dev,
                buf,
                (key << PIECE_BITS) | i as u64,
                IoHint::Data,
            ));
            w.waiting += 1;
            pos += len;
        }
        Ok(w)
    }

    /// Write the headers of regions a write opened, and wait for them:
    /// data of other writers in those regions counts on them, and a flush
    /// waits until none is in flight (`headers_inflight`). An error fails
    /// the store (the header is metadata).
    fn write_region_headers(
        &self,
        headers: &[(u32, u64)],
        geometry: Geometry,
        uuid: [u8; 16],
    ) -> std::result::Result<(), IoError> {
        let mut ops = Vec::with_capacity(headers.len());
        for &(r, seq) in headers {
            let mut buf = self.engine.alloc(BLOCK_BYTES);
            buf.fill(0);
            let h = ringcache_ondisk::RegionHeader::new(r, seq, uuid);
            buf[..64].copy_from_slice(zerocopy::IntoBytes::as_bytes(&h));
            ops.push(Op::write(
                geometry.region_offset(r),
                buf,
                0,
                IoHint::RegionHeader,
            ));
        }
        let cq = CompletionQueue::new();
        self.engine.submit(&mut ops, &cq);
        let mut done = Vec::with_capacity(headers.len());
        while done.len() < headers.len() {
            cq.wait_into(&mut done);
        }
        let mut inner = self.lock();
        inner.headers_inflight -= headers.len() as u32;
        let mut first_err = None;
        for c in done {
            if let Err(e) = c.result {
                Self::note_io_error(&mut inner, &e, true);
                first_err.get_or_insert(e);
            }
        }
        self.wake_space_waiters(inner);
        first_err.map_or(Ok(()), Err)
    }

    /// Commit a write started with [`Store::start_write`] whose I/O is
    /// whole ([`PendingWrite::is_whole`]): its extents go into the index
    /// and the log, and it answers as [`Store::write_gen`] does. Writes
    /// that overlap are committed in the order this is called for them.
    pub fn finish_write(&self, mut w: PendingWrite) -> Result<()> {
        if w.bytes == 0 {
            return Ok(());
        }
        let mut inner = self.lock();
        for p in &w.pieces {
            if let Some(n) = inner.inflight.get_mut(p.entry.region_index as usize) {
                *n = n.saturating_sub(1);
            }
        }
        if !w.io_errors.is_empty() {
            for e in &w.io_errors {
                Self::note_io_error(&mut inner, e, false);
            }
            self.wake_space_waiters(inner);
            return Err(w.io_errors.swap_remove(0).into());
        }
        inner.consecutive_errors = 0;
        let id = w.id;
        let current_gen = inner.ix.objects.get(&id).map(|o| o.data_gen);
        let mut stale = false;
        for p in &w.pieces {
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
        inner.stats.write_bytes += w.bytes;
        if stale {
            inner.stats.stale_writes += 1;
        }
        self.wake_space_waiters(inner);
        if let Some(e) = w.plan_err {
            return Err(e);
        }
        self.after_op()?;
        match current_gen {
            None => Err(StoreError::NoSuchObject),
            Some(_) if stale => Err(StoreError::Stale),
            Some(_) => Ok(()),
        }
    }
}
