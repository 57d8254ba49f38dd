//! The read pipeline: a connection's thread starts reads (parse, access
//! gate, I/O to the device) and, as their I/O completes, checks and
//! answers them, a batch of replies to one writev with the data straight
//! from the I/O buffers. At most `MAX_INFLIGHT` per connection
//! (back-pressure).

use std::io::IoSlice;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::connection::Conn;
use super::events::{EVENT_TAG, Outbox};
use super::frames::{ReplyWriter, reply_frame};
use super::handlers::{Reply, bad, from_cache_error};
use super::server::{Daemon, lock};
use super::writes::{ConnWrites, WRITE_KEY};
use crate::callback::Validity;
use crate::cookie::{CacheError, Operation, ReadOutcome};
use crate::io::{Completion, CompletionQueue};
use crate::proto::{self, Op, REPLY, Reader, SEG_DATA, SEG_HOLE, Status};
use crate::store::{PendingRead, ReadAt, Segment, StartedRead, read_key_of};

/// A read of one connection, from its request to its reply.
pub(super) struct ConnRead<'d> {
    pub(super) id: u64,
    pub(super) read: PendingRead,
    /// Holds the cookie's access gate until the read is answered.
    pub(super) op: Operation<'d>,
    /// When the request came off the socket (its latency counts from
    /// then to its reply).
    pub(super) received: Instant,
}

/// Reads in flight on one connection.
pub(super) struct ConnReads<'d> {
    pub(super) cq: CompletionQueue,
    /// By key (the key of their completions' tags).
    pub(super) table: Mutex<slab::Slab<ConnRead<'d>>>,
    /// Zap events for this connection, sent by its thread between replies.
    pub(super) outbox: Arc<Outbox>,
    /// The I/O of reads started and not yet sent: the reads of the
    /// requests that arrived together go to the device in one submission
    /// ([`ConnReads::submit`]).
    pub(super) ops: Mutex<Vec<crate::io::Op>>,
    /// Writes in flight, in the order they arrived (`writes`).
    pub(super) writes: Mutex<ConnWrites<'d>>,
}

/// Reads' SQEs a connection gathers before it submits them, when more
/// frames wait behind them (see `ConnReads::submit`).
pub(super) const SUBMIT_BATCH: usize = 8;

impl<'d> ConnReads<'d> {
    pub(super) fn new() -> Self {
        // Room for a full pipeline of reads from the start (see
        // `ReadQueue::new`): nothing grows once the connection is warm.
        let room = crate::store::ReadQueue::ROOM;
        let cq = CompletionQueue::with_capacity(room);
        ConnReads {
            outbox: Arc::new(Outbox::new(cq.clone())),
            cq,
            table: Mutex::new(slab::Slab::with_capacity(room)),
            ops: Mutex::new(Vec::new()),
            writes: Mutex::new(ConnWrites::new()),
        }
    }

    /// Send the I/O of the reads and writes started since the last call.
    pub(super) fn submit(&self, d: &Daemon) {
        self.send_locked(d, &mut lock(&self.ops));
    }

    /// [`ConnReads::submit`], with `ops` locked by the caller.
    pub(super) fn send_locked(&self, d: &Daemon, ops: &mut Vec<crate::io::Op>) {
        if !ops.is_empty() {
            d.read_submissions.fetch_add(1, Ordering::Relaxed);
            d.store.submit_reads(ops, &self.cq);
        }
    }

    /// Reads started and not answered yet.
    pub(super) fn in_flight(&self) -> usize {
        lock(&self.table).len()
    }

    /// Writes started and not answered yet.
    pub(super) fn writes_in_flight(&self) -> usize {
        lock(&self.writes).in_flight()
    }

    /// Whether a write of `len` bytes may start without passing the
    /// connection's bound on writes in flight.
    pub(super) fn writes_have_room(&self, len: u64) -> bool {
        lock(&self.writes).has_room(len)
    }
}

impl Daemon {
    /// A read request parsed and checked, its access taken and its promise
    /// validated: the operation and what to read, or the status to answer
    /// at once. Both the socket's read pipeline and in-process sessions
    /// start their reads here.
    pub(super) fn prepare_read<'d>(
        &'d self,
        conn: &Mutex<Conn>,
        payload: &[u8],
    ) -> Result<(Operation<'d>, ReadAt), Status> {
        let version = lock(conn).version;
        let mut r = Reader::new(payload);
        let parsed = (|| {
            let cookie = Conn::io_target_of(conn, &mut r)?;
            let len = r.u32().map_err(bad)? as u64;
            let offset = r.u64().map_err(bad)?;
            r.end().map_err(bad)?;
            if len as usize > proto::MAX_DATA || offset.checked_add(len).is_none() {
                return Err(Reply::status(Status::Range));
            }
            Ok((cookie, offset, len))
        })();
        let ((cookie, obj, in_use), offset, len) = parsed.map_err(|reply| reply.status)?;
        if !in_use {
            // A cookie not in use (no UseCookie, or undone) reads nothing.
            return Err(Status::NoData);
        }
        // The operation first, then the promise (see `callback::coherent`):
        // an invalidation for a new version either finished before the
        // operation began (and validation sees its new version), or makes
        // the read Stale.
        let op = self.cache.begin_operation(&cookie, false);
        if let Some(obj) = obj
            && let Some(Validity::Revalidate) = self.coherent.gate(obj, Instant::now())
        {
            // No valid promise: nothing cached may be returned. A version-1
            // client does not know Revalidate: to it this is a miss.
            return Err(if version >= 2 {
                Status::Revalidate
            } else {
                Status::NoData
            });
        }
        let Some((object, data_gen)) = op.read_target() else {
            return Err(Status::NoData);
        };
        let at = ReadAt {
            object,
            data_gen: Some(data_gen),
            offset,
            len,
        };
        Ok((op, at))
    }

    /// Start a read that came off the socket at `received`: parse,
    /// check, take an access, queue its I/O in `reads.ops` (sent with the
    /// other frames' reads by [`ConnReads::submit`]). Errors and reads
    /// with nothing to do are answered at once.
    pub(super) fn start_read<'d>(
        &'d self,
        conn: &Mutex<Conn>,
        reads: &ConnReads<'d>,
        id: u64,
        payload: &[u8],
        out: &ReplyWriter,
        received: Instant,
    ) {
        let answer = |frame: Vec<u8>| {
            self.latency.observe(Op::Read, received);
            out.send(&frame);
        };
        let (op, at) = match self.prepare_read(conn, payload) {
            Ok(p) => p,
            Err(st) => return answer(reply_frame(Op::Read as u16, id, st, &[])),
        };
        // The connection reads no frame while MAX_INFLIGHT reads are in
        // flight (back-pressure), so there is room.
        let mut t = lock(&reads.table);
        let key = t.vacant_key() as u64;
        let started = {
            let mut ops = lock(&reads.ops);
            let started = self.store.start_read_batched(key, id, at, &mut ops);
            if ops.len() >= SUBMIT_BATCH {
                // Enough for one submission: the first reads of a long
                // run of frames are not held back while the rest are
                // parsed.
                reads.send_locked(self, &mut ops);
            }
            started
        };
        match started {
            Ok(StartedRead::Pending(read)) => {
                t.insert(ConnRead {
                    id,
                    read,
                    op,
                    received,
                });
            }
            Ok(StartedRead::Done(result)) => {
                drop(t);
                answer(read_reply(id, op.read_done(result)));
            }
            Err(e) => {
                drop(t);
                answer(read_reply(id, op.read_done(Err(e))));
            }
        }
    }
}

/// What answers a connection's reads as their I/O completes, a batch of
/// replies to one writev. Everything it needs per batch is kept from one
/// batch to the next: in the steady state a read costs no allocation.
pub(super) struct Finisher<'d> {
    done: Vec<Completion>,
    /// Reads whose I/O is whole: what to answer them with, and the reads
    /// themselves for the store to check.
    landed: Vec<(u64, Operation<'d>, Instant)>,
    pending: Vec<PendingRead>,
    results: Vec<(u64, crate::store::Result<crate::store::Segments>)>,
    outcomes: Vec<(u64, Instant, Result<ReadOutcome, CacheError>)>,
    /// The batch's reply heads, one after another, and where each ends.
    heads: Vec<u8>,
    head_ends: Vec<usize>,
}

impl<'d> Finisher<'d> {
    pub(super) fn new() -> Self {
        Finisher {
            done: Vec::new(),
            landed: Vec::new(),
            pending: Vec::new(),
            results: Vec::new(),
            outcomes: Vec::new(),
            heads: Vec::new(),
            head_ends: Vec::new(),
        }
    }

    /// Take what completed (without waiting) and answer the reads that are
    /// whole; send queued events. (What is posted: the connection's
    /// thread submitted its reads itself and has made a system call
    /// since, which posts their completions; see
    /// `CompletionQueue::poll_posted_into`.)
    pub(super) fn poll(&mut self, d: &'d Daemon, reads: &ConnReads<'d>, out: &ReplyWriter) {
        reads.cq.poll_posted_into(&mut self.done);
        self.finish(d, reads, out);
    }

    /// Answer every write in flight, waiting for their I/O (a request
    /// other than a write is served only then).
    pub(super) fn drain_writes(&mut self, d: &'d Daemon, reads: &ConnReads<'d>, out: &ReplyWriter) {
        if reads.writes_in_flight() == 0 {
            // Nothing to wait for: the reads queued so far stay queued, to
            // go to the device together.
            return;
        }
        reads.submit(d);
        loop {
            self.poll(d, reads, out);
            if reads.writes_in_flight() == 0 {
                return;
            }
            reads.cq.wait_into(&mut self.done);
            self.finish(d, reads, out);
        }
    }

    /// Answer every read in flight, waiting for their I/O (a write is
    /// started only then).
    pub(super) fn drain_reads(&mut self, d: &'d Daemon, reads: &ConnReads<'d>, out: &ReplyWriter) {
        if lock(&reads.table).is_empty() {
            // Nothing to wait for: the writes queued so far stay queued.
            return;
        }
        reads.submit(d);
        loop {
            self.poll(d, reads, out);
            if lock(&reads.table).is_empty() {
                return;
            }
            reads.cq.wait_into(&mut self.done);
            self.finish(d, reads, out);
        }
    }

    /// Answer every read and write in flight, waiting for their I/O (a
    /// request other than a read or a write is served only then, and a
    /// connection closes only then: their accesses end first).
    pub(super) fn drain(&mut self, d: &'d Daemon, reads: &ConnReads<'d>, out: &ReplyWriter) {
        reads.submit(d);
        loop {
            self.poll(d, reads, out);
            if lock(&reads.table).is_empty() && reads.writes_in_flight() == 0 {
                return;
            }
            reads.cq.wait_into(&mut self.done);
            self.finish(d, reads, out);
        }
    }

    /// Absorb the completions taken into `done`; answer the reads they
    /// make whole.
    fn finish(&mut self, d: &'d Daemon, reads: &ConnReads<'d>, out: &ReplyWriter) {
        if self.done.is_empty() {
            // A write with nothing at the device (planning stopped early)
            // is whole from the start.
            d.finish_writes(reads, out);
            return;
        }
        let mut events = false;
        let mut wrote = false;
        {
            let mut t = lock(&reads.table);
            for c in self.done.drain(..) {
                if c.tag == EVENT_TAG {
                    events = true;
                    continue;
                }
                let key = read_key_of(c.tag);
                if key & WRITE_KEY != 0 {
                    wrote = true;
                    lock(&reads.writes).absorb(key, c);
                    continue;
                }
                let key = key as usize;
                if let Some(r) = t.get_mut(key)
                    && r.read.absorb(c)
                {
                    let r = t.remove(key);
                    self.landed.push((r.id, r.op, r.received));
                    self.pending.push(r.read);
                }
            }
        }
        if events {
            for f in reads.outbox.take_frames() {
                out.send(&f);
            }
        }
        if wrote || reads.writes_in_flight() > 0 {
            d.finish_writes(reads, out);
        }
        if self.landed.is_empty() {
            return;
        }
        d.store
            .finish_pending(self.pending.drain(..), &mut self.results);
        self.outcomes.extend(
            self.landed
                .drain(..)
                .zip(self.results.drain(..))
                .map(|((id, op, received), (_, r))| (id, received, op.read_done(r))),
        );
        // Replies: a head (frame header, status, segment table) per read,
        // the data straight from the I/O buffers.
        self.heads.clear();
        self.head_ends.clear();
        for (id, _, outcome) in &self.outcomes {
            put_read_reply_head(&mut self.heads, *id, outcome);
            self.head_ends.push(self.heads.len());
        }
        // The batch's replies are handed to the writer now.
        let now = Instant::now();
        for (_, received, _) in &self.outcomes {
            d.latency.observe_until(Op::Read, *received, now);
        }
        let mut batch = SliceBatch::new(out);
        let mut start = 0;
        for (&end, (_, _, outcome)) in self.head_ends.iter().zip(&self.outcomes) {
            batch.push(self.heads.get(start..end).unwrap_or(&[]));
            start = end;
            if let Ok(ReadOutcome::Data(segs)) = outcome {
                for s in segs {
                    if let Segment::Data { data, .. } = s {
                        batch.push(data);
                    }
                }
            }
        }
        batch.send();
        // The I/O buffers go back to their pool, the accesses end.
        self.outcomes.clear();
    }
}

/// Slices of replies gathered on the stack and written with one writev
/// per [`SliceBatch::MAX`] of them.
struct SliceBatch<'a, 'w> {
    out: &'w ReplyWriter,
    slices: [IoSlice<'a>; SliceBatch::MAX],
    n: usize,
}

impl<'a, 'w> SliceBatch<'a, 'w> {
    /// Slices per writev (below the kernel's IOV_MAX of 1024).
    const MAX: usize = 512;

    fn new(out: &'w ReplyWriter) -> Self {
        SliceBatch {
            out,
            slices: [IoSlice::new(&[]); Self::MAX],
            n: 0,
        }
    }

    fn push(&mut self, bytes: &'a [u8]) {
        if self.n == Self::MAX {
            self.send();
        }
        if let Some(slot) = self.slices.get_mut(self.n) {
            *slot = IoSlice::new(bytes);
            self.n += 1;
        }
    }

    fn send(&mut self) {
        if self.n > 0 {
            self.out.send_vectored(&mut self.slices[..self.n]);
            self.n = 0;
        }
    }
}

/// The head of a read reply: everything but the data bytes, which follow
/// it in segment order.
pub(super) fn read_reply_head(id: u64, outcome: &Result<ReadOutcome, CacheError>) -> Vec<u8> {
    let mut head = Vec::new();
    put_read_reply_head(&mut head, id, outcome);
    head
}

/// Append the head of a read reply (see [`read_reply_head`]) to `out`.
pub(super) fn put_read_reply_head(
    out: &mut Vec<u8>,
    id: u64,
    outcome: &Result<ReadOutcome, CacheError>,
) {
    let op = Op::Read as u16;
    let status = match outcome {
        Ok(ReadOutcome::Data(_)) => Status::Ok,
        Ok(ReadOutcome::NoData) => Status::NoData,
        Ok(ReadOutcome::Stale) => Status::Stale,
        Err(e) => from_cache_error(e),
    };
    let (segs, data): (&[Segment], usize) = match outcome {
        Ok(ReadOutcome::Data(segs)) => (
            segs,
            segs.iter()
                .filter(|s| matches!(s, Segment::Data { .. }))
                .map(|s| s.len() as usize)
                .sum(),
        ),
        _ => (&[], 0),
    };
    // Status and pad; for data, the segment count and table (16 bytes a
    // segment: kind, pad, length, offset).
    let body = if matches!(outcome, Ok(ReadOutcome::Data(_))) {
        4 + SEG_ENTRY * segs.len()
    } else {
        0
    };
    let payload_len = 4 + body + data;
    out.extend_from_slice(&((proto::HEADER_AFTER_LEN + payload_len) as u32).to_le_bytes());
    out.extend_from_slice(&(op | REPLY).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(status as u16).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    if body > 0 {
        out.extend_from_slice(&(segs.len() as u32).to_le_bytes());
        for s in segs {
            let kind = if matches!(s, Segment::Data { .. }) {
                SEG_DATA
            } else {
                SEG_HOLE
            };
            out.extend_from_slice(&[kind, 0]);
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(&s.offset().to_le_bytes());
        }
    }
}

/// Bytes of one entry of a read reply's segment table.
const SEG_ENTRY: usize = 16;

/// A whole read reply (head and data) in one buffer.
pub(super) fn read_reply(id: u64, outcome: Result<ReadOutcome, CacheError>) -> Vec<u8> {
    let mut f = read_reply_head(id, &outcome);
    if let Ok(ReadOutcome::Data(segs)) = &outcome {
        for s in segs {
            if let Segment::Data { data, .. } = s {
                f.extend_from_slice(data);
            }
        }
    }
    f
}
