//! The io_uring engine.
//!
//! There is no ring thread. A requester's own thread submits its SQEs (one
//! `io_uring_enter` for a whole batch) and, when it waits for completions,
//! reaps them itself: [`CompletionQueue::wait_into`] drives the ring. The
//! kernel posts a completion from the task that submitted it, so a
//! requester that submits and waits is woken once per batch, with no
//! hand-off to another thread, as fio's own loop is.
//!
//! Rings by lane: the engine opens up to [`OpenOptions::rings`] rings
//! (16 by default), lane 0's with the engine and each other one the first
//! time a thread of its lane submits; a thread's lane is its number (given
//! the first time it submits to any engine) modulo the rings. A thread
//! that submits and waits so finds its own ring in most processes (the
//! FUSE workers of a mount, a daemon's connection threads up to the number
//! of rings): no other thread drives it, so its completions cost no
//! hand-off and its submissions no lock contention. All rings register the
//! same file and buffer pool; a flush (`fdatasync`) covers the writes
//! completed on every ring. If the kernel refuses one more ring, its lane
//! shares lane 0's.
//!
//! Several threads may share a ring. Submission is serialized by the `sq`
//! lock (held across the non-blocking enter that submits). Reaping is one
//! role, the *driver*: whoever holds the `reap` lock waits in the kernel,
//! reaps every CQE and routes each completion to its requester's queue, one
//! lock and at most one wakeup per queue. A thread that wants completions
//! while another drives registers its queue as a waiter and sleeps; the
//! driver routes to it as it goes, and when it stops driving pokes every
//! waiter whose queue has ops in flight, so one of them takes over; a
//! waiter whose queue has none sleeps on until a submission for its queue
//! pokes it (each queue counts its ops in flight). A submitter whose ops find every slot
//! in flight (`queue_depth`) drives until one frees, or, while another
//! thread drives, sleeps until that one frees a slot or lets go:
//! back-pressure, never a drop. Nothing runs when nothing is asked: idle
//! costs no thread and no wakeup. (`submit_and_wait` by a thread that can
//! take the driving role sends its SQEs with the enter that waits.)
//!
//! This hand-off is checked by a model (`uring/model.rs`): the same code
//! over a ring that stands in for the kernel's, under shuttle's schedulers
//! (`--cfg ringcache_model`) and under Miri.
//!
//! The device is registered as fixed file 0 of each ring and every buffer
//! of the engine's pool as a fixed buffer, so a request with a pool buffer is a
//! `READ_FIXED`/`WRITE_FIXED` that skips pinning pages per I/O. Where the
//! kernel refuses to register the buffers (memlock limit), the engine logs a
//! warning and uses plain reads and writes.
//!
//! Buffer ownership: an op's [`IoBuf`] lives in the in-flight slab from its
//! SQE until its last CQE, whatever the requester does meanwhile; a
//! requester that drops its queue only makes the completion (and the buffer,
//! back to its pool) be dropped when it is reaped: by the next thread that
//! waits, polls, allocates from an empty pool, or drops the engine.
//!
//! Short transfers are resubmitted for the remainder; a read that reaches
//! the end of the file fails with [`IoError::Short`]. A flush is an
//! `fdatasync` of the device, which makes every write that completed before
//! it durable (it is not ordered against writes still in flight, and need
//! not be).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, TryLockError};

use io_uring::{IoUring, opcode, squeue, types};
use slab::Slab;

use crate::sync::{AtomicBool, AtomicUsize, Condvar, Mutex, MutexGuard, back_off, yield_now};
use crate::{
    BufPool, Completion, CompletionQueue, Drive, Driver, IoBuf, IoEngine, IoError, Op, OpKind,
    OpenOptions, check_request,
};

// The hand-off logic over a ring that stands in for the kernel's, checked
// by shuttle (`--cfg ringcache_model`) and under Miri.
#[cfg(test)]
mod model;

/// The most one read or write transfers (Linux's MAX_RW_COUNT); longer
/// requests complete short and the remainder is resubmitted.
const MAX_BYTES_PER_SQE: usize = 0x7fff_f000;
/// The device's index among the ring's registered files.
const DEVICE: types::Fixed = types::Fixed(0);

/// Counters of one engine (a snapshot; see [`UringEngine::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UringStats {
    /// Read and write SQEs that used a registered buffer.
    pub fixed_sqes: u64,
    /// Read and write SQEs that used an unregistered buffer.
    pub plain_sqes: u64,
    /// Calls to `io_uring_enter`.
    pub enters: u64,
    /// SQEs those calls submitted.
    pub sqes_submitted: u64,
    /// The most SQEs one call submitted.
    pub max_sqes_per_enter: u64,
    /// Times a thread that wanted completions found another driving and
    /// slept until it was routed its completions or poked.
    pub driver_waits: u64,
    /// Waiters woken to look for a driving role (a ring pokes only those
    /// whose queue has ops in flight).
    pub waiter_pokes: u64,
}

#[derive(Default)]
struct Counters {
    fixed_sqes: AtomicU64,
    plain_sqes: AtomicU64,
    enters: AtomicU64,
    sqes_submitted: AtomicU64,
    max_sqes_per_enter: AtomicU64,
    driver_waits: AtomicU64,
    waiter_pokes: AtomicU64,
}

/// One op between its SQE and its last CQE.
struct InFlight {
    op: Op,
    cq: CompletionQueue,
    /// Bytes already transferred (short transfers resubmit the rest).
    done: usize,
}

/// The submission side, under the `sq` lock.
struct SqSide {
    /// Ops submitted to the kernel, keyed by `user_data`.
    in_flight: Slab<InFlight>,
    /// The engine is being dropped: new ops fail with [`IoError::Stopped`].
    closed: bool,
}

/// The driver's scratch space, under the `reap` lock (the driving role).
#[derive(Default)]
struct ReapSide {
    cqes: Vec<(u64, i32)>,
    routed: Vec<(CompletionQueue, Completion)>,
    batch: Vec<Completion>,
}

/// Threads waiting on their queue for completions while another thread
/// drives, or for work while their queue has none in flight.
#[derive(Default)]
struct Waiters {
    queues: Vec<CompletionQueue>,
    /// The list of queues being poked, kept between pokes so that a poke
    /// allocates nothing.
    spare: Vec<CompletionQueue>,
}

/// What a driver reaps for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    /// A completion on its queue.
    Completion,
    /// A free slot to submit into.
    Room,
}

/// What the driver and waiter roles need of a ring: the kernel's
/// ([`KernelRing`]) in the engine; in the tests, a model that stands in
/// for the kernel, so that the hand-off logic is checked without it.
trait Ring: Send + Sync + 'static {
    /// Queue the SQE for what remains of in-flight op `key`. `sq` is the
    /// submission side of the [`Shared`] that owns this ring, so the caller
    /// holds its lock. Returns `None` when the SQ has no room (the depth
    /// bound rules that out), else whether the SQE names a registered
    /// buffer.
    fn push(&self, sq: &mut SqSide, key: usize) -> Option<bool>;
    /// One `io_uring_enter`: submit every queued SQE and wait for `want`
    /// completions. Returns how many SQEs it submitted.
    fn enter(&self, want: usize) -> std::io::Result<usize>;
    /// A descriptor that polls readable while completions wait to be
    /// reaped (the ring's own), if there is one.
    fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
    /// Move every posted CQE, as (user_data, result), into `reap.cqes`.
    /// `reap` is the driving role's side of the [`Shared`] that owns this
    /// ring, so the caller holds its lock.
    fn reap(&self, reap: &mut ReapSide);
    /// Nothing is in flight any more: let go of what the ring registered.
    fn unregister(&self);
}

/// The kernel's ring, with what it registered.
///
/// Field order is drop order, and it matters: `ring` goes first, so the
/// kernel is done with the registered buffers (`pool`) and the registered
/// file (`_device`) before they are freed or closed. The engine's `Drop`
/// makes sure nothing is in flight by then.
struct KernelRing {
    ring: IoUring,
    /// Whether `pool`'s buffers are registered with the ring.
    fixed_buffers: bool,
    pool: Arc<BufPool>,
    /// This ring's duplicate of the device's descriptor (registered file 0).
    _device: File,
}

/// Everything the users of one ring share.
struct Shared<R: Ring = KernelRing> {
    ring: R,
    sq: Mutex<SqSide>,
    reap: Mutex<ReapSide>,
    /// Queues of threads that wait for completions while another thread
    /// drives, or for work while nothing is in flight.
    waiters: Mutex<Waiters>,
    /// `!waiters.is_empty()`, readable without the lock.
    has_waiters: AtomicBool,
    /// Submitters waiting for a free slot while another thread drives
    /// sleep on `room_freed` (under `room`).
    room: Mutex<()>,
    room_freed: Condvar,
    room_waiters: AtomicUsize,
    /// Someone holds `reap`.
    driving: AtomicBool,
    /// `sq.in_flight.len()`, readable without the lock.
    in_flight: AtomicUsize,
    /// The most ops in flight.
    depth: usize,
    counters: Counters,
}

/// See the module docs.
pub struct UringEngine {
    /// Lane 0's ring, opened with the engine.
    first: Arc<Shared>,
    /// The rings of lanes 1.., each opened the first time a thread of that
    /// lane submits (`None`: the kernel refused one more ring, and that
    /// lane's threads use lane 0's).
    others: Box<[OnceLock<Option<Arc<Shared>>>]>,
    /// The device, duplicated into each ring's registered file.
    device: File,
    /// The buffers every ring registers.
    pool: Arc<BufPool>,
    /// The queue depth asked for, per ring.
    requested_depth: u32,
    device_bytes: u64,
}

/// Rings an engine opens at most when [`OpenOptions::rings`] is 0.
pub const DEFAULT_RINGS: usize = 16;

/// A small number for each thread, the first time it submits: its lane
/// is this modulo the engine's rings.
fn thread_number() -> usize {
    use std::sync::atomic::AtomicUsize as Counter;
    static NEXT: Counter = Counter::new(0);
    thread_local! {
        static NUMBER: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    NUMBER.with(|n| *n)
}

impl UringEngine {
    /// An engine over `file` (opened with O_DIRECT where possible) of
    /// `device_bytes`. Fails when the kernel refuses io_uring (old kernel,
    /// seccomp, `kernel.io_uring_disabled`), so that callers can fall back
    /// to psync.
    pub fn new(file: File, device_bytes: u64, opts: &OpenOptions) -> std::io::Result<UringEngine> {
        let pool = Arc::new(BufPool::new(&opts.pool));
        let requested_depth = opts.queue_depth.max(1);
        let first = Shared::open(&file, &pool, requested_depth, true)?;
        let n = match opts.rings {
            0 => DEFAULT_RINGS,
            n => n as usize,
        };
        Ok(UringEngine {
            first: Arc::new(first),
            others: (1..n).map(|_| OnceLock::new()).collect(),
            device: file,
            pool,
            requested_depth,
            device_bytes,
        })
    }

    /// The calling thread's ring, opened on its first use.
    fn ring_of_this_thread(&self) -> &Arc<Shared> {
        let lane = thread_number() % (self.others.len() + 1);
        let Some(slot) = lane.checked_sub(1).and_then(|i| self.others.get(i)) else {
            return &self.first;
        };
        let opened = slot.get_or_init(|| {
            match Shared::open(&self.device, &self.pool, self.requested_depth, false) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    tracing::debug!(error = %e, lane, "cannot open one more io_uring; sharing the first");
                    None
                }
            }
        });
        opened.as_ref().unwrap_or(&self.first)
    }

    /// Every ring opened so far.
    fn rings(&self) -> impl Iterator<Item = &Arc<Shared>> {
        std::iter::once(&self.first).chain(
            self.others
                .iter()
                .filter_map(|l| l.get().and_then(Option::as_ref)),
        )
    }

    /// Whether the pool's buffers are registered with the kernel.
    pub fn fixed_buffers(&self) -> bool {
        self.first.ring.fixed_buffers
    }

    /// The most ops in flight at once on one ring.
    pub fn queue_depth(&self) -> usize {
        self.first.depth
    }

    /// The rings opened so far (one per lane of threads that submitted).
    pub fn rings_open(&self) -> usize {
        self.rings().count()
    }

    /// A snapshot of the engine's counters, summed over its rings.
    pub fn stats(&self) -> UringStats {
        let mut t = UringStats::default();
        for r in self.rings() {
            let c = &r.counters;
            t.fixed_sqes += c.fixed_sqes.load(Ordering::Relaxed);
            t.plain_sqes += c.plain_sqes.load(Ordering::Relaxed);
            t.enters += c.enters.load(Ordering::Relaxed);
            t.sqes_submitted += c.sqes_submitted.load(Ordering::Relaxed);
            t.max_sqes_per_enter = t
                .max_sqes_per_enter
                .max(c.max_sqes_per_enter.load(Ordering::Relaxed));
            t.driver_waits += c.driver_waits.load(Ordering::Relaxed);
            t.waiter_pokes += c.waiter_pokes.load(Ordering::Relaxed);
        }
        t
    }
}

impl IoEngine for UringEngine {
    fn name(&self) -> &'static str {
        "uring"
    }

    fn device_bytes(&self) -> u64 {
        self.device_bytes
    }

    fn submit(&self, ops: &mut Vec<Op>, cq: &CompletionQueue) {
        self.ring_of_this_thread()
            .submit(ops, cq, self.device_bytes);
    }

    fn submit_and_wait(&self, ops: &mut Vec<Op>, cq: &CompletionQueue, out: &mut Vec<Completion>) {
        self.ring_of_this_thread()
            .submit_and_wait(ops, cq, self.device_bytes, out);
    }

    fn uring_stats(&self) -> Option<UringStats> {
        Some(self.stats())
    }

    fn wake_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.ring_of_this_thread().ring.fd()
    }

    fn alloc(&self, len: usize) -> IoBuf {
        let buf = self.pool.alloc(len);
        if buf.pool_index().is_some() {
            return buf;
        }
        // The pool is empty: buffers of requesters that went away may be
        // waiting in completions nobody reaped yet.
        let mut polled = false;
        for r in self.rings() {
            if r.in_flight.load(Ordering::Relaxed) > 0 {
                r.poll();
                polled = true;
            }
        }
        if !polled {
            return buf;
        }
        let again = self.pool.alloc(len);
        if again.pool_index().is_some() {
            again
        } else {
            buf
        }
    }
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        for r in self.rings() {
            r.shut_down();
        }
    }
}

impl<R: Ring> Driver for Shared<R> {
    fn drive(&self, cq: &CompletionQueue) -> Drive {
        Shared::drive(self, cq, Want::Completion)
    }

    fn poll(&self) {
        self.poll_entering(true);
    }

    fn poll_posted(&self) {
        self.poll_entering(false);
    }
}

impl KernelRing {
    /// A ring over `device` (duplicated) with `pool` registered, and its
    /// depth; `first` says whether to warn when the kernel refuses the
    /// buffers (the next rings would only repeat it).
    fn open(
        device: &File,
        pool: &Arc<BufPool>,
        requested: u32,
        first: bool,
    ) -> std::io::Result<(KernelRing, usize)> {
        // Completions are posted when their submitter next enters the
        // kernel (or sleeps), not by interrupting it: fio does the same.
        let ring = match IoUring::builder()
            .setup_clamp()
            .setup_coop_taskrun()
            .build(requested)
        {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                IoUring::builder().setup_clamp().build(requested)?
            }
            Err(e) => return Err(e),
        };
        let depth = ring.params().sq_entries().min(requested) as usize;
        let file = device.try_clone()?;
        ring.submitter().register_files(&[file.as_raw_fd()])?;
        let fixed_buffers = register_pool(&ring, pool, first);
        let kernel = KernelRing {
            ring,
            fixed_buffers,
            pool: pool.clone(),
            _device: file,
        };
        Ok((kernel, depth))
    }
}

impl Ring for KernelRing {
    fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        // SAFETY: the descriptor is the ring's, open for as long as the
        // ring (and so `self`, which the borrow is tied to) lives.
        Some(unsafe { std::os::fd::BorrowedFd::borrow_raw(self.ring.as_raw_fd()) })
    }

    fn push(&self, sq: &mut SqSide, key: usize) -> Option<bool> {
        let registered = self.fixed_buffers.then(|| self.pool.iovecs());
        let entry = sq.in_flight.get_mut(key)?;
        let (sqe, is_fixed) = prepare(entry, key, registered);
        // SAFETY: the caller holds the `sq` lock of the one `Shared` that
        // owns this ring, so no other submission queue handle of this ring
        // exists. The SQE points into `entry.op.buf` (at most its length
        // past `done`, see `prepare`), whose memory stays put and alive
        // while the entry is in the slab; the entry leaves the slab only
        // when its last CQE has been reaped, and the engine's drop waits
        // for every CQE (or leaks the slab) before the buffers could be
        // freed. A fixed SQE names a buffer index registered with this ring
        // and lies inside that buffer (`registered_index`). The file is
        // fixed file 0, registered in `open`.
        match unsafe { self.ring.submission_shared().push(&sqe) } {
            Ok(()) => Some(is_fixed),
            Err(_) => None,
        }
    }

    fn enter(&self, want: usize) -> std::io::Result<usize> {
        self.ring.submitter().submit_and_wait(want)
    }

    fn reap(&self, reap: &mut ReapSide) {
        // SAFETY: the caller holds the `reap` lock of the one `Shared` that
        // owns this ring, so no other completion queue handle of this ring
        // exists.
        let cq = unsafe { self.ring.completion_shared() };
        reap.cqes.extend(cq.map(|c| (c.user_data(), c.result())));
    }

    fn unregister(&self) {
        // Closing the ring releases what it registered later, from a
        // kernel work item; unregistering now lets go of the device file
        // (and any lock on it) before the engine's drop returns, and
        // unpins the pool. The caller has seen nothing in flight.
        let submitter = self.ring.submitter();
        if let Err(e) = submitter.unregister_files() {
            tracing::warn!(error = %e, "cannot unregister the device from io_uring");
        }
        if self.fixed_buffers
            && let Err(e) = submitter.unregister_buffers()
        {
            tracing::warn!(error = %e, "cannot unregister the buffer pool from io_uring");
        }
    }
}

impl Shared<KernelRing> {
    /// A kernel ring over `device` with `pool` registered (see
    /// [`KernelRing::open`]).
    fn open(
        device: &File,
        pool: &Arc<BufPool>,
        requested: u32,
        first: bool,
    ) -> std::io::Result<Shared> {
        let (ring, depth) = KernelRing::open(device, pool, requested, first)?;
        Ok(Shared::new(ring, depth))
    }
}

impl<R: Ring> Shared<R> {
    /// The roles and bookkeeping over `ring`, with at most `depth` ops in
    /// flight.
    fn new(ring: R, depth: usize) -> Shared<R> {
        Shared {
            ring,
            sq: Mutex::new(SqSide {
                in_flight: Slab::with_capacity(depth),
                closed: false,
            }),
            reap: Mutex::new(ReapSide {
                cqes: Vec::with_capacity(depth),
                routed: Vec::with_capacity(depth),
                batch: Vec::with_capacity(depth),
            }),
            waiters: Mutex::new(Waiters::default()),
            has_waiters: AtomicBool::new(false),
            room: Mutex::new(()),
            room_freed: Condvar::new(),
            room_waiters: AtomicUsize::new(0),
            driving: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            depth,
            counters: Counters::default(),
        }
    }

    /// [`IoEngine::submit`] on this ring.
    fn submit(self: &Arc<Self>, ops: &mut Vec<Op>, cq: &CompletionQueue, device_bytes: u64) {
        let pushed = self.push_ops(ops, cq, device_bytes, None);
        if pushed {
            self.enter_submit();
            // A waiter on this queue that found nothing to drive sleeps
            // until work arrives for it. (SeqCst pairs with
            // `Shared::idle`: either it sees our op in flight, or we see
            // it waiting.) Waiters on other queues are not ours to wake:
            // their work comes with submissions for their queue, and a
            // waiter with work is poked by the driver when it lets go.
            if self.has_waiters.load(Ordering::SeqCst) && !self.driving.load(Ordering::SeqCst) {
                self.poke_waiter_of(cq);
            }
        }
    }

    /// [`IoEngine::submit_and_wait`] on this ring.
    fn submit_and_wait(
        self: &Arc<Self>,
        ops: &mut Vec<Op>,
        cq: &CompletionQueue,
        device_bytes: u64,
        out: &mut Vec<Completion>,
    ) {
        let Some(mut reap) = self.try_reap_lock() else {
            // Another thread drives: submit now, then wait as usual.
            self.submit(ops, cq, device_bytes);
            cq.wait_into(out);
            return;
        };
        // This thread drives, so the SQEs can wait for the enter that also
        // waits for their completions: one system call, as fio's loop.
        self.driving.store(true, Ordering::SeqCst);
        let pushed = self.push_ops(ops, cq, device_bytes, Some(&mut reap));
        if pushed && cq.has_completions() {
            // No wait is coming (the queue already holds completions, a
            // refused op's say): send the SQEs now.
            self.enter_submit();
        }
        self.drive_held(&mut reap, cq, Want::Completion);
        self.release(reap);
        cq.wait_into(out);
    }

    /// The engine goes: finish everything in flight (the kernel must be
    /// done with every buffer before the ring and the pool go), then let
    /// go of the device and the buffers.
    fn shut_down(&self) {
        let s = self;
        s.lock_sq().closed = true;
        let mut failing = 0u32;
        while s.in_flight.load(Ordering::SeqCst) > 0 {
            let mut reap = s.reap.lock().unwrap_or_else(|e| e.into_inner());
            s.driving.store(true, Ordering::SeqCst);
            let ok = s.in_flight.load(Ordering::SeqCst) == 0 || s.wait_in_kernel();
            s.reap_round(&mut reap);
            s.driving.store(false, Ordering::SeqCst);
            drop(reap);
            if !ok {
                failing += 1;
                if failing > 1000 {
                    break;
                }
            }
        }
        // Anyone still asleep on a queue of ours has been routed all it
        // will get.
        s.poke_waiters();
        s.wake_room();
        let in_flight = s.in_flight.load(Ordering::SeqCst);
        if in_flight == 0 {
            s.ring.unregister();
        } else {
            tracing::error!(
                in_flight,
                "io_uring engine dropped with I/O the kernel never completed; leaking its buffers"
            );
            let mut sq = s.lock_sq();
            std::mem::forget(std::mem::take(&mut sq.in_flight));
        }
    }

    fn lock_sq(&self) -> MutexGuard<'_, SqSide> {
        self.sq.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reap what has completed without blocking; `enter`: enter the
    /// kernel first when anything is in flight, so that this thread posts
    /// the completions of what it submitted (see `Driver::poll_posted`
    /// for when that is not needed).
    fn poll_entering(&self, enter: bool) {
        let Some(mut reap) = self.try_reap_lock() else {
            return;
        };
        self.driving.store(true, Ordering::SeqCst);
        if enter && self.in_flight.load(Ordering::SeqCst) > 0 {
            self.enter(0);
        }
        self.reap_round(&mut reap);
        self.release(reap);
    }

    fn try_reap_lock(&self) -> Option<MutexGuard<'_, ReapSide>> {
        match self.reap.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Put `ops` in flight for `cq` (draining `ops`); refused ops complete
    /// at once with their error. When every slot is taken, reap until one
    /// frees: with `held`, the caller's driving role; otherwise by driving
    /// or waiting for the driver. Returns whether SQEs were pushed that no
    /// enter has submitted yet.
    fn push_ops(
        self: &Arc<Self>,
        ops: &mut Vec<Op>,
        cq: &CompletionQueue,
        device_bytes: u64,
        mut held: Option<&mut ReapSide>,
    ) -> bool {
        cq.attach(self);
        let mut refused = Vec::new();
        let mut sq = self.lock_sq();
        let mut pushed = false;
        for op in ops.drain(..) {
            if let Err(e) = check_request(&op, device_bytes) {
                refused.push(Completion {
                    tag: op.tag,
                    result: Err(e),
                    buf: op.buf,
                });
                continue;
            }
            while !sq.closed && sq.in_flight.len() >= self.depth {
                drop(sq);
                match held.as_deref_mut() {
                    // The wait submits what this call pushed so far.
                    Some(reap) => {
                        if !self.wait_in_kernel() {
                            back_off();
                        }
                        self.reap_round(reap);
                    }
                    None => {
                        if pushed {
                            self.enter_submit();
                        }
                        self.wait_room(cq);
                    }
                }
                pushed = false;
                sq = self.lock_sq();
            }
            if sq.closed {
                refused.push(Completion {
                    tag: op.tag,
                    result: Err(IoError::Stopped),
                    buf: op.buf,
                });
                continue;
            }
            let key = sq.in_flight.insert(InFlight {
                op,
                cq: cq.clone(),
                done: 0,
            });
            if self.push_sqe(&mut sq, key) {
                // Counted once its SQE is in the ring: a driver that sees
                // it in flight and enters also submits it. The ring's count
                // first: a waiter on this queue that saw the queue's op
                // but not the ring's would find nothing to drive, and keep
                // poking itself awake until this thread ran again (the
                // model found that spin).
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                cq.count_in_flight(1);
                pushed = true;
            } else {
                let InFlight { op, .. } = sq.in_flight.remove(key);
                refused.push(Completion {
                    tag: op.tag,
                    result: Err(IoError::Stopped),
                    buf: op.buf,
                });
            }
        }
        drop(sq);
        if !refused.is_empty() {
            cq.push_all(refused);
        }
        pushed
    }

    /// With the driving role held, reap until `want` is met for `cq` or
    /// nothing is in flight. Returns whether it stopped for lack of work.
    fn drive_held(&self, reap: &mut ReapSide, cq: &CompletionQueue, want: Want) -> bool {
        let met = |s: &Self| match want {
            Want::Completion => cq.has_completions(),
            Want::Room => s.in_flight.load(Ordering::SeqCst) < s.depth,
        };
        let mut failing = 0u32;
        while !met(self) {
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if self.wait_in_kernel() {
                failing = 0;
            } else {
                failing += 1;
                if failing.is_multiple_of(1000) {
                    tracing::warn!("io_uring_enter keeps failing; still retrying");
                }
                // Do not spin on a failing enter.
                back_off();
            }
            self.reap_round(reap);
        }
        false
    }

    /// Reap until `want` is met for `cq`, taking the driving role; or, when
    /// another thread drives, register `cq` to be poked and say so.
    fn drive(&self, cq: &CompletionQueue, want: Want) -> Drive {
        let reap = match self.try_reap_lock() {
            Some(g) => g,
            None => {
                self.register(cq);
                // The driver may have let go before we registered.
                match self.try_reap_lock() {
                    Some(g) => g,
                    None => {
                        self.counters.driver_waits.fetch_add(1, Ordering::Relaxed);
                        return Drive::Busy;
                    }
                }
            }
        };
        let mut reap = reap;
        self.driving.store(true, Ordering::SeqCst);
        let idle = self.drive_held(&mut reap, cq, want);
        self.release(reap);
        if idle { self.idle(cq) } else { Drive::Reaped }
    }

    /// Let go of the driving role and poke every waiter that has ops in
    /// flight, so that one of them takes it over.
    fn release(&self, reap: MutexGuard<'_, ReapSide>) {
        self.driving.store(false, Ordering::SeqCst);
        drop(reap);
        if self.has_waiters.load(Ordering::SeqCst) {
            self.poke_waiters_with_work();
        }
        self.wake_room();
    }

    /// Nothing is in flight: register `cq` to be poked by the next
    /// submission, unless one slipped in meanwhile.
    fn idle(&self, cq: &CompletionQueue) -> Drive {
        self.register(cq);
        // SeqCst pairs with `submit`: either it sees us waiting, or we
        // see its op in flight.
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            Drive::Reaped
        } else {
            Drive::Idle
        }
    }

    fn lock_waiters(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, cq: &CompletionQueue) {
        let mut w = self.lock_waiters();
        if !w.queues.iter().any(|q| q.same_queue(cq)) {
            w.queues.push(cq.clone());
        }
        self.has_waiters.store(true, Ordering::SeqCst);
    }

    /// Poke (and forget) every waiter.
    fn poke_waiters(&self) {
        let poked = {
            let mut w = self.lock_waiters();
            self.has_waiters.store(false, Ordering::SeqCst);
            std::mem::take(&mut w.queues)
        };
        self.counters
            .waiter_pokes
            .fetch_add(poked.len() as u64, Ordering::Relaxed);
        for q in poked {
            q.poke();
        }
    }

    /// Poke (and forget) the waiters that need a driver: those whose queue
    /// has ops in flight on this ring. A waiter whose queue has none
    /// sleeps on: its completions can only follow a submission for its
    /// queue, which pokes it then (waking every idle waiter of a busy ring
    /// on each submission made hundreds of threads take turns for
    /// nothing). SeqCst pairs with `push_ops` counting the queue's op
    /// before the poke, and with `idle`.
    fn poke_waiters_with_work(&self) {
        let mut poked = {
            let mut w = self.lock_waiters();
            let mut poked = std::mem::take(&mut w.spare);
            // A queue only this list still holds has no thread waiting on
            // it any more (its requester went away): forget it.
            for q in w
                .queues
                .extract_if(.., |q| q.ops_in_flight() > 0 || q.only_holder())
            {
                if !q.only_holder() {
                    poked.push(q);
                }
            }
            self.has_waiters
                .store(!w.queues.is_empty(), Ordering::SeqCst);
            poked
        };
        self.counters
            .waiter_pokes
            .fetch_add(poked.len() as u64, Ordering::Relaxed);
        for q in poked.drain(..) {
            q.poke();
        }
        let mut w = self.lock_waiters();
        if w.spare.capacity() < poked.capacity() {
            w.spare = poked;
        }
    }

    /// Poke (and forget) the waiter on `cq`, if it waits: a submission
    /// just gave its queue work.
    fn poke_waiter_of(&self, cq: &CompletionQueue) {
        let found = {
            let mut w = self.lock_waiters();
            let at = w.queues.iter().position(|q| q.same_queue(cq));
            if let Some(i) = at {
                w.queues.swap_remove(i);
                self.has_waiters
                    .store(!w.queues.is_empty(), Ordering::SeqCst);
            }
            at.is_some()
        };
        if found {
            self.counters.waiter_pokes.fetch_add(1, Ordering::Relaxed);
            cq.poke();
        }
    }

    /// Wait until a slot is free: drive if nobody does, else sleep until
    /// the driver frees one or lets go.
    fn wait_room(&self, cq: &CompletionQueue) {
        loop {
            if self.in_flight.load(Ordering::SeqCst) < self.depth {
                return;
            }
            if let Some(mut reap) = self.try_reap_lock() {
                self.driving.store(true, Ordering::SeqCst);
                self.drive_held(&mut reap, cq, Want::Room);
                self.release(reap);
                return;
            }
            let g = self.room.lock().unwrap_or_else(|e| e.into_inner());
            self.room_waiters.fetch_add(1, Ordering::SeqCst);
            // SeqCst pairs with `wake_room` after a slot is freed or the
            // driver lets go: either we see it here, or it sees us waiting
            // and, taking `room`, notifies only once we sleep.
            let full = self.in_flight.load(Ordering::SeqCst) >= self.depth;
            let driving = self.driving.load(Ordering::SeqCst);
            if full && driving {
                drop(self.room_freed.wait(g).unwrap_or_else(|e| e.into_inner()));
            } else {
                drop(g);
            }
            self.room_waiters.fetch_sub(1, Ordering::SeqCst);
            if full && !driving {
                // The role is changing hands this instant: taken and not
                // yet marked, or marked free and not yet let go. Let the
                // other thread finish rather than spin on it (the model
                // found this spin: a thread that was not scheduled there
                // kept the submitter spinning).
                yield_now();
            }
        }
    }

    /// Wake submitters waiting for room (a slot was freed, or the driver
    /// let go).
    fn wake_room(&self) {
        if self.room_waiters.load(Ordering::SeqCst) > 0 {
            let _g = self.room.lock().unwrap_or_else(|e| e.into_inner());
            self.room_freed.notify_all();
        }
    }

    /// Submit what the SQ holds, without waiting.
    fn enter_submit(&self) {
        self.enter(0);
    }

    /// Submit what the SQ holds and wait for at least one completion.
    /// Returns false when the kernel refused (the caller backs off).
    fn wait_in_kernel(&self) -> bool {
        self.enter(1)
    }

    /// One `io_uring_enter` that submits the whole SQ and waits for `want`
    /// completions. Returns whether it worked (EINTR counts as worked: the
    /// caller looks again). Any enter also runs this thread's pending task
    /// work, which posts the completions of what it submitted.
    fn enter(&self, want: usize) -> bool {
        match self.ring.enter(want) {
            Ok(n) => {
                let c = &self.counters;
                c.enters.fetch_add(1, Ordering::Relaxed);
                c.sqes_submitted.fetch_add(n as u64, Ordering::Relaxed);
                c.max_sqes_per_enter.fetch_max(n as u64, Ordering::Relaxed);
                true
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => true,
            Err(e) => {
                // EAGAIN/ENOMEM (short of memory) or EBUSY (completions
                // backed up): the caller reaps and tries again.
                tracing::debug!(error = %e, "io_uring_enter failed");
                false
            }
        }
    }

    /// Queue the SQE for what remains of in-flight op `key`. Caller holds
    /// `sq`. Returns false when the SQ has no room, which the depth bound
    /// rules out.
    fn push_sqe(&self, sq: &mut SqSide, key: usize) -> bool {
        let moves_data = sq
            .in_flight
            .get(key)
            .is_some_and(|e| e.op.kind != OpKind::Flush);
        let Some(is_fixed) = self.ring.push(sq, key) else {
            tracing::error!("io_uring submission queue full with slots free");
            return false;
        };
        if moves_data {
            let counter = if is_fixed {
                &self.counters.fixed_sqes
            } else {
                &self.counters.plain_sqes
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Take every CQE: finish its op, or resubmit the rest of a short
    /// transfer; then hand the completions to their queues. Caller holds
    /// the driving role (`reap`).
    fn reap_round(&self, reap: &mut ReapSide) {
        reap.cqes.clear();
        self.ring.reap(reap);
        if reap.cqes.is_empty() {
            return;
        }
        let mut sq = self.lock_sq();
        let mut resubmitted = false;
        for &(user_data, res) in &reap.cqes {
            let key = user_data as usize;
            let Some(entry) = sq.in_flight.get_mut(key) else {
                tracing::error!(user_data, "io_uring completion for no request");
                continue;
            };
            let result = match outcome(entry, res) {
                None if self.push_sqe(&mut sq, key) => {
                    resubmitted = true;
                    continue;
                }
                None => Err(IoError::Stopped),
                Some(result) => result,
            };
            let InFlight { op, cq, .. } = sq.in_flight.remove(key);
            cq.count_in_flight(-1);
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            reap.routed.push((
                cq,
                Completion {
                    tag: op.tag,
                    result,
                    buf: op.buf,
                },
            ));
        }
        if resubmitted {
            self.enter_submit();
        }
        drop(sq);
        let freed = !reap.routed.is_empty();
        route(&mut reap.routed, &mut reap.batch);
        if freed {
            self.wake_room();
        }
    }
}

/// Hand reaped completions to their queues: consecutive completions for the
/// same queue go in one batch.
fn route(routed: &mut Vec<(CompletionQueue, Completion)>, batch: &mut Vec<Completion>) {
    let mut current: Option<CompletionQueue> = None;
    for (cq, completion) in routed.drain(..) {
        match &current {
            Some(cur) if cur.same_queue(&cq) => {}
            _ => {
                if let Some(done) = current.replace(cq) {
                    done.push_all(batch.drain(..));
                }
            }
        }
        batch.push(completion);
    }
    if let Some(done) = current {
        done.push_all(batch.drain(..));
    }
}

/// Register every pool buffer with `ring`. Returns whether that worked.
fn register_pool(ring: &IoUring, pool: &BufPool, warn: bool) -> bool {
    let iovecs: Vec<libc::iovec> = pool
        .iovecs()
        .iter()
        .map(|&(addr, len)| libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len,
        })
        .collect();
    if iovecs.is_empty() {
        return false;
    }
    // SAFETY: each iovec is the memory of one pool buffer, which never moves
    // or shrinks (an `IoBuf` does not expose its allocation, and it goes
    // back to the pool whole) and is freed only with the pool. The caller
    // (`KernelRing::open`) moves this ring and a reference to the pool into
    // one `KernelRing`, whose `ring` field is declared, and so dropped,
    // before its `pool`, so the pool outlives every ring that registered it; until
    // then no I/O is submitted, so the kernel touches no buffer.
    match unsafe { ring.submitter().register_buffers(&iovecs) } {
        Ok(()) => true,
        Err(e) if !warn => {
            tracing::debug!(error = %e, "cannot register the buffer pool with one more io_uring");
            false
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                buffers = iovecs.len(),
                bytes = iovecs.iter().map(|v| v.iov_len).sum::<usize>(),
                "cannot register the buffer pool with io_uring (RLIMIT_MEMLOCK?); \
                 using unregistered buffers"
            );
            false
        }
    }
}

/// The registered index of `buf`, if it is one of this engine's registered
/// pool buffers.
fn registered_index(buf: &IoBuf, registered: Option<&[(usize, usize)]>) -> Option<u16> {
    let index = buf.pool_index()?;
    let &(addr, len) = registered?.get(usize::from(index))?;
    // A buffer of another pool can carry the same index; only ours has this
    // address (our buffer with that index is alive for as long as the pool).
    (buf.as_full_slice().as_ptr() as usize == addr && buf.capacity() <= len).then_some(index)
}

/// The SQE for what remains of `entry`, and whether it uses a fixed buffer.
fn prepare(
    entry: &mut InFlight,
    key: usize,
    registered: Option<&[(usize, usize)]>,
) -> (squeue::Entry, bool) {
    let offset = entry.op.offset + entry.done as u64;
    let index = registered_index(&entry.op.buf, registered);
    // `done < buf.len()` for reads and writes in the slab: `outcome` retires
    // an op once it is whole.
    let sqe = match entry.op.kind {
        OpKind::Read => {
            let rest = &mut entry.op.buf[entry.done..];
            let len = rest.len().min(MAX_BYTES_PER_SQE) as u32;
            match index {
                Some(i) => opcode::ReadFixed::new(DEVICE, rest.as_mut_ptr(), len, i)
                    .offset(offset)
                    .build(),
                None => opcode::Read::new(DEVICE, rest.as_mut_ptr(), len)
                    .offset(offset)
                    .build(),
            }
        }
        OpKind::Write => {
            let rest = &entry.op.buf[entry.done..];
            let len = rest.len().min(MAX_BYTES_PER_SQE) as u32;
            match index {
                Some(i) => opcode::WriteFixed::new(DEVICE, rest.as_ptr(), len, i)
                    .offset(offset)
                    .build(),
                None => opcode::Write::new(DEVICE, rest.as_ptr(), len)
                    .offset(offset)
                    .build(),
            }
        }
        OpKind::Flush => {
            return (
                opcode::Fsync::new(DEVICE)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build()
                    .user_data(key as u64),
                false,
            );
        }
    };
    (sqe.user_data(key as u64), index.is_some())
}

/// What a CQE with result `res` means for `entry`: its final result, or
/// `None` when the rest of a short transfer must be resubmitted.
fn outcome(entry: &mut InFlight, res: i32) -> Option<Result<usize, IoError>> {
    let offset = entry.op.offset;
    if res < 0 {
        return Some(Err(IoError::Os {
            offset,
            source: std::io::Error::from_raw_os_error(-res),
        }));
    }
    let what = match entry.op.kind {
        OpKind::Flush => return Some(Ok(0)),
        OpKind::Read => "read",
        OpKind::Write => "write",
    };
    let wanted = entry.op.buf.len();
    let n = res as usize;
    entry.done += n;
    if entry.done >= wanted {
        Some(Ok(wanted))
    } else if n == 0 {
        Some(Err(IoError::Short {
            what,
            offset,
            done: entry.done,
            wanted,
        }))
    } else {
        None
    }
}
