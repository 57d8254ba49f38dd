//! Writes pipelined on one connection: the daemon keeps several in flight
//! at once (up to 4 MiB), commits them in the order they arrived and
//! answers them in that order; a read sent after writes sees them; a
//! connection closed with writes in flight leaves a daemon that serves
//! the next one. On the io_uring and the psync engine.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::daemon::{DaemonProc, stat, write_config};
use ringcache::client::{Client, ClientError, CookieHandle, ReadReply, ReadSegment, request};
use ringcache::proto::{Op, Status};

const CHUNK: usize = 64 << 10;
/// The daemon's bound on a connection's writes in flight.
const MAX_WRITE_BYTES: usize = 4 << 20;

fn chunk(i: usize, round: u8) -> Vec<u8> {
    (0..CHUNK)
        .map(|j| (i as u8).wrapping_mul(29) ^ round.wrapping_mul(101) ^ (j as u8))
        .collect()
}

/// A cookie in use on key `obj`, waiting while an earlier connection's
/// cookie on that key is still being released (Busy).
fn cookie(c: &mut Client, size: u64) -> CookieHandle {
    let v = c.acquire_volume(b"vol", b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let k = loop {
        match c.acquire_cookie(v, b"obj", b"", size) {
            Ok(k) => break k,
            Err(ClientError::Status(Status::Busy)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("the key's last cookie was not released: {e}"),
        }
    };
    c.use_cookie(k, true).unwrap();
    k
}

/// The bytes at `offset..offset + len`, which must be cached whole (in
/// one or more data segments, one per extent).
fn read_back(c: &mut Client, k: CookieHandle, offset: u64, len: usize) -> Vec<u8> {
    let ReadReply::Data(segs) = c.read(k, offset, len as u32).unwrap() else {
        panic!("{offset}: not cached");
    };
    let mut out = Vec::with_capacity(len);
    for s in segs {
        match s {
            ReadSegment::Data { offset: o, data } => {
                assert_eq!(o, offset + out.len() as u64, "{offset}: a gap");
                out.extend_from_slice(&data);
            }
            ReadSegment::Hole { offset: o, len: l } => {
                panic!("{offset}: a hole at {o} of {l} bytes")
            }
        }
    }
    assert_eq!(out.len(), len, "{offset}: cut short");
    out
}

#[test]
fn pipelined_writes_all_land_in_order_on_uring() {
    pipelined_writes("engine uring\n");
}

#[test]
fn pipelined_writes_all_land_in_order_on_psync() {
    pipelined_writes("engine psync\n");
}

/// 128 writes of 64 KiB (8 MiB, twice the bound) sent in one go: all are
/// answered Ok, in the order sent; more than one was in flight at a
/// time, never more than the bound; every chunk reads back as written.
fn pipelined_writes(extra: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), extra);
    let d = DaemonProc::start(dir.path(), &config);
    let mut c = d.client();
    let n = 2 * MAX_WRITE_BYTES / CHUNK;
    let k = cookie(&mut c, (n * CHUNK) as u64);
    let ids: Vec<u64> = (0..n)
        .map(|i| {
            let body = request::write(k, (i * CHUNK) as u64, &chunk(i, 0)).unwrap();
            c.queue(Op::Write, &body)
        })
        .collect();
    c.flush().unwrap();
    let mut answered = Vec::new();
    for _ in 0..n {
        let (id, status, _) = c.recv_any().expect("a reply");
        assert_eq!(status, Status::Ok, "write {id}");
        answered.push(id);
    }
    assert_eq!(answered, ids, "writes are answered in the order sent");
    let most = stat(&mut c, "daemon.writes_in_flight_most");
    assert!(
        most > 1,
        "writes were kept in flight together (most {most})"
    );
    assert!(
        most <= (MAX_WRITE_BYTES / CHUNK) as u64,
        "at most 4 MiB of writes in flight (most {most} of 64 KiB)"
    );
    for i in 0..n {
        let got = read_back(&mut c, k, (i * CHUNK) as u64, CHUNK);
        assert!(got == chunk(i, 0), "chunk {i}: other bytes");
    }
    // The connection and the daemon are still good.
    c.ping().unwrap();
    d.client().ping().unwrap();
}

/// Sixteen writes to the same range, then a read of it, all sent in one
/// go: the read waits for the writes and returns the last one's bytes.
#[test]
fn a_read_after_pipelined_writes_sees_the_last_of_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "engine uring\n");
    let d = DaemonProc::start(dir.path(), &config);
    let mut c = d.client();
    let k = cookie(&mut c, 4 * CHUNK as u64);
    for round in 0..4u8 {
        let mut writes: Vec<u64> = (0..16u8)
            .map(|w| {
                let body = request::write(k, CHUNK as u64, &chunk(1, round * 16 + w)).unwrap();
                c.queue(Op::Write, &body)
            })
            .collect();
        let read = c.queue(Op::Read, &request::read(k, CHUNK as u64, CHUNK as u32));
        c.flush().unwrap();
        let mut got = None;
        while got.is_none() || !writes.is_empty() {
            let (id, status, body) = c.recv_any().expect("a reply");
            if id == read {
                assert!(writes.is_empty(), "the read is answered after the writes");
                got = Some(Client::parse_read(status, &body).unwrap());
            } else {
                assert_eq!(status, Status::Ok);
                assert_eq!(writes.first(), Some(&id), "writes answered in order");
                writes.remove(0);
            }
        }
        match got {
            Some(ReadReply::Data(segs)) => {
                let mut bytes = Vec::new();
                for s in segs {
                    match s {
                        ReadSegment::Data { data, .. } => bytes.extend_from_slice(&data),
                        ReadSegment::Hole { .. } => panic!("round {round}: a hole"),
                    }
                }
                assert!(
                    bytes == chunk(1, round * 16 + 15),
                    "round {round}: the last write's bytes"
                );
            }
            _ => panic!("round {round}: not data"),
        }
    }
}

/// Writes that fail (a bad handle, a write past the object's size) among
/// pipelined writes are answered with their own status; the others land.
#[test]
fn failing_writes_among_pipelined_ones_fail_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "engine uring\n");
    let d = DaemonProc::start(dir.path(), &config);
    let mut c = d.client();
    let n = 32;
    let k = cookie(&mut c, (n * CHUNK) as u64);
    let mut expect: HashMap<u64, Status> = HashMap::new();
    for i in 0..n {
        let body = request::write(k, (i * CHUNK) as u64, &chunk(i, 7)).unwrap();
        expect.insert(c.queue(Op::Write, &body), Status::Ok);
        if i % 8 == 3 {
            let bad = request::write(CookieHandle(9999), 0, &chunk(i, 7)).unwrap();
            expect.insert(c.queue(Op::Write, &bad), Status::BadHandle);
            let past = request::write(k, (n * CHUNK) as u64, &chunk(i, 7)).unwrap();
            let id = c.queue(Op::Write, &past);
            expect.insert(id, Status::Invalid);
        }
    }
    c.flush().unwrap();
    while !expect.is_empty() {
        let (id, status, _) = c.recv_any().expect("a reply");
        let want = expect
            .remove(&id)
            .expect("a reply to something asked, once");
        assert_eq!(status, want, "request {id}");
    }
    for i in 0..n {
        let got = read_back(&mut c, k, (i * CHUNK) as u64, CHUNK);
        assert!(got == chunk(i, 7), "chunk {i}: other bytes");
    }
}

/// A client that sends 64 writes and closes at once: the daemon answers
/// or drops them, releases the connection's cookies, and a new
/// connection finds every chunk either cached whole with its bytes or
/// not cached, never other bytes.
#[test]
fn a_connection_closed_with_writes_in_flight_leaves_a_working_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "engine uring\n");
    let d = DaemonProc::start(dir.path(), &config);
    let n = 64;
    for round in 0..3u8 {
        let mut c = d.client();
        let k = cookie(&mut c, (n * CHUNK) as u64);
        for i in 0..n {
            let body = request::write(k, (i * CHUNK) as u64, &chunk(i, round)).unwrap();
            c.queue(Op::Write, &body);
        }
        c.flush().unwrap();
        drop(c);
    }
    let mut c = d.client();
    c.ping().unwrap();
    // The last connection's cookie is released once its writes are
    // answered: until then the key is Busy (the helper waits).
    let k = cookie(&mut c, (n * CHUNK) as u64);
    for i in 0..n {
        let offset = (i * CHUNK) as u64;
        match c.read(k, offset, CHUNK as u32).unwrap() {
            ReadReply::NoData => {}
            ReadReply::Data(segs) => {
                for s in segs {
                    if let ReadSegment::Data { offset: o, data } = s {
                        let at = (o - offset) as usize;
                        let whole: Vec<Vec<u8>> = (0..3u8).map(|r| chunk(i, r)).collect();
                        assert!(
                            whole
                                .iter()
                                .any(|w| w.get(at..at + data.len()) == Some(&data[..])),
                            "chunk {i}: bytes no write sent"
                        );
                    }
                }
            }
            _ => panic!("chunk {i}: neither data nor a miss"),
        }
    }
    // Still writes and reads.
    assert_eq!(c.write(k, 0, &chunk(0, 9)).unwrap(), Status::Ok);
    assert!(read_back(&mut c, k, 0, CHUNK) == chunk(0, 9));
}
