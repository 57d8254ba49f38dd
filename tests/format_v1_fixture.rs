//! Caches formatted by format version 1 keep opening, with their content.
//!
//! `tests/fixtures/v1-small.img` was written by the first format version
//! (1.25 MiB: 4 regions of 64 KiB, a 16 KiB log, 16 KiB checkpoint slots)
//! and left as a crash left it: a checkpoint plus log records after it.
//! A later format must open it (or refuse it with a clear error, which
//! would change this test and the changelog in `ondisk/src/version.rs`).
//!
//! `RINGCACHE_WRITE_FIXTURE=1 cargo test --test format_v1_fixture` rewrites
//! the fixture; do that only when starting a new format version's fixture.

mod common;

use std::sync::Arc;

use common::read_all;
use ringcache::io::sim::{SimEngine, SimFaults};
use ringcache::store::{FormatOptions, Store, StoreConfig, format};
use ringcache_ondisk::superblock::GeometryParams;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1-small.img");
const DEVICE: u64 = (1 << 20) + 4 * (64 << 10);

fn content(key: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| key.wrapping_mul(31).wrapping_add((i % 253) as u8))
        .collect()
}

fn write_fixture() {
    let sim = Arc::new(SimEngine::new(DEVICE, SimFaults::default()));
    format(
        sim.as_ref(),
        &FormatOptions {
            tag: "fixture-v1".into(),
            geometry: GeometryParams {
                region_bytes: Some(64 << 10),
                metalog_bytes: Some(16 << 10),
                ckpt_slot_bytes: Some(16 << 10),
            },
            force: false,
        },
    )
    .unwrap();
    let store = Store::open(sim.clone(), StoreConfig::default()).unwrap();
    let vol = store.volume(b"fixture.volume", true).unwrap();
    let a = store
        .create(vol, b"object-a", b"coherency-a", 20_000)
        .unwrap();
    store.write(a, 0, &content(1, 20_000)).unwrap();
    store.checkpoint().unwrap();
    let b = store.create(vol, &[0, 1, 2, 255], b"", 8192).unwrap();
    store.write(b, 4096, &content(2, 4096)).unwrap();
    store.set_dirty(b, true).unwrap();
    let c = store.create(vol, b"object-c", b"old", 4096).unwrap();
    store.write(c, 0, &content(3, 4096)).unwrap();
    store.invalidate(c, b"new", 4096).unwrap();
    store.flush().unwrap();
    // No close: the fixture needs log replay on open.
    std::fs::write(FIXTURE, sim.current_image()).unwrap();
}

#[test]
fn version_1_fixture_opens_with_its_content() {
    if std::env::var_os("RINGCACHE_WRITE_FIXTURE").is_some() {
        write_fixture();
    }
    let image = std::fs::read(FIXTURE).expect("fixture present");
    assert_eq!(image.len() as u64, DEVICE);
    let sim = Arc::new(SimEngine::from_image(image, SimFaults::default()));
    let store = Store::open(sim, StoreConfig::default()).expect("a v1 cache opens");
    let report = store.recovery_report().clone();
    assert!(!report.clean_shutdown);
    assert!(report.log_records_replayed > 0, "{report:?}");
    assert_eq!(store.superblock().tag, "fixture-v1");
    let vol = store.volume(b"fixture.volume", false).unwrap();

    let a = store.lookup(vol, b"object-a").unwrap().expect("object-a");
    assert_eq!(
        (a.aux.as_slice(), a.size, a.dirty),
        (&b"coherency-a"[..], 20_000, false)
    );
    let got: Vec<u8> = read_all(&store, a.id, 0, 20_000)
        .into_iter()
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(got, content(1, 20_000));

    let b = store
        .lookup(vol, &[0, 1, 2, 255])
        .unwrap()
        .expect("binary key");
    assert!(b.dirty);
    let got = read_all(&store, b.id, 0, 8192);
    assert!(got[..4096].iter().all(Option::is_none));
    assert_eq!(
        got[4096..].iter().map(|b| b.unwrap()).collect::<Vec<_>>(),
        content(2, 4096)
    );

    let c = store.lookup(vol, b"object-c").unwrap().expect("object-c");
    assert_eq!(c.aux, b"new");
    assert!(
        read_all(&store, c.id, 0, 4096).iter().all(Option::is_none),
        "invalidated data stays gone"
    );
}
