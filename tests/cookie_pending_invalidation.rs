//! An invalidation requested while another thread runs the cookie's state
//! machine (here: a resize blocked in the store) is pending until that
//! thread gets to it. Meanwhile the cookie is still ACTIVE on the old data
//! generation: a write must not begin (it would be bound to the old
//! generation and mark the cookie as having data), and a read must find
//! nothing, so that no read returns the bytes from before the
//! invalidation. Guards against `begin_operation` looking at the state
//! alone and not at the pending request.

mod callback_common;

use std::sync::Arc;
use std::time::Duration;

use callback_common::*;
use ringcache::cookie::{Fscache, FscacheConfig, ReadOutcome, WriteOutcome};

#[test]
fn a_pending_invalidation_hides_the_old_generation() {
    let gated = Arc::new(Gated::new(sim_store(), GateAt::Resize));
    let cache = Arc::new(Fscache::new(gated.clone(), FscacheConfig::default()));
    let vol = cache.acquire_volume("v", b"").unwrap();
    let cookie = cache
        .acquire_cookie(&vol, b"k", b"old", FILE_BYTES)
        .unwrap();
    cache.use_cookie(&cookie, false);
    let op = cache.begin_operation(&cookie, true);
    assert_eq!(op.write(0, &[0x01; 8192]).unwrap(), WriteOutcome::Written);
    drop(op);

    // A resize holds the state machine inside the store.
    gated.gate.lock().unwrap().armed = true;
    let resizer = {
        let (cache, cookie) = (cache.clone(), cookie.clone());
        std::thread::spawn(move || cache.resize(&cookie, FILE_BYTES).unwrap())
    };
    gated.wait_entered();
    // The invalidation is queued behind it and returns at once.
    cache.invalidate(&cookie, b"new", FILE_BYTES).unwrap();
    // A write now would land in the old generation: it waits for the
    // invalidation instead.
    let writer = {
        let (cache, cookie) = (cache.clone(), cookie.clone());
        std::thread::spawn(move || {
            let op = cache.begin_operation(&cookie, true);
            op.write(4096, &[0x02; 4096]).unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !writer.is_finished(),
        "a write began under a pending invalidation"
    );
    // A read finds nothing: never the bytes from before the invalidation.
    match cache.begin_operation(&cookie, false).read(0, 8192).unwrap() {
        ReadOutcome::NoData => {}
        ReadOutcome::Data(segs) => {
            let bytes = seg_bytes(&segs);
            assert!(
                !bytes.contains(&Some(0x01)),
                "old bytes read after invalidate returned"
            );
        }
        ReadOutcome::Stale => {}
    }
    gated.open();
    resizer.join().unwrap();
    assert_eq!(writer.join().unwrap(), WriteOutcome::Written);
    // After it: the old block 0 is gone, the new block 1 is there.
    match cache.begin_operation(&cookie, false).read(0, 8192).unwrap() {
        ReadOutcome::Data(segs) => {
            let bytes = seg_bytes(&segs);
            assert!(
                bytes[..4096].iter().all(|b| b.is_none()),
                "old block 0 survived"
            );
            assert!(bytes[4096..].iter().all(|&b| b == Some(0x02)));
        }
        other => panic!("expected the new block, got {other:?}"),
    }
}
