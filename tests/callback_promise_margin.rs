//! A promise that expires within the margin answers Revalidate, on an
//! injected clock (no sleeps): at `expires_at - margin` and after, a read
//! returns no cached bytes; just before, it does. A promise whose reply
//! arrived late is only as long as its request's issue time allows.
//!
//! Guards against validating against the bare expiry (a read that starts
//! just before it would be answered from data the server no longer
//! promises), and against validation that consults the wall clock.

mod callback_common;

use std::time::{Duration, Instant};

use callback_common::*;
use ringcache::callback::{CallbackConfig, CoherentRead, Promise, Validity};
use ringcache::cookie::WriteOutcome;

#[test]
fn a_promise_expiring_within_the_margin_answers_revalidate() {
    let margin = Duration::from_secs(10);
    let (_store, co, vol) = coherent(CallbackConfig { margin });
    let (cookie, obj) = co
        .acquire_cookie(&vol, b"fid", Some(5), FILE_BYTES)
        .unwrap();
    co.cache().use_cookie(&cookie, false);
    // A clock far from the real one: validation must only use it.
    let issued = Instant::now() + Duration::from_secs(100_000);
    let token = co.begin_fetch(obj);
    let promise = Promise {
        expires_at: issued + Duration::from_secs(60),
        data_version: 5,
    };
    co.revalidate(&cookie, obj, token, promise, FILE_BYTES, None)
        .unwrap();
    assert_eq!(
        co.write_fetched(&cookie, obj, token, 5, 0, &content(3, 5, FILE_BYTES))
            .unwrap(),
        WriteOutcome::Written
    );
    let edge = promise.expires_at - margin;
    let just_before = edge - Duration::from_nanos(1);
    assert_eq!(
        co.validate(obj, issued),
        Validity::Valid { data_version: 5 }
    );
    assert_eq!(
        co.validate(obj, just_before),
        Validity::Valid { data_version: 5 }
    );
    assert!(matches!(
        co.read(&cookie, obj, 0, FILE_BYTES, just_before).unwrap(),
        CoherentRead::Data {
            data_version: 5,
            ..
        }
    ));
    for at in [
        edge,
        edge + Duration::from_secs(5),
        promise.expires_at,
        promise.expires_at + Duration::from_secs(3600),
    ] {
        assert_eq!(
            co.validate(obj, at),
            Validity::Revalidate,
            "{:?} before expiry",
            promise.expires_at.saturating_duration_since(at)
        );
        assert!(matches!(
            co.read(&cookie, obj, 0, FILE_BYTES, at).unwrap(),
            CoherentRead::Revalidate
        ));
    }
    // The clock is not consulted otherwise: going back makes it valid again.
    assert_eq!(
        co.validate(obj, issued),
        Validity::Valid { data_version: 5 }
    );

    // A reply that arrived 55 s after its request was sent carries a
    // promise counted from the send: already within the margin.
    let sent = issued + Duration::from_secs(1000);
    let token = co.begin_fetch(obj);
    let arrived = sent + Duration::from_secs(55);
    co.revalidate(
        &cookie,
        obj,
        token,
        Promise {
            expires_at: sent + Duration::from_secs(60),
            data_version: 5,
        },
        FILE_BYTES,
        None,
    )
    .unwrap();
    assert_eq!(co.validate(obj, arrived), Validity::Revalidate);
}
