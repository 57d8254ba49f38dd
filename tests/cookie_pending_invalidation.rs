//! An invalidation requested while another thread runs the cookie's state
//! machine (here: a resize blocked in the store) is pending until that
//! thread gets to it. Meanwhile the cookie is still ACTIVE on the old data
//! generation: a write must not begin (it would be bound to the old
//! generation and mark the cookie as having data), and a read must find
//! nothing, so that no read returns the bytes from before the
//! invalidation. Guards against `begin_operation` looking at the state
//! alone and not at the pending request.

mod callback_common;

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use callback_common::*;
use ringcache::cookie::{CacheBackend, Fscache, FscacheConfig, Lookup, ReadOutcome, WriteOutcome};
use ringcache::store::{ObjectId, Segment, Store, StoreError, VolumeId};

#[derive(Default)]
struct GateState {
    armed: bool,
    entered: bool,
    open: bool,
}

/// The store, with a gate in `resize_cookie`.
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
        self.store.invalidate_cookie(o, aux, size)
    }
    fn resize_cookie(&self, o: ObjectId, size: u64) -> Result<(), StoreError> {
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
fn a_pending_invalidation_hides_the_old_generation() {
    let gated = Arc::new(Gated {
        store: sim_store(),
        gate: Mutex::new(GateState::default()),
        cv: Condvar::new(),
    });
    let cache = Arc::new(Fscache::new(gated.clone(), FscacheConfig::default()));
    let vol = cache.acquire_volume("v", b"").unwrap();
    let cookie = cache
        .acquire_cookie(&vol, b"k", b"old", FILE_BYTES)
        .unwrap();
    cache.use_cookie(&cookie, false);
    let op = cache.begin_operation(&cookie, true);
    assert_eq!(op.write(0, &[0x01; 8192]).unwrap(), WriteOutcome::Written);
    drop(op);

    // A resize holds the state machine inside the store.
    gated.gate.lock().unwrap().armed = true;
    let resizer = {
        let (cache, cookie) = (cache.clone(), cookie.clone());
        std::thread::spawn(move || cache.resize(&cookie, FILE_BYTES).unwrap())
    };
    gated.wait_entered();
    // The invalidation is queued behind it and returns at once.
    cache.invalidate(&cookie, b"new", FILE_BYTES).unwrap();
    // A write now would land in the old generation: it waits for the
    // invalidation instead.
    let writer = {
        let (cache, cookie) = (cache.clone(), cookie.clone());
        std::thread::spawn(move || {
            let op = cache.begin_operation(&cookie, true);
            op.write(4096, &[0x02; 4096]).unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !writer.is_finished(),
        "a write began under a pending invalidation"
    );
    // A read finds nothing: never the bytes from before the invalidation.
    match cache.begin_operation(&cookie, false).read(0, 8192).unwrap() {
        ReadOutcome::NoData => {}
        ReadOutcome::Data(segs) => {
            let bytes = seg_bytes(&segs);
            assert!(
                !bytes.contains(&Some(0x01)),
                "old bytes read after invalidate returned"
            );
        }
        ReadOutcome::Stale => {}
    }
    gated.open();
    resizer.join().unwrap();
    assert_eq!(writer.join().unwrap(), WriteOutcome::Written);
    // After it: the old block 0 is gone, the new block 1 is there.
    match cache.begin_operation(&cookie, false).read(0, 8192).unwrap() {
        ReadOutcome::Data(segs) => {
            let bytes = seg_bytes(&segs);
            assert!(
                bytes[..4096].iter().all(|b| b.is_none()),
                "old block 0 survived"
            );
            assert!(bytes[4096..].iter().all(|&b| b == Some(0x02)));
        }
        other => panic!("expected the new block, got {other:?}"),
    }
}
