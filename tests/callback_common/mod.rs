//! Helpers shared by the callback-layer tests: a coherent cache on the sim
//! engine, file contents derived from (file, version), and reading bytes
//! out of segments.
#![allow(dead_code)]

use std::sync::{Arc, Condvar, Mutex};

use ringcache::callback::{CallbackConfig, Coherent};
use ringcache::cookie::{CacheBackend, Fscache, FscacheConfig, Lookup, Volume};
use ringcache::io::sim::{SimEngine, SimFaults};
use ringcache::store::{
    FormatOptions, ObjectId, Segment, Segments, Store, StoreConfig, StoreError, VolumeId, format,
};
use ringcache_ondisk::superblock::GeometryParams;

/// File size the tests use: two blocks.
pub const FILE_BYTES: u64 = 8192;

/// 64 regions of 64 KiB, as the other tests' small geometry.
pub fn small_geometry() -> GeometryParams {
    GeometryParams {
        region_bytes: Some(64 << 10),
        metalog_bytes: Some(64 << 10),
        ckpt_slot_bytes: Some(256 << 10),
    }
}

/// Device bytes that fit [`small_geometry`] with 64 regions.
pub const SMALL_DEVICE: u64 = (1 << 20) + 64 * (64 << 10);

/// A formatted sim device and a store on it.
pub fn sim_store() -> Arc<Store> {
    let sim = Arc::new(SimEngine::new(SMALL_DEVICE, SimFaults::default()));
    format(
        sim.as_ref(),
        &FormatOptions {
            tag: "test".into(),
            geometry: small_geometry(),
            force: false,
        },
    )
    .expect("format");
    Arc::new(Store::open(sim, StoreConfig::default()).expect("open"))
}

/// A coherent cache over a fresh sim store, with one volume.
pub fn coherent(cfg: CallbackConfig) -> (Arc<Store>, Coherent, Arc<Volume>) {
    let store = sim_store();
    let cache = Arc::new(Fscache::new(store.clone(), FscacheConfig::default()));
    let vol = cache.acquire_volume("afs.cell", b"").expect("volume");
    (store, Coherent::new(cache, cfg), vol)
}

/// The content of `file` at data version `version`: every byte tells
/// both, so a read shows which version it came from.
pub fn content(file: u64, version: u64, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let x = file
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(version.wrapping_mul(0xbf58_476d_1ce4_e5b9))
                .wrapping_add(i / 512);
            (x ^ (x >> 29) ^ (x >> 47)) as u8
        })
        .collect()
}

/// The bytes segments cover, `None` for a hole byte.
pub fn seg_bytes(segs: &[Segment]) -> Vec<Option<u8>> {
    let mut out = Vec::new();
    for s in segs {
        match s {
            Segment::Data { data, .. } => out.extend(data.iter().map(|&b| Some(b))),
            Segment::Hole { len, .. } => out.extend(std::iter::repeat_n(None, *len as usize)),
        }
    }
    out
}

/// Where a [`Gated`] backend blocks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum GateAt {
    Invalidate,
    Resize,
}

#[derive(Default)]
pub struct GateState {
    pub armed: bool,
    pub entered: bool,
    pub open: bool,
}

/// The store, with a gate in `invalidate_cookie` or `resize_cookie`: once
/// armed, the next call there waits until `open`.
pub struct Gated {
    pub store: Arc<Store>,
    pub at: GateAt,
    pub gate: Mutex<GateState>,
    pub cv: Condvar,
}

impl Gated {
    pub fn new(store: Arc<Store>, at: GateAt) -> Gated {
        Gated {
            store,
            at,
            gate: Mutex::new(GateState::default()),
            cv: Condvar::new(),
        }
    }
    fn pass(&self, here: GateAt) {
        if here != self.at {
            return;
        }
        let mut g = self.gate.lock().unwrap();
        if g.armed {
            g.entered = true;
            self.cv.notify_all();
            while !g.open {
                g = self.cv.wait(g).unwrap();
            }
        }
    }
    pub fn wait_entered(&self) {
        let mut g = self.gate.lock().unwrap();
        while !g.entered {
            g = self.cv.wait(g).unwrap();
        }
    }
    pub fn open(&self) {
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
        self.pass(GateAt::Invalidate);
        self.store.invalidate_cookie(o, aux, size)
    }
    fn resize_cookie(&self, o: ObjectId, size: u64) -> Result<(), StoreError> {
        self.pass(GateAt::Resize);
        self.store.resize_cookie(o, size)
    }
    fn begin_operation(&self, o: ObjectId) -> Result<u64, StoreError> {
        CacheBackend::begin_operation(&*self.store, o)
    }
    fn end_operation(&self, o: ObjectId) {
        self.store.end_operation(o)
    }
    fn read(&self, o: ObjectId, g: u64, offset: u64, len: u64) -> Result<Segments, StoreError> {
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
