//! A 4 KiB read through the daemon allocates nothing in the steady state:
//! the frame off the socket, the read's plan and I/O, its check, the reply
//! head and the writev are all in reused storage once a connection is
//! warm.
//!
//! The daemon runs in this process (`daemon::run`) and the count is of the
//! whole process (dhat), so the client side of the measured reads is
//! written here by hand on reused buffers: requests encoded in place on
//! the socket of a `Client` that set the cookie up, replies read into one
//! buffer and checked.

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringcache::client::{Client, request};
use ringcache::daemon::{self, Config};
use ringcache::proto::{self, Op, REPLY, Status};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const BLOCK: u64 = 4096;
const BLOCKS: u64 = 1024;
const WARM_UP: u64 = 2000;
const READS: u64 = 20_000;
/// Warm-up lasts at least this long (see the warm-up below).
const HOUSEKEEPING_ROUNDS: Duration = Duration::from_millis(2500);

fn block_byte(i: u64, j: u64) -> u8 {
    (i as u8).wrapping_mul(31).wrapping_add(j as u8)
}

/// Put the request frame for a read of block `i` (id `id`) into `frame`,
/// which has the frame's length already.
fn encode_read(frame: &mut [u8; 32], cookie: u32, id: u64, i: u64) {
    let payload_len = 16u32;
    frame[0..4].copy_from_slice(&(proto::HEADER_AFTER_LEN as u32 + payload_len).to_le_bytes());
    frame[4..6].copy_from_slice(&(Op::Read as u16).to_le_bytes());
    frame[6..8].copy_from_slice(&0u16.to_le_bytes());
    frame[8..16].copy_from_slice(&id.to_le_bytes());
    frame[16..20].copy_from_slice(&cookie.to_le_bytes());
    frame[20..24].copy_from_slice(&(BLOCK as u32).to_le_bytes());
    frame[24..32].copy_from_slice(&(i * BLOCK).to_le_bytes());
}

/// Read one reply into `buf` (reused) and check it is the Ok reply to a
/// read of block `(id - base) % BLOCKS` with that block's bytes in one data
/// segment.
fn check_reply(s: &mut impl Read, buf: &mut Vec<u8>, base: u64) {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("a reply");
    let len = u32::from_le_bytes(len) as usize;
    assert!(len <= proto::MAX_FRAME, "reply of {len} bytes");
    buf.resize(len, 0);
    s.read_exact(buf).expect("the reply's rest");
    let op = u16::from_le_bytes([buf[0], buf[1]]);
    assert_eq!(op, Op::Read as u16 | REPLY);
    let id = u64::from_le_bytes(buf[4..12].try_into().unwrap());
    let status = u16::from_le_bytes([buf[12], buf[13]]);
    assert_eq!(status, Status::Ok as u16, "read {id}");
    // Segment count 1, then kind, pad, length and offset of the segment.
    let segs = u32::from_le_bytes(buf[16..20].try_into().unwrap());
    assert_eq!(segs, 1, "read {id}: {segs} segments");
    assert_eq!(buf[20], proto::SEG_DATA, "read {id}: a hole");
    let seg_len = u32::from_le_bytes(buf[24..28].try_into().unwrap()) as u64;
    let offset = u64::from_le_bytes(buf[28..36].try_into().unwrap());
    assert_eq!(seg_len, BLOCK);
    let i = offset / BLOCK;
    assert_eq!(i, (id - base) % BLOCKS, "read {id} answered block {i}");
    let data = &buf[36..];
    assert_eq!(data.len() as u64, BLOCK);
    for (j, &b) in data.iter().enumerate().step_by(509) {
        assert_eq!(b, block_byte(i, j as u64), "read {id}: byte {j}");
    }
}

#[test]
fn daemon_reads_allocate_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::embedded();
    cfg.device = dir.path().join("cache.img");
    cfg.create_bytes = Some(64 << 20);
    cfg.socket = dir.path().join("ringcached.sock");
    let (ready_tx, ready_rx) = mpsc::channel();
    let daemon = std::thread::spawn(move || {
        daemon::run(cfg, move |h| {
            let _ = ready_tx.send(h);
        })
    });
    let handle = ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the daemon is ready");
    let socket = dir.path().join("ringcached.sock");

    let mut c = Client::connect(&socket).expect("connect");
    let v = c.acquire_volume(b"vol", b"").unwrap();
    let k = c.acquire_cookie(v, b"obj", b"", BLOCKS * BLOCK).unwrap();
    c.use_cookie(k, true).unwrap();
    for i in 0..BLOCKS {
        let data: Vec<u8> = (0..BLOCK).map(|j| block_byte(i, j)).collect();
        assert_eq!(c.write(k, i * BLOCK, &data).unwrap(), Status::Ok);
    }
    // Made durable now, so the housekeeping's flush once a second (which
    // writes the log, allocating) has nothing to do while reads are
    // counted.
    c.flush_cache().unwrap();
    // A read through the client API first: the request as the client
    // library encodes it matches the one encoded by hand below.
    let want = request::read(k, 3 * BLOCK, BLOCK as u32);
    let mut by_hand = [0u8; 32];
    encode_read(&mut by_hand, k.0, 1, 3);
    assert_eq!(&by_hand[16..], &want[..], "the read request's encoding");

    // One profiler throughout: its own first steps (the unwinder's caches)
    // allocate, and those fall in the warm-up.
    let profiler = dhat::Profiler::builder().testing().build();
    let mut results = Vec::new();
    for depth in [1u64, 8] {
        // Ids from here on: a fresh range per depth, block = id % BLOCKS.
        let base = 1u64 << 32;
        let mut next = base;
        let mut frame = [0u8; 32];
        let mut reply = Vec::with_capacity(64 << 10);
        let s = c.stream();
        let mut run = |n: u64, s: &mut std::os::unix::net::UnixStream| {
            // Replies come in any order: depth requests are in flight, a
            // new one goes out for each reply checked.
            for _ in 0..depth {
                encode_read(&mut frame, k.0, next, next % BLOCKS);
                s.write_all(&frame).unwrap();
                next += 1;
            }
            for _ in 0..n {
                check_reply(s, &mut reply, base);
                encode_read(&mut frame, k.0, next, next % BLOCKS);
                s.write_all(&frame).unwrap();
                next += 1;
            }
            for _ in 0..depth {
                check_reply(s, &mut reply, base);
            }
        };
        // Warm up over two of the housekeeping's rounds as well (once a
        // second): its first ones open its ring and size its scan list.
        let warm = Instant::now();
        while warm.elapsed() < HOUSEKEEPING_ROUNDS {
            run(WARM_UP, s);
        }
        let before = dhat::HeapStats::get().total_blocks;
        run(READS, s);
        let after = dhat::HeapStats::get().total_blocks;
        let per = (after - before) as f64 / (READS + depth) as f64;
        eprintln!("daemon: QD{depth}: {per:.3} allocations per read");
        results.push((depth, per));
    }
    drop(profiler);
    c.ping().unwrap();
    drop(c);
    handle.shutdown();
    daemon
        .join()
        .expect("the daemon thread")
        .expect("the daemon ran");
    for (depth, per) in results {
        assert_eq!(per, 0.0, "QD{depth}: {per} allocations per read");
    }
}
