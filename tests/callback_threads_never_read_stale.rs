//! Real threads on one coherent cache: clients fetch, revalidate, cache
//! fetched data and read, while another thread changes files at the
//! server and delivers each change's break. A read that begins after the
//! break for version V was delivered never returns (or vouches for) a
//! version older than V, and every byte it returns is of the version it
//! names. The model test interleaves whole calls; this one lets the steps
//! inside `revalidate`, `write_fetched` and `read` interleave too.
//!
//! Guards against orderings that are only wrong under concurrency: a read
//! that validates before its cookie operation begins (so it can read the
//! generation an invalidation just replaced), a write whose version check
//! is not covered by its operation, a version change observable half
//! done.

mod callback_common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callback_common::*;
use ringcache::callback::{CallbackConfig, CallbackError, CoherentRead, ObjectRef, Promise};
use ringcache::cookie::Cookie;

const FILES: usize = 3;
const CLIENTS: u64 = 3;
const CHANGES: u64 = 300;

struct Server {
    version: [u64; FILES],
    /// The newest version whose break has been delivered to the cache.
    told: [u64; FILES],
}

#[test]
fn concurrent_clients_never_read_data_older_than_a_delivered_break() {
    let (_store, co, vol) = coherent(CallbackConfig::default());
    let co = Arc::new(co);
    let files: Arc<Vec<(Arc<Cookie>, ObjectRef)>> = Arc::new(
        (0..FILES)
            .map(|f| {
                let (c, o) = co
                    .acquire_cookie(&vol, format!("f{f}").as_bytes(), None, FILE_BYTES)
                    .unwrap();
                co.cache().use_cookie(&c, false);
                (c, o)
            })
            .collect(),
    );
    let server = Arc::new(Mutex::new(Server {
        version: [1; FILES],
        told: [1; FILES],
    }));
    let now = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let data_reads = Arc::new(AtomicU64::new(0));

    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (co, files, server, done, data_reads) = (
                co.clone(),
                files.clone(),
                server.clone(),
                done.clone(),
                data_reads.clone(),
            );
            std::thread::spawn(move || {
                let mut i = c as usize;
                while !done.load(Ordering::Relaxed) {
                    i += 1;
                    let f = i % FILES;
                    let (cookie, obj) = &files[f];
                    // Fetch: token first, then the request.
                    let token = co.begin_fetch(*obj);
                    let v = server.lock().unwrap().version[f];
                    let promise = Promise {
                        expires_at: now + Duration::from_secs(3600),
                        data_version: v,
                    };
                    match co.revalidate(cookie, *obj, token, promise, FILE_BYTES, Some(c)) {
                        Ok(_) => {
                            let data = content(f as u64, v, FILE_BYTES);
                            match co.write_fetched(cookie, *obj, token, v, 0, &data) {
                                Ok(_) | Err(CallbackError::Broken) => {}
                                Err(e) => panic!("write_fetched: {e}"),
                            }
                        }
                        Err(CallbackError::Broken) => {}
                        Err(e) => panic!("revalidate: {e}"),
                    }
                    for _ in 0..3 {
                        let told = server.lock().unwrap().told[f];
                        match co.read(cookie, *obj, 0, FILE_BYTES, now).unwrap() {
                            CoherentRead::Data {
                                data_version,
                                segments,
                            } => {
                                assert!(
                                    data_version >= told,
                                    "file {f}: read version {data_version} after the break for {told}"
                                );
                                let want = content(f as u64, data_version, FILE_BYTES);
                                for (i, b) in seg_bytes(&segments).iter().enumerate() {
                                    if let Some(b) = b {
                                        assert_eq!(*b, want[i], "file {f}: byte {i} not of version {data_version}");
                                    }
                                }
                                data_reads.fetch_add(1, Ordering::Relaxed);
                            }
                            CoherentRead::NoData { data_version } => assert!(
                                data_version >= told,
                                "file {f}: promise for {data_version} after the break for {told}"
                            ),
                            CoherentRead::Revalidate | CoherentRead::Stale => {}
                        }
                    }
                }
            })
        })
        .collect();

    for n in 0..CHANGES {
        let f = (n as usize) % FILES;
        let v = {
            let mut s = server.lock().unwrap();
            s.version[f] += 1;
            s.version[f]
        };
        co.break_files(&[files[f].1]);
        server.lock().unwrap().told[f] = v;
        // Let the clients catch up now and then.
        let until = data_reads.load(Ordering::Relaxed) + 2;
        let t0 = Instant::now();
        while data_reads.load(Ordering::Relaxed) < until && t0.elapsed() < Duration::from_millis(50)
        {
            std::thread::yield_now();
        }
    }
    done.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert!(
        data_reads.load(Ordering::Relaxed) > CHANGES,
        "the clients read cached data too rarely for the test to mean much"
    );
    assert_eq!(co.stats().invalidating, 0);
    co.check_consistency().unwrap();
}
