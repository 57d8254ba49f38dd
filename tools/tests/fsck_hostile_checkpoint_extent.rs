//! A checkpoint crafted with valid crcs whose CkptExtent is longer than
//! the store's in-memory extent map can hold (the format bounds it by the
//! region, 8 MiB here; the map packs lengths into 21 bits) must not crash
//! fsck. The store's loader trips a debug assertion on it (in release it
//! would pack a wrong extent); fsck reports a failure or damage, never a
//! clean cache and never a crash.

mod common;

use std::sync::Arc;

use common::*;
use ringcache::io::sim::{SimEngine, SimFaults};
use ringcache::store::{FormatOptions, Store, StoreConfig, format};
use ringcache_ondisk::checkpoint::CheckpointHeader;
use ringcache_ondisk::superblock::GeometryParams;
use ringcache_ondisk::{Record, RecordIter};
use zerocopy::IntoBytes;

#[test]
fn long_checkpoint_extent() {
    let geometry = GeometryParams {
        region_bytes: Some(8 << 20),
        metalog_bytes: Some(64 << 10),
        ckpt_slot_bytes: Some(256 << 10),
    };
    let sim = Arc::new(SimEngine::new(
        (1 << 20) + 2 * (8 << 20),
        SimFaults::default(),
    ));
    format(
        sim.as_ref(),
        &FormatOptions {
            tag: "hostile".into(),
            geometry,
            force: false,
        },
    )
    .expect("format");
    let store = Store::open(sim.clone(), StoreConfig::default()).expect("open");
    let v = store.volume(b"v", true).expect("volume");
    let id = store.create(v, b"big", b"", 4 << 20).expect("create");
    store.write(id, 0, &pattern(5, 1 << 20)).expect("write");
    store.close().expect("close");
    let mut image = sim.current_image();

    // Re-encode the newest checkpoint with its one extent 3 MiB long, and
    // fix both crcs so that only the length is wrong.
    let (_, off, mut info) = loaded_checkpoint(&image);
    let uuid = load_image(&image).sb.uuid;
    let start = off as usize + 4096;
    let payload = image[start..start + info.payload_bytes as usize].to_vec();
    let mut out = Vec::new();
    let mut changed = 0;
    for rec in RecordIter::new(&payload) {
        let mut rec = rec.expect("record");
        if let Record::CkptExtent { length, .. } = &mut rec {
            *length = 3 << 20;
            changed += 1;
        }
        rec.encode(&mut out);
    }
    assert_eq!(changed, 1);
    assert_eq!(out.len(), payload.len());
    image[start..start + out.len()].copy_from_slice(&out);
    info.payload_crc = ringcache_ondisk::crc32c(&out);
    let h = CheckpointHeader::new(&info, uuid);
    image[off as usize..off as usize + 128].copy_from_slice(h.as_bytes());

    let f = temp_image(&image);
    let (code, report) = fsck(f.path());
    assert_ne!(code, 0, "a crafted extent is not a clean cache: {report:#}");
    inspect_survives(f.path());
}
