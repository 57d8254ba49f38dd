//! The io_uring engine.
//!
//! One ring thread owns the ring. [`IoEngine::submit`] only appends to a
//! shared pending queue and, if the ring thread sleeps, wakes it through an
//! eventfd on which the ring thread keeps a read armed inside the ring: a
//! thread blocked in `io_uring_enter` then wakes on new work as it does on a
//! completion. Each turn of the ring thread moves pending ops into SQEs (at
//! most `queue_depth` in flight), submits them all and waits with one
//! `io_uring_enter`, reaps every CQE and routes the completions, one lock
//! and one wakeup per requester queue.
//!
//! The device is registered as fixed file 0 and every buffer of the engine's
//! pool as a fixed buffer, so a request with a pool buffer is a
//! `READ_FIXED`/`WRITE_FIXED` that skips pinning pages per I/O. Where the
//! kernel refuses to register the buffers (memlock limit), the engine logs a
//! warning and uses plain reads and writes.
//!
//! Buffer ownership: an op's [`IoBuf`] lives in the in-flight slab from its
//! SQE until its last CQE, whatever the requester does meanwhile; a
//! requester that drops its queue only makes the completion (and the buffer,
//! back to its pool) be dropped when it arrives.
//!
//! Short transfers are resubmitted for the remainder; a read that reaches
//! the end of the file fails with [`IoError::Short`]. A flush is an
//! `fdatasync` of the device, which makes every write that completed before
//! it durable (it is not ordered against writes still in flight, and need
//! not be).

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;

use io_uring::{IoUring, opcode, squeue, types};
use slab::Slab;

use super::{
    BufPool, Completion, CompletionQueue, IoBuf, IoEngine, IoError, Op, OpKind, OpenOptions,
    check_request,
};

/// `user_data` of the eventfd read; slab keys never come near it.
const WAKE_USER_DATA: u64 = u64::MAX;
/// Submitters wait while this many ops per unit of queue depth are pending
/// (queued but not yet in flight).
const PENDING_PER_SLOT: usize = 4;
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
    /// SQEs those calls submitted, eventfd reads included.
    pub sqes_submitted: u64,
    /// The most SQEs one call submitted.
    pub max_sqes_per_enter: u64,
}

#[derive(Default)]
struct Counters {
    fixed_sqes: AtomicU64,
    plain_sqes: AtomicU64,
    enters: AtomicU64,
    sqes_submitted: AtomicU64,
    max_sqes_per_enter: AtomicU64,
}

/// What submitters and the ring thread share under one lock.
#[derive(Default)]
struct Pending {
    ops: VecDeque<(Op, CompletionQueue)>,
    /// The engine is being dropped: the ring thread finishes everything and
    /// exits.
    stopping: bool,
    /// The ring thread is gone: new ops fail with [`IoError::Stopped`].
    closed: bool,
    /// Submitters waiting for room (so the ring thread signals only when
    /// someone listens).
    waiters: usize,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when the pending queue shrinks below the limit.
    room: Condvar,
    /// Set by the ring thread (under the `pending` lock, after finding the
    /// queue empty) before it may block in the kernel; a submitter that
    /// queued work and sees it set writes the eventfd.
    sleeping: AtomicBool,
    /// Written to wake the ring thread; it keeps a read of it in the ring.
    eventfd: File,
    /// The registered buffers. Also keeps their memory alive as long as the
    /// ring thread (which owns the ring) holds this `Shared`.
    pool: BufPool,
    counters: Counters,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wake the ring thread if it may be blocked in the kernel.
    fn wake(&self) {
        // SeqCst pairs with the ring thread's store of `true`: the ring
        // thread sets the flag and then, under the same lock we queued
        // under, finds the queue empty; so either it sees our op or we see
        // its flag. (The lock alone already orders the two; SeqCst keeps the
        // argument independent of it.)
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.kick();
        }
    }

    /// Add 1 to the eventfd, completing the ring thread's armed read.
    #[expect(
        clippy::host_endian_bytes,
        reason = "eventfd(2) takes its 8-byte counter in host byte order"
    )]
    fn kick(&self) {
        if let Err(e) = (&self.eventfd).write_all(&1u64.to_ne_bytes()) {
            tracing::error!(error = %e, "cannot write the io_uring engine's eventfd");
        }
    }
}

/// See the module docs.
pub struct UringEngine {
    shared: Arc<Shared>,
    ring_thread: Option<JoinHandle<()>>,
    device_bytes: u64,
    queue_depth: usize,
    pending_limit: usize,
    fixed_buffers: bool,
}

impl UringEngine {
    /// An engine over `file` (opened with O_DIRECT where possible) of
    /// `device_bytes`. Fails when the kernel refuses io_uring (old kernel,
    /// seccomp, `kernel.io_uring_disabled`), so that callers can fall back
    /// to psync.
    pub fn new(file: File, device_bytes: u64, opts: &OpenOptions) -> std::io::Result<UringEngine> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            room: Condvar::new(),
            sleeping: AtomicBool::new(false),
            eventfd: new_eventfd()?,
            pool: BufPool::new(&opts.pool),
            counters: Counters::default(),
        });
        let requested_depth = opts.queue_depth.max(1);
        // The ring is built and registered on the ring thread, its only
        // user; the thread reports how that went before `new` returns.
        let (setup_tx, setup_rx) = mpsc::sync_channel(1);
        let thread_shared = shared.clone();
        let ring_thread = std::thread::Builder::new()
            .name("ringcache-uring".into())
            .spawn(move || {
                match Ring::setup(file, requested_depth, thread_shared) {
                    Ok(mut ring) => {
                        let _ = setup_tx.send(Ok((ring.depth, ring.fixed_buffers)));
                        ring.run();
                    }
                    Err(e) => {
                        let _ = setup_tx.send(Err(e));
                    }
                };
            })?;
        let setup = setup_rx.recv().unwrap_or_else(|_| {
            Err(std::io::Error::other(
                "the io_uring ring thread died while setting up",
            ))
        });
        match setup {
            Ok((queue_depth, fixed_buffers)) => Ok(UringEngine {
                shared,
                ring_thread: Some(ring_thread),
                device_bytes,
                queue_depth,
                pending_limit: pending_limit(queue_depth),
                fixed_buffers,
            }),
            Err(e) => {
                let _ = ring_thread.join();
                Err(e)
            }
        }
    }

    /// Whether the pool's buffers are registered with the kernel.
    pub fn fixed_buffers(&self) -> bool {
        self.fixed_buffers
    }

    /// The most ops in flight at once.
    pub fn queue_depth(&self) -> usize {
        self.queue_depth
    }

    /// A snapshot of the engine's counters.
    pub fn stats(&self) -> UringStats {
        let c = &self.shared.counters;
        UringStats {
            fixed_sqes: c.fixed_sqes.load(Ordering::Relaxed),
            plain_sqes: c.plain_sqes.load(Ordering::Relaxed),
            enters: c.enters.load(Ordering::Relaxed),
            sqes_submitted: c.sqes_submitted.load(Ordering::Relaxed),
            max_sqes_per_enter: c.max_sqes_per_enter.load(Ordering::Relaxed),
        }
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
        let s = &*self.shared;
        let mut refused = Vec::new();
        let mut queued = false;
        let mut pending = s.lock();
        for op in ops.drain(..) {
            if let Err(e) = check_request(&op, self.device_bytes) {
                refused.push(Completion {
                    tag: op.tag,
                    result: Err(e),
                    buf: op.buf,
                });
                continue;
            }
            while pending.ops.len() >= self.pending_limit && !pending.closed {
                s.wake();
                pending.waiters += 1;
                pending = s.room.wait(pending).unwrap_or_else(|e| e.into_inner());
                pending.waiters -= 1;
            }
            if pending.closed {
                refused.push(Completion {
                    tag: op.tag,
                    result: Err(IoError::Stopped),
                    buf: op.buf,
                });
                continue;
            }
            pending.ops.push_back((op, cq.clone()));
            queued = true;
        }
        drop(pending);
        if queued {
            s.wake();
        }
        if !refused.is_empty() {
            cq.push_all(refused);
        }
    }

    fn alloc(&self, len: usize) -> IoBuf {
        self.shared.pool.alloc(len)
    }
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        // No submitter is left (they borrow the engine). The ring thread
        // finishes what is pending and in flight, then exits.
        self.shared.lock().stopping = true;
        // Kick unconditionally: besides waking the thread, this completes
        // its armed eventfd read, which must be done before the ring goes.
        self.shared.kick();
        if let Some(thread) = self.ring_thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the io_uring ring thread panicked");
        }
    }
}

/// How many pending ops make submitters wait, for a queue depth.
fn pending_limit(depth: usize) -> usize {
    depth * PENDING_PER_SLOT
}

/// A new blocking eventfd (a read of it in the ring waits for a write).
fn new_eventfd() -> std::io::Result<File> {
    // SAFETY: eventfd(2) takes no pointers; it returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created by eventfd(2) and nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// One op between its SQE and its last CQE.
struct InFlight {
    op: Op,
    cq: CompletionQueue,
    /// Bytes already transferred (short transfers resubmit the rest).
    done: usize,
}

/// The ring thread's state.
///
/// Field order is drop order, and it matters: `ring` goes first, so the
/// kernel is done with the registered buffers (in `shared.pool`), the
/// registered file (`_device`), the eventfd (`shared.eventfd`) and its read
/// buffer (`wake_buf`) before any of them is freed or closed. `Drop for
/// Ring` makes sure nothing is still in flight when `ring` goes.
struct Ring {
    ring: IoUring,
    /// Ops submitted to the kernel or about to be, keyed by `user_data`.
    in_flight: Slab<InFlight>,
    /// Slab keys that need an SQE: new ops and remainders of short
    /// transfers.
    ready: VecDeque<usize>,
    /// What the armed eventfd read writes into (the value is not needed).
    wake_buf: Box<[u8; 8]>,
    /// Whether an eventfd read is in the ring.
    wake_armed: bool,
    /// Latched from `Pending::stopping`.
    stopping: bool,
    /// The most ops in flight.
    depth: usize,
    fixed_buffers: bool,
    /// Scratch space kept across turns so a turn allocates nothing.
    cqes: Vec<(u64, i32)>,
    routed: Vec<(CompletionQueue, Completion)>,
    batch: Vec<Completion>,
    _device: File,
    shared: Arc<Shared>,
}

impl Ring {
    fn setup(device: File, requested_depth: u32, shared: Arc<Shared>) -> std::io::Result<Ring> {
        let ring = IoUring::builder().setup_clamp().build(requested_depth)?;
        let depth = (ring.params().sq_entries().min(requested_depth)) as usize;
        ring.submitter().register_files(&[device.as_raw_fd()])?;
        let fixed_buffers = register_pool(&ring, &shared.pool);
        Ok(Ring {
            ring,
            in_flight: Slab::with_capacity(depth),
            ready: VecDeque::with_capacity(depth),
            wake_buf: Box::new([0; 8]),
            wake_armed: false,
            stopping: false,
            depth,
            fixed_buffers,
            cqes: Vec::with_capacity(depth + 1),
            routed: Vec::with_capacity(depth),
            batch: Vec::with_capacity(depth),
            _device: device,
            shared,
        })
    }

    fn run(&mut self) {
        let mut failing_enters = 0u64;
        loop {
            let drained = self.take_pending();
            self.push_sqes();
            if self.stopping && drained && self.in_flight.is_empty() && !self.wake_armed {
                return;
            }
            match self.ring.submit_and_wait(1) {
                Ok(submitted) => {
                    failing_enters = 0;
                    self.count_enter(submitted);
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    // EAGAIN/ENOMEM (short of memory) or EBUSY (completions
                    // backed up): reap, then try again shortly.
                    if failing_enters.is_multiple_of(1000) {
                        tracing::warn!(error = %e, "io_uring_enter failed; retrying");
                    }
                    failing_enters += 1;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            self.shared.sleeping.store(false, Ordering::SeqCst);
            self.reap();
            self.route();
        }
    }

    /// Move pending ops into the slab, up to the queue depth. Returns
    /// whether the pending queue is now empty.
    fn take_pending(&mut self) -> bool {
        let mut pending = self.shared.lock();
        while self.in_flight.len() < self.depth {
            let Some((op, cq)) = pending.ops.pop_front() else {
                break;
            };
            let key = self.in_flight.insert(InFlight { op, cq, done: 0 });
            self.ready.push_back(key);
        }
        if pending.waiters > 0 && pending.ops.len() < pending_limit(self.depth) {
            self.shared.room.notify_all();
        }
        self.stopping = pending.stopping;
        let drained = pending.ops.is_empty();
        if drained && !self.stopping {
            // From here on, new work must wake us: see `Shared::wake`.
            self.shared.sleeping.store(true, Ordering::SeqCst);
        }
        drained
    }

    /// Push an SQE for every ready op (while the SQ has room) and re-arm the
    /// eventfd read.
    fn push_sqes(&mut self) {
        let registered = self.fixed_buffers.then(|| self.shared.pool.iovecs());
        let (mut fixed, mut plain) = (0, 0);
        let mut sq = self.ring.submission();
        while let Some(&key) = self.ready.front() {
            if sq.is_full() {
                break;
            }
            self.ready.pop_front();
            let Some(entry) = self.in_flight.get_mut(key) else {
                continue;
            };
            let (sqe, is_fixed) = prepare(entry, key, registered);
            // SAFETY: the SQE points into `entry.op.buf` (at most its length
            // past `done`, see `prepare`), whose memory stays put and alive
            // while the entry is in the slab; the entry leaves the slab only
            // when its CQE has been reaped, and `Drop for Ring` waits for
            // outstanding CQEs (or leaks the slab) before the buffers could
            // be freed. A fixed SQE names a buffer index registered with this
            // ring and lies inside that buffer (`registered_index`). The file
            // is fixed file 0, registered in `setup`.
            if unsafe { sq.push(&sqe) }.is_err() {
                self.ready.push_front(key);
                break;
            }
            if is_fixed {
                fixed += 1;
            } else {
                plain += 1;
            }
        }
        if !self.wake_armed && !self.stopping && !sq.is_full() {
            let read = opcode::Read::new(
                types::Fd(self.shared.eventfd.as_raw_fd()),
                self.wake_buf.as_mut_ptr(),
                8,
            )
            .build()
            .user_data(WAKE_USER_DATA);
            // SAFETY: `wake_buf` is a heap allocation of 8 bytes owned by
            // this `Ring`; nothing touches it until the read's CQE, and
            // `Drop for Ring` completes the read (or leaks the buffer)
            // before it is freed. The eventfd lives in `shared`, which
            // outlives the ring (field order).
            if unsafe { sq.push(&read) }.is_ok() {
                self.wake_armed = true;
            }
        }
        drop(sq);
        let c = &self.shared.counters;
        c.fixed_sqes.fetch_add(fixed, Ordering::Relaxed);
        c.plain_sqes.fetch_add(plain, Ordering::Relaxed);
    }

    fn count_enter(&self, submitted: usize) {
        let c = &self.shared.counters;
        let submitted = submitted as u64;
        c.enters.fetch_add(1, Ordering::Relaxed);
        c.sqes_submitted.fetch_add(submitted, Ordering::Relaxed);
        c.max_sqes_per_enter.fetch_max(submitted, Ordering::Relaxed);
    }

    /// Take every CQE: finish its op, or queue the rest of a short transfer.
    fn reap(&mut self) {
        self.cqes.clear();
        self.cqes
            .extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
        for &(user_data, res) in &self.cqes {
            if user_data == WAKE_USER_DATA {
                self.wake_armed = false;
                if res < 0 && res != -libc::EINTR && res != -libc::ECANCELED {
                    tracing::warn!(
                        error = %std::io::Error::from_raw_os_error(-res),
                        "the io_uring engine's eventfd read failed"
                    );
                    // It is re-armed next turn: do not spin on a failure.
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                continue;
            }
            let key = user_data as usize;
            let Some(entry) = self.in_flight.get_mut(key) else {
                tracing::error!(user_data, "io_uring completion for no request");
                continue;
            };
            match outcome(entry, res) {
                None => self.ready.push_back(key),
                Some(result) => {
                    let InFlight { op, cq, .. } = self.in_flight.remove(key);
                    self.routed.push((
                        cq,
                        Completion {
                            tag: op.tag,
                            result,
                            buf: op.buf,
                        },
                    ));
                }
            }
        }
    }

    /// Hand the reaped completions to their queues: consecutive completions
    /// for the same queue go in one batch.
    fn route(&mut self) {
        let mut current: Option<CompletionQueue> = None;
        for (cq, completion) in self.routed.drain(..) {
            match &current {
                Some(cur) if cur.same_queue(&cq) => {}
                _ => {
                    if let Some(done) = current.replace(cq) {
                        done.push_all(self.batch.drain(..));
                    }
                }
            }
            self.batch.push(completion);
        }
        if let Some(done) = current {
            done.push_all(self.batch.drain(..));
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // After a normal exit nothing is in flight. After a panic on the
        // ring thread the kernel may still write into buffers in the slab
        // or into `wake_buf`: wait for those CQEs before anything is freed.
        for key in self.ready.drain(..) {
            // Not in the kernel (no SQE pushed since its last CQE).
            if let Some(InFlight { op, cq, .. }) = self.in_flight.try_remove(key) {
                cq.push(Completion {
                    tag: op.tag,
                    result: Err(IoError::Stopped),
                    buf: op.buf,
                });
            }
        }
        if self.wake_armed {
            self.shared.kick();
        }
        while !self.in_flight.is_empty() || self.wake_armed {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(_) => break,
            }
            for cqe in self.ring.completion() {
                if cqe.user_data() == WAKE_USER_DATA {
                    self.wake_armed = false;
                } else if let Some(InFlight { op, cq, .. }) =
                    self.in_flight.try_remove(cqe.user_data() as usize)
                {
                    cq.push(Completion {
                        tag: op.tag,
                        result: Err(IoError::Stopped),
                        buf: op.buf,
                    });
                }
            }
        }
        if self.in_flight.is_empty() && !self.wake_armed {
            // Closing the ring releases what it registered later, from a
            // kernel work item; unregistering now lets go of the device
            // file (and any lock on it) before the engine's drop returns,
            // and unpins the pool. Nothing is in flight, so this is safe.
            let submitter = self.ring.submitter();
            if let Err(e) = submitter.unregister_files() {
                tracing::warn!(error = %e, "cannot unregister the device from io_uring");
            }
            if self.fixed_buffers
                && let Err(e) = submitter.unregister_buffers()
            {
                tracing::warn!(error = %e, "cannot unregister the buffer pool from io_uring");
            }
        } else {
            tracing::error!(
                in_flight = self.in_flight.len(),
                "io_uring ring torn down with I/O in flight; leaking its buffers"
            );
            std::mem::forget(std::mem::take(&mut self.in_flight));
            std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new([0; 8])));
        }
        // Whatever is still pending never reaches the kernel.
        let mut pending = self.shared.lock();
        pending.closed = true;
        let orphans = std::mem::take(&mut pending.ops);
        drop(pending);
        self.shared.room.notify_all();
        for (op, cq) in orphans {
            cq.push(Completion {
                tag: op.tag,
                result: Err(IoError::Stopped),
                buf: op.buf,
            });
        }
    }
}

/// Register every pool buffer with `ring`. Returns whether that worked.
fn register_pool(ring: &IoUring, pool: &BufPool) -> bool {
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
    // back to the pool whole) and is freed only with the pool. The pool
    // lives in `Shared`, which the `Ring` owning this ring holds in a field
    // dropped after the ring; before the `Ring` exists, the caller holds the
    // `Arc<Shared>` for longer than this ring.
    match unsafe { ring.submitter().register_buffers(&iovecs) } {
        Ok(()) => true,
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
