//! Fault storms through the whole daemon (requests, cookie layer, callback
//! layer, store) on the sim engine: read errors at 1/32 and 1/1000, write
//! errors at 1/128, flush errors at 1/128, a bit silently flipped in 0.1 %
//! of reads, then all of them at once, and a device that dies. Each storm
//! runs a mixed load of writes and reads from one in-process session, with
//! data that is a function of (key, block) as a network filesystem's cache
//! holds. What must hold:
//!
//! - no panic, and the daemon still answers at the end (`Ping`);
//! - a read returns the block's bytes or a miss, never other bytes: every
//!   flipped bit is caught by its checksum (`store.checksum_errors` counts
//!   every flipped read);
//! - requests see only the statuses of a cache that fails: `Ok`,
//!   `NoData`, `Stale`, `Dropped`, `Failed`;
//! - a dead device withdraws the cache within a second (the periodic flush
//!   runs into it), even with no request running into it, and then reads
//!   are misses and writes `Dropped`.
//!
//! `RINGCACHE_STORM_OPS=N` runs longer storms (2000 operations each by
//! default); the seed is fixed per storm, so a failure replays.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringcache::client::{CookieHandle, ReadReply, ReadSegment, Requests, request};
use ringcache::daemon::{Config, Embedded, LocalSession};
use ringcache::io::IoEngine;
use ringcache::io::sim::{SimEngine, SimFaults};
use ringcache::proto::{Op, Status};
use ringcache::store::{FormatOptions, format};

const BLOCK: u64 = 4096;
const BLOCKS: u64 = 16;
const KEYS: u32 = 8;

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn content(k: u32, b: u64) -> Vec<u8> {
    let mut x = (u64::from(k) << 32) ^ b ^ 0x5EED;
    (0..BLOCK / 8)
        .flat_map(|_| splitmix(&mut x).to_le_bytes())
        .collect()
}

fn stat(s: &LocalSession, name: &str) -> u64 {
    s.stats()
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == name)
        .map_or_else(|| panic!("no stat {name}"), |(_, v)| v)
}

struct Run {
    sim: Arc<SimEngine>,
    e: Embedded,
    s: LocalSession,
    cookies: Vec<CookieHandle>,
}

fn open() -> Run {
    let sim = Arc::new(SimEngine::new(64 << 20, SimFaults::default()));
    format(sim.as_ref(), &FormatOptions::default()).unwrap();
    let engine: Arc<dyn IoEngine> = sim.clone();
    let mut cfg = Config::embedded();
    cfg.device = "sim".into();
    let e = Embedded::open_on(cfg, engine).unwrap();
    let s = e.session().unwrap();
    let v = s.acquire_volume(b"storm", b"").unwrap();
    let cookies = (0..KEYS)
        .map(|k| {
            let c = s
                .acquire_cookie(v, format!("obj{k}").as_bytes(), b"v1", BLOCKS * BLOCK)
                .unwrap();
            s.use_cookie(c, false).unwrap();
            c
        })
        .collect();
    Run { sim, e, s, cookies }
}

/// `ops` operations of mixed load; returns the statuses seen.
fn load(r: &Run, ops: u64, seed: u64) -> BTreeMap<String, u64> {
    let mut x = seed;
    let mut seen = BTreeMap::new();
    for _ in 0..ops {
        let k = (splitmix(&mut x) % u64::from(KEYS)) as u32;
        let c = r.cookies[k as usize];
        let b = splitmix(&mut x) % BLOCKS;
        if splitmix(&mut x).is_multiple_of(2) {
            let n = 1 + splitmix(&mut x) % 4.min(BLOCKS - b);
            let data: Vec<u8> = (b..b + n).flat_map(|i| content(k, i)).collect();
            let body = request::write(c, b * BLOCK, &data).unwrap();
            let (st, _) = r.s.request(Op::Write, &body).unwrap();
            assert!(
                matches!(
                    st,
                    Status::Ok | Status::Dropped | Status::Failed | Status::NoSpace
                ),
                "a write answered {st:?}"
            );
            *seen.entry(format!("write {st:?}")).or_default() += 1;
        } else {
            let n = 1 + splitmix(&mut x) % (BLOCKS - b);
            let what = match r.s.read(c, b * BLOCK, (n * BLOCK) as u32) {
                Ok(ReadReply::Data(segs)) => {
                    for s in segs {
                        if let ReadSegment::Data { offset, data } = s {
                            for (i, chunk) in data.chunks(BLOCK as usize).enumerate() {
                                let blk = offset / BLOCK + i as u64;
                                assert!(
                                    chunk == &content(k, blk)[..],
                                    "key {k} block {blk}: wrong bytes served"
                                );
                            }
                        }
                    }
                    "read Data".to_string()
                }
                Ok(other) => format!("read {other:?}"),
                Err(ringcache::client::ClientError::Status(st)) => {
                    assert!(
                        matches!(st, Status::NoData | Status::Stale | Status::Failed),
                        "a read answered {st:?}"
                    );
                    format!("read {st:?}")
                }
                Err(e) => panic!("a read failed: {e}"),
            };
            *seen.entry(what).or_default() += 1;
        }
    }
    seen
}

fn storm_ops() -> u64 {
    std::env::var("RINGCACHE_STORM_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

#[test]
fn fault_storms_never_serve_wrong_bytes_or_kill_the_daemon() {
    let storms: [(&str, SimFaults); 6] = [
        (
            "read errors 1/32",
            SimFaults {
                read_error_rate: 1.0 / 32.0,
                ..Default::default()
            },
        ),
        (
            "read errors 1/1000",
            SimFaults {
                read_error_rate: 1.0 / 1000.0,
                ..Default::default()
            },
        ),
        (
            "write errors 1/128",
            SimFaults {
                write_error_rate: 1.0 / 128.0,
                ..Default::default()
            },
        ),
        (
            "flush errors 1/128",
            SimFaults {
                flush_error_rate: 1.0 / 128.0,
                ..Default::default()
            },
        ),
        (
            "bit flips in 0.1% of reads",
            SimFaults {
                read_flip_rate: 0.001,
                ..Default::default()
            },
        ),
        (
            "all at once",
            SimFaults {
                read_error_rate: 1.0 / 32.0,
                write_error_rate: 1.0 / 128.0,
                flush_error_rate: 1.0 / 128.0,
                read_flip_rate: 0.001,
                ..Default::default()
            },
        ),
    ];
    let ops = storm_ops();
    for (i, (name, faults)) in storms.into_iter().enumerate() {
        let r = open();
        // Warm: the data cached before the storm, so reads hit the device.
        load(&r, 400, 1);
        let flush = r.s.flush_cache();
        assert!(flush.is_ok(), "{name}: flush before the storm: {flush:?}");
        let flips = faults.read_flip_rate > 0.0;
        let faults_only_flips = flips
            && faults.read_error_rate == 0.0
            && faults.write_error_rate == 0.0
            && faults.flush_error_rate == 0.0;
        r.sim.set_faults(SimFaults {
            seed: 0x5707 + i as u64,
            ..faults
        });
        // Load in rounds of 10 operations and a flush (a flush error fails
        // the store, which withdraws the cache: the rest of the storm runs
        // against a withdrawn cache).
        let mut seen: BTreeMap<String, u64> = BTreeMap::new();
        for round in 0..ops / 10 {
            for (what, n) in load(&r, 10, ((100 + i as u64) << 32) | round) {
                *seen.entry(what).or_default() += n;
            }
            let st =
                r.s.flush_cache()
                    .map_or_else(|e| format!("{e}"), |()| "Ok".into());
            *seen.entry(format!("flush {st}")).or_default() += 1;
        }
        // Still answering.
        let (st, _) = r.s.request(Op::Ping, &[]).unwrap();
        assert_eq!(st, Status::Ok, "{name}: ping after the storm");
        if flips {
            let flipped = r.sim.flipped_reads();
            let caught = stat(&r.s, "store.checksum_errors");
            // (With other faults too, the cache may be withdrawn before
            // many reads reach the device.)
            if faults_only_flips {
                assert!(flipped > 0, "{name}: the storm flipped nothing");
            }
            assert_eq!(caught, flipped, "{name}: every flipped read is caught");
        }
        eprintln!(
            "storm {name}: {seen:?}, flipped reads {} (caught {}), withdrawn {}",
            r.sim.flipped_reads(),
            stat(&r.s, "store.checksum_errors"),
            stat(&r.s, "daemon.withdrawn")
        );
        drop(r.s);
        let _ = r.e.close();
    }
}

#[test]
fn a_dead_device_withdraws_the_cache_within_a_second() {
    let r = open();
    load(&r, 200, 7);
    assert!(r.s.flush_cache().is_ok());
    assert_eq!(stat(&r.s, "daemon.withdrawn"), 0);
    // A write fails the store (persistent errors) without any request
    // seeing it: the housekeeping's periodic flush runs into them.
    let body = request::write(r.cookies[0], 0, &content(0, 0)).unwrap();
    let (st, _) = r.s.request(Op::Write, &body).unwrap();
    assert_eq!(st, Status::Ok, "written before the device dies");
    let died = Instant::now();
    r.sim.set_faults(SimFaults {
        dead_from_op: Some(r.sim.op_count()),
        ..Default::default()
    });
    while stat(&r.s, "daemon.withdrawn") == 0 {
        assert!(
            died.elapsed() < Duration::from_secs(3),
            "a dead device did not withdraw the cache"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = died.elapsed();
    assert!(
        took < Duration::from_millis(2100),
        "withdrawn after {took:?}"
    );
    // Withdrawn: reads are misses, writes dropped, the daemon answers.
    let c = r.cookies[1];
    match r.s.read(c, 0, BLOCK as u32) {
        Ok(ReadReply::NoData) | Err(ringcache::client::ClientError::Status(Status::NoData)) => {}
        other => panic!("a read of a withdrawn cache: {other:?}"),
    }
    let body = request::write(c, 0, &content(1, 0)).unwrap();
    let (st, _) = r.s.request(Op::Write, &body).unwrap();
    assert_eq!(st, Status::Dropped);
    assert_eq!(r.s.request(Op::Ping, &[]).unwrap().0, Status::Ok);
    eprintln!("dead device: cache withdrawn {took:?} after the device died");
    drop(r.s);
    let _ = r.e.close();
}
