//! The driver and waiter roles of the io_uring engine, checked over a ring
//! that stands in for the kernel's.
//!
//! [`ModelRing`] queues SQEs, "submits" them at an enter, and completes
//! them from a device thread of its own, in an order and with results
//! (whole, short, or failed) drawn from a seeded generator; an enter that
//! waits sleeps until enough completions are posted, as the kernel's does.
//! The requester threads are the engine's real code: `Shared::submit`,
//! `submit_and_wait`, `CompletionQueue::wait_into`, `poll`, a queue dropped
//! with ops in flight. Each scenario then checks that every op completed
//! once, on its own queue, with the result the device gave, and that the
//! ring is left with nothing in flight, no waiter with work, and every
//! buffer back in its pool.
//!
//! Two ways to run the same scenarios:
//! - plain `cargo test` (and Miri: `cargo +nightly miri test -p
//!   ringcache-io --lib uring::model`): std's threads and locks, as many
//!   rounds as a test may take, whatever interleavings the machine gives;
//! - the model check: `RUSTFLAGS="--cfg ringcache_model" cargo test -p
//!   ringcache-io --lib uring::model` (with a target directory of its own):
//!   the engine's locks, condition variables and atomics are shuttle's
//!   (`crate::sync`), and shuttle's schedulers (random and PCT) choose
//!   every switch between threads, thousands of schedules per scenario. A
//!   lost wake-up shows as shuttle's "deadlock" (every thread asleep), with
//!   the schedule to replay it.

use std::collections::VecDeque;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{ReapSide, Ring, Shared, SqSide};
use crate::sync::{Condvar, Mutex};
use crate::{BufPool, Completion, CompletionQueue, IoError, IoHint, Op, OpKind, PoolConfig};

#[cfg(ringcache_model)]
use shuttle::thread;
#[cfg(not(ringcache_model))]
use std::thread;

/// One SQE as the model's device sees it.
struct Sqe {
    user_data: u64,
    /// Bytes the SQE moves (0 for a flush).
    bytes: usize,
}

struct KernelState {
    /// Pushed, not yet submitted by an enter.
    queued: Vec<Sqe>,
    /// Submitted, not yet completed.
    submitted: Vec<Sqe>,
    /// Posted, not yet reaped.
    cqes: VecDeque<(u64, i32)>,
    /// The device thread stops once nothing is submitted.
    stop: bool,
    rng: ChaCha8Rng,
    /// Out of 8: how often a transfer completes short, and fails.
    short_in_8: u32,
    fail_in_8: u32,
    /// Completions posted with an error, and short.
    failed: u64,
    shorts: u64,
}

/// A ring whose "kernel" is a thread of the model (see the module docs).
pub(super) struct ModelRing {
    state: Mutex<KernelState>,
    /// A CQE was posted (an enter that waits looks again).
    posted: Condvar,
    /// An SQE was submitted, or the device is asked to stop.
    work: Condvar,
    /// SQEs the SQ holds at most (the kernel's ring size).
    entries: usize,
}

impl ModelRing {
    fn new(entries: usize, seed: u64, short_in_8: u32, fail_in_8: u32) -> ModelRing {
        ModelRing {
            state: Mutex::new(KernelState {
                queued: Vec::new(),
                submitted: Vec::new(),
                cqes: VecDeque::new(),
                stop: false,
                rng: ChaCha8Rng::seed_from_u64(seed),
                short_in_8,
                fail_in_8,
                failed: 0,
                shorts: 0,
            }),
            posted: Condvar::new(),
            work: Condvar::new(),
            entries,
        }
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, KernelState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The device: complete submitted SQEs one at a time, in an order and
    /// with results drawn from the generator, until told to stop.
    fn run_device(&self) {
        let mut st = self.lock();
        loop {
            if st.submitted.is_empty() {
                if st.stop {
                    return;
                }
                st = self.work.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let n = st.submitted.len();
            let pick = st.rng.random_range(0..n);
            let sqe = st.submitted.swap_remove(pick);
            let roll = st.rng.random_range(0..8);
            let res = if roll < st.fail_in_8 {
                st.failed += 1;
                -libc::EIO
            } else if sqe.bytes > 4096 && roll < st.fail_in_8 + st.short_in_8 {
                st.shorts += 1;
                (sqe.bytes / 2 / 4096 * 4096) as i32
            } else {
                sqe.bytes as i32
            };
            st.cqes.push_back((sqe.user_data, res));
            self.posted.notify_all();
            // Let the others run between two completions.
            drop(st);
            st = self.lock();
        }
    }

    fn stop_device(&self) {
        self.lock().stop = true;
        self.work.notify_all();
    }
}

impl Ring for ModelRing {
    fn push(&self, sq: &mut SqSide, key: usize) -> Option<bool> {
        let entry = sq.in_flight.get(key)?;
        let bytes = match entry.op.kind {
            OpKind::Flush => 0,
            OpKind::Read | OpKind::Write => entry.op.buf.len() - entry.done,
        };
        let mut st = self.lock();
        if st.queued.len() >= self.entries {
            return None;
        }
        st.queued.push(Sqe {
            user_data: key as u64,
            bytes,
        });
        Some(false)
    }

    fn enter(&self, want: usize) -> std::io::Result<usize> {
        let mut st = self.lock();
        let queued = std::mem::take(&mut st.queued);
        let n = queued.len();
        st.submitted.extend(queued);
        if n > 0 {
            self.work.notify_all();
        }
        while st.cqes.len() < want {
            st = self.posted.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        Ok(n)
    }

    fn reap(&self, reap: &mut ReapSide) {
        reap.cqes.extend(self.lock().cqes.drain(..));
    }

    fn unregister(&self) {}
}

/// One requester's script.
#[derive(Clone, Copy)]
enum Style {
    /// `submit_and_wait`, a batch at a time.
    SubmitAndWait,
    /// `submit`, then `wait_into` until the batch is back.
    SubmitThenWait,
    /// `submit`, then `poll_into` (and `Shared::poll`) until it is back.
    Poll,
    /// `submit`, then drop the queue without waiting.
    Abandon,
    /// `submit` only, never waiting: a second thread waits on the same
    /// queue for every completion (the daemon's reader and completion
    /// thread). That thread often waits with nothing in flight, until a
    /// submission pokes it.
    Split,
}

struct Scenario {
    /// Ring depth (ops in flight at most) and SQ entries.
    depth: usize,
    requesters: Vec<Style>,
    /// Batches per requester, and ops per batch.
    batches: usize,
    batch: usize,
    short_in_8: u32,
    fail_in_8: u32,
}

const DEVICE_BYTES: u64 = 1 << 20;

/// The ops of batch `b` of requester `r`: reads, writes of 4 or 8 KiB (an
/// 8 KiB transfer may come back short and be resubmitted) and a flush,
/// their buffers from `pool` (from the heap when it has none free).
fn batch_ops(pool: &BufPool, r: usize, b: usize, n: usize) -> Vec<Op> {
    (0..n)
        .map(|i| {
            let tag = tag_of(r, b, i);
            let offset = ((r * 64 + b * 4 + i) as u64 % 128) * 8192;
            match (r + b + i) % 4 {
                0 => Op::read(offset, pool.alloc(8192), tag, IoHint::Data),
                1 => Op::write(offset, pool.alloc(4096), tag, IoHint::Data),
                2 => Op::read(offset, pool.alloc(4096), tag, IoHint::Data),
                _ => Op::flush(tag),
            }
        })
        .collect()
}

fn tag_of(r: usize, b: usize, i: usize) -> u64 {
    ((r as u64) << 32) | ((b as u64) << 16) | i as u64
}

/// Check one batch's completions: each op once, on this queue, whole or
/// failed with the device's error (a short transfer was finished).
fn check_batch(r: usize, b: usize, n: usize, got: &[&Completion]) {
    let mut tags: Vec<u64> = got.iter().map(|c| c.tag).collect();
    tags.sort_unstable();
    let want: Vec<u64> = (0..n).map(|i| tag_of(r, b, i)).collect();
    assert_eq!(tags, want, "requester {r} batch {b}: each op once");
    for c in got {
        match &c.result {
            Ok(len) => assert_eq!(*len, c.buf.len(), "tag {:#x}: whole", c.tag),
            Err(IoError::Os { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::EIO), "tag {:#x}", c.tag)
            }
            Err(e) => panic!("tag {:#x}: unexpected {e}", c.tag),
        }
    }
}

fn requester(
    shared: &Arc<Shared<ModelRing>>,
    pool: &BufPool,
    r: usize,
    style: Style,
    sc: &Scenario,
    mut cq: CompletionQueue,
) {
    let mut out = Vec::new();
    for b in 0..sc.batches {
        let mut ops = batch_ops(pool, r, b, sc.batch);
        out.clear();
        match style {
            Style::SubmitAndWait => {
                shared.submit_and_wait(&mut ops, &cq, DEVICE_BYTES, &mut out);
                while out.len() < sc.batch {
                    cq.wait_into(&mut out);
                }
            }
            Style::SubmitThenWait => {
                shared.submit(&mut ops, &cq, DEVICE_BYTES);
                while out.len() < sc.batch {
                    cq.wait_into(&mut out);
                }
            }
            Style::Poll => {
                shared.submit(&mut ops, &cq, DEVICE_BYTES);
                while out.len() < sc.batch {
                    cq.poll_into(&mut out);
                    if out.len() < sc.batch {
                        thread::yield_now();
                    }
                }
            }
            Style::Abandon => {
                shared.submit(&mut ops, &cq, DEVICE_BYTES);
                // The requester goes away: its ops stay in flight, and
                // their buffers with the engine, until someone reaps them.
                cq = CompletionQueue::new();
                continue;
            }
            Style::Split => {
                shared.submit(&mut ops, &cq, DEVICE_BYTES);
                continue;
            }
        }
        check_batch(r, b, sc.batch, &out.iter().collect::<Vec<_>>());
    }
}

/// The waiting half of a [`Style::Split`] requester: every completion of
/// its `batches` on `cq`, each op once.
fn collector(cq: &CompletionQueue, r: usize, sc: &Scenario) {
    let mut out = Vec::new();
    let want = sc.batches * sc.batch;
    while out.len() < want {
        cq.wait_into(&mut out);
    }
    assert_eq!(out.len(), want, "requester {r}: no completion twice");
    for b in 0..sc.batches {
        let of_batch: Vec<&Completion> = out
            .iter()
            .filter(|c| (c.tag >> 16) & 0xffff == b as u64)
            .collect();
        check_batch(r, b, sc.batch, &of_batch);
    }
}

/// Run `sc` once: its requesters, the device, then the checks. Returns the
/// completions the device failed and those it cut short.
fn run(sc: Arc<Scenario>, seed: u64) -> (u64, u64) {
    let ring = ModelRing::new(sc.depth, seed, sc.short_in_8, sc.fail_in_8);
    let shared = Arc::new(Shared::new(ring, sc.depth));
    // Fewer buffers than ops in flight at times: some come from the heap.
    let pool = Arc::new(BufPool::new(&PoolConfig {
        classes: vec![(4096, 3), (8192, 2)],
    }));
    let device = {
        let shared = shared.clone();
        thread::spawn(move || shared.ring.run_device())
    };
    let requesters: Vec<_> = sc
        .requesters
        .iter()
        .enumerate()
        .flat_map(|(r, &style)| {
            let (shared, pool, sc2) = (shared.clone(), pool.clone(), sc.clone());
            let cq = CompletionQueue::new();
            let waiting = matches!(style, Style::Split).then(|| {
                let (cq, sc) = (cq.clone(), sc.clone());
                thread::spawn(move || collector(&cq, r, &sc))
            });
            let submitting = thread::spawn(move || requester(&shared, &pool, r, style, &sc2, cq));
            std::iter::once(submitting).chain(waiting)
        })
        .collect();
    for t in requesters {
        t.join().unwrap();
    }
    // What abandoned queues left in flight is reaped by the next thread
    // that polls (or by the engine's drop).
    while shared.in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        super::Driver::poll(&*shared);
        thread::yield_now();
    }
    shared.ring.stop_device();
    device.join().unwrap();
    let sq = shared.lock_sq();
    assert!(sq.in_flight.is_empty(), "slab empty once all is reaped");
    drop(sq);
    let waiters = shared.waiters.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        waiters.queues.iter().all(|q| q.ops_in_flight() == 0),
        "no waiter left with ops in flight"
    );
    drop(waiters);
    let st = shared.ring.lock();
    assert!(st.queued.is_empty() && st.submitted.is_empty() && st.cqes.is_empty());
    let drawn = (st.failed, st.shorts);
    drop(st);
    // Every buffer is back in its pool, those of abandoned queues too.
    assert_eq!(pool.free_buffers(), 5, "pool buffers all returned");
    drawn
}

/// The scenarios: every style against every other, a ring so shallow that
/// submitters wait for room, short transfers and errors.
fn scenarios() -> Vec<(&'static str, Scenario)> {
    use Style::*;
    vec![
        (
            "two threads submit and wait on one ring",
            Scenario {
                depth: 4,
                requesters: vec![SubmitAndWait, SubmitAndWait],
                batches: 3,
                batch: 2,
                short_in_8: 2,
                fail_in_8: 0,
            },
        ),
        (
            "driver and waiters of every kind",
            Scenario {
                depth: 4,
                requesters: vec![SubmitAndWait, SubmitThenWait, Poll],
                batches: 2,
                batch: 2,
                short_in_8: 2,
                fail_in_8: 1,
            },
        ),
        (
            "submitters wait for room on a ring of depth 1",
            Scenario {
                depth: 1,
                requesters: vec![SubmitAndWait, SubmitThenWait, SubmitThenWait],
                batches: 2,
                batch: 2,
                short_in_8: 2,
                fail_in_8: 0,
            },
        ),
        (
            "submitters whose completions another thread waits for",
            Scenario {
                depth: 2,
                requesters: vec![Split, Split, SubmitAndWait],
                batches: 3,
                batch: 2,
                short_in_8: 2,
                fail_in_8: 1,
            },
        ),
        (
            "a requester that goes away with ops in flight",
            Scenario {
                depth: 2,
                requesters: vec![Abandon, SubmitThenWait, SubmitAndWait],
                batches: 2,
                batch: 2,
                short_in_8: 2,
                fail_in_8: 1,
            },
        ),
    ]
}

/// Every scenario with real threads, `rounds` times each (seeds 0..).
#[cfg(not(ringcache_model))]
fn run_all(rounds: u64) {
    for (name, sc) in scenarios() {
        let sc = Arc::new(sc);
        let started = std::time::Instant::now();
        let (mut failed, mut shorts) = (0, 0);
        let mut tally = |(f, s): (u64, u64)| {
            failed += f;
            shorts += s;
        };
        for seed in 0..rounds {
            if cfg!(miri) {
                tally(run(sc.clone(), seed));
                continue;
            }
            let (done, finished) = std::sync::mpsc::channel::<()>();
            // A lost wake-up hangs the round: say which one.
            let watchdog = std::thread::spawn(move || {
                if finished
                    .recv_timeout(std::time::Duration::from_secs(60))
                    .is_err()
                {
                    eprintln!("scenario {name:?} seed {seed}: no progress in 60 s");
                    std::process::abort();
                }
            });
            tally(run(sc.clone(), seed));
            let _ = done.send(());
            watchdog.join().unwrap();
        }
        eprintln!(
            "{name}: {rounds} rounds in {:.2?}, {failed} failed and {shorts} short completions",
            started.elapsed()
        );
        // The error and resubmission paths were taken, not only drawn for
        // (Miri's few rounds may well draw neither).
        if rounds >= 100 {
            assert!(
                sc.fail_in_8 == 0 || failed > 0,
                "{name}: no failed completion"
            );
            assert!(shorts > 0, "{name}: no short completion");
        }
    }
}

#[cfg(not(ringcache_model))]
#[test]
fn hand_off_with_real_threads() {
    // Miri runs every scenario a few times; a native run many more.
    run_all(if cfg!(miri) { 2 } else { 2000 });
}

/// Schedules shuttle tries per scenario and scheduler
/// (`RINGCACHE_MODEL_ITERATIONS`, default 2000).
#[cfg(ringcache_model)]
fn iterations() -> usize {
    std::env::var("RINGCACHE_MODEL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

#[cfg(ringcache_model)]
fn model_check(pick: usize, pct: bool) {
    let (name, sc) = scenarios().swap_remove(pick);
    let sc = Arc::new(sc);
    eprintln!(
        "model: {name} ({} schedules, {})",
        iterations(),
        if pct { "PCT depth 3" } else { "random" }
    );
    // One device seed: the schedule decides which draw goes to which SQE,
    // and a failing schedule replays exactly.
    let body = move || {
        run(sc.clone(), 0);
    };
    if pct {
        shuttle::check_pct(body, iterations(), 3);
    } else {
        shuttle::check_random(body, iterations());
    }
}

#[cfg(ringcache_model)]
mod checks {
    use super::model_check;

    #[test]
    fn two_drivers_random() {
        model_check(0, false);
    }
    #[test]
    fn two_drivers_pct() {
        model_check(0, true);
    }
    #[test]
    fn every_kind_random() {
        model_check(1, false);
    }
    #[test]
    fn every_kind_pct() {
        model_check(1, true);
    }
    #[test]
    fn room_random() {
        model_check(2, false);
    }
    #[test]
    fn room_pct() {
        model_check(2, true);
    }
    #[test]
    fn split_random() {
        model_check(3, false);
    }
    #[test]
    fn split_pct() {
        model_check(3, true);
    }
    #[test]
    fn abandoned_random() {
        model_check(4, false);
    }
    #[test]
    fn abandoned_pct() {
        model_check(4, true);
    }
}
