//! kill -9 of the real daemon while clients write, then a restart: every
//! byte read afterwards is either the right byte or a miss, never bytes
//! from another place, another object or a torn write. Repeated over
//! several rounds on the same cache.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::daemon::{DaemonProc, write_config};
use ringcache::client::{ReadReply, ReadSegment};
use ringcache::proto::Status;

const BLOCKS: u64 = 32;

fn block(key: u32, b: u64, counter: u64) -> Vec<u8> {
    let mut unit = [0u8; 24];
    unit[..4].copy_from_slice(&key.to_le_bytes());
    unit[4..12].copy_from_slice(&b.to_le_bytes());
    unit[12..20].copy_from_slice(&counter.to_le_bytes());
    unit[20..24].copy_from_slice(b"K9DM");
    let mut v = unit.repeat(4096 / 24 + 1);
    v.truncate(4096);
    v
}

fn decode(bytes: &[u8]) -> Option<(u32, u64, u64)> {
    let key = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
    let b = u64::from_le_bytes(bytes.get(4..12)?.try_into().ok()?);
    let c = u64::from_le_bytes(bytes.get(12..20)?.try_into().ok()?);
    (bytes == block(key, b, c).as_slice()).then_some((key, b, c))
}

#[test]
fn kill9_of_the_daemon_while_clients_write() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let counter = Arc::new(AtomicU64::new(1));
    let mut checked = 0usize;
    for round in 0..6u64 {
        let mut d = DaemonProc::start(dir.path(), &config);
        // Check what the last round left.
        {
            let mut c = d.client();
            let v = c.acquire_volume(b"kill9", b"").unwrap();
            for key in 0..2u32 {
                let k = c
                    .acquire_cookie(v, format!("obj{key}").as_bytes(), b"", BLOCKS * 4096)
                    .unwrap();
                c.use_cookie(k, false).unwrap();
                if let ReadReply::Data(segs) = c.read(k, 0, (BLOCKS * 4096) as u32).unwrap() {
                    for s in segs {
                        if let ReadSegment::Data { offset, data } = s {
                            for (i, chunk) in data.chunks(4096).enumerate() {
                                let b = offset / 4096 + i as u64;
                                let (dk, db, _) = decode(chunk).unwrap_or_else(|| {
                                    panic!(
                                        "round {round}: key {key} block {b}: bytes no write made"
                                    )
                                });
                                assert_eq!(
                                    (dk, db),
                                    (key, b),
                                    "round {round}: bytes of another place"
                                );
                                checked += 1;
                            }
                        }
                    }
                }
                c.relinquish_cookie(k, false).unwrap();
            }
        }
        // Writers, then a SIGKILL at a random moment.
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2u32)
            .map(|key| {
                let (socket, stop, counter) = (d.socket.clone(), stop.clone(), counter.clone());
                std::thread::spawn(move || {
                    let Ok(mut c) = ringcache::client::Client::connect(&socket) else {
                        return;
                    };
                    let mut run = || -> Result<(), ringcache::client::ClientError> {
                        let v = c.acquire_volume(b"kill9", b"")?;
                        let k = c.acquire_cookie(
                            v,
                            format!("obj{key}").as_bytes(),
                            b"",
                            BLOCKS * 4096,
                        )?;
                        // Caching data fetched from a server (not local
                        // modifications, which a crash makes stale).
                        c.use_cookie(k, false)?;
                        let mut b = 0;
                        while !stop.load(Ordering::Relaxed) {
                            let n = counter.fetch_add(1, Ordering::Relaxed);
                            let data: Vec<u8> = (b..b + 4).flat_map(|x| block(key, x, n)).collect();
                            let st = c.write(k, b * 4096, &data)?;
                            assert!(matches!(st, Status::Ok | Status::Dropped));
                            b = (b + 4) % BLOCKS;
                        }
                        Ok(())
                    };
                    let _ = run(); // the daemon dies under us
                })
            })
            .collect();
        // Some rounds shorter than the daemon's periodic flush (once a
        // second), some long enough for two of them, so that some data is
        // sure to be durable before a kill.
        const RUN_MS: [u64; 6] = [300, 2300, 647, 2600, 488, 1341];
        std::thread::sleep(Duration::from_millis(RUN_MS[round as usize]));
        d.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
    }
    // The last restart recovers too.
    let d = DaemonProc::start(dir.path(), &config);
    d.client().ping().unwrap();
    assert!(checked > 0, "some data survived to be checked");
    eprintln!("daemon kill9: {checked} blocks checked");
}
