//! Many reads pipelined on one connection, far more than the daemon keeps
//! in flight (`max_inflight`), on the io_uring and the psync engine: the
//! daemon stops reading the socket while
//! its reads are at the limit and goes on as replies go out, so every read
//! is answered once, with its own bytes, and requests of other kinds sent
//! among them are answered too. Replies come in any order; they are
//! matched by id.

mod common;

use std::collections::HashMap;

use common::daemon::{DaemonProc, stat, write_config};
use ringcache::client::{Client, CookieHandle, ReadReply, ReadSegment, request};
use ringcache::proto::{Op, Status};

const BLOCK: u64 = 4096;
const BLOCKS: u64 = 256;

fn block(i: u64) -> Vec<u8> {
    (0..BLOCK)
        .map(|j| (i as u8).wrapping_mul(31).wrapping_add(j as u8))
        .collect()
}

/// A cookie in use whose object holds `block(i)` at every block `i`.
fn filled_cookie(c: &mut Client) -> CookieHandle {
    let v = c.acquire_volume(b"vol", b"").unwrap();
    let k = c.acquire_cookie(v, b"obj", b"", BLOCKS * BLOCK).unwrap();
    c.use_cookie(k, true).unwrap();
    for i in 0..BLOCKS {
        assert_eq!(c.write(k, i * BLOCK, &block(i)).unwrap(), Status::Ok);
    }
    k
}

#[test]
fn reads_beyond_the_in_flight_limit_all_come_back_right() {
    beyond_the_limit("");
}

/// The same on the psync engine, whose own threads complete the reads:
/// the connection's thread, asleep in poll(2), is woken by its queue's
/// waker (no ring descriptor to poll).
#[test]
fn on_psync_reads_beyond_the_limit_all_come_back_right() {
    beyond_the_limit("engine psync\n");
}

fn beyond_the_limit(extra_config: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), extra_config);
    let d = DaemonProc::start(dir.path(), &config);
    let mut c = d.client();
    let limit = u64::from(c.server_info().max_inflight);
    assert!(limit > 0);
    let k = filled_cookie(&mut c);

    // Ten times the limit, queued in one go, with pings among them.
    let reads = 10 * limit;
    let mut expect: HashMap<u64, Option<u64>> = HashMap::new();
    for n in 0..reads {
        let i = (n * 7) % BLOCKS;
        let id = c.queue(Op::Read, &request::read(k, i * BLOCK, BLOCK as u32));
        expect.insert(id, Some(i));
        if n % 50 == 0 {
            expect.insert(c.queue(Op::Ping, &[]), None);
        }
    }
    c.flush().unwrap();
    while !expect.is_empty() {
        let (id, status, body) = c.recv_any().expect("a reply");
        let what = expect
            .remove(&id)
            .expect("a reply to something asked, once");
        match what {
            None => assert_eq!(status, Status::Ok, "ping"),
            Some(i) => match Client::parse_read(status, &body).unwrap() {
                ReadReply::Data(segs) => {
                    assert_eq!(segs.len(), 1, "block {i}: {segs:?}");
                    match &segs[0] {
                        ReadSegment::Data { offset, data } => {
                            assert_eq!(*offset, i * BLOCK);
                            assert!(*data == block(i), "block {i}: other bytes");
                        }
                        other => panic!("block {i}: {other:?}"),
                    }
                }
                other => panic!("block {i}: {other:?}"),
            },
        }
    }
    // The connection is still good.
    c.ping().unwrap();
    let _ = Client::connect(&d.socket).unwrap().ping();
}

/// Reads that arrive together go to the device together: 32 read frames
/// in one write are taken off the socket in one go and their I/O sent in
/// submissions of 8 (`daemon.read_submissions` goes up by 4, not 32), each
/// of which the io_uring engine makes one `io_uring_enter`.
#[test]
fn reads_that_arrive_together_are_submitted_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "engine uring\n");
    let d = DaemonProc::start(dir.path(), &config);
    let mut c = d.client();
    let k = filled_cookie(&mut c);
    let before = stat(&mut c, "daemon.read_submissions");
    // Queued, then written with one write(2).
    let ids: Vec<u64> = (0..32)
        .map(|i| {
            c.queue(
                Op::Read,
                &request::read(k, (i * 5 % BLOCKS) * BLOCK, BLOCK as u32),
            )
        })
        .collect();
    c.flush().unwrap();
    for id in ids {
        let (status, body) = c.recv(id).unwrap();
        assert!(matches!(
            Client::parse_read(status, &body).unwrap(),
            ReadReply::Data(_)
        ));
    }
    let after = stat(&mut c, "daemon.read_submissions");
    assert_eq!(
        after - before,
        4,
        "the 32 reads' I/O went in 4 submissions of 8"
    );
    assert!(stat(&mut c, "io.max_sqes_per_enter") >= 8);
    assert!(stat(&mut c, "io.sqes_submitted") >= 32 + BLOCKS);
}

/// A read at queue depth one costs its connection's thread one
/// io_uring_enter (the submission): its completion is posted by the
/// thread's own system calls (the poll(2) it sleeps in) and reaped from
/// the ring without entering the kernel again.
#[test]
fn a_read_at_depth_one_enters_the_ring_once() {
    const READS: u64 = 400;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let d = DaemonProc::start(dir.path(), &config);
    let mut c = d.client();
    let k = filled_cookie(&mut c);
    let before = stat(&mut c, "io.enters");
    for i in 0..READS {
        let b = i % BLOCKS;
        match c.read(k, b * BLOCK, BLOCK as u32).unwrap() {
            ReadReply::Data(segs) => match &segs[..] {
                [ReadSegment::Data { data, .. }] => assert!(*data == block(b), "read {i}"),
                other => panic!("read {i}: {other:?}"),
            },
            other => panic!("read {i}: {other:?}"),
        }
    }
    let enters = stat(&mut c, "io.enters") - before;
    // (Slack for the daemon's own work meanwhile: a checkpoint, say.)
    assert!(
        enters <= READS + READS / 10,
        "{enters} io_uring_enter calls for {READS} reads"
    );
    assert!(enters >= READS, "every read was submitted: {enters}");
}
