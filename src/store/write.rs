//! The write path: a write is planned into pieces of the active region
//! (at most one extent each), crcs computed outside the store lock, the
//! data written, then the extents committed to the index and the log.

use ringcache_ondisk::record::{Crcs, ExtentEntry};
use ringcache_ondisk::{BLOCK_BYTES, BLOCK_BYTES_U64, MAX_EXTENT_BLOCKS, Record, block_crc};

use super::error::invalid;
use super::*;
use crate::io::{CompletionQueue, IoHint, Op};

/// One planned piece of a write.
pub(super) struct WritePiece {
    entry: ExtentEntry,
    crcs: Vec<u32>,
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
}
