//! The real I/O engines (psync and io_uring) keep the contract of
//! `ringcache::io`, on temporary files and on a loop block device.
//!
//! What this pins down: every completion reaches the queue of the requester
//! that submitted it, with its own buffer and the right data; bad requests
//! fail without reaching the device; a read past the end of the file is
//! short, not silently zero-filled; a requester that goes away with I/O in
//! flight leaves its buffers with the engine until the kernel is done with
//! them, after which they return to the pool (foyer issue #1286 is the
//! use-after-free this guards against); dropping an engine finishes what it
//! accepted. Each scenario runs against both engines through
//! `&dyn IoEngine`; a few check io_uring specifics (registered buffers,
//! batched submission).
//!
//! Where io_uring or loop devices are unavailable, the tests that need them
//! print why and pass, unless the environment variable `CI` is set: then
//! they fail.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ringcache::io::psync::PsyncEngine;
use ringcache::io::uring::UringEngine;
use ringcache::io::{
    self, BufPool, Completion, CompletionQueue, EngineKind, IoBuf, IoEngine, IoError, IoHint, Op,
    OpKind, OpenOptions, PoolConfig,
};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const BLOCK: usize = 4096;

/// Skip (with the reason on stderr) where a facility is missing; fail
/// instead under CI, where a skip would hide that the test never ran.
fn unavailable(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{reason} (CI is set, so this fails instead of skipping)");
    }
    eprintln!("skipping: {reason}");
}

/// A zero-filled temporary file of `bytes` under the temp directory.
fn temp_device(bytes: usize) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new()
        .prefix("ringcache-io-")
        .tempfile_in(std::env::temp_dir())
        .expect("create a temp file");
    file.as_file()
        .set_len(bytes as u64)
        .expect("size the temp file");
    file
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Psync,
    Uring,
}

const KINDS: [Kind; 2] = [Kind::Psync, Kind::Uring];

/// A uring engine over `path`, or `None` (after `unavailable`) when the
/// kernel refuses io_uring.
fn open_uring(path: &Path, opts: &OpenOptions) -> Option<UringEngine> {
    let (file, bytes, _direct) = io::open_device(path, opts.read_only).expect("open the device");
    match UringEngine::new(file, bytes, opts) {
        Ok(engine) => Some(engine),
        Err(e) => {
            unavailable(&format!("io_uring refused: {e}"));
            None
        }
    }
}

fn open_engine(kind: Kind, path: &Path, opts: &OpenOptions) -> Option<Box<dyn IoEngine>> {
    match kind {
        Kind::Psync => {
            let (file, bytes, _direct) =
                io::open_device(path, opts.read_only).expect("open the device");
            Some(Box::new(PsyncEngine::new(file, bytes, &opts.pool)))
        }
        Kind::Uring => open_uring(path, opts).map(|e| Box::new(e) as Box<dyn IoEngine>),
    }
}

/// Run `scenario` once per engine, each on a fresh zeroed file of
/// `device_bytes`.
fn each_engine(device_bytes: usize, opts: &OpenOptions, scenario: impl Fn(&dyn IoEngine, &Path)) {
    for kind in KINDS {
        let device = temp_device(device_bytes);
        let Some(engine) = open_engine(kind, device.path(), opts) else {
            continue;
        };
        scenario(engine.as_ref(), device.path());
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The bytes that writer `seed` puts at device offset `offset`.
fn pattern(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let first_word = offset / 8;
    (0..len.div_ceil(8) as u64)
        .flat_map(|i| splitmix(seed.rotate_left(32) ^ (first_word + i)).to_le_bytes())
        .take(len)
        .collect()
}

fn patterned(mut buf: IoBuf, seed: u64, offset: u64) -> IoBuf {
    let len = buf.len();
    buf.copy_from_slice(&pattern(seed, offset, len));
    buf
}

/// Wait (at most 30 s, so a lost completion fails instead of hanging) until
/// `n` completions arrived on `cq`.
fn collect(cq: &CompletionQueue, n: usize) -> Vec<Completion> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        cq.poll_into(&mut out);
        assert!(
            Instant::now() < deadline,
            "only {} of {n} completions arrived",
            out.len()
        );
        if out.len() < n {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    assert_eq!(out.len(), n, "more completions than requests");
    out
}

/// Submit `ops` as one batch and wait for all of them; completions sorted
/// by tag.
fn run_batch(engine: &dyn IoEngine, mut ops: Vec<Op>) -> Vec<Completion> {
    let n = ops.len();
    let cq = CompletionQueue::new();
    engine.submit(&mut ops, &cq);
    assert!(ops.is_empty(), "submit drains the ops");
    let mut done = collect(&cq, n);
    done.sort_by_key(|c| c.tag);
    done
}

/// Write `seed`'s pattern at every (offset, len), then read each back and
/// compare. `write_buf`/`read_buf` pick where the buffers come from.
fn round_trip(
    engine: &dyn IoEngine,
    extents: &[(u64, usize)],
    seed: u64,
    write_buf: impl Fn(usize) -> IoBuf,
    read_buf: impl Fn(usize) -> IoBuf,
) {
    let name = engine.name();
    let writes = extents
        .iter()
        .enumerate()
        .map(|(i, &(offset, len))| {
            let buf = patterned(write_buf(len), seed, offset);
            Op::write(offset, buf, i as u64, IoHint::Data)
        })
        .collect();
    for (c, &(_, len)) in run_batch(engine, writes).iter().zip(extents) {
        assert_eq!(
            c.result.as_ref().ok(),
            Some(&len),
            "{name}: write {}",
            c.tag
        );
    }
    let reads = extents
        .iter()
        .enumerate()
        .map(|(i, &(offset, len))| Op::read(offset, read_buf(len), i as u64, IoHint::Data))
        .collect();
    for (c, &(offset, len)) in run_batch(engine, reads).iter().zip(extents) {
        assert_eq!(c.result.as_ref().ok(), Some(&len), "{name}: read {}", c.tag);
        assert_eq!(c.buf.len(), len, "{name}: read {} buffer length", c.tag);
        assert!(
            c.buf[..] == pattern(seed, offset, len)[..],
            "{name}: read {} at {offset} returned other data",
            c.tag
        );
    }
}

/// Extents of several sizes: pool classes and beyond the largest one.
fn mixed_extents() -> Vec<(u64, usize)> {
    vec![
        (0, BLOCK),
        (BLOCK as u64, 2 * BLOCK),
        (64 * KIB as u64, 64 * KIB),
        (MIB as u64, MIB),
        (2 * MIB as u64, 3 * MIB),
        (7 * MIB as u64, BLOCK),
    ]
}

#[test]
fn round_trips_through_pool_and_heap_buffers() {
    let opts = OpenOptions::default();
    each_engine(8 * MIB, &opts, |engine, _| {
        let extents = mixed_extents();
        round_trip(engine, &extents, 1, |len| engine.alloc(len), IoBuf::new);
        round_trip(engine, &extents, 2, IoBuf::new, |len| engine.alloc(len));
        round_trip(
            engine,
            &extents,
            3,
            |len| engine.alloc(len),
            |len| engine.alloc(len),
        );
    });
}

/// A pool small enough to register under a low RLIMIT_MEMLOCK.
fn small_pool() -> PoolConfig {
    PoolConfig {
        classes: vec![(4 * KIB, 16), (64 * KIB, 4)],
    }
}

#[test]
fn uring_uses_registered_buffers_for_its_pool_and_only_for_it() {
    let device = temp_device(4 * MIB);
    let opts = OpenOptions {
        pool: small_pool(),
        ..OpenOptions::default()
    };
    let Some(engine) = open_uring(device.path(), &opts) else {
        return;
    };
    if !engine.fixed_buffers() {
        unavailable("the kernel refused to register 320 KiB of buffers (RLIMIT_MEMLOCK?)");
        return;
    }
    let extents = [(0, BLOCK), (64 * KIB as u64, 64 * KIB)];

    let before = engine.stats();
    round_trip(
        &engine,
        &extents,
        10,
        |l| engine.alloc(l),
        |l| engine.alloc(l),
    );
    let after = engine.stats();
    assert_eq!(after.fixed_sqes - before.fixed_sqes, 4, "{after:?}");
    assert_eq!(after.plain_sqes, before.plain_sqes, "{after:?}");

    round_trip(&engine, &extents, 11, IoBuf::new, IoBuf::new);
    let heap = engine.stats();
    assert_eq!(heap.fixed_sqes, after.fixed_sqes, "{heap:?}");
    assert_eq!(heap.plain_sqes - after.plain_sqes, 4, "{heap:?}");

    // Same classes, so the same indices: a foreign buffer must not be
    // taken for the registered one of that index.
    let foreign = BufPool::new(&small_pool());
    let probe = foreign.alloc(BLOCK);
    assert!(probe.pool_index().is_some());
    drop(probe);
    round_trip(
        &engine,
        &extents,
        12,
        |l| foreign.alloc(l),
        |l| foreign.alloc(l),
    );
    let last = engine.stats();
    assert_eq!(last.fixed_sqes, heap.fixed_sqes, "{last:?}");
    assert_eq!(last.plain_sqes - heap.plain_sqes, 4, "{last:?}");
}

#[test]
fn uring_works_on_when_the_kernel_refuses_to_register_buffers() {
    let device = temp_device(4 * MIB);
    // One buffer more than the kernel registers (IORING_MAX_REG_BUFFERS).
    let opts = OpenOptions {
        pool: PoolConfig {
            classes: vec![(BLOCK, (1 << 14) + 1)],
        },
        ..OpenOptions::default()
    };
    let Some(engine) = open_uring(device.path(), &opts) else {
        return;
    };
    if engine.fixed_buffers() {
        eprintln!("this kernel registers more than 16384 buffers: nothing to check");
        return;
    }
    let buf = engine.alloc(BLOCK);
    assert!(buf.pool_index().is_some(), "the pool still serves");
    drop(buf);
    round_trip(
        &engine,
        &[(0, BLOCK), (MIB as u64, MIB)],
        20,
        |l| engine.alloc(l),
        IoBuf::new,
    );
    let stats = engine.stats();
    assert_eq!(stats.fixed_sqes, 0, "{stats:?}");
    assert_eq!(stats.plain_sqes, 4, "{stats:?}");
}

#[test]
fn uring_submits_a_batch_with_one_enter() {
    let device = temp_device(4 * MIB);
    let Some(engine) = open_uring(device.path(), &OpenOptions::default()) else {
        return;
    };
    assert!(engine.queue_depth() >= 64, "default depth is 128");
    let reads = (0..64)
        .map(|i| Op::read(i * BLOCK as u64, engine.alloc(BLOCK), i, IoHint::Data))
        .collect();
    for c in run_batch(&engine, reads) {
        assert!(c.result.is_ok(), "read {}: {:?}", c.tag, c.result);
    }
    let stats = engine.stats();
    assert!(
        stats.max_sqes_per_enter >= 64,
        "64 ops submitted together went to the kernel in pieces: {stats:?}"
    );
}

#[test]
fn completions_reach_their_own_requester() {
    const THREADS: u64 = 4;
    const BLOCKS_PER_THREAD: u64 = 96;
    const BATCH: usize = 48;
    // A shallow queue, so that pending ops pile up past the back-pressure
    // limit and submitters block; one ring that every thread shares.
    let opts = OpenOptions {
        queue_depth: 8,
        rings: 1,
        pool: small_pool(),
        ..OpenOptions::default()
    };
    let region_bytes = BLOCKS_PER_THREAD * BLOCK as u64;
    each_engine((THREADS * region_bytes) as usize, &opts, |engine, _| {
        let name = engine.name();
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                scope.spawn(move || {
                    let cq = CompletionQueue::new();
                    let base = t * region_bytes;
                    let tag = |i: u64| (t << 32) | i;
                    let offset = |i: u64| base + i * BLOCK as u64;
                    let buffer = |i: u64| {
                        if i.is_multiple_of(2) {
                            engine.alloc(BLOCK)
                        } else {
                            IoBuf::new(BLOCK)
                        }
                    };
                    for kind in [OpKind::Write, OpKind::Read] {
                        let mut seen = HashSet::new();
                        for chunk in (0..BLOCKS_PER_THREAD).collect::<Vec<_>>().chunks(BATCH) {
                            let mut ops: Vec<Op> = chunk
                                .iter()
                                .map(|&i| match kind {
                                    OpKind::Write => Op::write(
                                        offset(i),
                                        patterned(buffer(i), t, offset(i)),
                                        tag(i),
                                        IoHint::Data,
                                    ),
                                    _ => Op::read(offset(i), buffer(i), tag(i), IoHint::Data),
                                })
                                .collect();
                            engine.submit(&mut ops, &cq);
                            for c in collect(&cq, chunk.len()) {
                                assert_eq!(c.tag >> 32, t, "{name}: thread {t} got a foreign tag");
                                let i = c.tag & 0xffff_ffff;
                                assert!(seen.insert(i), "{name}: tag {i} completed twice");
                                assert_eq!(c.result.as_ref().ok(), Some(&BLOCK), "{name}");
                                if kind == OpKind::Read {
                                    assert!(
                                        c.buf[..] == pattern(t, offset(i), BLOCK)[..],
                                        "{name}: thread {t} block {i}: wrong data"
                                    );
                                }
                            }
                        }
                        assert_eq!(seen.len() as u64, BLOCKS_PER_THREAD);
                    }
                });
            }
        });
    });
}

/// Wait (blocking, with a watchdog that fails the test instead of hanging
/// it) until `n` completions arrived on `cq`.
fn wait_for(cq: &CompletionQueue, n: usize, what: &str) -> Vec<Completion> {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        let what = what.to_string();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if Instant::now() > deadline {
                    eprintln!("{what}: completions never arrived (a lost wakeup?)");
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        cq.wait_into(&mut out);
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = watchdog.join();
    assert_eq!(out.len(), n, "{what}: more completions than requests");
    out
}

#[test]
fn a_lone_requester_submits_and_waits_in_one_system_call() {
    // io_uring completions are reaped by the thread that waits for them:
    // a read and its wait are one io_uring_enter, with no other thread
    // woken on the way (the cost that kept a ring thread at 0.8 of fio).
    let device = temp_device(4 * MIB);
    let Some(engine) = open_uring(device.path(), &OpenOptions::default()) else {
        return;
    };
    for i in 0..20u64 {
        let before = engine.stats();
        let buf = io::read_at(&engine, i * BLOCK as u64, BLOCK, IoHint::Data).expect("read");
        assert_eq!(buf.len(), BLOCK);
        let after = engine.stats();
        assert_eq!(after.enters - before.enters, 1, "read {i}: {after:?}");
        assert_eq!(after.driver_waits, 0, "{after:?}");
    }
}

#[test]
fn submit_and_wait_sends_its_ops_even_when_it_need_not_wait() {
    // A batch whose first op is refused: the queue holds a completion at
    // once, so no wait follows; the good op must still reach the kernel.
    let device = temp_device(4 * MIB);
    let Some(engine) = open_uring(device.path(), &OpenOptions::default()) else {
        return;
    };
    let before = engine.stats();
    let cq = CompletionQueue::new();
    let mut ops = vec![
        Op::read(1, engine.alloc(BLOCK), 0, IoHint::Data),
        Op::read(0, engine.alloc(BLOCK), 1, IoHint::Data),
    ];
    let mut out = Vec::new();
    engine.submit_and_wait(&mut ops, &cq, &mut out);
    assert!(
        out.iter().any(|c| c.tag == 0 && c.result.is_err()),
        "{out:?}"
    );
    let after = engine.stats();
    assert_eq!(
        after.sqes_submitted - before.sqes_submitted,
        1,
        "the good read went to the kernel: {after:?}"
    );
    if !out.iter().any(|c| c.tag == 1) {
        out.extend(wait_for(&cq, 1, "uring"));
    }
    assert!(
        out.iter().any(|c| c.tag == 1 && c.result.is_ok()),
        "{out:?}"
    );
}

#[test]
fn a_waiter_on_another_thread_gets_its_completions() {
    // Ops submitted by one thread for a queue that another thread waits
    // on: the waiter drives the engine, or sleeps until the submission
    // pokes it; it must never sleep through its own completions.
    let opts = OpenOptions {
        queue_depth: 4,
        pool: small_pool(),
        ..OpenOptions::default()
    };
    each_engine(4 * MIB, &opts, |engine, _| {
        let name = engine.name();
        for round in 0..200u64 {
            let cq = CompletionQueue::new();
            let n = 1 + (round % 9) as usize;
            std::thread::scope(|s| {
                let waiter = s.spawn(|| wait_for(&cq, n, name));
                // Sometimes the waiter is asleep before anything is in
                // flight, sometimes not.
                if round % 2 == 0 {
                    std::thread::sleep(Duration::from_micros(300));
                }
                let mut ops: Vec<Op> = (0..n as u64)
                    .map(|i| Op::read(i * BLOCK as u64, engine.alloc(BLOCK), i, IoHint::Data))
                    .collect();
                engine.submit(&mut ops, &cq);
                let done = waiter.join().expect("waiter");
                let tags: HashSet<u64> = done.iter().map(|c| c.tag).collect();
                assert_eq!(tags.len(), n, "{name}: round {round}");
                assert!(done.iter().all(|c| c.result.is_ok()), "{name}");
            });
        }
    });
}

#[test]
fn threads_that_wait_take_turns_driving_and_each_gets_its_own() {
    // Four threads submit and block in wait_into on their own queues with
    // a queue depth of 8: submitters past the depth reap for room, one
    // thread at a time drives, the others are routed their completions or
    // poked to take over. Every op completes exactly once, to its owner.
    // One ring for all of them (the hand-off logic; with a ring per
    // thread, see the next test, no hand-off happens).
    const THREADS: u64 = 4;
    const OPS: u64 = 400;
    let opts = OpenOptions {
        queue_depth: 8,
        rings: 1,
        pool: small_pool(),
        ..OpenOptions::default()
    };
    each_engine((THREADS * 64) as usize * BLOCK, &opts, |engine, _| {
        let name = engine.name();
        std::thread::scope(|s| {
            for t in 0..THREADS {
                s.spawn(move || {
                    let cq = CompletionQueue::new();
                    let mut seen = HashSet::new();
                    let mut i = 0u64;
                    while i < OPS {
                        let n = 1 + (i % 13).min(OPS - i - 1);
                        let mut ops: Vec<Op> = (i..i + n)
                            .map(|j| {
                                let offset = (t * 64 + j % 64) * BLOCK as u64;
                                Op::read(offset, engine.alloc(BLOCK), (t << 32) | j, IoHint::Data)
                            })
                            .collect();
                        let mut out = Vec::new();
                        engine.submit_and_wait(&mut ops, &cq, &mut out);
                        if out.len() < n as usize {
                            out.extend(wait_for(&cq, n as usize - out.len(), name));
                        }
                        for c in out {
                            assert_eq!(c.tag >> 32, t, "{name}: thread {t} got a foreign tag");
                            assert!(c.result.is_ok(), "{name}: {:?}", c.result);
                            assert!(seen.insert(c.tag), "{name}: tag {} twice", c.tag);
                        }
                        i += n;
                    }
                    assert_eq!(seen.len() as u64, OPS, "{name}: thread {t}");
                });
            }
        });
    });
}

#[test]
fn threads_that_submit_together_each_drive_a_ring_of_their_own() {
    // Each submitting thread uses the ring of its lane: four threads doing
    // reads at once open rings of their own, none ever waits for another
    // to drive, and every read returns its own bytes.
    const THREADS: u64 = 4;
    const READS: u64 = 200;
    let device = temp_device(THREADS as usize * 64 * BLOCK);
    let opts = OpenOptions {
        rings: 64,
        pool: small_pool(),
        ..OpenOptions::default()
    };
    let Some(engine) = open_uring(device.path(), &opts) else {
        return;
    };
    for t in 0..THREADS {
        let mut ops: Vec<Op> = (0..64u64)
            .map(|j| {
                let offset = (t * 64 + j) * BLOCK as u64;
                Op::write(
                    offset,
                    patterned(engine.alloc(BLOCK), t, offset),
                    j,
                    IoHint::Data,
                )
            })
            .collect();
        let n = ops.len();
        let done = run_batch(&engine, std::mem::take(&mut ops));
        assert_eq!(done.len(), n);
    }
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let engine = &engine;
            s.spawn(move || {
                for i in 0..READS {
                    let offset = (t * 64 + i % 64) * BLOCK as u64;
                    let buf = io::read_at(engine, offset, BLOCK, IoHint::Data).expect("read");
                    assert!(
                        buf[..] == pattern(t, offset, BLOCK)[..],
                        "thread {t} read {i}"
                    );
                }
            });
        }
    });
    let stats = engine.stats();
    assert!(
        engine.rings_open() >= THREADS as usize,
        "{} rings for {THREADS} threads",
        engine.rings_open()
    );
    assert_eq!(
        stats.driver_waits, 0,
        "no thread waited for another: {stats:?}"
    );
    // Each read one enter (its submission and its wait), on any ring.
    assert!(stats.enters >= THREADS * READS, "{stats:?}");
}

#[test]
fn idle_waiters_are_not_woken_by_other_queues_work() {
    // Threads asleep on queues with nothing in flight (a daemon's
    // connection threads between requests) share a ring with a busy
    // requester. Its submissions must not wake them: they have nothing to
    // drive for. (Waking every waiter on every submission made 1000
    // connections crawl at a few hundred requests a second.)
    const IDLE: usize = 32;
    const READS: u64 = 200;
    let device = temp_device(4 * MIB);
    let opts = OpenOptions {
        rings: 1,
        pool: small_pool(),
        ..OpenOptions::default()
    };
    let Some(engine) = open_uring(device.path(), &opts) else {
        return;
    };
    let queues: Vec<CompletionQueue> = (0..IDLE).map(|_| CompletionQueue::new()).collect();
    let ready = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for q in &queues {
            let (engine, ready) = (&engine, &ready);
            s.spawn(move || {
                // One read ties the queue to the ring; then wait with
                // nothing in flight until the test wakes the queue.
                let mut ops = vec![Op::read(0, engine.alloc(BLOCK), 1, IoHint::Data)];
                engine.submit(&mut ops, q);
                let first = wait_for(q, 1, "first read");
                assert!(first[0].result.is_ok());
                ready.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let last = wait_for(q, 1, "the test's wake-up");
                assert_eq!(last[0].tag, 999);
            });
        }
        while ready.load(std::sync::atomic::Ordering::SeqCst) < IDLE {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Let them fall asleep as waiters.
        std::thread::sleep(Duration::from_millis(100));
        let before = engine.stats();
        for i in 0..READS {
            let buf =
                io::read_at(&engine, (i % 64) * BLOCK as u64, BLOCK, IoHint::Data).expect("read");
            assert_eq!(buf.len(), BLOCK);
        }
        let after = engine.stats();
        assert!(
            after.waiter_pokes - before.waiter_pokes <= IDLE as u64,
            "{READS} reads woke idle waiters {} times",
            after.waiter_pokes - before.waiter_pokes
        );
        for q in &queues {
            q.push(Completion {
                tag: 999,
                result: Ok(0),
                buf: IoBuf::empty(),
            });
        }
    });
}

#[test]
fn a_requester_that_goes_away_leaves_its_buffers_to_the_pool() {
    const BUFFERS: usize = 32;
    let opts = OpenOptions {
        pool: PoolConfig {
            classes: vec![(BLOCK, BUFFERS)],
        },
        ..OpenOptions::default()
    };
    each_engine(4 * MIB, &opts, |engine, _| {
        let name = engine.name();
        let mut ops: Vec<Op> = (0..BUFFERS as u64)
            .map(|i| {
                let buf = engine.alloc(BLOCK);
                assert!(buf.pool_index().is_some(), "{name}: pool exhausted early");
                Op::read(i * 16 * BLOCK as u64, buf, i, IoHint::Data)
            })
            .collect();
        let cq = CompletionQueue::new();
        engine.submit(&mut ops, &cq);
        drop(cq);

        // Every buffer comes back once its read completed; take them all.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut back = Vec::new();
        while back.len() < BUFFERS {
            assert!(
                Instant::now() < deadline,
                "{name}: only {} of {BUFFERS} buffers came back",
                back.len()
            );
            let buf = engine.alloc(BLOCK);
            if buf.pool_index().is_some() {
                back.push(buf);
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let indices: HashSet<_> = back.iter().filter_map(IoBuf::pool_index).collect();
        assert_eq!(indices.len(), BUFFERS, "{name}");
        drop(back);
        // The engine still serves.
        round_trip(engine, &[(0, BLOCK)], 30, |l| engine.alloc(l), IoBuf::new);
    });
}

#[test]
fn dropping_the_engine_finishes_what_it_accepted() {
    const OPS: u64 = 200;
    for kind in KINDS {
        let device = temp_device(4 * MIB);
        let Some(engine) = open_engine(kind, device.path(), &OpenOptions::default()) else {
            continue;
        };
        let name = engine.name();
        let cq = CompletionQueue::new();
        let mut ops: Vec<Op> = (0..OPS)
            .map(|i| {
                let offset = (i % 512) * BLOCK as u64;
                if i.is_multiple_of(2) {
                    Op::read(offset, engine.alloc(BLOCK), i, IoHint::Data)
                } else {
                    let buf = patterned(engine.alloc(BLOCK), 40, offset);
                    Op::write(offset, buf, i, IoHint::Data)
                }
            })
            .collect();
        engine.submit(&mut ops, &cq);
        drop(engine);
        let mut done = Vec::new();
        cq.poll_into(&mut done);
        assert_eq!(done.len() as u64, OPS, "{name}: the drop lost requests");
        for c in &done {
            assert_eq!(c.result.as_ref().ok(), Some(&BLOCK), "{name}: op {}", c.tag);
        }
    }
}

#[test]
fn flush_completes_after_the_writes_before_it() {
    each_engine(4 * MIB, &OpenOptions::default(), |engine, path| {
        let name = engine.name();
        let c = run_batch(engine, vec![Op::flush(7)]);
        assert_eq!(c[0].tag, 7);
        assert_eq!(c[0].result.as_ref().ok(), Some(&0), "{name}: idle flush");

        let extents = [(0, BLOCK), (MIB as u64, 64 * KIB)];
        round_trip(
            engine,
            &extents,
            50,
            |l| engine.alloc(l),
            |l| engine.alloc(l),
        );
        let c = run_batch(engine, vec![Op::flush(8)]);
        assert_eq!(c[0].result.as_ref().ok(), Some(&0), "{name}: flush");
        assert!(c[0].buf.is_empty());

        // What the flush covered is in the file for any other reader.
        let image = std::fs::read(path).expect("read the file back");
        for &(offset, len) in &extents {
            let at = offset as usize;
            assert!(
                image[at..at + len] == pattern(50, offset, len)[..],
                "{name}: {len} bytes at {offset} not in the file"
            );
        }

        // A flush in the same batch as writes is not ordered against them,
        // but completes.
        let buf = patterned(engine.alloc(BLOCK), 51, 0);
        let c = run_batch(
            engine,
            vec![Op::write(0, buf, 0, IoHint::Data), Op::flush(1)],
        );
        assert!(c.iter().all(|c| c.result.is_ok()), "{name}: {c:?}");
    });
}

#[test]
fn bad_requests_are_refused_without_touching_the_device() {
    const DEVICE: usize = MIB;
    each_engine(DEVICE, &OpenOptions::default(), |engine, path| {
        let name = engine.name();
        let end = DEVICE as u64;
        let bad = vec![
            Op::read(100, IoBuf::new(BLOCK), 0, IoHint::Data),
            Op::read(0, IoBuf::new(100), 1, IoHint::Data),
            Op::read(0, IoBuf::empty(), 2, IoHint::Data),
            Op::read(end, IoBuf::new(BLOCK), 3, IoHint::Data),
            Op::write(end - BLOCK as u64, IoBuf::new(2 * BLOCK), 4, IoHint::Data),
            Op::read(u64::MAX - 4095, IoBuf::new(BLOCK), 5, IoHint::Data),
            Op::write(
                end - BLOCK as u64,
                patterned(IoBuf::new(2 * BLOCK), 60, 0),
                6,
                IoHint::Data,
            ),
        ];
        let lens: Vec<usize> = bad.iter().map(|op| op.buf.len()).collect();
        let mut ops = bad;
        ops.push(Op::read(0, engine.alloc(BLOCK), 100, IoHint::Data));
        let done = run_batch(engine, ops);
        for (c, &len) in done.iter().zip(&lens) {
            assert!(
                matches!(c.result, Err(IoError::BadRequest(_))),
                "{name}: request {} gave {:?}",
                c.tag,
                c.result
            );
            assert_eq!(c.buf.len(), len, "{name}: request {}'s buffer", c.tag);
        }
        let good = done.last().expect("the good read completed");
        assert_eq!(good.tag, 100);
        assert_eq!(good.result.as_ref().ok(), Some(&BLOCK), "{name}");
        let image = std::fs::read(path).expect("read the file back");
        assert_eq!(image.len(), DEVICE, "{name}: the file grew");
        assert!(
            image.iter().all(|&b| b == 0),
            "{name}: a refused write landed"
        );
    });
}

#[test]
fn reads_past_the_end_of_a_shrunk_file_are_short() {
    each_engine(MIB, &OpenOptions::default(), |engine, path| {
        let name = engine.name();
        // The engine believes the device is 1 MiB; now it is 8 KiB.
        File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(2 * BLOCK as u64))
            .expect("shrink the file");
        let done = run_batch(
            engine,
            vec![
                Op::read(BLOCK as u64, engine.alloc(2 * BLOCK), 0, IoHint::Data),
                Op::read(64 * KIB as u64, engine.alloc(BLOCK), 1, IoHint::Data),
                Op::read(0, IoBuf::new(2 * BLOCK), 2, IoHint::Data),
            ],
        );
        match &done[0].result {
            Err(IoError::Short {
                what: "read",
                offset,
                done,
                wanted,
            }) => {
                assert_eq!((*offset, *done, *wanted), (BLOCK as u64, BLOCK, 2 * BLOCK))
            }
            other => panic!("{name}: straddling read gave {other:?}"),
        }
        match &done[1].result {
            Err(IoError::Short { done, wanted, .. }) => assert_eq!((*done, *wanted), (0, BLOCK)),
            other => panic!("{name}: read past the end gave {other:?}"),
        }
        assert_eq!(done[2].result.as_ref().ok(), Some(&(2 * BLOCK)), "{name}");
    });
}

#[test]
fn os_errors_carry_the_offset() {
    let opts = OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    };
    each_engine(MIB, &opts, |engine, _| {
        let name = engine.name();
        let offset = 16 * BLOCK as u64;
        let done = run_batch(
            engine,
            vec![Op::write(offset, engine.alloc(BLOCK), 0, IoHint::Data)],
        );
        match &done[0].result {
            Err(IoError::Os { offset: at, source }) => {
                assert_eq!(*at, offset, "{name}");
                assert_eq!(source.raw_os_error(), Some(libc::EBADF), "{name}: {source}");
            }
            other => panic!("{name}: write to a read-only device gave {other:?}"),
        }
    });
}

#[test]
fn auto_picks_uring_where_the_kernel_allows_it() {
    let device = temp_device(MIB);
    let uring_works = {
        let (file, bytes, _) = io::open_device(device.path(), false).expect("open");
        UringEngine::new(file, bytes, &OpenOptions::default()).is_ok()
    };
    let engine = io::open(device.path(), &OpenOptions::default()).expect("open");
    let expected = if uring_works { "uring" } else { "psync" };
    assert_eq!(engine.name(), expected);
    // One opener at a time: the device is locked while an engine holds it.
    drop(engine);
    let forced = OpenOptions {
        engine: EngineKind::Psync,
        ..OpenOptions::default()
    };
    assert_eq!(
        io::open(device.path(), &forced).expect("open").name(),
        "psync"
    );
    if !uring_works {
        unavailable("io_uring refused: Auto fell back to psync");
    }
}

/// A loop device over a backing file, detached (and the file removed) on
/// drop, whether the test passed or not.
struct LoopDevice {
    dev: PathBuf,
    _backing: tempfile::NamedTempFile,
}

impl LoopDevice {
    fn attach(bytes: usize) -> Result<LoopDevice, String> {
        let backing = temp_device(bytes);
        let out = Command::new("losetup")
            .arg("--find")
            .arg("--show")
            .arg(backing.path())
            .output()
            .map_err(|e| format!("cannot run losetup: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "losetup --find --show failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if dev.is_empty() {
            return Err("losetup printed no device".into());
        }
        Ok(LoopDevice {
            dev: PathBuf::from(dev),
            _backing: backing,
        })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        match Command::new("losetup").arg("-d").arg(&self.dev).status() {
            Ok(s) if s.success() => {}
            other => eprintln!("losetup -d {} failed: {other:?}", self.dev.display()),
        }
    }
}

#[test]
fn uring_round_trip_on_a_loop_block_device() {
    const DEVICE: usize = 64 * MIB;
    let device = match LoopDevice::attach(DEVICE) {
        Ok(d) => d,
        Err(reason) => {
            unavailable(&format!("no loop device: {reason}"));
            return;
        }
    };
    let (file, bytes, direct) = io::open_device(&device.dev, false).expect("open the loop device");
    assert_eq!(bytes, DEVICE as u64, "size of {}", device.dev.display());
    assert!(direct, "O_DIRECT refused on a block device");
    let engine = match UringEngine::new(file, bytes, &OpenOptions::default()) {
        Ok(e) => e,
        Err(e) => {
            unavailable(&format!("io_uring refused: {e}"));
            return;
        }
    };
    let last = (DEVICE - 64 * KIB) as u64;
    let extents = [
        (0, BLOCK),
        (MIB as u64, MIB),
        (8 * MIB as u64, 3 * MIB),
        (last, 64 * KIB),
    ];
    round_trip(&engine, &extents, 70, |l| engine.alloc(l), IoBuf::new);
    round_trip(&engine, &extents, 71, IoBuf::new, |l| engine.alloc(l));
    let c = run_batch(&engine, vec![Op::flush(0)]);
    assert_eq!(
        c[0].result.as_ref().ok(),
        Some(&0),
        "flush of the loop device"
    );
    let past = run_batch(
        &engine,
        vec![Op::read(bytes, engine.alloc(BLOCK), 0, IoHint::Data)],
    );
    assert!(matches!(past[0].result, Err(IoError::BadRequest(_))));
    drop(engine);

    // Another engine over the same device sees the data.
    let (file, bytes, _) = io::open_device(&device.dev, true).expect("reopen");
    let psync = PsyncEngine::new(file, bytes, &PoolConfig::default());
    for &(offset, len) in &extents {
        let buf = io::read_at(&psync, offset, len, IoHint::Data).expect("read back");
        assert!(
            buf[..] == pattern(71, offset, len)[..],
            "{len} bytes at {offset} differ"
        );
    }
}

#[test]
fn a_dropped_uring_engine_lets_go_of_the_device_at_once() {
    let device = temp_device(MIB);
    for round in 0..20 {
        let (file, bytes, _) = io::open_device(device.path(), false).expect("open");
        file.try_lock().expect("nobody else holds the device");
        let engine = match UringEngine::new(file, bytes, &OpenOptions::default()) {
            Ok(e) => e,
            Err(e) => {
                unavailable(&format!("io_uring refused: {e}"));
                return;
            }
        };
        round_trip(
            &engine,
            &[(0, BLOCK)],
            round,
            |l| engine.alloc(l),
            IoBuf::new,
        );
        drop(engine);
        // The ring's registered file must not keep the lock (and the open
        // file) alive past the drop.
        let again = File::open(device.path()).expect("reopen");
        again
            .try_lock()
            .unwrap_or_else(|e| panic!("round {round}: the device is still held: {e}"));
    }
}
