//! Races of the cookie state machine that must be impossible, each tested
//! with several threads over many seeds. The backend is the real store
//! (sim engine) wrapped to sleep a random few microseconds in every call
//! and to check, inside `withdraw_cookie`, that no access to the object is
//! in flight — so the windows where the kernel's fscache has had races are
//! wide open here.
//!
//! - An LRU discard racing a relinquishment never overrides it.
//! - No withdrawal (LRU discard, cache withdrawal, relinquishment) while
//!   accesses are in flight.
//! - A withdrawal racing a new use of the cookie leaves it usable.
//! - An invalidation racing reads and writes: no operation ever returns
//!   data of a generation older than the one it began in.
//! - A relinquishment with retire racing a lookup of the same key: the new
//!   cookie never sees the retired content.
//!
//! `RINGCACHE_RACE_SEEDS=N` sets the seeds per race (default 150).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringcache::cookie::{
    CacheBackend, CacheError, CookieState, Fscache, FscacheConfig, Lookup, ReadOutcome,
    WriteOutcome,
};
use ringcache::io::sim::SimFaults;
use ringcache::store::{ObjectId, Segment, Segments, Store, StoreConfig, StoreError, VolumeId};

/// The store, with random delays and an in-flight check.
struct Racy {
    store: Store,
    rng: Mutex<ChaCha8Rng>,
    in_flight: Mutex<HashMap<ObjectId, u32>>,
    violations: AtomicUsize,
    withdrawals: AtomicUsize,
}

impl Racy {
    /// Even seeds on the sim engine, odd seeds on the uring engine over a
    /// temp file (where io_uring works; in CI it must).
    fn new(seed: u64) -> Arc<Racy> {
        let engine: Arc<dyn ringcache::io::IoEngine> = if seed % 2 == 1 {
            uring_device().unwrap_or_else(|| {
                formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default())
            })
        } else {
            formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default())
        };
        Arc::new(Racy {
            store: Store::open(engine, StoreConfig::default()).unwrap(),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            in_flight: Mutex::new(HashMap::new()),
            violations: AtomicUsize::new(0),
            withdrawals: AtomicUsize::new(0),
        })
    }

    fn nap(&self) {
        let us = self.rng.lock().unwrap().random_range(0..60);
        if us > 40 {
            std::thread::yield_now();
        } else if us > 0 {
            std::thread::sleep(Duration::from_micros(us));
        }
    }
}

impl CacheBackend for Racy {
    fn acquire_volume(&self, key: &[u8], aux: &[u8]) -> Result<VolumeId, StoreError> {
        self.store.acquire_volume(key, aux)
    }
    fn relinquish_volume(&self, volume: VolumeId, invalidate: bool) -> Result<(), StoreError> {
        self.store.relinquish_volume(volume, invalidate)
    }
    fn lookup_cookie(
        &self,
        volume: VolumeId,
        key: &[u8],
        aux: &[u8],
        size: u64,
        on_negative: &mut dyn FnMut(),
    ) -> Result<Lookup, StoreError> {
        self.nap();
        let r = self
            .store
            .lookup_cookie(volume, key, aux, size, on_negative);
        self.nap();
        r
    }
    fn withdraw_cookie(
        &self,
        object: ObjectId,
        retire: bool,
        aux: &[u8],
        size: u64,
    ) -> Result<(), StoreError> {
        if self
            .in_flight
            .lock()
            .unwrap()
            .get(&object)
            .copied()
            .unwrap_or(0)
            > 0
        {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
        self.withdrawals.fetch_add(1, Ordering::SeqCst);
        self.nap();
        self.store.withdraw_cookie(object, retire, aux, size)
    }
    fn retire(&self, volume: VolumeId, key: &[u8]) -> Result<(), StoreError> {
        self.store.retire(volume, key)
    }
    fn prepare_to_write(&self, object: ObjectId) -> Result<(), StoreError> {
        self.store.prepare_to_write(object)
    }
    fn invalidate_cookie(&self, object: ObjectId, aux: &[u8], size: u64) -> Result<(), StoreError> {
        self.nap();
        self.store.invalidate_cookie(object, aux, size)
    }
    fn resize_cookie(&self, object: ObjectId, size: u64) -> Result<(), StoreError> {
        self.store.resize_cookie(object, size)
    }
    fn begin_operation(&self, object: ObjectId) -> Result<u64, StoreError> {
        *self.in_flight.lock().unwrap().entry(object).or_default() += 1;
        let r = CacheBackend::begin_operation(&self.store, object);
        if r.is_err() {
            *self.in_flight.lock().unwrap().entry(object).or_default() -= 1;
        }
        r
    }
    fn end_operation(&self, object: ObjectId) {
        CacheBackend::end_operation(&self.store, object);
        *self.in_flight.lock().unwrap().entry(object).or_default() -= 1;
    }
    fn read(
        &self,
        object: ObjectId,
        data_gen: u64,
        offset: u64,
        len: u64,
    ) -> Result<Segments, StoreError> {
        self.nap();
        let r = CacheBackend::read(&self.store, object, data_gen, offset, len);
        self.nap();
        r
    }
    fn write(
        &self,
        object: ObjectId,
        data_gen: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StoreError> {
        self.nap();
        let r = CacheBackend::write(&self.store, object, data_gen, offset, data);
        self.nap();
        r
    }
    fn query_occupancy(&self, object: ObjectId) -> Result<Vec<(u64, u64)>, StoreError> {
        self.store.query_occupancy(object)
    }
    fn under_pressure(&self) -> bool {
        false
    }
}

/// A formatted cache file on the uring engine; the file is removed at once
/// (the engine keeps it open).
fn uring_device() -> Option<Arc<dyn ringcache::io::IoEngine>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.img");
    ringcache::util::create_backing_file(&path, SMALL_DEVICE).unwrap();
    let opts = ringcache::io::OpenOptions {
        engine: ringcache::io::EngineKind::Uring,
        pool: ringcache::io::PoolConfig {
            classes: vec![(4096, 64), (64 << 10, 16)],
        },
        queue_depth: 32,
        ..Default::default()
    };
    match ringcache::io::open(&path, &opts) {
        Ok(e) => {
            ringcache::store::format(
                e.as_ref(),
                &ringcache::store::FormatOptions {
                    geometry: small_geometry(),
                    ..Default::default()
                },
            )
            .unwrap();
            Some(e)
        }
        Err(e) if std::env::var_os("CI").is_some() => panic!("io_uring is required in CI: {e}"),
        Err(e) => {
            eprintln!("uring engine unavailable, using sim: {e}");
            None
        }
    }
}

fn seeds() -> u64 {
    std::env::var("RINGCACHE_RACE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150)
}

fn setup(seed: u64) -> (Arc<Racy>, Arc<Fscache>) {
    let b = Racy::new(seed);
    let cache = Arc::new(Fscache::new(b.clone(), FscacheConfig::default()));
    (b, cache)
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

#[test]
fn lru_discard_racing_relinquish_never_overrides_it() {
    for seed in 0..seeds() {
        let (b, cache) = setup(seed);
        let vol = cache.acquire_volume("v", b"").unwrap();
        let c = cache.acquire_cookie(&vol, b"k", b"a", 4096).unwrap();
        cache.use_cookie(&c, false);
        cache
            .begin_operation(&c, true)
            .write(0, &[1; 4096])
            .unwrap();
        cache.unuse_cookie(&c, None, None);
        let retire = seed % 2 == 0;
        let gate = Arc::new(Barrier::new(2));
        let t = {
            let (cache, gate) = (cache.clone(), gate.clone());
            std::thread::spawn(move || {
                gate.wait();
                cache.lru_scan(later());
            })
        };
        gate.wait();
        if seed % 3 == 0 {
            std::thread::yield_now();
        }
        relinquish_within(&cache, &c, retire, seed);
        t.join().unwrap();
        assert_eq!(
            c.state(),
            CookieState::Dropped,
            "seed {seed}: the relinquishment happened"
        );
        assert_eq!(cache.cookie_count(), 0, "seed {seed}: unhashed");
        let vid = vol.id();
        let found = b.store.lookup(vid, b"k").unwrap();
        assert_eq!(
            found.is_none(),
            retire,
            "seed {seed}: retire deletes, no retire keeps"
        );
        assert_eq!(b.violations.load(Ordering::SeqCst), 0);
        cache.relinquish_volume(&vol, false).unwrap();
    }
}

#[test]
fn no_withdrawal_while_accesses_are_in_flight() {
    for seed in 0..seeds() {
        let (b, cache) = setup(seed);
        let vol = cache.acquire_volume("v", b"").unwrap();
        let c = cache.acquire_cookie(&vol, b"k", b"a", 65536).unwrap();
        cache.use_cookie(&c, false);
        let stop = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..3)
            .map(|i| {
                let (cache, c, stop) = (cache.clone(), c.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while stop.load(Ordering::SeqCst) == 0 && n < 200 {
                        let op = cache.begin_operation(&c, true);
                        let _ = op.write((i * 4096) as u64, &[i as u8; 4096]);
                        let _ = op.read(0, 8192);
                        drop(op);
                        n += 1;
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_micros(200 + seed * 7 % 500));
        // Tear down while the workers run: an LRU discard (the cookie is
        // unused by the test thread but accessed by workers), a cache
        // withdrawal, or a relinquishment.
        match seed % 3 {
            0 => {
                cache.unuse_cookie(&c, None, None);
                cache.lru_scan(later());
            }
            1 => cache.withdraw_cache("test"),
            _ => cache.relinquish_cookie(&c, false),
        }
        stop.store(1, Ordering::SeqCst);
        for w in workers {
            w.join().unwrap();
        }
        if seed % 3 != 2 {
            cache.relinquish_cookie(&c, false);
        }
        assert_eq!(c.state(), CookieState::Dropped);
        assert_eq!(
            b.violations.load(Ordering::SeqCst),
            0,
            "seed {seed}: a withdrawal ran with accesses in flight"
        );
        assert!(
            b.withdrawals.load(Ordering::SeqCst) >= 1,
            "seed {seed}: the object was withdrawn"
        );
    }
}

#[test]
fn withdrawal_racing_a_new_use_leaves_the_cookie_usable() {
    for seed in 0..seeds() {
        let (b, cache) = setup(seed);
        let vol = cache.acquire_volume("v", b"").unwrap();
        let c = cache.acquire_cookie(&vol, b"k", b"a", 8192).unwrap();
        cache.use_cookie(&c, false);
        cache
            .begin_operation(&c, true)
            .write(0, &[5; 8192])
            .unwrap();
        cache.unuse_cookie(&c, None, None);
        let gate = Arc::new(Barrier::new(2));
        let t = {
            let (cache, gate) = (cache.clone(), gate.clone());
            std::thread::spawn(move || {
                gate.wait();
                cache.lru_scan(later());
            })
        };
        gate.wait();
        cache.use_cookie(&c, false);
        t.join().unwrap();
        // Whatever the order, a user holds the cookie: it ends up bound and
        // serving the cached data again.
        let deadline = Instant::now() + Duration::from_secs(5);
        while c.state() != CookieState::Active && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(50));
        }
        assert_eq!(c.state(), CookieState::Active, "seed {seed}");
        let op = cache.begin_operation(&c, false);
        match op.read(0, 8192).unwrap() {
            ReadOutcome::Data(segs) => {
                for s in segs {
                    if let Segment::Data { data, .. } = s {
                        assert!(data.iter().all(|&x| x == 5), "seed {seed}");
                    }
                }
            }
            other => panic!("seed {seed}: used cookie reads {other:?}"),
        }
        drop(op);
        assert_eq!(op_write(&cache, &c), WriteOutcome::Written, "seed {seed}");
        cache.relinquish_cookie(&c, false);
        assert_eq!(b.violations.load(Ordering::SeqCst), 0);
    }
}

/// Relinquish, failing the test (instead of hanging) if it never completes.
fn relinquish_within(
    cache: &Arc<Fscache>,
    c: &Arc<ringcache::cookie::Cookie>,
    retire: bool,
    seed: u64,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (cache, c) = (cache.clone(), c.clone());
    std::thread::spawn(move || {
        cache.relinquish_cookie(&c, retire);
        let _ = tx.send(());
    });
    if rx.recv_timeout(Duration::from_secs(10)).is_err() {
        panic!("seed {seed}: the relinquishment never completed (lost to an LRU discard?)");
    }
}

fn op_write(cache: &Fscache, c: &Arc<ringcache::cookie::Cookie>) -> WriteOutcome {
    cache.begin_operation(c, true).write(0, &[6; 4096]).unwrap()
}

#[test]
fn invalidation_racing_reads_and_writes_never_returns_old_data() {
    for seed in 0..seeds() {
        let (b, cache) = setup(seed);
        let vol = cache.acquire_volume("v", b"").unwrap();
        let c = cache.acquire_cookie(&vol, b"k", b"0", 16384).unwrap();
        cache.use_cookie(&c, false);
        let stop = Arc::new(AtomicU64::new(0));
        let old_data_seen = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        // Writers tag every byte with the invalidation counter their
        // operation began under.
        for w in 0..2u64 {
            let (cache, c, stop) = (cache.clone(), c.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                while stop.load(Ordering::SeqCst) == 0 {
                    let op = cache.begin_operation(&c, true);
                    let tag = op.inval_counter() as u8;
                    let _ = op.write(w * 8192, &[tag; 8192]);
                }
            }));
        }
        // Readers: data must carry exactly their operation's counter.
        for _ in 0..2 {
            let (cache, c, stop, seen) = (
                cache.clone(),
                c.clone(),
                stop.clone(),
                old_data_seen.clone(),
            );
            threads.push(std::thread::spawn(move || {
                while stop.load(Ordering::SeqCst) == 0 {
                    let op = cache.begin_operation(&c, false);
                    let want = op.inval_counter() as u8;
                    if let Ok(ReadOutcome::Data(segs)) = op.read(0, 16384) {
                        for s in segs {
                            if let Segment::Data { data, .. } = s
                                && data.iter().any(|&x| x != want)
                            {
                                seen.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                }
            }));
        }
        for i in 1..=5u8 {
            std::thread::sleep(Duration::from_micros(100 + (seed * 13 % 200)));
            cache.invalidate(&c, &[b'0' + i], 16384).unwrap();
        }
        std::thread::sleep(Duration::from_micros(300));
        stop.store(1, Ordering::SeqCst);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            old_data_seen.load(Ordering::SeqCst),
            0,
            "seed {seed}: data from before an invalidation was read"
        );
        assert_eq!(c.inval_counter(), 5);
        cache.relinquish_cookie(&c, false);
        assert_eq!(b.violations.load(Ordering::SeqCst), 0);
    }
}

#[test]
fn relinquish_with_retire_racing_a_lookup_of_the_same_key() {
    for seed in 0..seeds() {
        let (_b, cache) = setup(seed);
        let vol = cache.acquire_volume("v", b"").unwrap();
        let old = cache.acquire_cookie(&vol, b"k", b"a", 4096).unwrap();
        cache.use_cookie(&old, false);
        cache
            .begin_operation(&old, true)
            .write(0, &[9; 4096])
            .unwrap();
        cache.unuse_cookie(&old, None, None);
        let gate = Arc::new(Barrier::new(2));
        let t = {
            let (cache, gate, old) = (cache.clone(), gate.clone(), old.clone());
            std::thread::spawn(move || {
                gate.wait();
                cache.relinquish_cookie(&old, true);
            })
        };
        gate.wait();
        // The new user retries while the old cookie is live (Busy); once it
        // is being relinquished the acquire waits for it to be dropped.
        let new = loop {
            match cache.acquire_cookie(&vol, b"k", b"a", 4096) {
                Ok(c) => break c,
                Err(CacheError::Busy(_)) => std::thread::yield_now(),
                Err(e) => panic!("seed {seed}: {e}"),
            }
        };
        cache.use_cookie(&new, false);
        let op = cache.begin_operation(&new, false);
        match op.read(0, 4096).unwrap() {
            ReadOutcome::NoData => {}
            ReadOutcome::Data(segs) => {
                assert!(
                    segs.iter().all(|s| matches!(s, Segment::Hole { .. })),
                    "seed {seed}: the new cookie saw retired content"
                );
            }
            ReadOutcome::Stale => panic!("seed {seed}: stale"),
        }
        drop(op);
        t.join().unwrap();
        assert_eq!(old.state(), CookieState::Dropped);
        cache.relinquish_cookie(&new, false);
    }
}
