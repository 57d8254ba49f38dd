//! While one holder's revalidation is invalidating an object's data for a
//! new version, other threads see no valid promise: a read answers
//! Revalidate (never the old version's bytes), and another holder's
//! revalidation with the new version waits
//! until the invalidation is done instead of installing a promise over
//! data not yet discarded. The other holders get `Invalidated` zaps, the
//! one who invalidated does not.
//!
//! The store's invalidation is held at a gate (a cache backend that blocks
//! inside `invalidate_cookie`) so the window is deterministic.
//!
//! Guards against a version change whose steps (record the version,
//! discard the data, install the promise) can be observed half done: a
//! concurrent `Kept` would make the old bytes valid under the new version.

mod callback_common;

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use callback_common::*;
use ringcache::callback::{
    CallbackConfig, Coherent, CoherentRead, Promise, Revalidated, Validity, ZapReason,
};
use ringcache::cookie::{CacheBackend, Fscache, FscacheConfig, Lookup};
use ringcache::store::{ObjectId, Segment, Store, StoreError, VolumeId};

#[derive(Default)]
struct GateState {
    armed: bool,
    entered: bool,
    open: bool,
}

/// The store, with a gate in `invalidate_cookie`.
struct Gated {
    store: Arc<Store>,
    gate: Mutex<GateState>,
    cv: Condvar,
}

impl Gated {
    fn wait_entered(&self) {
        let mut g = self.gate.lock().unwrap();
        while !g.entered {
            g = self.cv.wait(g).unwrap();
        }
    }
    fn open(&self) {
        self.gate.lock().unwrap().open = true;
        self.cv.notify_all();
    }
}

impl CacheBackend for Gated {
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
        self.store
            .lookup_cookie(volume, key, aux, size, on_negative)
    }
    fn withdraw_cookie(
        &self,
        o: ObjectId,
        retire: bool,
        aux: &[u8],
        size: u64,
    ) -> Result<(), StoreError> {
        self.store.withdraw_cookie(o, retire, aux, size)
    }
    fn retire(&self, volume: VolumeId, key: &[u8]) -> Result<(), StoreError> {
        CacheBackend::retire(&*self.store, volume, key)
    }
    fn prepare_to_write(&self, o: ObjectId) -> Result<(), StoreError> {
        CacheBackend::prepare_to_write(&*self.store, o)
    }
    fn invalidate_cookie(&self, o: ObjectId, aux: &[u8], size: u64) -> Result<(), StoreError> {
        {
            let mut g = self.gate.lock().unwrap();
            if g.armed {
                g.entered = true;
                self.cv.notify_all();
                while !g.open {
                    g = self.cv.wait(g).unwrap();
                }
            }
        }
        self.store.invalidate_cookie(o, aux, size)
    }
    fn resize_cookie(&self, o: ObjectId, size: u64) -> Result<(), StoreError> {
        self.store.resize_cookie(o, size)
    }
    fn begin_operation(&self, o: ObjectId) -> Result<u64, StoreError> {
        CacheBackend::begin_operation(&*self.store, o)
    }
    fn end_operation(&self, o: ObjectId) {
        self.store.end_operation(o)
    }
    fn read(&self, o: ObjectId, g: u64, offset: u64, len: u64) -> Result<Vec<Segment>, StoreError> {
        CacheBackend::read(&*self.store, o, g, offset, len)
    }
    fn write(&self, o: ObjectId, g: u64, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        CacheBackend::write(&*self.store, o, g, offset, data)
    }
    fn query_occupancy(&self, o: ObjectId) -> Result<Vec<(u64, u64)>, StoreError> {
        self.store.query_occupancy(o)
    }
    fn under_pressure(&self) -> bool {
        self.store.under_pressure()
    }
}

#[test]
fn an_invalidation_in_progress_is_never_seen_half_done() {
    let gated = Arc::new(Gated {
        store: sim_store(),
        gate: Mutex::new(GateState::default()),
        cv: Condvar::new(),
    });
    let cache = Arc::new(Fscache::new(gated.clone(), FscacheConfig::default()));
    let vol = cache.acquire_volume("afs.cell", b"").unwrap();
    let co = Arc::new(Coherent::new(cache, CallbackConfig::default()));
    let now = Instant::now();
    let promise = move |v| Promise {
        expires_at: now + Duration::from_secs(600),
        data_version: v,
    };
    let (cookie, obj) = co
        .acquire_cookie(&vol, b"fid", Some(1), FILE_BYTES)
        .unwrap();
    co.cache().use_cookie(&cookie, false);
    let t = co.begin_fetch(obj);
    co.revalidate(&cookie, obj, t, promise(1), FILE_BYTES, None)
        .unwrap();
    co.write_fetched(&cookie, obj, t, 1, 0, &content(1, 1, FILE_BYTES))
        .unwrap();
    assert!(matches!(
        co.read(&cookie, obj, 0, FILE_BYTES, now).unwrap(),
        CoherentRead::Data {
            data_version: 1,
            ..
        }
    ));
    co.hold(obj, 1, 11).unwrap();
    co.hold(obj, 2, 22).unwrap();

    // Holder 1 learns of version 2; the store's invalidation is held.
    gated.gate.lock().unwrap().armed = true;
    let t1 = co.begin_fetch(obj);
    let a = {
        let (co, cookie) = (co.clone(), cookie.clone());
        std::thread::spawn(move || co.revalidate(&cookie, obj, t1, promise(2), FILE_BYTES, Some(1)))
    };
    gated.wait_entered();

    // Meanwhile: no valid promise, no old bytes, no writes.
    assert_eq!(co.validate(obj, now), Validity::Revalidate);
    assert!(matches!(
        co.read(&cookie, obj, 0, FILE_BYTES, now).unwrap(),
        CoherentRead::Revalidate
    ));
    // (A write of fetched data would wait in the cookie layer for the
    // invalidation to finish, so it is not tried here.)
    let t2 = co.begin_fetch(obj);
    // Holder 2's reply says version 2 as well: it must wait.
    let (tx, rx) = mpsc::channel();
    let b = {
        let (co, cookie) = (co.clone(), cookie.clone());
        std::thread::spawn(move || {
            let r = co.revalidate(&cookie, obj, t2, promise(2), FILE_BYTES, Some(2));
            tx.send(()).unwrap();
            r
        })
    };
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "a revalidation must not install a promise while the data is being invalidated"
    );
    assert_eq!(co.validate(obj, now), Validity::Revalidate);

    gated.open();
    let ra = a.join().unwrap().unwrap();
    let rb = b.join().unwrap().unwrap();
    match ra {
        Revalidated::Changed {
            zaps,
            promise_installed: true,
        } => {
            let z: Vec<_> = zaps.iter().map(|z| (z.holder, z.tag, z.reason)).collect();
            assert_eq!(
                z,
                vec![(2, 22, ZapReason::Invalidated)],
                "the other holder only"
            );
        }
        other => panic!("holder 1: {other:?}"),
    }
    assert!(matches!(rb, Revalidated::Kept), "holder 2: {rb:?}");
    assert!(matches!(
        co.read(&cookie, obj, 0, FILE_BYTES, now).unwrap(),
        CoherentRead::NoData { data_version: 2 }
    ));
    assert_eq!(co.stats().invalidating, 0);
    co.check_consistency().unwrap();
}
