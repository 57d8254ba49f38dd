//! A mass break with 10,000 cached objects of which 10 are in use: exactly
//! the holders of those 10 get zaps, each once per object per break; two
//! holders of one object both get it; the break looks at the objects in
//! use only (never at every object cached); every cached promise is broken
//! all the same; `drop_holder` after a break, and concurrently with
//! breaks, leaks nothing.
//!
//! Guards against a mass break that walks every cached object (O(cache)
//! latency on every server restart), zaps to holders that have nothing in
//! use, duplicate or missing zaps, and holds left behind by closed
//! connections.

mod callback_common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callback_common::*;
use ringcache::callback::{
    CallbackConfig, ObjectRef, Promise, Revalidated, ServerId, Validity, ZapReason,
};

const CACHED: usize = 10_000;

#[test]
fn a_mass_break_zaps_exactly_the_holders_of_objects_in_use() {
    let (_store, co, vol) = coherent(CallbackConfig::default());
    let other = co.cache().acquire_volume("afs.other", b"").unwrap();
    let fs1 = ServerId::new(b"fs-1").unwrap();
    let fs2 = ServerId::new(b"fs-2").unwrap();
    co.declare_server(vol.key(), &fs1, 1);
    co.declare_server(other.key(), &fs2, 1);
    let now = Instant::now();
    let promise = Promise {
        expires_at: now + Duration::from_secs(600),
        data_version: 1,
    };
    let mut objs: Vec<ObjectRef> = Vec::with_capacity(CACHED);
    for i in 0..CACHED {
        let key = format!("fid-{i}");
        let (cookie, obj) = co
            .acquire_cookie(&vol, key.as_bytes(), Some(1), FILE_BYTES)
            .unwrap();
        let t = co.begin_fetch(obj);
        assert!(matches!(
            co.revalidate(&cookie, obj, t, promise, FILE_BYTES, None)
                .unwrap(),
            Revalidated::Kept
        ));
        objs.push(obj);
    }
    let (ocookie, oobj) = co
        .acquire_cookie(&other, b"fid-x", Some(1), FILE_BYTES)
        .unwrap();
    let t = co.begin_fetch(oobj);
    co.revalidate(&ocookie, oobj, t, promise, FILE_BYTES, None)
        .unwrap();

    // Holder 1 has 10 objects in use, holder 2 two of the same, holder 3
    // one on the other server.
    for (i, o) in objs.iter().enumerate().take(10) {
        co.hold(*o, 1, i as u32).unwrap();
    }
    co.hold(objs[3], 2, 1003).unwrap();
    co.hold(objs[4], 2, 1004).unwrap();
    co.hold(oobj, 3, 77).unwrap();
    let s = co.stats();
    assert_eq!((s.objects_in_use, s.holds, s.holders), (11, 13, 3));

    let visits = co.stats().break_visits;
    let zaps = co.break_server(&fs1);
    assert_eq!(
        co.stats().break_visits - visits,
        10,
        "the break looked at the objects in use, not the {CACHED} cached"
    );
    let mut got: BTreeMap<(u64, u32), usize> = BTreeMap::new();
    for z in &zaps {
        assert_eq!(z.reason, ZapReason::ServerBreak);
        *got.entry((z.holder, z.tag)).or_default() += 1;
    }
    let mut want: BTreeMap<(u64, u32), usize> = (0..10).map(|i| ((1, i), 1)).collect();
    want.insert((2, 1003), 1);
    want.insert((2, 1004), 1);
    assert_eq!(got, want, "each holder of each object in use, once");
    assert!(
        objs.iter()
            .all(|o| co.validate(*o, now) == Validity::Revalidate)
    );
    assert_eq!(co.validate(oobj, now), Validity::Valid { data_version: 1 });

    // A new epoch is a server break too, zapping the same set again.
    assert_eq!(co.declare_server(vol.key(), &fs1, 2).len(), 12);
    // A file break of an object given twice zaps once per holder.
    let z = co.break_files(&[objs[3], objs[3], objs[500]]);
    assert_eq!(z.len(), 2);
    assert!(z.iter().all(|z| z.reason == ZapReason::FileBreak));
    // The other volume: holder 3 only.
    let z = co.break_volume(other.key());
    assert_eq!(z.len(), 1);
    assert_eq!(
        (z[0].holder, z[0].tag, z[0].reason),
        (3, 77, ZapReason::VolumeBreak)
    );

    // Connections close after the break: nothing is left behind.
    assert_eq!(co.drop_holder(1), 10);
    assert!(co.break_server(&fs1).iter().all(|z| z.holder == 2));
    assert_eq!(co.drop_holder(2), 2);
    assert_eq!(co.drop_holder(3), 1);
    assert_eq!(co.drop_holder(3), 0);
    let s = co.stats();
    assert_eq!((s.objects_in_use, s.holds, s.holders), (0, 0, 0));
    assert!(co.break_server(&fs1).is_empty());
    assert!(co.break_volume(other.key()).is_empty());
    co.check_consistency().unwrap();
}

#[test]
fn holders_dropping_during_breaks_leak_nothing() {
    let (_store, co, vol) = coherent(CallbackConfig::default());
    let co = Arc::new(co);
    let fs = ServerId::new(b"fs-1").unwrap();
    co.declare_server(vol.key(), &fs, 1);
    let objs: Vec<ObjectRef> = (0..CACHED / 10)
        .map(|i| {
            co.acquire_cookie(&vol, format!("fid-{i}").as_bytes(), Some(1), FILE_BYTES)
                .unwrap()
                .1
        })
        .collect();
    let breaker = {
        let co = co.clone();
        let fs = fs.clone();
        let key = vol.key().to_vec();
        let objs = objs.clone();
        std::thread::spawn(move || {
            for i in 0..2000u64 {
                match i % 3 {
                    0 => drop(co.break_server(&fs)),
                    1 => drop(co.break_volume(&key)),
                    _ => drop(co.break_files(&objs[..20])),
                }
            }
        })
    };
    for round in 0..200u64 {
        for h in 0..4u64 {
            for (i, o) in objs
                .iter()
                .enumerate()
                .skip((round + h) as usize % 7)
                .step_by(37)
            {
                co.hold(*o, h, i as u32).unwrap();
            }
        }
        if round % 2 == 0 {
            co.unhold(objs[0], 0);
        }
        for h in 0..4u64 {
            co.drop_holder(h);
        }
    }
    breaker.join().unwrap();
    let s = co.stats();
    assert_eq!((s.objects_in_use, s.holds, s.holders), (0, 0, 0));
    co.check_consistency().unwrap();
}
