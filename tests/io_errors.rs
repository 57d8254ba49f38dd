//! Device errors surface as errors, never as panics or wrong bytes, and
//! persistent errors make the store declare itself failed.
//!
//! Guards against: an unwrap on an I/O result, a failed write whose extent
//! still enters the index (serving garbage), a failed metadata write that
//! is silently ignored (losing durability), and a store that keeps
//! accepting work on a dead device.

mod common;

use std::collections::BTreeSet;

use common::*;
use ringcache::io::sim::SimFaults;
use ringcache::store::StoreError;

fn block(v: u8) -> Vec<u8> {
    vec![v; 4096]
}

#[test]
fn read_error_is_an_error_and_passes() {
    let sim = formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default());
    let store = open(sim.clone());
    let vol = store.volume(b"v", true).unwrap();
    let id = store.create(vol, b"k", b"", 1 << 20).unwrap();
    store.write(id, 0, &block(1)).unwrap();
    let next = sim.op_count();
    sim.set_faults(SimFaults {
        fail_ops: BTreeSet::from([next]),
        ..Default::default()
    });
    assert!(matches!(store.read(id, 0, 4096), Err(StoreError::Io(_))));
    assert_eq!(
        read_all(&store, id, 0, 4096),
        vec![Some(1); 4096],
        "the next read works"
    );
    assert!(store.failed().is_none());
}

#[test]
fn failed_data_write_never_enters_the_index() {
    let sim = formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default());
    let store = open(sim.clone());
    let vol = store.volume(b"v", true).unwrap();
    let id = store.create(vol, b"k", b"", 1 << 20).unwrap();
    store.write(id, 0, &block(1)).unwrap();
    let next = sim.op_count();
    sim.set_faults(SimFaults {
        // The first write below opens no region: its one op is the data.
        fail_ops: BTreeSet::from([next]),
        ..Default::default()
    });
    assert!(matches!(
        store.write(id, 0, &block(2)),
        Err(StoreError::Io(_))
    ));
    assert_eq!(
        read_all(&store, id, 0, 4096),
        vec![Some(1); 4096],
        "old data stays"
    );
    assert!(store.failed().is_none(), "one data error is not persistent");
}

#[test]
fn failed_flush_fails_the_store() {
    let sim = formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default());
    let store = open(sim.clone());
    let vol = store.volume(b"v", true).unwrap();
    let id = store.create(vol, b"k", b"", 1 << 20).unwrap();
    store.write(id, 0, &block(1)).unwrap();
    sim.set_faults(SimFaults {
        flush_error_rate: 1.0,
        ..Default::default()
    });
    assert!(matches!(store.flush(), Err(StoreError::Io(_))));
    assert!(
        store.failed().is_some(),
        "durability cannot be promised any more"
    );
    assert!(matches!(
        store.write(id, 0, &block(2)),
        Err(StoreError::Failed(_))
    ));
    assert!(matches!(
        store.read(id, 0, 4096),
        Err(StoreError::Failed(_))
    ));
}

#[test]
fn dead_device_fails_the_store_after_persistent_errors() {
    let sim = formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default());
    let store = open(sim.clone());
    let vol = store.volume(b"v", true).unwrap();
    let id = store.create(vol, b"k", b"", 1 << 20).unwrap();
    store.write(id, 0, &block(1)).unwrap();
    sim.set_faults(SimFaults {
        dead_from_op: Some(0),
        ..Default::default()
    });
    let mut errors = 0;
    for _ in 0..20 {
        match store.read(id, 0, 4096) {
            Err(StoreError::Io(_)) => errors += 1,
            Err(StoreError::Failed(_)) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(errors >= 1);
    assert!(store.failed().is_some());
}

#[test]
fn random_faults_never_panic_or_serve_wrong_bytes() {
    for seed in 0..20u64 {
        let sim = formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default());
        let store = open(sim.clone());
        let vol = store.volume(b"v", true).unwrap();
        let id = store.create(vol, b"k", b"", 1 << 20).unwrap();
        sim.set_faults(SimFaults {
            seed,
            read_error_rate: 0.05,
            write_error_rate: 0.05,
            flush_error_rate: 0.02,
            ..Default::default()
        });
        let mut latest = [None::<u8>; 64];
        for i in 0..300u32 {
            let b = (i * 7 + seed as u32) as usize % 64;
            let v = (i % 250) as u8 + 1;
            match store.write(id, b as u64 * 4096, &block(v)) {
                Ok(()) => latest[b] = Some(v),
                Err(_) => latest[b] = None, // unknown: old or new
            }
            if i % 17 == 0 {
                let _ = store.flush();
            }
            if let Ok(segs) = store.read(id, 0, 64 * 4096) {
                for (off, data) in data_runs(&segs) {
                    for (j, chunk) in data.chunks(4096).enumerate() {
                        let blk = off as usize / 4096 + j;
                        assert!(
                            chunk.iter().all(|&x| x == chunk[0]),
                            "seed {seed}: torn bytes served"
                        );
                        if let Some(want) = latest[blk] {
                            assert_eq!(chunk[0], want, "seed {seed} block {blk}");
                        }
                    }
                }
            }
            if store.failed().is_some() {
                break;
            }
        }
    }
}
