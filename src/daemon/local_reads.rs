//! A session's read thread: [`LocalSession`](super::LocalSession)'s
//! reads handed over by any thread ([`ReadThread::start`]) and answered
//! by one thread that owns their I/O. It takes every read queued since it
//! last looked, sends their I/O to the device in one submission, and as
//! the I/O completes checks the blocks and calls each read's `done`. The
//! thread that submits is the one that reaps (the rule the io_uring
//! engine's task-work needs), and the threads that hand reads over never
//! wait for the device.
//!
//! Not every read is handed over: one that is alone (none outstanding,
//! nor others lately: [`ReadThread::alone`]) is read on its caller's
//! thread, as the synchronous reads are. At queue depth 1 the hand-over
//! would add two wake-ups to every read (warm 4 KiB random reads through
//! a mount fell from 0.75 to 0.44 of the raw device's rate), and there is
//! nothing to batch it with.
//!
//! Between answers the thread looks at its queue again and sends what
//! was handed over meanwhile to the device at once: an answer lets its
//! reader ask again, and a read that waited for the rest of a batch's
//! answers would leave the device idle.
//!
//! Sleeping: the thread waits in poll(2) on its eventfd (written by a
//! hand-over that finds it asleep, and by the completion queue's waker
//! for engines with threads of their own) and, while reads are in flight,
//! on its ring's descriptor. It never spins.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::connection::Conn;
use super::handlers::from_cache_error;
use super::server::{Daemon, lock};
use crate::client::{self, ReadWholeDone, WholeRead, append_whole};
use crate::cookie::{CacheError, Operation, ReadOutcome};
use crate::io::{Completion, CompletionQueue};
use crate::proto::{Op, Status};
use crate::store::{PendingRead, ReadQueue, Segment, StartedRead, read_key_of};

/// A read handed to the thread.
pub(super) struct Handed {
    /// The request's body, as a Read frame's (cookie, length, offset).
    pub(super) payload: [u8; 16],
    pub(super) offset: u64,
    pub(super) out: Vec<u8>,
    pub(super) done: ReadWholeDone,
    pub(super) received: Instant,
}

/// What the handing threads and the read thread share.
pub(super) struct ReadThread {
    queue: Mutex<Vec<Handed>>,
    /// The thread is about to sleep or asleep: a hand-over wakes it.
    asleep: AtomicBool,
    /// No more reads are taken; the thread answers those it has and ends.
    stop: AtomicBool,
    /// The session is gone: the thread gives its cookies back when it
    /// ends (see [`ReadThread::stop_and_clean_up`]).
    clean_up: AtomicBool,
    /// Reads of the session started and not answered, handed over or
    /// read on the caller's thread (see [`ReadThread::alone`]).
    outstanding: AtomicUsize,
    /// How many reads were outstanding when one started, on average over
    /// the last few (sixteenths, decaying by an eighth per read).
    recent: AtomicUsize,
    /// Reads in `queue` (a hint the thread checks between answers).
    queued: AtomicUsize,
    wake: EventFd,
}

/// Reads a thread takes in one go before it submits them (the rest wait
/// for the next round, after the device has these).
const ROUND: usize = ReadQueue::ROOM;

impl ReadThread {
    pub(super) fn new() -> std::io::Result<ReadThread> {
        let wake =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(ReadThread {
            queue: Mutex::new(Vec::with_capacity(ROUND)),
            asleep: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            clean_up: AtomicBool::new(false),
            outstanding: AtomicUsize::new(0),
            recent: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            wake,
        })
    }

    /// Count a read as started; true if it is best read on the caller's
    /// thread: no other read is outstanding, nor were others lately. Such
    /// a read has nothing to be batched with, and handing it over would
    /// add a wake-up of this thread (and one for its I/O) to its latency,
    /// which at queue depth 1 costs more than the hand-over saves. Under
    /// load a read that finds none outstanding for a moment (the thread
    /// just answered a batch) is still handed over: read on the caller's
    /// thread it would be a submission of its own and keep that thread
    /// from taking the next request. End it with [`ReadThread::ended`].
    pub(super) fn alone(&self) -> bool {
        let others = self.outstanding.fetch_add(1, Ordering::SeqCst);
        // A racy average is enough for a choice of thread.
        let recent = self.recent.load(Ordering::Relaxed);
        let sample = others.min(1 << 12) << 4;
        let next = recent - recent / 8 + sample / 8;
        self.recent.store(next, Ordering::Relaxed);
        others == 0 && next < 8
    }

    /// A read counted by [`ReadThread::alone`] was answered.
    pub(super) fn ended(&self) {
        self.outstanding.fetch_sub(1, Ordering::SeqCst);
    }

    /// Hand a read over (counted with [`ReadThread::alone`] first); `Err`
    /// gives it back when the thread has stopped.
    pub(super) fn start(&self, read: Handed) -> Result<(), Handed> {
        {
            let mut q = lock(&self.queue);
            if self.stop.load(Ordering::SeqCst) {
                return Err(read);
            }
            q.push(read);
            self.queued.store(q.len(), Ordering::Relaxed);
        }
        if self.asleep.swap(false, Ordering::SeqCst) {
            self.poke();
        }
        Ok(())
    }

    fn poke(&self) {
        // Nonblocking: a full counter wakes the thread already.
        let _ = self.wake.write(1);
    }

    /// Take no more reads; the thread answers those it has, then ends.
    pub(super) fn stop(&self) {
        {
            let _q = lock(&self.queue);
            self.stop.store(true, Ordering::SeqCst);
        }
        self.poke();
    }

    /// [`ReadThread::stop`] for a session dropped on its own read thread
    /// (by a read's answer): the thread then does what the session's drop
    /// would, once every read it took is answered and its access ended.
    pub(super) fn stop_and_clean_up(&self) {
        self.clean_up.store(true, Ordering::SeqCst);
        self.stop();
    }
}

/// A read whose I/O is in flight.
struct InFlight<'d> {
    read: PendingRead,
    op: Operation<'d>,
    handed: Handed,
}

/// What a read's outcome is to a caller of `read_whole`, its bytes
/// appended to `out`.
pub(super) fn whole_of(
    outcome: Result<Result<ReadOutcome, CacheError>, Status>,
    offset: u64,
    out: &mut Vec<u8>,
) -> client::Result<WholeRead> {
    let status = |st: Status| match st {
        Status::NoData => Ok(WholeRead::NoData),
        Status::Stale => Ok(WholeRead::Stale),
        Status::Revalidate => Ok(WholeRead::Revalidate),
        st => Err(client::ClientError::Status(st)),
    };
    match outcome {
        Err(st) => status(st),
        Ok(Err(e)) => status(from_cache_error(&e)),
        Ok(Ok(ReadOutcome::NoData)) => Ok(WholeRead::NoData),
        Ok(Ok(ReadOutcome::Stale)) => Ok(WholeRead::Stale),
        Ok(Ok(ReadOutcome::Data(segs))) => Ok(append_whole(
            out,
            offset,
            segs.iter().map(|s| match s {
                Segment::Data { offset, data } => Some((*offset, &data[..])),
                Segment::Hole { .. } => None,
            }),
        )),
    }
}

impl Handed {
    /// Call the read's `done` with `outcome` (the bytes appended to its
    /// buffer), the read's latency observed.
    pub(super) fn answer(
        self,
        d: &Daemon,
        outcome: Result<Result<ReadOutcome, CacheError>, Status>,
    ) {
        let Handed {
            offset,
            mut out,
            done,
            received,
            ..
        } = self;
        let r = whole_of(outcome, offset, &mut out);
        d.latency.observe(Op::Read, received);
        done(r, out);
    }
}

/// Answer a read the thread took, and count it answered.
fn answer(
    d: &Daemon,
    shared: &ReadThread,
    h: Handed,
    outcome: Result<Result<ReadOutcome, CacheError>, Status>,
) {
    h.answer(d, outcome);
    shared.ended();
}

/// The read thread's reads: those in flight and its reused vectors.
struct Reads<'d> {
    d: &'d Daemon,
    conn: &'d Mutex<Conn>,
    shared: &'d ReadThread,
    cq: CompletionQueue,
    table: slab::Slab<InFlight<'d>>,
    taken: Vec<Handed>,
    ops: Vec<crate::io::Op>,
}

impl Reads<'_> {
    /// Start the reads queued (up to a round of them), their I/O to the
    /// device in one submission; false if none was queued.
    fn take_and_submit(&mut self) -> bool {
        let d = self.d;
        let mut taken = std::mem::take(&mut self.taken);
        {
            let mut q = lock(&self.shared.queue);
            let n = q.len().min(ROUND);
            taken.extend(q.drain(..n));
            self.shared.queued.store(q.len(), Ordering::Relaxed);
        }
        let took = !taken.is_empty();
        for h in taken.drain(..) {
            let (op, at) = match d.prepare_read(self.conn, &h.payload) {
                Ok(p) => p,
                Err(st) => {
                    answer(d, self.shared, h, Err(st));
                    continue;
                }
            };
            let key = self.table.vacant_key() as u64;
            match d.store.start_read_batched(key, 0, at, &mut self.ops) {
                Ok(StartedRead::Pending(read)) => {
                    self.table.insert(InFlight {
                        read,
                        op,
                        handed: h,
                    });
                }
                Ok(StartedRead::Done(r)) => {
                    let outcome = op.read_done(r);
                    answer(d, self.shared, h, Ok(outcome));
                }
                Err(e) => {
                    let outcome = op.read_done(Err(e));
                    answer(d, self.shared, h, Ok(outcome));
                }
            }
        }
        self.taken = taken;
        if !self.ops.is_empty() {
            d.read_submissions.fetch_add(1, Ordering::Relaxed);
            d.store.submit_reads(&mut self.ops, &self.cq);
        }
        took
    }
}

/// The read thread's loop, until [`ReadThread::stop`] and every read it
/// took is answered.
pub(super) fn serve(daemon: Arc<Daemon>, conn: Arc<Mutex<Conn>>, shared: Arc<ReadThread>) {
    let d: &Daemon = &daemon;
    let cq = CompletionQueue::with_capacity(ROUND);
    {
        let shared = shared.clone();
        cq.set_waker(Arc::new(move || shared.poke()));
    }
    let mut reads = Reads {
        d,
        conn: &conn,
        shared: &shared,
        cq,
        table: slab::Slab::with_capacity(ROUND),
        taken: Vec::with_capacity(ROUND),
        ops: Vec::with_capacity(ROUND),
    };
    let mut done: Vec<Completion> = Vec::with_capacity(ROUND);
    let mut landed: Vec<Handed> = Vec::with_capacity(ROUND);
    let mut ops_landed: Vec<Operation<'_>> = Vec::with_capacity(ROUND);
    let mut pending: Vec<PendingRead> = Vec::with_capacity(ROUND);
    let mut results = Vec::with_capacity(ROUND);
    loop {
        // New reads: started, their I/O to the device in one submission.
        let took = reads.take_and_submit();
        // What completed: checked together, then answered.
        reads.cq.poll_into(&mut done);
        let reaped = !done.is_empty();
        for c in done.drain(..) {
            let key = read_key_of(c.tag) as usize;
            if let Some(r) = reads.table.get_mut(key)
                && r.read.absorb(c)
            {
                let r = reads.table.remove(key);
                pending.push(r.read);
                ops_landed.push(r.op);
                landed.push(r.handed);
            }
        }
        if !pending.is_empty() {
            d.store.finish_pending(pending.drain(..), &mut results);
            for ((h, op), (_, r)) in landed
                .drain(..)
                .zip(ops_landed.drain(..))
                .zip(results.drain(..))
            {
                let outcome = op.read_done(r);
                answer(d, &shared, h, Ok(outcome));
                // The access ends after the answer (as a connection's).
                drop(op);
                // Each answer lets its reader ask again: reads handed over
                // meanwhile go to the device now, not after the rest of
                // the answers, so the device's queue does not drain while
                // this thread writes replies.
                if shared.queued.load(Ordering::Relaxed) > 0 {
                    reads.take_and_submit();
                }
            }
        }
        if took || reaped {
            continue;
        }
        // Nothing to do: sleep, unless something came meanwhile.
        shared.asleep.store(true, Ordering::SeqCst);
        let queued = !lock(&shared.queue).is_empty();
        if queued || !reads.cq.arm_waker() {
            shared.asleep.store(false, Ordering::SeqCst);
            continue;
        }
        if shared.stop.load(Ordering::SeqCst) && reads.table.is_empty() {
            break;
        }
        let engine = d.store.engine();
        // Asked only with reads in flight (asking opens the lane's ring).
        let ring = if reads.table.is_empty() {
            None
        } else {
            engine.wake_fd()
        };
        wait(shared.wake.as_fd(), ring);
        shared.asleep.store(false, Ordering::SeqCst);
        let _ = shared.wake.read();
    }
    drop(reads);
    if shared.clean_up.load(Ordering::SeqCst) {
        d.cleanup(&conn);
        d.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sleep until `wake` or `ring` polls readable.
fn wait(wake: std::os::fd::BorrowedFd<'_>, ring: Option<std::os::fd::BorrowedFd<'_>>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut set = [
        PollFd::new(wake, PollFlags::POLLIN),
        PollFd::new(ring.unwrap_or(wake), PollFlags::POLLIN),
    ];
    let used = if ring.is_some() { 2 } else { 1 };
    loop {
        match poll(&mut set[..used], PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => return,
            Err(e) => {
                // Not expected for two valid descriptors; do not spin.
                tracing::warn!("a session's read thread: poll failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(1));
                return;
            }
        }
    }
}
