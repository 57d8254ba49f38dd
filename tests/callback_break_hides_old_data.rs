//! After a callback break, a read never returns the cached bytes until the
//! object is revalidated. Revalidating with the version the data is of
//! keeps the data: no fetch from the server, no rewrite of the cache (a
//! break caused by an attribute change or a server restart must not cost
//! a re-download). Revalidating with a new version makes the read answer
//! NoData at once.
//!
//! Guards against serving data after a break (validity not checked on
//! use, or a break kind that does not reach the object), and against a
//! revalidation that throws good data away.

mod callback_common;

use std::time::{Duration, Instant};

use callback_common::*;
use ringcache::callback::{CallbackConfig, CoherentRead, Promise, Revalidated, ServerId, Validity};
use ringcache::cookie::WriteOutcome;

/// The file server, as far as the test needs one: a data version and a
/// count of data fetches.
struct Server {
    version: u64,
    epoch: u64,
    data_fetches: u32,
}

impl Server {
    fn fetch_data(&mut self) -> Vec<u8> {
        self.data_fetches += 1;
        content(1, self.version, FILE_BYTES)
    }
}

#[test]
fn breaks_hide_data_until_revalidated_and_the_same_version_keeps_it() {
    let (_store, co, vol) = coherent(CallbackConfig::default());
    let fs = ServerId::new(b"fs-a").unwrap();
    let mut server = Server {
        version: 1,
        epoch: 100,
        data_fetches: 0,
    };
    let mut now = Instant::now();
    let promise = |at: Instant, v: u64| Promise {
        expires_at: at + Duration::from_secs(300),
        data_version: v,
    };
    let (cookie, obj) = co.acquire_cookie(&vol, b"fid-1", None, FILE_BYTES).unwrap();
    co.cache().use_cookie(&cookie, false);
    co.declare_server(vol.key(), &fs, server.epoch);

    // First open: status and data from the server.
    let token = co.begin_fetch(obj);
    let r = co
        .revalidate(&cookie, obj, token, promise(now, 1), FILE_BYTES, None)
        .unwrap();
    assert!(matches!(
        r,
        Revalidated::Changed {
            promise_installed: true,
            ..
        }
    ));
    let data = server.fetch_data();
    assert_eq!(
        co.write_fetched(&cookie, obj, token, 1, 0, &data).unwrap(),
        WriteOutcome::Written
    );
    let read_v1 = |co: &ringcache::callback::Coherent, now| match co
        .read(&cookie, obj, 0, FILE_BYTES, now)
        .unwrap()
    {
        CoherentRead::Data {
            data_version,
            segments,
        } => {
            assert_eq!(data_version, 1);
            assert_eq!(
                seg_bytes(&segments),
                content(1, 1, FILE_BYTES)
                    .into_iter()
                    .map(Some)
                    .collect::<Vec<_>>()
            );
        }
        other => panic!("expected the cached data, got {other:?}"),
    };
    read_v1(&co, now);
    let writes = co.cache().stats().get("writes").unwrap();

    // Each kind of break, with the file unchanged: hidden, then kept.
    for kind in ["file", "volume", "server", "restart"] {
        let zaps = match kind {
            "file" => co.break_files(&[obj]),
            "volume" => co.break_volume(vol.key()),
            "server" => co.break_server(&fs),
            _ => {
                server.epoch += 1;
                co.declare_server(vol.key(), &fs, server.epoch)
            }
        };
        assert!(zaps.is_empty(), "nobody holds the file");
        assert_eq!(co.validate(obj, now), Validity::Revalidate, "{kind}");
        for _ in 0..3 {
            assert!(
                matches!(
                    co.read(&cookie, obj, 0, FILE_BYTES, now).unwrap(),
                    CoherentRead::Revalidate
                ),
                "{kind}: a read after a break must not return cached bytes"
            );
        }
        now += Duration::from_secs(1);
        let token = co.begin_fetch(obj);
        // The server answers a status request: same version.
        let r = co
            .revalidate(
                &cookie,
                obj,
                token,
                promise(now, server.version),
                FILE_BYTES,
                None,
            )
            .unwrap();
        assert!(matches!(r, Revalidated::Kept), "{kind}: {r:?}");
        read_v1(&co, now);
    }
    assert_eq!(
        server.data_fetches, 1,
        "the unchanged data was never refetched"
    );
    assert_eq!(
        co.cache().stats().get("writes").unwrap(),
        writes,
        "nor rewritten"
    );

    // The file changes: the break hides the data, the new version drops it.
    server.version = 2;
    co.break_files(&[obj]);
    assert!(matches!(
        co.read(&cookie, obj, 0, FILE_BYTES, now).unwrap(),
        CoherentRead::Revalidate
    ));
    let token = co.begin_fetch(obj);
    let r = co
        .revalidate(&cookie, obj, token, promise(now, 2), FILE_BYTES, None)
        .unwrap();
    assert!(matches!(r, Revalidated::Changed { .. }));
    assert!(
        matches!(
            co.read(&cookie, obj, 0, FILE_BYTES, now).unwrap(),
            CoherentRead::NoData { data_version: 2 }
        ),
        "the old version's bytes are gone at once"
    );
    let data = server.fetch_data();
    assert_eq!(
        co.write_fetched(&cookie, obj, token, 2, 0, &data).unwrap(),
        WriteOutcome::Written
    );
    match co.read(&cookie, obj, 0, FILE_BYTES, now).unwrap() {
        CoherentRead::Data {
            data_version: 2,
            segments,
        } => assert_eq!(
            seg_bytes(&segments),
            data.into_iter().map(Some).collect::<Vec<_>>()
        ),
        other => panic!("expected version 2's data, got {other:?}"),
    }
    co.check_consistency().unwrap();
}
