//! One I/O trait, three engines.
//!
//! - [`uring`]: io_uring through the `io-uring` crate: O_DIRECT, registered
//!   buffers and files, batched submission; the threads that wait for
//!   completions reap them, so it has no thread of its own.
//! - [`psync`]: pread/pwrite, the fallback where io_uring is refused.
//! - [`sim`]: an in-memory device for tests that injects errors, torn
//!   writes and crashes, deterministically from a seed.
//!
//! Requests are submitted in batches with [`IoEngine::submit`]; each
//! completion goes to the [`CompletionQueue`] of the requester, carrying the
//! request's buffer back. Flush means: every write that completed before the
//! flush was submitted is durable once the flush completes.
//!
//! This is the `ringcache-io` crate; the core crate re-exports it as
//! `ringcache::io`. It is a crate of its own so that Miri and the
//! hand-off model (shuttle, `--cfg ringcache_model`) build it alone.
//!
//! Unsafe code lives in the io_uring engine only (`uring`: SQEs that name
//! buffers, and the registration of buffers and files), allowed there by
//! name and denied everywhere else. Alignment of the buffers comes from
//! their type ([`buf::Block`]), with no unsafe code.
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod buf;
pub mod psync;
pub mod sim;
mod sync;
#[allow(unsafe_code)]
pub mod uring;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Weak};

use sync::{AtomicUsize, Condvar, Mutex, MutexGuard};

pub use buf::{BufPool, IoBuf, PoolConfig};

/// What went wrong with one I/O.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The operating system refused or failed the I/O.
    #[error("I/O error at offset {offset}: {source}")]
    Os {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    /// The device returned fewer bytes than asked (past its end).
    #[error("short {what} at offset {offset}: {done} of {wanted} bytes")]
    Short {
        what: &'static str,
        offset: u64,
        done: usize,
        wanted: usize,
    },
    /// The request does not fit the device or is not 4 KiB-aligned.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The simulated device injected this fault.
    #[error("injected {0} fault")]
    Injected(&'static str),
    /// The simulated machine crashed: nothing more reaches the device.
    #[error("device crashed (simulated)")]
    Crashed,
    /// The engine has shut down.
    #[error("I/O engine stopped")]
    Stopped,
}

/// The kind of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Write,
    Flush,
}

/// What a request is for; engines do not care, but the sim engine reports
/// which kind of write a crash or fault hit, and stats count by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoHint {
    Data,
    Log,
    Checkpoint,
    Superblock,
    RegionHeader,
    Other,
}

/// One request. `buf.len()` bytes are read or written at `offset`; both must
/// be multiples of 4096.
#[derive(Debug)]
pub struct Op {
    pub kind: OpKind,
    pub offset: u64,
    pub buf: IoBuf,
    pub tag: u64,
    pub hint: IoHint,
}

impl Op {
    /// Read `buf.len()` bytes at `offset`.
    pub fn read(offset: u64, buf: IoBuf, tag: u64, hint: IoHint) -> Op {
        Op {
            kind: OpKind::Read,
            offset,
            buf,
            tag,
            hint,
        }
    }
    /// Write `buf` at `offset`.
    pub fn write(offset: u64, buf: IoBuf, tag: u64, hint: IoHint) -> Op {
        Op {
            kind: OpKind::Write,
            offset,
            buf,
            tag,
            hint,
        }
    }
    /// Make completed writes durable.
    pub fn flush(tag: u64) -> Op {
        Op {
            kind: OpKind::Flush,
            offset: 0,
            buf: IoBuf::empty(),
            tag,
            hint: IoHint::Other,
        }
    }
}

/// The outcome of one request, with its buffer handed back.
#[derive(Debug)]
pub struct Completion {
    pub tag: u64,
    pub result: Result<usize, IoError>,
    pub buf: IoBuf,
}

/// What a driving engine did for a waiter (see [`Driver`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drive {
    /// It reaped (or the goal was already met): look at the queue again.
    Reaped,
    /// Another thread drives the engine; it pokes the queue when it stops.
    Busy,
    /// Nothing is in flight; a later submission pokes the queue.
    Idle,
}

/// An engine whose completions are reaped by the threads that wait for
/// them, not by a thread of its own (the io_uring engine). A queue that
/// received requests of such an engine drives it while it waits.
pub(crate) trait Driver: Send + Sync {
    /// Reap completions until `cq` holds one, or say why not.
    fn drive(&self, cq: &CompletionQueue) -> Drive;
    /// Reap what has completed, without blocking.
    fn poll(&self);
    /// Reap what has been posted, without blocking or entering the
    /// kernel (see [`CompletionQueue::poll_posted_into`]).
    fn poll_posted(&self) {
        self.poll();
    }
}

#[derive(Default)]
struct CqState {
    done: VecDeque<Completion>,
    /// Bumped by a driver that stopped driving, so that a waiter takes
    /// over (a count, so that no waiter can take another's poke).
    pokes: u64,
    /// `pokes` when the waker was last disarmed or armed: a poke since
    /// then was not seen by the waiter (see [`CompletionQueue::arm_waker`]).
    pokes_seen: u64,
    /// Threads blocked in [`CompletionQueue::wait_into`].
    sleepers: usize,
    /// Engines to drive for this queue's completions: (identity, engine).
    drivers: Vec<(usize, Weak<dyn Driver>)>,
    /// Called once when completions arrive (or a poke) after
    /// [`CompletionQueue::arm_waker`] (see [`CompletionQueue::set_waker`]).
    waker: Option<Arc<dyn Fn() + Send + Sync>>,
    armed: bool,
}

impl CqState {
    /// The waker to call (disarmed), if armed and `now` something
    /// happened.
    fn take_waker(&mut self, now: bool) -> Option<Arc<dyn Fn() + Send + Sync>> {
        if now && self.armed {
            self.armed = false;
            self.waker.clone()
        } else {
            None
        }
    }
}

#[derive(Default)]
struct CqInner {
    state: Mutex<CqState>,
    ready: Condvar,
    /// Ops of this queue an io_uring engine has in flight: a thread asleep
    /// on a queue with none needs no driver, so a ring pokes only waiters
    /// whose queue has some.
    in_flight: AtomicUsize,
}

/// Where the completions of one requester arrive. Cheap to clone; the
/// engine holds a clone per request in flight, so a requester that goes
/// away leaves its buffers with the engine until the kernel is done.
///
/// Waiting on a queue drives the engines that need it (io_uring): the
/// waiting thread itself enters the kernel and reaps, so a requester that
/// submits and waits costs no hand-off to another thread.
#[derive(Clone, Default)]
pub struct CompletionQueue(Arc<CqInner>);

impl CompletionQueue {
    /// A new, empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new, empty queue with room for `n` completions before it grows:
    /// a reader that keeps up to `n` requests in flight never allocates
    /// for its completions, however they bunch up.
    pub fn with_capacity(n: usize) -> Self {
        let q = Self::default();
        q.lock().done.reserve(n);
        q
    }

    fn lock(&self) -> MutexGuard<'_, CqState> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this handle is the only one left (nobody else can wait on
    /// the queue or be routed to it).
    pub(crate) fn only_holder(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }

    /// Ops of this queue an io_uring engine has in flight.
    pub(crate) fn ops_in_flight(&self) -> usize {
        self.0.in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn count_in_flight(&self, delta: isize) {
        use std::sync::atomic::Ordering::SeqCst;
        if delta >= 0 {
            self.0.in_flight.fetch_add(delta as usize, SeqCst);
        } else {
            self.0.in_flight.fetch_sub(delta.unsigned_abs(), SeqCst);
        }
    }

    /// Deliver one completion (engines call this).
    pub fn push(&self, c: Completion) {
        self.push_all(std::iter::once(c));
    }

    /// Deliver several completions with one lock and at most one wakeup
    /// (engines call this to route a batch of completions).
    pub fn push_all(&self, cs: impl IntoIterator<Item = Completion>) {
        let mut q = self.lock();
        let before = q.done.len();
        q.done.extend(cs);
        let arrived = q.done.len() > before;
        let wake = arrived && q.sleepers > 0;
        let waker = q.take_waker(arrived);
        drop(q);
        if wake {
            self.0.ready.notify_all();
        }
        if let Some(w) = waker {
            w();
        }
    }

    /// Have `waker` called when completions arrive for a thread that
    /// waits elsewhere than in [`CompletionQueue::wait_into`] (in poll(2)
    /// on a socket and an eventfd the waker writes, say): once per
    /// [`CompletionQueue::arm_waker`].
    pub fn set_waker(&self, waker: Arc<dyn Fn() + Send + Sync>) {
        self.lock().waker = Some(waker);
    }

    /// About to sleep: arm the waker, unless completions are already there
    /// (then `false`: take them instead of sleeping). The next completion
    /// or poke calls the waker once and disarms it.
    pub fn arm_waker(&self) -> bool {
        let mut q = self.lock();
        if !q.done.is_empty() || q.pokes != q.pokes_seen {
            // (A poke while it was awake and disarmed: it looks again.)
            q.pokes_seen = q.pokes;
            return false;
        }
        q.armed = q.waker.is_some();
        true
    }

    /// Awake again after [`CompletionQueue::arm_waker`]: completions need
    /// not call the waker (the caller looks for them itself before it
    /// next sleeps, and arms it again then).
    pub fn disarm_waker(&self) {
        let mut q = self.lock();
        q.armed = false;
        q.pokes_seen = q.pokes;
    }

    /// Ask whoever waits on this queue to look again (a driver that stops
    /// driving, or new work for an idle waiter).
    pub(crate) fn poke(&self) {
        let mut q = self.lock();
        q.pokes = q.pokes.wrapping_add(1);
        let wake = q.sleepers > 0;
        let waker = q.take_waker(true);
        drop(q);
        if wake {
            self.0.ready.notify_all();
        }
        if let Some(w) = waker {
            w();
        }
    }

    /// Note that `driver` has requests for this queue in flight.
    pub(crate) fn attach<D: Driver + 'static>(&self, driver: &Arc<D>) {
        let id = Arc::as_ptr(driver) as *const () as usize;
        let mut q = self.lock();
        if !q.drivers.iter().any(|(d, _)| *d == id) {
            q.drivers.retain(|(_, w)| w.strong_count() > 0);
            let weak: Weak<D> = Arc::downgrade(driver);
            q.drivers.push((id, weak));
            // A thread already asleep on this queue knew of no engine to
            // drive: wake it to look again.
            if q.sleepers > 0 {
                q.pokes = q.pokes.wrapping_add(1);
                drop(q);
                self.0.ready.notify_all();
            }
        }
    }

    /// Whether at least one completion is waiting to be taken.
    pub(crate) fn has_completions(&self) -> bool {
        !self.lock().done.is_empty()
    }

    /// Whether `self` and `other` are handles of the same queue.
    pub fn same_queue(&self, other: &CompletionQueue) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Block until at least one completion is there, then take all of them
    /// into `out`. Drives the engines that need it meanwhile.
    pub fn wait_into(&self, out: &mut Vec<Completion>) {
        loop {
            let (driver, more, seen) = {
                let mut q = self.lock();
                if !q.done.is_empty() {
                    out.extend(q.done.drain(..));
                    return;
                }
                let mut live = q.drivers.iter().filter_map(|(_, w)| w.upgrade());
                (live.next(), live.next().is_some(), q.pokes)
            };
            let drive = match &driver {
                // Several engines: poll each, then sleep briefly (below).
                Some(_) if more => {
                    self.poll_drivers();
                    Drive::Busy
                }
                Some(d) => d.drive(self),
                None => Drive::Idle,
            };
            drop(driver);
            if drive == Drive::Reaped {
                continue;
            }
            let mut q = self.lock();
            q.sleepers += 1;
            while q.done.is_empty() && q.pokes == seen {
                if more {
                    q = self
                        .0
                        .ready
                        .wait_timeout(q, std::time::Duration::from_millis(1))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    break;
                }
                q = self.0.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            q.sleepers -= 1;
        }
    }

    fn poll_drivers(&self) {
        self.poll_drivers_with(|d| d.poll());
    }

    fn poll_drivers_with(&self, poll: impl Fn(&dyn Driver)) {
        // One at a time, not collected first: no allocation per poll. A
        // driver's poll routes completions to queues, this one included,
        // so the lock is not held across it.
        let mut i = 0;
        loop {
            let driver = match self.lock().drivers.get(i) {
                Some((_, w)) => w.upgrade(),
                None => break,
            };
            i += 1;
            if let Some(d) = driver {
                poll(&*d);
            }
        }
    }

    /// Take whatever completions are there without blocking (reaping what
    /// the engines have completed first).
    pub fn poll_into(&self, out: &mut Vec<Completion>) {
        self.poll_drivers();
        out.extend(self.lock().done.drain(..));
    }

    /// [`CompletionQueue::poll_into`] without entering the kernel to
    /// post completions: for a thread whose submissions are the ones in
    /// flight and that has made a system call since they could have
    /// completed (on the io_uring engine, a completion is posted by work
    /// queued for its submitter, run when that thread next leaves the
    /// kernel: the poll(2) it woke from, the recv(2) of a request). A
    /// thread that sleeps in poll(2) on [`IoEngine::wake_fd`] loses
    /// nothing by it: with work queued the poll returns at once.
    pub fn poll_posted_into(&self, out: &mut Vec<Completion>) {
        self.poll_drivers_with(|d| d.poll_posted());
        out.extend(self.lock().done.drain(..));
    }
}

/// An I/O engine over one device (a file or a block device).
pub trait IoEngine: Send + Sync {
    /// "uring", "psync" or "sim".
    fn name(&self) -> &'static str;

    /// Size of the device in bytes.
    fn device_bytes(&self) -> u64;

    /// Submit every op in `ops` (draining it). Completions arrive on `cq`,
    /// in any order; wait for them with [`CompletionQueue::wait_into`],
    /// which may reap for the engine (one queue should serve one engine).
    /// Blocks only for back-pressure when the engine's queue
    /// is full; never drops a request.
    fn submit(&self, ops: &mut Vec<Op>, cq: &CompletionQueue);

    /// Submit `ops` as [`IoEngine::submit`] does, then wait as
    /// [`CompletionQueue::wait_into`] does. The io_uring engine sends the
    /// ops and waits for completions in one system call when it can.
    fn submit_and_wait(&self, ops: &mut Vec<Op>, cq: &CompletionQueue, out: &mut Vec<Completion>) {
        self.submit(ops, cq);
        cq.wait_into(out);
    }

    /// For a thread that waits in poll(2) instead of
    /// [`CompletionQueue::wait_into`] (on a socket as well, say): a
    /// descriptor of the engine that polls readable while completions of
    /// this thread's submissions wait to be reaped, with
    /// [`CompletionQueue::poll_into`]. The io_uring engine gives the ring
    /// of the calling thread's lane (its completions are posted when the
    /// submitter is in the kernel, and the ring then polls readable);
    /// engines whose own threads push completions give none (use
    /// [`CompletionQueue::set_waker`]).
    fn wake_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }

    /// The io_uring engine's counters (submissions, SQEs per
    /// `io_uring_enter`); `None` for the other engines.
    fn uring_stats(&self) -> Option<uring::UringStats> {
        None
    }

    /// A buffer of `len` bytes, from the engine's (registered) pool when one
    /// is free.
    fn alloc(&self, len: usize) -> IoBuf {
        IoBuf::new(len)
    }
}

/// Which engine to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineKind {
    /// io_uring, falling back to psync (with a logged reason) when refused.
    #[default]
    Auto,
    Uring,
    Psync,
}

impl std::str::FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(EngineKind::Auto),
            "uring" | "io_uring" => Ok(EngineKind::Uring),
            "psync" => Ok(EngineKind::Psync),
            other => Err(format!("unknown I/O engine {other:?} (auto, uring, psync)")),
        }
    }
}

/// Options for opening a device.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub engine: EngineKind,
    /// Open read-only (tools); writes then fail.
    pub read_only: bool,
    /// io_uring submission queue depth (of each ring).
    pub queue_depth: u32,
    /// io_uring rings at most, 0 for the default
    /// ([`uring::DEFAULT_RINGS`]): each submitting thread uses the ring of
    /// its lane (its number modulo this), opened on first use.
    pub rings: u32,
    /// Buffers to register.
    pub pool: PoolConfig,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            engine: EngineKind::Auto,
            read_only: false,
            queue_depth: 128,
            rings: 0,
            pool: PoolConfig::default(),
        }
    }
}

/// Open `path` with O_DIRECT (falling back to buffered I/O, with a warning,
/// on filesystems that refuse O_DIRECT). Returns the file, its size, and
/// whether O_DIRECT is on.
pub fn open_device(path: &Path, read_only: bool) -> std::io::Result<(std::fs::File, u64, bool)> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(!read_only);
    let (mut file, direct) = match o.clone().custom_flags(libc::O_DIRECT).open(path) {
        Ok(f) => (f, true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::warn!(path = %path.display(), "O_DIRECT refused by the filesystem; using buffered I/O");
            (o.open(path)?, false)
        }
        Err(e) => return Err(e),
    };
    // One writer at a time; readers (the offline tools) only when no writer
    // holds it. The lock lives as long as the engine holds the file.
    // An io_uring instance that just closed releases its registered file
    // from a kernel work item, a moment later: give a previous holder that
    // long before calling the device busy.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let locked = loop {
        let r = if read_only {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match r {
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => break other,
        }
    };
    if let Err(e) = locked {
        return Err(match e {
            std::fs::TryLockError::WouldBlock => std::io::Error::new(
                std::io::ErrorKind::ResourceBusy,
                format!(
                    "{} is in use by another process (is a ringcached running on it?)",
                    path.display()
                ),
            ),
            std::fs::TryLockError::Error(e) => e,
        });
    }
    // SEEK_END gives the size of regular files and block devices alike.
    let bytes = file.seek(SeekFrom::End(0))?;
    Ok((file, bytes, direct))
}

/// Open the device at `path` with the engine `opts` asks for.
pub fn open(path: &Path, opts: &OpenOptions) -> std::io::Result<Arc<dyn IoEngine>> {
    let (file, bytes, _direct) = open_device(path, opts.read_only)?;
    match opts.engine {
        EngineKind::Psync => Ok(Arc::new(psync::PsyncEngine::new(file, bytes, &opts.pool))),
        EngineKind::Uring => Ok(Arc::new(uring::UringEngine::new(file, bytes, opts)?)),
        EngineKind::Auto => match uring::UringEngine::new(file.try_clone()?, bytes, opts) {
            Ok(e) => Ok(Arc::new(e)),
            Err(e) => {
                tracing::warn!(error = %e, "io_uring refused; falling back to the psync engine");
                Ok(Arc::new(psync::PsyncEngine::new(file, bytes, &opts.pool)))
            }
        },
    }
}

/// Submit `op` and wait for its completion on a private queue. For cold
/// paths (recovery, format, tools); the hot path batches.
pub fn run_one(engine: &dyn IoEngine, op: Op) -> Result<IoBuf, IoError> {
    let cq = CompletionQueue::new();
    let mut ops = vec![op];
    let mut out = Vec::with_capacity(1);
    engine.submit_and_wait(&mut ops, &cq, &mut out);
    match out.pop() {
        Some(c) => c.result.map(|_| c.buf),
        None => Err(IoError::Stopped),
    }
}

/// Read `len` bytes (a multiple of 4096) at `offset`.
pub fn read_at(
    engine: &dyn IoEngine,
    offset: u64,
    len: usize,
    hint: IoHint,
) -> Result<IoBuf, IoError> {
    let buf = engine.alloc(len);
    run_one(engine, Op::read(offset, buf, 0, hint))
}

/// Write `buf` at `offset`.
pub fn write_at(
    engine: &dyn IoEngine,
    offset: u64,
    buf: IoBuf,
    hint: IoHint,
) -> Result<(), IoError> {
    run_one(engine, Op::write(offset, buf, 0, hint)).map(|_| ())
}

/// Make every completed write durable.
pub fn flush(engine: &dyn IoEngine) -> Result<(), IoError> {
    run_one(engine, Op::flush(0)).map(|_| ())
}

/// Check that a request is aligned and inside a device of `device_bytes`.
pub(crate) fn check_request(op: &Op, device_bytes: u64) -> Result<(), IoError> {
    if op.kind == OpKind::Flush {
        return Ok(());
    }
    let len = op.buf.len() as u64;
    if !op.offset.is_multiple_of(4096) || !len.is_multiple_of(4096) || len == 0 {
        return Err(IoError::BadRequest(format!(
            "offset {} length {} not 4096-aligned",
            op.offset, len
        )));
    }
    match op.offset.checked_add(len) {
        Some(end) if end <= device_bytes => Ok(()),
        _ => Err(IoError::BadRequest(format!(
            "offset {} length {} past the device end {}",
            op.offset, len, device_bytes
        ))),
    }
}

#[cfg(all(test, not(ringcache_model)))]
mod waker_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn completion(tag: u64) -> Completion {
        Completion {
            tag,
            result: Ok(0),
            buf: IoBuf::empty(),
        }
    }

    /// A waker is called once per arming, by the next completion or poke,
    /// and arming with completions waiting says to take them instead.
    #[test]
    fn an_armed_waker_is_called_once_by_the_next_completion_or_poke() {
        let cq = CompletionQueue::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        cq.set_waker(Arc::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        }));
        // Not armed: completions arrive silently.
        cq.push(completion(1));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert!(!cq.arm_waker(), "completions wait: do not sleep");
        let mut out = Vec::new();
        cq.poll_into(&mut out);
        assert_eq!(out.len(), 1);
        // Armed: the next push calls it, once.
        assert!(cq.arm_waker());
        cq.push_all([completion(2), completion(3)]);
        cq.push(completion(4));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        out.clear();
        cq.poll_into(&mut out);
        assert_eq!(out.len(), 3);
        // A poke (a driver letting go) wakes an armed sleeper too.
        assert!(cq.arm_waker());
        cq.poke();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // The poke is news to the one it woke: it looks once more before
        // it sleeps again.
        assert!(!cq.arm_waker());
        // An empty batch is not an arrival.
        assert!(cq.arm_waker());
        cq.push_all(std::iter::empty());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// Awake and disarmed, nothing calls the waker (the waiter looks
    /// itself), and what came meanwhile keeps it from sleeping.
    #[test]
    fn a_disarmed_waker_is_not_called_and_arming_sees_what_came_meanwhile() {
        let cq = CompletionQueue::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        cq.set_waker(Arc::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        }));
        assert!(cq.arm_waker());
        cq.disarm_waker();
        cq.push(completion(1));
        assert_eq!(calls.load(Ordering::SeqCst), 0, "disarmed: no call");
        assert!(!cq.arm_waker(), "a completion waits: do not sleep");
        let mut out = Vec::new();
        cq.poll_into(&mut out);
        assert!(cq.arm_waker());
        cq.disarm_waker();
        cq.poke();
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert!(!cq.arm_waker(), "a poke while disarmed: look again");
        assert!(cq.arm_waker());
    }
}
