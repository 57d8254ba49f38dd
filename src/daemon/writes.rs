//! Pipelined writes: a connection's thread starts a write (parse, access
//! gate, data copied into I/O buffers and checksummed, I/O queued with the
//! reads of the same frames) and goes on reading frames; as its I/O
//! completes the write is committed and answered. Writes are committed in
//! the order they arrived, so of two overlapping writes of one connection
//! the later wins, as if they had been served one at a time. At most
//! [`MAX_WRITE_BYTES`] of writes are in flight per connection; beyond that
//! the connection stops reading its socket (back-pressure). A request
//! other than a write is served only once the writes before it are
//! answered, so a read sees every write its connection sent before it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::connection::Conn;
use super::frames::{ReplyWriter, reply_frame};
use super::handlers::write_status;
use super::reads::{ConnReads, SUBMIT_BATCH};
use super::server::{Daemon, lock};
use crate::cookie::Operation;
use crate::io::Completion;
use crate::proto::{Op, Reader};
use crate::store::PendingWrite;

/// Bytes of writes in flight per connection (the embedded store's fill
/// keeps 4 MiB in flight too): a write that would go past it waits until
/// earlier ones are answered. A single write of up to `max_data` is always
/// let in when none is in flight.
pub const MAX_WRITE_BYTES: u64 = 4 << 20;

/// The bit of a completion's key that marks a write's I/O (reads' keys are
/// slab indexes, far below it); the bits under it number the write.
pub(super) const WRITE_KEY: u64 = 1 << 43;

/// A write of one connection, from its request to its reply.
struct ConnWrite<'d> {
    id: u64,
    write: PendingWrite,
    /// Holds the cookie's access gate until the write is answered.
    op: Operation<'d>,
    received: Instant,
}

/// Writes in flight on one connection, in the order they arrived.
pub(super) struct ConnWrites<'d> {
    queue: VecDeque<ConnWrite<'d>>,
    /// The number of the write at the front of `queue`.
    front: u64,
    bytes: u64,
}

impl<'d> ConnWrites<'d> {
    pub(super) fn new() -> Self {
        ConnWrites {
            queue: VecDeque::with_capacity(16),
            front: 0,
            bytes: 0,
        }
    }

    /// Writes started and not answered yet.
    pub(super) fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Whether a write of `len` bytes may start now.
    pub(super) fn has_room(&self, len: u64) -> bool {
        self.queue.is_empty() || self.bytes + cost(len) <= MAX_WRITE_BYTES
    }

    /// Give a write its completion (the key's write bit set).
    pub(super) fn absorb(&mut self, key: u64, c: Completion) {
        let n = (key & (WRITE_KEY - 1)).wrapping_sub(self.front) & (WRITE_KEY - 1);
        if let Some(w) = usize::try_from(n).ok().and_then(|n| self.queue.get_mut(n)) {
            w.write.absorb(c);
        }
    }

    /// The write at the front, if its I/O is whole.
    fn pop_whole(&mut self) -> Option<ConnWrite<'d>> {
        if !self.queue.front()?.write.is_whole() {
            return None;
        }
        let w = self.queue.pop_front()?;
        self.front = self.front.wrapping_add(1);
        self.bytes -= cost(w.write.bytes());
        Some(w)
    }
}

/// What a write of `len` bytes counts against [`MAX_WRITE_BYTES`]: its
/// bytes, and at least a block, so that empty writes are bounded too.
fn cost(len: u64) -> u64 {
    len.max(4096)
}

/// The length field of a write request's payload (after the cookie
/// handle), to check for room before the write is started; 0 if the
/// payload is too short to say (it is then refused when parsed).
pub(super) fn write_len(payload: &[u8]) -> u64 {
    let mut r = Reader::new(payload);
    r.u32().and_then(|_| r.u32()).map_or(0, u64::from)
}

impl Daemon {
    /// Start a write that came off the socket at `received`: parse, check,
    /// take an access, copy and checksum its data and queue its I/O in
    /// `reads.ops` (sent with the other frames' I/O). Errors found
    /// before any I/O (a bad handle, a range, a cookie not in use) are
    /// answered at once; a write with nothing to write waits its turn.
    pub(super) fn start_write<'d>(
        &'d self,
        conn: &Mutex<Conn>,
        reads: &ConnReads<'d>,
        id: u64,
        payload: &[u8],
        out: &ReplyWriter,
        received: Instant,
    ) {
        let answer = |outcome| {
            let frame = reply_frame(Op::Write as u16, id, write_status(outcome), &[]);
            self.latency.observe(Op::Write, received);
            out.send(&frame);
        };
        let mut r = Reader::new(payload);
        let (op, target) = match self.prepare_write(conn, &mut r) {
            Ok(p) => p,
            Err(reply) => {
                let frame = reply_frame(Op::Write as u16, id, reply.status, &[]);
                self.latency.observe(Op::Write, received);
                return out.send(&frame);
            }
        };
        let (object, data_gen, offset, data) = match target {
            Ok(t) => t,
            Err(outcome) => return answer(Ok(outcome)),
        };
        let mut writes = lock(&reads.writes);
        let key =
            WRITE_KEY | (writes.front.wrapping_add(writes.queue.len() as u64) & (WRITE_KEY - 1));
        let started = {
            let mut ops = lock(&reads.ops);
            let started =
                self.store
                    .start_write(key, object, Some(data_gen), offset, data, &mut ops);
            if ops.len() >= SUBMIT_BATCH {
                reads.send_locked(self, &mut ops);
            }
            started
        };
        match started {
            Ok(write) => {
                writes.bytes += cost(write.bytes());
                writes.queue.push_back(ConnWrite {
                    id,
                    write,
                    op,
                    received,
                });
                self.most_writes_in_flight
                    .fetch_max(writes.queue.len(), Ordering::Relaxed);
            }
            Err(e) => {
                drop(writes);
                answer(op.write_done(Err(e), data.len() as u64));
            }
        }
    }

    /// Commit and answer the writes at the front of the queue whose I/O is
    /// whole, in order.
    pub(super) fn finish_writes<'d>(&'d self, reads: &ConnReads<'d>, out: &ReplyWriter) {
        loop {
            let Some(w) = lock(&reads.writes).pop_whole() else {
                return;
            };
            let bytes = w.write.bytes();
            let outcome = w.op.write_done(self.store.finish_write(w.write), bytes);
            let frame = reply_frame(Op::Write as u16, w.id, write_status(outcome), &[]);
            self.latency.observe(Op::Write, w.received);
            out.send(&frame);
            // The access ends here, after the write is visible.
            drop(w.op);
        }
    }
}
