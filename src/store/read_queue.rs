//! Pipelined reads: [`Store::start_read`] puts a read's I/O in flight and
//! returns a [`PendingRead`]; [`ReadQueue`] keeps many in flight on one
//! completion queue, so a caller can top the device's queue up before
//! blocks are checked (one verification lock for a batch).

use super::read::{PlanItem, ReadPlan};
use super::*;
use crate::io::{CompletionQueue, IoError, IoHint, Op};

/// Bits of a read completion's tag that number the read's pieces; the
/// rest is the key the caller gave [`Store::start_read`].
pub(super) const PIECE_BITS: u32 = 20;

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
                if let Some(PlanItem::Piece(p)) = self.plan.items.get_mut(i) {
                    p.buf = Some(c.buf);
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
    Done(Result<Segments>),
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
        let mut ops = OPS.with(|ops| ops.take());
        let r = self.start_read_batched(key, tag, at, &mut ops);
        // To the device at once, as fio does: holding reads back to batch
        // them with the next ones only delays them (on a virtualised disk,
        // 0.8 of fio's IOPS at queue depth 32 instead of par).
        if !ops.is_empty() {
            self.engine.submit(&mut ops, cq);
            ops.clear();
        }
        OPS.with(|o| o.set(ops));
        r
    }

    /// [`Store::start_read`], but the read's I/O is appended to `ops`
    /// instead of sent: the caller hands `ops` to the engine
    /// ([`Store::submit_reads`]) with the queue's other reads, one
    /// submission for requests that arrived together. Until then the read
    /// is not at the device: do not wait for it first.
    pub fn start_read_batched(
        &self,
        key: u64,
        tag: u64,
        at: ReadAt,
        ops: &mut Vec<Op>,
    ) -> Result<StartedRead> {
        let mut plan = self.plan_read(tag, at.object, at.data_gen, at.offset, at.len)?;
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
        Ok(StartedRead::Pending(PendingRead { plan }))
    }

    /// Send reads started with [`Store::start_read_batched`] to the
    /// engine (draining `ops`), their completions to `cq`.
    pub fn submit_reads(&self, ops: &mut Vec<Op>, cq: &CompletionQueue) {
        if !ops.is_empty() {
            self.engine.submit(ops, cq);
        }
    }

    /// Check reads whose I/O is whole and append their (tag, result) pairs
    /// to `out` (one lock for them all).
    pub fn finish_pending(
        &self,
        reads: impl Iterator<Item = PendingRead>,
        out: &mut Vec<(u64, Result<Segments>)>,
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
    ready: Vec<(u64, Result<Segments>)>,
}

impl<'a> ReadQueue<'a> {
    /// An empty queue on `store`. Its vectors start at room for
    /// [`ReadQueue::ROOM`] reads (and pieces), so that at up to that depth
    /// none of them grows after its first use: how completions bunch up
    /// varies from run to run, and a vector sized by the largest bunch
    /// seen so far would grow (allocate) whenever a new largest came.
    pub fn new(store: &'a Store) -> Self {
        let room = Self::ROOM;
        ReadQueue {
            store,
            cq: CompletionQueue::with_capacity(room),
            plans: slab::Slab::with_capacity(room),
            done: Vec::with_capacity(room),
            landed: Vec::with_capacity(room),
            ready: Vec::with_capacity(room),
        }
    }

    /// Reads (and pieces of reads) a new queue has room for.
    pub const ROOM: usize = 64;

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
    pub fn take(&mut self, out: &mut Vec<(u64, Result<Segments>)>) {
        if !self.landed.is_empty() {
            self.store
                .finish_pending(self.landed.drain(..), &mut self.ready);
        }
        out.append(&mut self.ready);
    }

    /// Wait until at least one read is complete (if any is in flight) and
    /// append the completed (tag, result) pairs to `out`: [`ReadQueue::reap`]
    /// then [`ReadQueue::take`].
    pub fn wait(&mut self, out: &mut Vec<(u64, Result<Segments>)>) {
        self.reap();
        self.take(out);
    }
}

thread_local! {
    /// The ops vector [`Store::start_read`] fills and hands to the engine,
    /// kept for the thread's next read (taken and put back, so a reentrant
    /// call only costs a fresh vector).
    static OPS: std::cell::Cell<Vec<Op>> = const { std::cell::Cell::new(Vec::new()) };
}
