//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use ringcache::io::IoEngine;
use ringcache::io::sim::{SimEngine, SimFaults};
use ringcache::store::{FormatOptions, Segment, Store, StoreConfig, format};
use ringcache_ondisk::superblock::GeometryParams;

/// A small layout that exercises log wrap-around, checkpoints and region
/// reuse quickly: 64 regions of 64 KiB, a 16-block log, 256 KiB slots.
pub fn small_geometry() -> GeometryParams {
    GeometryParams {
        region_bytes: Some(64 << 10),
        metalog_bytes: Some(64 << 10),
        ckpt_slot_bytes: Some(256 << 10),
    }
}

/// Device bytes that fit [`small_geometry`] with 64 regions.
pub const SMALL_DEVICE: u64 = (1 << 20) + 64 * (64 << 10);

/// A formatted sim device.
pub fn formatted_sim(bytes: u64, geometry: GeometryParams, faults: SimFaults) -> Arc<SimEngine> {
    let sim = Arc::new(SimEngine::new(bytes, SimFaults::default()));
    format(
        sim.as_ref(),
        &FormatOptions {
            tag: "test".into(),
            geometry,
            force: false,
        },
    )
    .expect("format");
    sim.set_faults(faults);
    sim
}

/// Open a store on `engine` with default config.
pub fn open(engine: Arc<dyn IoEngine>) -> Store {
    Store::open(engine, StoreConfig::default()).expect("open")
}

/// Concatenate data segments into (offset, bytes) runs, holes skipped.
pub fn data_runs(segs: &[Segment]) -> Vec<(u64, Vec<u8>)> {
    segs.iter()
        .filter_map(|s| match s {
            Segment::Data { offset, data } => Some((*offset, data.to_vec())),
            Segment::Hole { .. } => None,
        })
        .collect()
}

/// Read the whole range and return the bytes, `None` for any hole byte.
pub fn read_all(store: &Store, id: u64, offset: u64, len: u64) -> Vec<Option<u8>> {
    let segs = store.read(id, offset, len).expect("read");
    let mut out = Vec::new();
    for s in &segs {
        match s {
            Segment::Data { data, .. } => out.extend(data.iter().map(|&b| Some(b))),
            Segment::Hole { len, .. } => out.extend(std::iter::repeat_n(None, *len as usize)),
        }
    }
    out
}
pub mod daemon;
pub mod ringcached_bin;
