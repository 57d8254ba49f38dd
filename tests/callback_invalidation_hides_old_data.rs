//! While one holder's revalidation is invalidating an object's data for a
//! new version, other threads see no valid promise: a read answers
//! Revalidate (never the old version's bytes), and another holder's
//! revalidation with the new version waits
//! until the invalidation is done instead of installing a promise over
//! data not yet discarded. The other holders get `Invalidated` zaps, the
//! one who invalidated does not.
//!
//! The store's invalidation is held at a gate (a cache backend that blocks
//! inside `invalidate_cookie`) so the window is deterministic.
//!
//! Guards against a version change whose steps (record the version,
//! discard the data, install the promise) can be observed half done: a
//! concurrent `Kept` would make the old bytes valid under the new version.

mod callback_common;

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use callback_common::*;
use ringcache::callback::{
    CallbackConfig, Coherent, CoherentRead, Promise, Revalidated, Validity, ZapReason,
};
use ringcache::cookie::{Fscache, FscacheConfig};

#[test]
fn an_invalidation_in_progress_is_never_seen_half_done() {
    let gated = Arc::new(Gated::new(sim_store(), GateAt::Invalidate));
    let cache = Arc::new(Fscache::new(gated.clone(), FscacheConfig::default()));
    let vol = cache.acquire_volume("afs.cell", b"").unwrap();
    let co = Arc::new(Coherent::new(cache, CallbackConfig::default()));
    let now = Instant::now();
    let promise = move |v| Promise {
        expires_at: now + Duration::from_secs(600),
        data_version: v,
    };
    let (cookie, obj) = co
        .acquire_cookie(&vol, b"fid", Some(1), FILE_BYTES)
        .unwrap();
    co.cache().use_cookie(&cookie, false);
    let t = co.begin_fetch(obj);
    co.revalidate(&cookie, obj, t, promise(1), FILE_BYTES, None)
        .unwrap();
    co.write_fetched(&cookie, obj, t, 1, 0, &content(1, 1, FILE_BYTES))
        .unwrap();
    assert!(matches!(
        co.read(&cookie, obj, 0, FILE_BYTES, now).unwrap(),
        CoherentRead::Data {
            data_version: 1,
            ..
        }
    ));
    co.hold(obj, 1, 11).unwrap();
    co.hold(obj, 2, 22).unwrap();

    // Holder 1 learns of version 2; the store's invalidation is held.
    gated.gate.lock().unwrap().armed = true;
    let t1 = co.begin_fetch(obj);
    let a = {
        let (co, cookie) = (co.clone(), cookie.clone());
        std::thread::spawn(move || co.revalidate(&cookie, obj, t1, promise(2), FILE_BYTES, Some(1)))
    };
    gated.wait_entered();

    // Meanwhile: no valid promise, no old bytes, no writes.
    assert_eq!(co.validate(obj, now), Validity::Revalidate);
    assert!(matches!(
        co.read(&cookie, obj, 0, FILE_BYTES, now).unwrap(),
        CoherentRead::Revalidate
    ));
    // (A write of fetched data would wait in the cookie layer for the
    // invalidation to finish, so it is not tried here.)
    let t2 = co.begin_fetch(obj);
    // Holder 2's reply says version 2 as well: it must wait.
    let (tx, rx) = mpsc::channel();
    let b = {
        let (co, cookie) = (co.clone(), cookie.clone());
        std::thread::spawn(move || {
            let r = co.revalidate(&cookie, obj, t2, promise(2), FILE_BYTES, Some(2));
            tx.send(()).unwrap();
            r
        })
    };
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "a revalidation must not install a promise while the data is being invalidated"
    );
    assert_eq!(co.validate(obj, now), Validity::Revalidate);

    gated.open();
    let ra = a.join().unwrap().unwrap();
    let rb = b.join().unwrap().unwrap();
    match ra {
        Revalidated::Changed {
            zaps,
            promise_installed: true,
        } => {
            let z: Vec<_> = zaps.iter().map(|z| (z.holder, z.tag, z.reason)).collect();
            assert_eq!(
                z,
                vec![(2, 22, ZapReason::Invalidated)],
                "the other holder only"
            );
        }
        other => panic!("holder 1: {other:?}"),
    }
    assert!(matches!(rb, Revalidated::Kept), "holder 2: {rb:?}");
    assert!(matches!(
        co.read(&cookie, obj, 0, FILE_BYTES, now).unwrap(),
        CoherentRead::NoData { data_version: 2 }
    ));
    assert_eq!(co.stats().invalidating, 0);
    co.check_consistency().unwrap();
}
