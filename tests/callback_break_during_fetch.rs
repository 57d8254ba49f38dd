//! A break that arrives while a fetch is in flight (after the request was
//! sent, before its reply is applied): neither the reply's promise nor its
//! data is installed as valid. This is the AFS `cb_break_before` rule: the
//! counters are snapshotted when the request is issued, not when the reply
//! arrives. Also: data fetched for the old version while another holder's
//! revalidation moved the object to a new version is never cached.
//!
//! Guards against snapshotting the counters at reply time (the reply
//! would then look unbroken), and against caching data labelled with a
//! version the cache has moved past.

mod callback_common;

use std::time::{Duration, Instant};

use callback_common::*;
use ringcache::callback::{
    CallbackConfig, CallbackError, CoherentRead, Promise, Revalidated, ServerId, Validity,
};
use ringcache::cookie::WriteOutcome;

#[test]
fn a_break_during_a_fetch_installs_neither_promise_nor_data() {
    let (_store, co, vol) = coherent(CallbackConfig::default());
    let fs = ServerId::new(b"fs-a").unwrap();
    let now = Instant::now();
    let promise = |v| Promise {
        expires_at: now + Duration::from_secs(300),
        data_version: v,
    };
    co.declare_server(vol.key(), &fs, 7);
    let (cookie, obj) = co
        .acquire_cookie(&vol, b"fid", Some(1), FILE_BYTES)
        .unwrap();
    co.cache().use_cookie(&cookie, false);
    let nothing_cached = |co: &ringcache::callback::Coherent| {
        let op = co.cache().begin_operation(&cookie, false);
        assert!(
            op.query_occupancy().unwrap().is_empty(),
            "no data was cached"
        );
    };

    let mut epoch = 7;
    for kind in ["file", "volume", "server", "restart"] {
        // Request sent (token taken), then the file changes at the server
        // and its break overtakes the reply.
        let token = co.begin_fetch(obj);
        match kind {
            "file" => drop(co.break_files(&[obj])),
            "volume" => drop(co.break_volume(vol.key())),
            "server" => drop(co.break_server(&fs)),
            _ => {
                epoch += 1;
                drop(co.declare_server(vol.key(), &fs, epoch));
            }
        }
        // The reply says version 1 still (it was sent before the change).
        assert!(
            matches!(
                co.revalidate(&cookie, obj, token, promise(1), FILE_BYTES, None),
                Err(CallbackError::Broken)
            ),
            "{kind}: the promise of a reply overtaken by a break must be refused"
        );
        assert!(matches!(
            co.write_fetched(&cookie, obj, token, 1, 0, &content(1, 1, FILE_BYTES)),
            Err(CallbackError::Broken)
        ));
        assert_eq!(co.validate(obj, now), Validity::Revalidate, "{kind}");
        assert!(matches!(
            co.read(&cookie, obj, 0, FILE_BYTES, now).unwrap(),
            CoherentRead::Revalidate
        ));
        nothing_cached(&co);
    }

    // The break lands between the promise and the data of one reply.
    let token = co.begin_fetch(obj);
    assert!(matches!(
        co.revalidate(&cookie, obj, token, promise(1), FILE_BYTES, None)
            .unwrap(),
        Revalidated::Kept
    ));
    co.break_files(&[obj]);
    assert!(matches!(
        co.write_fetched(&cookie, obj, token, 1, 0, &content(1, 1, FILE_BYTES)),
        Err(CallbackError::Broken)
    ));
    assert!(matches!(
        co.read(&cookie, obj, 0, FILE_BYTES, now).unwrap(),
        CoherentRead::Revalidate
    ));
    nothing_cached(&co);

    // Holder 1's fetch of version 1 is in flight when holder 2 learns of
    // version 2 (its break was lost, so holder 1's token is unbroken).
    let token_1 = co.begin_fetch(obj);
    let token_2 = co.begin_fetch(obj);
    let r = co
        .revalidate(&cookie, obj, token_2, promise(2), FILE_BYTES, Some(2))
        .unwrap();
    assert!(matches!(
        r,
        Revalidated::Changed {
            promise_installed: true,
            ..
        }
    ));
    assert!(
        matches!(
            co.write_fetched(&cookie, obj, token_1, 1, 0, &content(1, 1, FILE_BYTES)),
            Err(CallbackError::Broken)
        ),
        "data of the old version must not be cached under the new one"
    );
    assert!(
        matches!(
            co.revalidate(&cookie, obj, token_1, promise(1), FILE_BYTES, Some(1)),
            Err(CallbackError::Broken)
        ),
        "an older reply must not take the object back to its version"
    );
    assert!(matches!(
        co.read(&cookie, obj, 0, FILE_BYTES, now).unwrap(),
        CoherentRead::NoData { data_version: 2 }
    ));
    nothing_cached(&co);
    // Holder 2's own data of version 2 is welcome.
    assert_eq!(
        co.write_fetched(&cookie, obj, token_2, 2, 0, &content(1, 2, FILE_BYTES))
            .unwrap(),
        WriteOutcome::Written
    );
    assert!(matches!(
        co.read(&cookie, obj, 0, FILE_BYTES, now).unwrap(),
        CoherentRead::Data {
            data_version: 2,
            ..
        }
    ));
}
