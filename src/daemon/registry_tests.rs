//! The daemon's volume registry holds no lock across store I/O: while one
//! connection's AcquireVolume waits in the store (a gate here, a flush of
//! a slow device in life), other connections acquire other volumes and
//! their cookies, and a second acquire of the same key waits for the first
//! instead of failing Busy.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::config::Config;
use super::connection::{Conn, Peer};
use super::server::{Daemon, VolumeSlot, lock, own_uid};
use crate::client::{VolumeHandle, request};
use crate::cookie::{CacheBackend, Lookup};
use crate::proto::{Op, Status};
use crate::store::{ObjectId, Segments, Store, StoreError, VolumeId};

/// The store, with a gate in `acquire_volume` for the key `slow`.
struct Gate {
    store: Arc<Store>,
    state: Mutex<(bool, bool)>, // (entered, open)
    cv: Condvar,
}

impl Gate {
    fn wait_entered(&self) {
        let mut g = self.state.lock().unwrap();
        while !g.0 {
            g = self.cv.wait(g).unwrap();
        }
    }
    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.cv.notify_all();
    }
}

impl CacheBackend for Gate {
    fn acquire_volume(&self, key: &[u8], aux: &[u8]) -> Result<VolumeId, StoreError> {
        if key == b"slow" {
            let mut g = self.state.lock().unwrap();
            g.0 = true;
            self.cv.notify_all();
            while !g.1 {
                g = self.cv.wait(g).unwrap();
            }
        }
        self.store.acquire_volume(key, aux)
    }
    fn relinquish_volume(&self, v: VolumeId, invalidate: bool) -> Result<(), StoreError> {
        self.store.relinquish_volume(v, invalidate)
    }
    fn lookup_cookie(
        &self,
        v: VolumeId,
        key: &[u8],
        aux: &[u8],
        size: u64,
        on_negative: &mut dyn FnMut(),
    ) -> Result<Lookup, StoreError> {
        self.store.lookup_cookie(v, key, aux, size, on_negative)
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
    fn retire(&self, v: VolumeId, key: &[u8]) -> Result<(), StoreError> {
        CacheBackend::retire(&*self.store, v, key)
    }
    fn prepare_to_write(&self, o: ObjectId) -> Result<(), StoreError> {
        self.store.prepare_to_write(o)
    }
    fn invalidate_cookie(&self, o: ObjectId, aux: &[u8], size: u64) -> Result<(), StoreError> {
        self.store.invalidate_cookie(o, aux, size)
    }
    fn resize_cookie(&self, o: ObjectId, size: u64) -> Result<(), StoreError> {
        self.store.resize_cookie(o, size)
    }
    fn begin_operation(&self, o: ObjectId) -> Result<u64, StoreError> {
        CacheBackend::begin_operation(&*self.store, o)
    }
    fn end_operation(&self, o: ObjectId) {
        CacheBackend::end_operation(&*self.store, o)
    }
    fn read(&self, o: ObjectId, gen_: u64, offset: u64, len: u64) -> Result<Segments, StoreError> {
        CacheBackend::read(&*self.store, o, gen_, offset, len)
    }
    fn write(&self, o: ObjectId, gen_: u64, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        CacheBackend::write(&*self.store, o, gen_, offset, data)
    }
    fn query_occupancy(&self, o: ObjectId) -> Result<Vec<(u64, u64)>, StoreError> {
        CacheBackend::query_occupancy(&*self.store, o)
    }
    fn under_pressure(&self) -> bool {
        CacheBackend::under_pressure(&*self.store)
    }
}

fn acquire(d: &Daemon, conn: &Mutex<Conn>, key: &[u8]) -> Result<VolumeHandle, Status> {
    let peer = Peer {
        uid: own_uid(),
        gid: 0,
    };
    let reply = d.handle(
        conn,
        &peer,
        Op::AcquireVolume,
        &request::acquire_volume(key, b"").unwrap(),
    );
    if reply.status != Status::Ok {
        return Err(reply.status);
    }
    let body = reply.body.finish();
    Ok(VolumeHandle(u32::from_le_bytes(
        body[..4].try_into().unwrap(),
    )))
}

#[test]
fn an_acquire_waiting_in_the_store_holds_up_no_other_volume() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::embedded();
    cfg.device = dir.path().join("cache.img");
    cfg.create_bytes = Some(64 << 20);
    let gate: Arc<Mutex<Option<Arc<Gate>>>> = Arc::new(Mutex::new(None));
    let g2 = gate.clone();
    let d = Daemon::open_with(cfg, move |store| {
        let g = Arc::new(Gate {
            store,
            state: Mutex::new((false, false)),
            cv: Condvar::new(),
        });
        *g2.lock().unwrap() = Some(g.clone());
        g
    })
    .unwrap();
    let gate = gate.lock().unwrap().clone().unwrap();
    let (a, b, c) = (
        Mutex::new(Conn::default()),
        Mutex::new(Conn::default()),
        Mutex::new(Conn::default()),
    );
    std::thread::scope(|s| {
        let slow = s.spawn(|| acquire(&d, &a, b"slow"));
        gate.wait_entered();
        // Another connection, another volume and a cookie in it: done
        // while the first acquire waits in the store.
        let other = s.spawn(|| {
            let v = acquire(&d, &b, b"fast")?;
            let peer = Peer {
                uid: own_uid(),
                gid: 0,
            };
            let payload = request::acquire_cookie(v, b"obj", b"", 4096).unwrap();
            Ok::<Status, Status>(d.handle(&b, &peer, Op::AcquireCookie, &payload).status)
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !other.is_finished() {
            if std::time::Instant::now() > deadline {
                gate.open();
                panic!("another volume's acquire waited for the slow one");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(other.join().unwrap(), Ok(Status::Ok));
        // The same key on a third connection waits for the first (it must
        // not fail Busy because the cookie layer already has the volume).
        let same = s.spawn(|| acquire(&d, &c, b"slow"));
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !same.is_finished(),
            "the same key did not wait: {:?}",
            same.join()
        );
        assert!(matches!(
            lock(&d.volumes).get(&b"slow"[..]),
            Some(VolumeSlot::Changing)
        ));
        gate.open();
        assert!(slow.join().unwrap().is_ok());
        assert!(same.join().unwrap().is_ok());
    });
    match lock(&d.volumes).get(&b"slow"[..]) {
        Some(VolumeSlot::Held(_, n)) => assert_eq!(*n, 2),
        _ => panic!("slow is not held"),
    }
    // Both let go: the volume is relinquished and its key free again.
    d.release_volume(b"slow", false);
    d.release_volume(b"slow", false);
    assert!(lock(&d.volumes).get(&b"slow"[..]).is_none());
    assert!(acquire(&d, &a, b"slow").is_ok());
}
