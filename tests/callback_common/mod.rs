//! Helpers shared by the callback-layer tests: a coherent cache on the sim
//! engine, file contents derived from (file, version), and reading bytes
//! out of segments.
#![allow(dead_code)]

use std::sync::Arc;

use ringcache::callback::{CallbackConfig, Coherent};
use ringcache::cookie::{Fscache, FscacheConfig, Volume};
use ringcache::io::sim::{SimEngine, SimFaults};
use ringcache::store::{FormatOptions, Segment, Store, StoreConfig, format};
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
