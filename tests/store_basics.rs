//! The object store's contract on a healthy device: what is written reads
//! back byte for byte, holes are explicit, overwrites and partial blocks
//! are exact, invalidation and deletion take effect at once, and a clean
//! close and reopen keeps everything.

mod common;

use std::sync::Arc;

use common::*;
use ringcache::io::IoEngine;
use ringcache::io::sim::SimFaults;
use ringcache::store::{Segment, StoreError};

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i * 7 % 251) as u8))
        .collect()
}

#[test]
fn write_read_holes_and_overwrite() {
    let sim = formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default());
    let store = open(sim.clone());
    let vol = store.volume(b"vol", true).unwrap();
    // The object ends mid-block: the last write may end there.
    let id = store.create(vol, b"obj", b"v1", 8192 + 10_000).unwrap();
    let a = pattern(1, 10_000);
    assert!(
        matches!(
            store.write(id, 8192, &a[..5000]),
            Err(StoreError::Invalid(_))
        ),
        "unaligned end before the size"
    );
    store.write(id, 8192, &a).unwrap();
    let got = read_all(&store, id, 0, 32768);
    assert!(got[..8192].iter().all(|b| b.is_none()), "hole before");
    assert_eq!(
        got[8192..18192]
            .iter()
            .map(|b| b.unwrap())
            .collect::<Vec<_>>(),
        a
    );
    assert!(
        got[18192..].iter().all(|b| b.is_none()),
        "hole after the partial block"
    );
    // Overwrite the middle block: neighbours keep their bytes.
    let b = pattern(99, 4096);
    store.write(id, 12288, &b).unwrap();
    let got = read_all(&store, id, 8192, 10_000);
    let mut want = a.clone();
    want[4096..8192].copy_from_slice(&b);
    assert_eq!(got.iter().map(|b| b.unwrap()).collect::<Vec<_>>(), want);
    // Unaligned reads inside extents.
    let segs = store.read(id, 8200, 100).unwrap();
    assert_eq!(data_runs(&segs), vec![(8200, want[8..108].to_vec())]);
    assert_eq!(store.occupancy(id).unwrap(), vec![(8192, 10_000)]);
}

#[test]
fn argument_errors() {
    let sim = formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default());
    let store = open(sim);
    assert!(matches!(
        store.volume(b"", true),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.volume(b"a/b", true),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.volume(&[b'x'; 255], true),
        Err(StoreError::Invalid(_))
    ));
    let vol = store.volume(b"vol", true).unwrap();
    assert!(matches!(
        store.create(vol, b"", b"", 0),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.create(vol, &[0; 256], b"", 0),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.create(vol, b"k", &[0; 256], 0),
        Err(StoreError::Invalid(_))
    ));
    let id = store.create(vol, b"k", b"", 8192).unwrap();
    assert!(matches!(
        store.create(vol, b"k", b"", 0),
        Err(StoreError::Exists)
    ));
    assert!(matches!(
        store.write(id, 1, b"x"),
        Err(StoreError::Invalid(_))
    ));
    assert!(
        matches!(store.write(id, 8192, b"x"), Err(StoreError::Invalid(_))),
        "past size"
    );
    assert!(
        matches!(store.read(id, u64::MAX, 2), Err(StoreError::Invalid(_))),
        "overflow"
    );
    assert!(
        matches!(store.read(id, 8193, 1), Err(StoreError::Invalid(_))),
        "past size"
    );
    assert!(matches!(
        store.read(12345, 0, 1),
        Err(StoreError::NoSuchObject)
    ));
    // A read that runs past the size is clamped to it.
    let segs = store.read(id, 4096, 1 << 20).unwrap();
    assert_eq!(segs.iter().map(Segment::len).sum::<u64>(), 4096);
}

#[test]
fn invalidate_and_delete_take_effect_at_once() {
    let sim = formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default());
    let store = open(sim);
    let vol = store.volume(b"vol", true).unwrap();
    let id = store.create(vol, b"obj", b"v1", 1 << 20).unwrap();
    store.write(id, 0, &pattern(3, 65536)).unwrap();
    let gen2 = store.invalidate(id, b"v2", 4096).unwrap();
    assert_eq!(gen2, 2);
    let info = store.stat(id).unwrap();
    assert_eq!((info.aux.as_slice(), info.size), (&b"v2"[..], 4096));
    assert!(read_all(&store, id, 0, 4096).iter().all(|b| b.is_none()));
    assert_eq!(store.occupancy(id).unwrap(), vec![]);
    store.delete(id).unwrap();
    assert!(store.lookup(vol, b"obj").unwrap().is_none());
    assert!(matches!(
        store.read(id, 0, 1),
        Err(StoreError::NoSuchObject)
    ));
    // A new object under the same key starts empty.
    let id2 = store.create(vol, b"obj", b"v3", 8192).unwrap();
    assert_ne!(id2, id);
    assert!(read_all(&store, id2, 0, 8192).iter().all(|b| b.is_none()));
}

#[test]
fn clean_close_and_reopen_keeps_everything() {
    let sim = formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default());
    let data = pattern(5, 200_000);
    {
        let store = open(sim.clone());
        let vol = store.volume(b"vol", true).unwrap();
        let id = store.create(vol, b"obj", b"aux", 200_000).unwrap();
        store.write(id, 0, &data).unwrap();
        store.set_dirty(id, true).unwrap();
        store.close().unwrap();
    }
    let store = open(sim.clone());
    assert!(store.recovery_report().clean_shutdown);
    let vol = store.volume(b"vol", false).unwrap();
    let info = store.lookup(vol, b"obj").unwrap().expect("object survives");
    assert!(info.dirty);
    assert_eq!(info.aux, b"aux");
    let got = read_all(&store, info.id, 0, 200_000);
    assert_eq!(got.iter().map(|b| b.unwrap()).collect::<Vec<_>>(), data);
    // Reopen again after the second open wrote its own checkpoint.
    drop(store);
    let store = open(sim);
    assert!(
        !store.recovery_report().clean_shutdown,
        "not closed the second time"
    );
    let vol = store.volume(b"vol", false).unwrap();
    let info = store.lookup(vol, b"obj").unwrap().unwrap();
    assert_eq!(
        read_all(&store, info.id, 0, 200_000)
            .iter()
            .map(|b| b.unwrap())
            .collect::<Vec<_>>(),
        data
    );
}

#[test]
fn space_is_reused_oldest_region_first() {
    let sim = formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default());
    let store = open(sim);
    let vol = store.volume(b"vol", true).unwrap();
    // 64 regions of 60 KiB data each: write 3x the space.
    let id = store.create(vol, b"big", b"", 16 << 20).unwrap();
    let chunk = pattern(7, 60 << 10);
    for i in 0..192u64 {
        store.write(id, i * (60 << 10), &chunk).unwrap();
    }
    let occ = store.occupancy_summary();
    assert!(
        occ.regions_free >= 1,
        "culling keeps regions free ahead of need: {occ:?}"
    );
    let stats = store.stats();
    assert!(stats.regions_evicted >= 128, "{stats:?}");
    // The newest data is still there, the oldest is gone.
    let last = 191 * (60 << 10);
    assert!(
        read_all(&store, id, last, 60 << 10)
            .iter()
            .all(|b| b.is_some())
    );
    assert!(
        read_all(&store, id, 0, 60 << 10)
            .iter()
            .all(|b| b.is_none())
    );
}

#[test]
fn pinned_objects_are_never_culled() {
    let sim = formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default());
    let store = open(sim);
    let vol = store.volume(b"vol", true).unwrap();
    let keep = store.create(vol, b"keep", b"", 1 << 20).unwrap();
    store.write(keep, 0, &pattern(1, 60 << 10)).unwrap();
    store.pin(keep).unwrap();
    let churn = store.create(vol, b"churn", b"", 64 << 20).unwrap();
    for i in 0..200u64 {
        store
            .write(churn, i * (60 << 10), &pattern(2, 60 << 10))
            .unwrap();
    }
    assert!(
        read_all(&store, keep, 0, 60 << 10)
            .iter()
            .all(|b| b.is_some()),
        "pinned data stays"
    );
    store.unpin(keep);
    for i in 200..400u64 {
        store
            .write(churn, i * (60 << 10), &pattern(2, 60 << 10))
            .unwrap();
    }
    assert!(
        read_all(&store, keep, 0, 60 << 10)
            .iter()
            .all(|b| b.is_none()),
        "unpinned data may go"
    );
}

#[test]
fn format_refuses_other_data_and_open_refuses_non_caches() {
    use ringcache::io::sim::SimEngine;
    use ringcache::store::{FormatOptions, Store, StoreConfig, format};
    let sim = Arc::new(SimEngine::new(SMALL_DEVICE, SimFaults::default()));
    ringcache::io::write_at(
        sim.as_ref(),
        0,
        {
            let mut b = sim.alloc(4096);
            b.fill(0xEE);
            b
        },
        ringcache::io::IoHint::Other,
    )
    .unwrap();
    assert!(matches!(
        Store::open(sim.clone(), StoreConfig::default()),
        Err(StoreError::NotACache(_))
    ));
    let opts = FormatOptions {
        geometry: small_geometry(),
        ..Default::default()
    };
    assert!(matches!(
        format(sim.as_ref(), &opts),
        Err(StoreError::Invalid(_))
    ));
    format(
        sim.as_ref(),
        &FormatOptions {
            force: true,
            ..opts.clone()
        },
    )
    .unwrap();
    assert!(
        matches!(format(sim.as_ref(), &opts), Err(StoreError::Invalid(_))),
        "already a cache"
    );
    Store::open(sim, StoreConfig::default()).unwrap();
}

#[test]
fn a_read_queue_hands_reads_over_only_once_checked() {
    // `reap` waits for I/O without handing anything over, so a caller can
    // put new reads in flight first; `take` checks and hands over; every
    // read comes out exactly once with its own bytes.
    let sim = formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default());
    let store = open(sim.clone());
    let vol = store.volume(b"vol", true).unwrap();
    let id = store.create(vol, b"obj", b"", 64 * 4096).unwrap();
    let data = pattern(5, 64 * 4096);
    store.write(id, 0, &data).unwrap();
    let block = |tag: u64| &data[tag as usize * 4096..(tag as usize + 1) * 4096];

    let mut q = ringcache::store::ReadQueue::new(&store);
    for tag in 0..8u64 {
        q.submit(tag, id, tag * 4096, 4096).unwrap();
    }
    let landed = q.reap();
    assert!(landed >= 1, "reap returns once a read's I/O is done");
    assert_eq!(q.in_flight(), 8, "reap hands nothing over");
    assert_eq!(q.io_in_flight() + landed, 8);
    for tag in 8..12u64 {
        q.submit(tag, id, tag * 4096, 4096).unwrap();
    }
    let mut out = Vec::new();
    q.take(&mut out);
    assert_eq!(out.len(), landed, "take hands over what reap found");
    while q.in_flight() > 0 {
        q.wait(&mut out);
    }
    let mut tags: Vec<u64> = out.iter().map(|(t, _)| *t).collect();
    tags.sort_unstable();
    assert_eq!(tags, (0..12).collect::<Vec<_>>());
    for (tag, r) in out {
        let segs = r.unwrap();
        assert_eq!(data_runs(&segs), vec![(tag * 4096, block(tag).to_vec())]);
    }
    let mut none = Vec::new();
    q.take(&mut none);
    assert!(none.is_empty());
}
