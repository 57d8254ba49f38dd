//! Kill loop: the real daemon under mixed load from several clients
//! (writes, reads, invalidations, resizes, retires), SIGKILLed at a random
//! moment every 0.1 to 5 s (log-uniform) and started again, 200 times by
//! default. A content oracle follows every acknowledged operation:
//!
//! - bytes are a function of (key, coherency version, block), as a network
//!   filesystem's cache holds: a block under one version never changes;
//! - after every kill, `ringcache fsck` exits 0 on the device;
//! - after every restart, every byte read back is the content of its block
//!   under the key's current version, or a miss: never other bytes, and
//!   never a block that an acknowledged resize cut (before the flush
//!   window) come back;
//! - acknowledged blocks older than the flush window (the daemon flushes
//!   once a second; the window is 1.5 s) that are missing after the
//!   restart are lost bytes, and there must be none.
//!
//! An operation cut off by the kill leaves its key uncertain: it is checked
//! for wrong bytes only, then retired and started afresh.
//!
//! `RINGCACHE_KILL_CYCLES=N` runs longer, `RINGCACHE_KILL_SEED=S` another
//! sequence; the summary line gives cycles, bytes verified and bytes lost.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::DaemonProc;
use common::fsck;
use ringcache::client::{Client, CookieHandle, ReadReply, ReadSegment};
use ringcache::proto::Status;

const BLOCK: u64 = 4096;
const MAX_BLOCKS: u64 = 16;
const CLIENTS: u32 = 3;
const KEYS_PER_CLIENT: u32 = 4;
/// Acknowledged more than this before a kill: durable (one periodic flush
/// interval, 1 s, and room for the flush itself).
const WINDOW: Duration = Duration::from_millis(1500);
const VOLUME: &[u8] = b"killloop";

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn key_name(k: u32) -> Vec<u8> {
    format!("obj{k}").into_bytes()
}

fn aux(version: u32) -> Vec<u8> {
    format!("v{version}").into_bytes()
}

/// The bytes of `block` of key `k` under coherency version `version`.
fn content(k: u32, version: u32, block: u64) -> Vec<u8> {
    let mut out = vec![0u8; BLOCK as usize];
    let mut x = (u64::from(k) << 40) ^ (u64::from(version) << 20) ^ block;
    for c in out.chunks_mut(8) {
        c.copy_from_slice(&splitmix(&mut x).to_le_bytes()[..c.len()]);
    }
    out
}

/// The data of a read, block by block: (block number, its bytes).
fn data_blocks(segs: Vec<ReadSegment>) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    for s in segs {
        if let ReadSegment::Data { offset, data } = s {
            for (i, chunk) in data.chunks(BLOCK as usize).enumerate() {
                out.push((offset / BLOCK + i as u64, chunk.to_vec()));
            }
        }
    }
    out
}

/// What the oracle knows of one key.
#[derive(Clone, Debug)]
struct KeyState {
    version: u32,
    size: u64,
    /// Blocks acknowledged under `version`, and when.
    blocks: BTreeMap<u64, Instant>,
    /// Blocks an acknowledged resize cut (and not written since), and when.
    cut: BTreeMap<u64, Instant>,
    /// An operation was cut off by the kill: its outcome is unknown.
    uncertain: bool,
}

impl KeyState {
    fn fresh(version: u32) -> KeyState {
        KeyState {
            version,
            size: MAX_BLOCKS * BLOCK,
            blocks: BTreeMap::new(),
            cut: BTreeMap::new(),
            uncertain: false,
        }
    }
}

#[derive(Default)]
struct Totals {
    cycles: u64,
    bytes_verified: u64,
    lost_bytes: u64,
    ops: u64,
    acked_writes: u64,
    uncertain_keys: u64,
}

type Oracle = Arc<Mutex<BTreeMap<u32, KeyState>>>;

/// One client's load on its keys until the daemon dies under it. Every
/// outcome is written into the oracle as soon as it is acknowledged.
fn load(socket: &Path, client: u32, oracle: &Oracle, mut rng: u64) -> u64 {
    let Ok(mut c) = Client::connect(socket) else {
        return 0;
    };
    let keys: Vec<u32> = (0..KEYS_PER_CLIENT)
        .map(|i| client * KEYS_PER_CLIENT + i)
        .collect();
    let Ok(v) = c.acquire_volume(VOLUME, b"") else {
        return 0;
    };
    let mut handles: BTreeMap<u32, CookieHandle> = BTreeMap::new();
    for &k in &keys {
        let st = oracle.lock().unwrap()[&k].clone();
        // Mark before, clear after: a kill in between leaves it uncertain.
        oracle.lock().unwrap().get_mut(&k).unwrap().uncertain = true;
        let Ok(h) = c.acquire_cookie(v, &key_name(k), &aux(st.version), st.size) else {
            return 0;
        };
        if c.use_cookie(h, false).is_err() {
            return 0;
        }
        oracle.lock().unwrap().get_mut(&k).unwrap().uncertain = false;
        handles.insert(k, h);
    }
    let mut ops = 0;
    loop {
        let k = keys[(splitmix(&mut rng) % keys.len() as u64) as usize];
        let st = oracle.lock().unwrap()[&k].clone();
        let h = handles[&k];
        let dice = splitmix(&mut rng) % 100;
        oracle.lock().unwrap().get_mut(&k).unwrap().uncertain = true;
        let ok = if dice < 50 {
            // Write one block of the current version.
            let b = splitmix(&mut rng) % (st.size / BLOCK);
            match c.write(h, b * BLOCK, &content(k, st.version, b)) {
                Ok(Status::Ok) => {
                    let mut o = oracle.lock().unwrap();
                    let s = o.get_mut(&k).unwrap();
                    s.blocks.insert(b, Instant::now());
                    s.cut.remove(&b);
                    true
                }
                Ok(_) => true,
                Err(_) => false,
            }
        } else if dice < 80 {
            // Read it all back: the blocks written, or misses.
            match c.read(h, 0, st.size as u32) {
                Ok(ReadReply::Data(segs)) => {
                    for (b, chunk) in data_blocks(segs) {
                        assert!(
                            chunk == content(k, st.version, b),
                            "key {k} block {b}: wrong bytes read while running"
                        );
                        assert!(
                            st.blocks.contains_key(&b),
                            "key {k} block {b}: data where nothing was written"
                        );
                    }
                    true
                }
                Ok(_) => true,
                Err(_) => false,
            }
        } else if dice < 90 {
            // Invalidate: a new version, nothing cached under it yet.
            let version = st.version + 1;
            match c.invalidate(h, &aux(version), st.size) {
                Ok(()) => {
                    let mut o = oracle.lock().unwrap();
                    let s = o.get_mut(&k).unwrap();
                    s.version = version;
                    s.blocks.clear();
                    s.cut.clear();
                    true
                }
                Err(_) => false,
            }
        } else if dice < 98 {
            // Resize to 4..=16 blocks: a shrink cuts what is past it.
            let size = (4 + splitmix(&mut rng) % (MAX_BLOCKS - 3)) * BLOCK;
            match c.resize(h, size) {
                Ok(()) => {
                    let now = Instant::now();
                    let mut o = oracle.lock().unwrap();
                    let s = o.get_mut(&k).unwrap();
                    for b in size / BLOCK..s.size / BLOCK {
                        s.blocks.remove(&b);
                        s.cut.insert(b, now);
                    }
                    s.size = size;
                    true
                }
                Err(_) => false,
            }
        } else {
            // Retire it, and start the key again under a new version.
            let version = st.version + 1;
            let r = c.relinquish_cookie(h, true).and_then(|()| {
                let h = c.acquire_cookie(v, &key_name(k), &aux(version), MAX_BLOCKS * BLOCK)?;
                c.use_cookie(h, false)?;
                Ok(h)
            });
            match r {
                Ok(nh) => {
                    handles.insert(k, nh);
                    oracle.lock().unwrap().insert(k, KeyState::fresh(version));
                    true
                }
                Err(_) => false,
            }
        };
        if !ok {
            // The daemon died under this operation: its key stays uncertain.
            return ops;
        }
        oracle.lock().unwrap().get_mut(&k).unwrap().uncertain = false;
        ops += 1;
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// After a restart: every key read back against the oracle. Returns the
/// bytes verified and the bytes lost.
fn verify(d: &DaemonProc, oracle: &Oracle, killed: Instant, cycle: u64, t: &mut Totals) {
    let mut c = d.client();
    let v = c.acquire_volume(VOLUME, b"").expect("volume");
    let durable_before = killed - WINDOW;
    let mut o = oracle.lock().unwrap();
    for (&k, st) in o.iter_mut() {
        let h = c
            .acquire_cookie(v, &key_name(k), &aux(st.version), st.size)
            .expect("acquire");
        c.use_cookie(h, false).expect("use");
        let mut present = BTreeSet::new();
        match c.read(h, 0, st.size as u32).expect("read") {
            ReadReply::Data(segs) => {
                for (b, chunk) in data_blocks(segs) {
                    assert!(
                        chunk == content(k, st.version, b),
                        "cycle {cycle}: key {k} block {b}: bytes that are not its content \
                         under version {}",
                        st.version
                    );
                    if !st.uncertain
                        && let Some(&when) = st.cut.get(&b)
                    {
                        assert!(
                            when > durable_before,
                            "cycle {cycle}: key {k} block {b}: cut by a resize acknowledged \
                             {:?} before the kill, back after the restart",
                            killed - when
                        );
                    }
                    present.insert(b);
                    t.bytes_verified += BLOCK;
                }
            }
            ReadReply::NoData => {}
            other => panic!("cycle {cycle}: key {k}: read answered {other:?}"),
        }
        if st.uncertain {
            // Checked for wrong bytes only; then a fresh start for the key.
            c.relinquish_cookie(h, true).expect("retire");
            t.uncertain_keys += 1;
            *st = KeyState::fresh(st.version + 2);
            continue;
        }
        for (&b, &when) in &st.blocks {
            if when < durable_before && !present.contains(&b) {
                eprintln!(
                    "cycle {cycle}: key {k} block {b}: acknowledged {:?} before the kill, lost",
                    killed - when
                );
                t.lost_bytes += BLOCK;
            }
        }
        // What the restart kept is what the oracle holds from now on: a
        // block written within the window may be gone, and a block cut
        // within it may be back (its content is right; it is there now).
        st.blocks.retain(|b, _| present.contains(b));
        for &b in &present {
            st.blocks.entry(b).or_insert(killed);
            st.cut.remove(&b);
        }
        c.relinquish_cookie(h, false).expect("relinquish");
    }
}

#[test]
fn kill9_loop_under_mixed_load_loses_nothing_acknowledged() {
    let cycles: u64 = std::env::var("RINGCACHE_KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut rng: u64 = std::env::var("RINGCACHE_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x4B11_1009);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("ringcached.conf");
    // Large enough that nothing is ever evicted for space (a miss from
    // eviction would be fine, but would hide a loss).
    std::fs::write(
        &config,
        format!(
            "dir {}\nsize 2G\nsocket {}\n",
            dir.path().display(),
            dir.path().join("rc.sock").display()
        ),
    )
    .unwrap();
    let device = dir.path().join("cache.img");
    let oracle: Oracle = Arc::new(Mutex::new(
        (0..CLIENTS * KEYS_PER_CLIENT)
            .map(|k| (k, KeyState::fresh(1)))
            .collect(),
    ));
    let mut t = Totals::default();
    let started = Instant::now();
    let mut killed: Option<Instant> = None;
    let mut under_load = Duration::ZERO;
    for cycle in 0..cycles {
        let mut d = DaemonProc::start(dir.path(), &config);
        if let Some(k) = killed {
            verify(&d, &oracle, k, cycle, &mut t);
        }
        let workers: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (socket, oracle) = (d.socket.clone(), oracle.clone());
                let seed = splitmix(&mut rng);
                std::thread::spawn(move || load(&socket, client, &oracle, seed))
            })
            .collect();
        // Log-uniform between 0.1 and 5 s.
        let u = (splitmix(&mut rng) >> 11) as f64 / (1u64 << 53) as f64;
        let delay = Duration::from_secs_f64(0.1 * 50f64.powf(u));
        under_load += delay;
        std::thread::sleep(delay);
        killed = Some(Instant::now());
        d.kill9();
        for w in workers {
            t.ops += w.join().expect("a load thread panicked");
        }
        let (code, report) = fsck(&device);
        assert_eq!(code, 0, "cycle {cycle}: fsck after the kill: {report:#}");
        t.cycles += 1;
    }
    let mut d = DaemonProc::start(dir.path(), &config);
    if let Some(k) = killed {
        verify(&d, &oracle, k, cycles, &mut t);
    }
    assert!(d.terminate(), "clean shutdown at the end");
    t.acked_writes = t.ops;
    eprintln!(
        "kill loop: {} cycles in {:.0?} ({:.0?} of it under load), {} operations acknowledged, {} bytes verified after \
         restarts, {} keys left uncertain by a kill, {} acknowledged bytes older than {:?} lost",
        t.cycles,
        started.elapsed(),
        under_load,
        t.acked_writes,
        t.bytes_verified,
        t.uncertain_keys,
        t.lost_bytes,
        WINDOW
    );
    assert!(t.bytes_verified > 0, "nothing was read back");
    assert_eq!(
        t.lost_bytes, 0,
        "acknowledged bytes older than the flush window were lost"
    );
}
