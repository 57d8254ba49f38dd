//! The life of cookies and volumes, one step at a time: lookup negative and
//! positive, coherency checks, LRU discard and reuse, invalidation, resize,
//! relinquish with and without retire, volume rules, a cookie left dirty by
//! a crash, and cache withdrawal on a dead device. Runs on the sim engine
//! and, where io_uring is available, on the uring engine over a file.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ringcache::cookie::{
    CacheError, CookieState, Fscache, FscacheConfig, ReadOutcome, WriteOutcome,
};
use ringcache::io::sim::{SimEngine, SimFaults};
use ringcache::io::{EngineKind, IoEngine, OpenOptions};
use ringcache::store::{FormatOptions, Segment, Store, StoreConfig, format};

fn data(v: u8, n: usize) -> Vec<u8> {
    vec![v; n]
}

fn read_bytes(out: ReadOutcome) -> Option<Vec<Option<u8>>> {
    match out {
        ReadOutcome::Data(segs) => {
            let mut v = Vec::new();
            for s in segs {
                match s {
                    Segment::Data { data, .. } => v.extend(data.iter().map(|&b| Some(b))),
                    Segment::Hole { len, .. } => v.extend(std::iter::repeat_n(None, len as usize)),
                }
            }
            Some(v)
        }
        _ => None,
    }
}

/// Every engine the lifecycle runs on: the sim engine always, the uring
/// engine over a temp file where io_uring works (in CI it must).
fn engines() -> Vec<(&'static str, Arc<dyn IoEngine>, Option<tempfile::TempDir>)> {
    let mut v: Vec<(&'static str, Arc<dyn IoEngine>, Option<tempfile::TempDir>)> = vec![(
        "sim",
        formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default()),
        None,
    )];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.img");
    ringcache::util::create_backing_file(&path, 64 << 20).unwrap();
    match ringcache::io::open(
        &path,
        &OpenOptions {
            engine: EngineKind::Uring,
            ..Default::default()
        },
    ) {
        Ok(e) => {
            format(
                e.as_ref(),
                &FormatOptions {
                    geometry: small_geometry(),
                    ..Default::default()
                },
            )
            .unwrap();
            v.push(("uring", e, Some(dir)));
        }
        Err(e) if std::env::var_os("CI").is_some() => panic!("io_uring is required in CI: {e}"),
        Err(e) => eprintln!("skipping the uring engine: {e}"),
    }
    v
}

fn cache_on(engine: Arc<dyn IoEngine>) -> (Arc<Store>, Fscache) {
    let store = Arc::new(Store::open(engine, StoreConfig::default()).unwrap());
    let cache = Fscache::new(store.clone(), FscacheConfig::default());
    (store, cache)
}

#[test]
fn lookup_write_read_discard_reuse_relinquish() {
    for (name, engine, _dir) in engines() {
        let (_store, cache) = cache_on(engine);
        let vol = cache.acquire_volume("afs.example", b"vol-aux").unwrap();
        let c = cache.acquire_cookie(&vol, b"fid-1", b"v1", 8192).unwrap();
        assert_eq!(c.state(), CookieState::Quiescent);
        cache.use_cookie(&c, true);
        assert_eq!(c.state(), CookieState::Active, "{name}");
        assert_eq!(cache.stats().get("lookups_negative"), Some(1));
        {
            let op = cache.begin_operation(&c, false);
            assert!(
                matches!(op.read(0, 4096).unwrap(), ReadOutcome::NoData),
                "{name}: a new object has nothing to read"
            );
            assert_eq!(op.write(0, &data(7, 8192)).unwrap(), WriteOutcome::Written);
            assert_eq!(c.accesses(), 1);
        }
        assert_eq!(c.accesses(), 0);
        assert!(c.object().is_some());
        {
            let op = cache.begin_operation(&c, false);
            let got = read_bytes(op.read(0, 8192).unwrap()).expect("data");
            assert!(got.iter().all(|b| *b == Some(7)), "{name}");
            assert_eq!(op.query_occupancy().unwrap(), vec![(0, 8192)]);
        }
        // Idle on the LRU: not yet expired, then expired.
        cache.unuse_cookie(&c, None, None);
        assert_eq!(cache.lru_scan(Instant::now()), 0);
        assert_eq!(cache.lru_scan(Instant::now() + Duration::from_secs(11)), 1);
        assert_eq!(c.state(), CookieState::Quiescent, "{name}: discarded");
        assert!(c.object().is_none());
        assert_eq!(cache.stats().get("lru_dropped"), Some(1));
        // Used again: a positive lookup finds the data.
        cache.use_cookie(&c, false);
        assert_eq!(c.state(), CookieState::Active);
        assert_eq!(cache.stats().get("lookups_positive"), Some(1));
        {
            let op = cache.begin_operation(&c, false);
            let got = read_bytes(op.read(0, 4096).unwrap()).expect("data after discard");
            assert!(got.iter().all(|b| *b == Some(7)));
        }
        cache.unuse_cookie(&c, None, None);
        cache.relinquish_cookie(&c, false);
        assert_eq!(c.state(), CookieState::Dropped);
        // A new cookie for the key sees the data (not retired)...
        let c2 = cache.acquire_cookie(&vol, b"fid-1", b"v1", 8192).unwrap();
        cache.use_cookie(&c2, false);
        {
            let op = cache.begin_operation(&c2, false);
            assert!(read_bytes(op.read(0, 4096).unwrap()).is_some(), "{name}");
        }
        // ...until it is retired.
        cache.relinquish_cookie(&c2, true);
        let c3 = cache.acquire_cookie(&vol, b"fid-1", b"v1", 8192).unwrap();
        cache.use_cookie(&c3, false);
        {
            let op = cache.begin_operation(&c3, false);
            assert!(
                matches!(op.read(0, 4096).unwrap(), ReadOutcome::NoData),
                "{name}: retired content is gone"
            );
        }
        cache.relinquish_cookie(&c3, false);
        cache.relinquish_volume(&vol, false).unwrap();
        assert_eq!(cache.cookie_count(), 0);
    }
}

#[test]
fn coherency_mismatch_discards_old_content() {
    let sim = formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default());
    let (_store, cache) = cache_on(sim);
    let vol = cache.acquire_volume("nfs", b"").unwrap();
    let c = cache.acquire_cookie(&vol, b"fh", b"mtime=1", 4096).unwrap();
    cache.use_cookie(&c, false);
    assert_eq!(
        cache
            .begin_operation(&c, false)
            .write(0, &data(1, 4096))
            .unwrap(),
        WriteOutcome::Written
    );
    cache.unuse_cookie(&c, None, None);
    cache.relinquish_cookie(&c, false);
    // The server's file changed: new coherency data.
    let c = cache.acquire_cookie(&vol, b"fh", b"mtime=2", 4096).unwrap();
    cache.use_cookie(&c, false);
    assert_eq!(cache.stats().get("lookups_negative"), Some(2));
    assert!(matches!(
        cache.begin_operation(&c, false).read(0, 4096).unwrap(),
        ReadOutcome::NoData
    ));
    cache.relinquish_cookie(&c, false);
}

#[test]
fn invalidate_and_resize() {
    let sim = formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default());
    let (store, cache) = cache_on(sim);
    let vol = cache.acquire_volume("nfs", b"").unwrap();
    let c = cache.acquire_cookie(&vol, b"fh", b"a", 16384).unwrap();
    cache.use_cookie(&c, false);
    let op = cache.begin_operation(&c, false);
    assert_eq!(op.write(0, &data(1, 16384)).unwrap(), WriteOutcome::Written);
    drop(op);
    let before = c.inval_counter();
    cache.invalidate(&c, b"b", 8192).unwrap();
    assert_eq!(c.inval_counter(), before + 1);
    assert_eq!(c.state(), CookieState::Active);
    let obj = c.object().unwrap();
    let info = store.stat(obj).unwrap();
    assert_eq!((info.aux.as_slice(), info.size), (&b"b"[..], 8192));
    assert!(matches!(
        cache.begin_operation(&c, false).read(0, 4096).unwrap(),
        ReadOutcome::NoData
    ));
    // New data after the invalidation is readable.
    assert_eq!(
        cache
            .begin_operation(&c, false)
            .write(0, &data(2, 8192))
            .unwrap(),
        WriteOutcome::Written
    );
    let got = read_bytes(cache.begin_operation(&c, false).read(0, 8192).unwrap()).unwrap();
    assert!(got.iter().all(|b| *b == Some(2)));
    cache.resize(&c, 4096).unwrap();
    assert_eq!(store.stat(obj).unwrap().size, 4096);
    assert_eq!(store.occupancy(obj).unwrap(), vec![(0, 4096)]);
    assert_eq!(cache.stats().get("invalidations"), Some(1));
    assert_eq!(cache.stats().get("resizes"), Some(1));
    cache.relinquish_cookie(&c, false);
}

#[test]
fn volumes_and_duplicate_cookies() {
    let sim = formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default());
    let (_store, cache) = cache_on(sim);
    assert!(matches!(
        cache.acquire_volume("", b""),
        Err(CacheError::Invalid(_))
    ));
    assert!(matches!(
        cache.acquire_volume("a/b", b""),
        Err(CacheError::Invalid(_))
    ));
    let vol = cache.acquire_volume("v", b"1").unwrap();
    assert!(
        matches!(cache.acquire_volume("v", b"1"), Err(CacheError::Busy(_))),
        "second acquire of a live volume"
    );
    let c = cache.acquire_cookie(&vol, b"k", b"", 0).unwrap();
    assert!(
        matches!(
            cache.acquire_cookie(&vol, b"k", b"", 0),
            Err(CacheError::Busy(_))
        ),
        "duplicate cookie"
    );
    assert!(matches!(
        cache.acquire_cookie(&vol, b"", b"", 0),
        Err(CacheError::Invalid(_))
    ));
    assert!(matches!(
        cache.acquire_cookie(&vol, &[1; 256], b"", 0),
        Err(CacheError::Invalid(_))
    ));
    assert!(
        matches!(
            cache.relinquish_volume(&vol, false),
            Err(CacheError::Busy(_))
        ),
        "cookies left"
    );
    cache.relinquish_cookie(&c, false);
    cache.relinquish_volume(&vol, false).unwrap();
    assert!(matches!(
        cache.acquire_cookie(&vol, b"k", b"", 0),
        Err(CacheError::VolumeRelinquished)
    ));
    // Volume coherency: new aux discards the volume's objects.
    let vol = cache.acquire_volume("v", b"1").unwrap();
    let c = cache.acquire_cookie(&vol, b"k", b"", 4096).unwrap();
    cache.use_cookie(&c, false);
    cache
        .begin_operation(&c, false)
        .write(0, &data(1, 4096))
        .unwrap();
    cache.relinquish_cookie(&c, false);
    cache.relinquish_volume(&vol, false).unwrap();
    let vol = cache.acquire_volume("v", b"2").unwrap();
    let c = cache.acquire_cookie(&vol, b"k", b"", 4096).unwrap();
    cache.use_cookie(&c, false);
    assert!(matches!(
        cache.begin_operation(&c, false).read(0, 4096).unwrap(),
        ReadOutcome::NoData
    ));
    cache.relinquish_cookie(&c, false);
}

#[test]
fn dirty_after_crash_makes_the_object_stale() {
    let sim = formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default());
    {
        let (_store, cache) = cache_on(sim.clone());
        let vol = cache.acquire_volume("nfs", b"").unwrap();
        let c = cache.acquire_cookie(&vol, b"fh", b"a", 4096).unwrap();
        cache.use_cookie(&c, true); // will modify: prepare_to_write marks it dirty
        assert_eq!(cache.stats().get("prepare_to_write"), Some(1));
        cache
            .begin_operation(&c, true)
            .write(0, &data(9, 4096))
            .unwrap();
        // The process dies here: no unuse, no relinquish.
    }
    let image = sim.crash_image(
        1,
        ringcache::io::sim::CrashModel {
            keep: 0.0,
            tear: 0.0,
        },
    );
    let sim = Arc::new(SimEngine::from_image(image, SimFaults::default()));
    let (_store, cache) = cache_on(sim);
    let vol = cache.acquire_volume("nfs", b"").unwrap();
    let c = cache.acquire_cookie(&vol, b"fh", b"a", 4096).unwrap();
    cache.use_cookie(&c, false);
    assert_eq!(
        cache.stats().get("lookups_negative"),
        Some(1),
        "a dirty object is stale, not positive"
    );
    assert!(matches!(
        cache.begin_operation(&c, false).read(0, 4096).unwrap(),
        ReadOutcome::NoData
    ));
    cache.relinquish_cookie(&c, false);
}

#[test]
fn clean_relinquish_after_modification_keeps_content() {
    let sim = formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default());
    {
        let (store, cache) = cache_on(sim.clone());
        let vol = cache.acquire_volume("nfs", b"").unwrap();
        let c = cache.acquire_cookie(&vol, b"fh", b"a", 4096).unwrap();
        cache.use_cookie(&c, true);
        cache
            .begin_operation(&c, true)
            .write(0, &data(9, 4096))
            .unwrap();
        cache.unuse_cookie(&c, Some(b"a2"), None);
        cache.relinquish_cookie(&c, false);
        store.flush().unwrap();
    }
    let image = sim.crash_image(
        1,
        ringcache::io::sim::CrashModel {
            keep: 0.0,
            tear: 0.0,
        },
    );
    let (_store, cache) = cache_on(Arc::new(SimEngine::from_image(image, SimFaults::default())));
    let vol = cache.acquire_volume("nfs", b"").unwrap();
    let c = cache.acquire_cookie(&vol, b"fh", b"a2", 4096).unwrap();
    cache.use_cookie(&c, false);
    assert_eq!(
        cache.stats().get("lookups_positive"),
        Some(1),
        "clean, with the coherency data given at unuse"
    );
    let got = read_bytes(cache.begin_operation(&c, false).read(0, 4096).unwrap()).unwrap();
    assert!(got.iter().all(|b| *b == Some(9)));
    cache.relinquish_cookie(&c, false);
}

#[test]
fn dead_device_withdraws_the_cache() {
    let sim = formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default());
    let (_store, cache) = cache_on(sim.clone());
    let vol = cache.acquire_volume("nfs", b"").unwrap();
    let cookies: Vec<_> = (0..4u8)
        .map(|i| {
            let c = cache.acquire_cookie(&vol, &[b'k', i], b"", 8192).unwrap();
            cache.use_cookie(&c, false);
            cache
                .begin_operation(&c, false)
                .write(0, &data(i, 8192))
                .unwrap();
            c
        })
        .collect();
    sim.set_faults(SimFaults {
        dead_from_op: Some(0),
        ..Default::default()
    });
    // Reads now fail at the device; once the store gives up the cache is
    // withdrawn and every cookie leaves ACTIVE.
    for _ in 0..20 {
        let op = cache.begin_operation(&cookies[0], false);
        assert!(matches!(
            op.read(0, 4096).unwrap(),
            ReadOutcome::NoData | ReadOutcome::Data(_)
        ));
        drop(op);
        if cache.withdrawn().is_some() {
            break;
        }
        // A flush fails at once and fails the store.
        let _ = _store.flush();
    }
    assert!(cache.withdrawn().is_some(), "the cache was withdrawn");
    for c in &cookies {
        assert_ne!(c.state(), CookieState::Active);
        let op = cache.begin_operation(c, true);
        assert!(matches!(op.read(0, 4096).unwrap(), ReadOutcome::NoData));
        assert_eq!(op.write(0, &data(1, 4096)).unwrap(), WriteOutcome::Dropped);
    }
    assert!(cache.stats().get("writes_dropped").unwrap() >= 4);
    for c in &cookies {
        cache.relinquish_cookie(c, false);
    }
}
