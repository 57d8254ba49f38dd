//! Durability: metadata-log records (appended, sealed into blocks, written
//! in batches), `flush` (every completed write durable), barriers, and
//! checkpoints into one of two slots so the log can wrap.

use std::sync::MutexGuard;

use ringcache_ondisk::metalog::{LOG_PAYLOAD_MAX, encode_block};
use ringcache_ondisk::{BLOCK_BYTES, BLOCK_BYTES_U64, Record};

use super::*;
use crate::io::{CompletionQueue, IoHint, Op};

impl Store {
    /// Apply a record to the index and append it to the log.
    pub(super) fn commit(&self, inner: &mut Inner, rec: &Record<'_>) {
        inner.ix.apply(rec);
        Self::log_append(inner, rec);
    }

    pub(super) fn log_append(inner: &mut Inner, rec: &Record<'_>) {
        if inner.log.payload.len() + rec.encoded_len() > LOG_PAYLOAD_MAX {
            Self::seal_log_block(inner);
        }
        rec.encode(&mut inner.log.payload);
        inner.log.records += 1;
    }

    pub(super) fn seal_log_block(inner: &mut Inner) {
        if inner.log.records == 0 {
            return;
        }
        let seq = inner.log.next_seq;
        inner.log.next_seq += 1;
        let payload = std::mem::take(&mut inner.log.payload);
        let records = std::mem::take(&mut inner.log.records);
        inner.log.sealed.push_back((seq, payload, records));
    }
}

impl Store {
    /// Write sealed log blocks. Caller holds `log_io`. Returns false when
    /// the ring has no room (a checkpoint must come first).
    ///
    /// With them goes the superblock, when it does not yet say how far the
    /// log is durable (`durable_log_seq`): that write becomes durable with
    /// the flush that follows, so recovery can tell a block damaged after
    /// it was flushed from one torn by a crash. A superblock write is never
    /// in flight beside another (`log_io`), so one copy always verifies.
    pub(super) fn write_sealed_blocks(&self) -> Result<bool> {
        let (blocks, uuid, geometry, sb) = {
            let mut inner = self.lock();
            Self::check_failed(&inner)?;
            let n = inner.ix.geometry.metalog_blocks();
            let limit = inner.log.ckpt_log_seq + n - 1;
            if inner.log.sealed.back().is_some_and(|(s, _, _)| *s >= limit) {
                return Ok(false);
            }
            let blocks: Vec<_> = inner.log.sealed.drain(..).collect();
            let sb = (inner.log.durable_through > inner.sb.durable_log_seq).then(|| {
                let mut sb = inner.sb.clone();
                sb.sb_seq += 1;
                sb.durable_log_seq = inner.log.durable_through;
                sb
            });
            (blocks, inner.sb.uuid, inner.ix.geometry, sb)
        };
        if blocks.is_empty() && sb.is_none() {
            return Ok(true);
        }
        if !blocks.is_empty() {
            // Barrier: the data (and region headers) these records describe
            // must be durable before the records can be, or a crash could
            // keep a record whose data never arrived, hiding the durable
            // data it overwrote.
            self.barrier()?;
        }
        let mut ops = Vec::with_capacity(blocks.len() + 1);
        if let Some(sb) = &sb {
            let (at, buf) = recovery::superblock_write(self.engine.as_ref(), sb);
            ops.push(Op::write(at, buf, u64::MAX, IoHint::Superblock));
        }
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
        inner.stats.log_blocks_written += blocks.len() as u64;
        for c in done {
            if let Err(e) = c.result {
                Self::note_io_error(&mut inner, &e, true);
                return Err(e.into());
            }
        }
        if let Some((seq, _, _)) = blocks.last() {
            inner.log.written_through = inner.log.written_through.max(*seq);
        }
        if let Some(sb) = sb {
            inner.sb.sb_seq = sb.sb_seq;
            inner.sb.durable_log_seq = sb.durable_log_seq;
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
        let (writes_before, written_through) = {
            let inner = self.lock();
            (inner.stats.writes, inner.log.written_through)
        };
        let r = crate::io::flush(self.engine.as_ref());
        let mut inner = self.lock();
        inner.stats.flushes += 1;
        if r.is_ok() {
            inner.writes_at_flush = writes_before;
            inner.log.durable_through = inner.log.durable_through.max(written_through);
        }
        if let Err(e) = r {
            Self::note_io_error(&mut inner, &e, true);
            return Err(e.into());
        }
        Ok(())
    }

    /// Make every completed data and region-header write durable before
    /// metadata that refers to it is written.
    pub(super) fn barrier(&self) -> Result<()> {
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
    pub(super) fn wake_space_waiters(&self, inner: MutexGuard<'_, Inner>) {
        let waiters = inner.space_waiters > 0;
        drop(inner);
        if waiters {
            self.space.notify_all();
        }
    }

    /// Wait until no region header write is in flight.
    pub(super) fn wait_for_region_headers(&self) {
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
                // The superblock does not yet say how far the log is
                // durable: one more flush writes that down.
                || inner.log.durable_through > inner.sb.durable_log_seq
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

    pub(super) fn checkpoint_locked(&self) -> Result<()> {
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
    pub(super) fn after_op(&self) -> Result<()> {
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
}
