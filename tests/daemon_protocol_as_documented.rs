//! The socket protocol does what docs/PROTOCOL.md says, case by case: a
//! Hello with request id 0, header flags, or a body that does not parse
//! (name_len past the bytes sent, trailing bytes, a reserved field that is
//! not zero, a wrong magic) gets BadRequest and the connection closes; a
//! reply never has the pattern of an event (a request id 0 or an opcode
//! with bit 0x4000 would otherwise come back looking like one); every
//! argument of AcquireVolume is checked before anything is created; a
//! write over `max_data` is Range; unknown UnuseCookie flag bits and
//! `will_modify` values other than 0 and 1 are Invalid. Each of these was
//! accepted (or answered otherwise) before.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::daemon::{DaemonProc, write_config};
use ringcache::client::{Client, CookieHandle};
use ringcache::proto::{self, EVENT, Op, REPLY, Status, Writer};

const LIMIT: Duration = Duration::from_millis(500);

fn daemon() -> (tempfile::TempDir, DaemonProc) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let d = DaemonProc::start(dir.path(), &config);
    (dir, d)
}

/// A raw frame with header `flags`.
fn frame_with_flags(op: u16, flags: u16, id: u64, body: &[u8]) -> Vec<u8> {
    let mut f = proto::frame(op, id, body);
    f[6..8].copy_from_slice(&flags.to_le_bytes());
    f
}

/// Read one frame: (op, id, status).
fn read_reply(s: &mut UnixStream) -> Option<(u16, u64, Status)> {
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let mut head = [0u8; 16];
    s.read_exact(&mut head).ok()?;
    let h = proto::parse_header(&head).ok()?;
    let mut payload = vec![0u8; h.payload_len];
    s.read_exact(&mut payload).ok()?;
    let st = Status::from_u16(u16::from_le_bytes([payload[0], payload[1]]));
    Some((h.op, h.id, st))
}

/// The daemon closed the connection.
fn closed(s: &mut UnixStream) -> bool {
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn hello_body(version: u32, reserved: u32, name_len: u16, name: &[u8]) -> Vec<u8> {
    Writer::new()
        .bytes(&proto::MAGIC)
        .u32(version)
        .u32(reserved)
        .u16(name_len)
        .bytes(name)
        .finish()
}

#[test]
fn malformed_greetings_get_bad_request_and_a_closed_connection() {
    let (_dir, d) = daemon();
    let good = hello_body(proto::VERSION, 0, 4, b"test");
    let mut wrong_magic = good.clone();
    wrong_magic[0] = b'X';
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("request id 0", proto::frame(Op::Hello as u16, 0, &good)),
        (
            "header flags set",
            frame_with_flags(Op::Hello as u16, 1, 1, &good),
        ),
        (
            "name_len past the bytes sent",
            proto::frame(
                Op::Hello as u16,
                1,
                &hello_body(proto::VERSION, 0, 9, b"test"),
            ),
        ),
        (
            "bytes after the name",
            proto::frame(
                Op::Hello as u16,
                1,
                &hello_body(proto::VERSION, 0, 2, b"test"),
            ),
        ),
        (
            "no name_len",
            proto::frame(
                Op::Hello as u16,
                1,
                &Writer::new()
                    .bytes(&proto::MAGIC)
                    .u32(proto::VERSION)
                    .u32(0)
                    .finish(),
            ),
        ),
        (
            "reserved not zero",
            proto::frame(
                Op::Hello as u16,
                1,
                &hello_body(proto::VERSION, 7, 4, b"test"),
            ),
        ),
        (
            "wrong magic",
            proto::frame(Op::Hello as u16, 1, &wrong_magic),
        ),
    ];
    for (what, frame) in cases {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.write_all(&frame).unwrap();
        let reply = read_reply(&mut s);
        assert!(
            matches!(reply, Some((_, _, Status::BadRequest))),
            "{what}: {reply:?}"
        );
        assert!(closed(&mut s), "{what}: connection left open");
    }
    // A good greeting still works.
    let mut c = d.client();
    c.ping().unwrap();
}

#[test]
fn replies_never_look_like_events() {
    let (_dir, d) = daemon();
    let mut c = d.client();
    let mut s = c.stream().try_clone().unwrap();
    // An opcode in the event space and a request with id 0: both answered,
    // neither reply with the event pattern (op & 0xC000 == 0xC000).
    s.write_all(&proto::frame(0x4001, 5, &[])).unwrap();
    let (op, id, st) = read_reply(&mut s).expect("a reply");
    assert_eq!((id, st), (5, Status::UnknownOp));
    assert_ne!(op & EVENT, EVENT, "reply op {op:#x} looks like an event");
    assert_ne!(op & REPLY, 0);
    s.write_all(&proto::frame(0x4001, 0, &[])).unwrap();
    let (op, _, st) = read_reply(&mut s).expect("a reply");
    assert_eq!(st, Status::BadRequest);
    assert_ne!(op & EVENT, EVENT, "reply op {op:#x} looks like an event");
    // Header flags on a request: BadRequest, the connection goes on.
    s.write_all(&frame_with_flags(Op::Ping as u16, 2, 6, &[]))
        .unwrap();
    assert_eq!(read_reply(&mut s).map(|r| r.2), Some(Status::BadRequest));
    c.ping().unwrap();
}

fn status_of(c: &mut Client, op: Op, body: &[u8]) -> Status {
    let id = c.send(op, body).unwrap();
    c.recv(id).unwrap().0
}

#[test]
fn arguments_are_checked_before_anything_is_created() {
    let (_dir, d) = daemon();
    let mut c = d.client();
    let volumes_before = c
        .stats()
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "fscache.volumes")
        .map(|(_, v)| v);
    let body = Writer::new()
        .u16(3)
        .u16(256)
        .bytes(b"vol")
        .bytes(&[0; 256])
        .finish();
    assert_eq!(status_of(&mut c, Op::AcquireVolume, &body), Status::Invalid);
    let volumes_after = c
        .stats()
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "fscache.volumes")
        .map(|(_, v)| v);
    assert_eq!(volumes_before, volumes_after, "a volume was left behind");
    // The volume can be acquired properly afterwards, with its own aux.
    let v = c.acquire_volume(b"vol", b"aux").unwrap();
    let k = c.acquire_cookie(v, b"k", b"", 4 << 20).unwrap();
    c.use_cookie(k, false).unwrap();

    // A write over max_data is Range, and nothing of it is stored.
    // (A frame can carry a little more than max_data: the header room.)
    let big = vec![1u8; proto::MAX_DATA + 4000];
    let w = Writer::new()
        .u32(k.0)
        .u32(big.len() as u32)
        .u64(0)
        .bytes(&big)
        .finish();
    assert_eq!(status_of(&mut c, Op::Write, &w), Status::Range);
    assert!(c.query_occupancy(k).unwrap().is_empty());

    // UseCookie's will_modify is 0 or 1; UnuseCookie knows flag bits 1, 2.
    let use2 = Writer::new().u32(k.0).u8(2).finish();
    assert_eq!(status_of(&mut c, Op::UseCookie, &use2), Status::Invalid);
    let unuse = Writer::new().u32(k.0).u8(4).u16(0).u64(0).finish();
    assert_eq!(status_of(&mut c, Op::UnuseCookie, &unuse), Status::Invalid);
    c.unuse_cookie(CookieHandle(k.0), None, None).unwrap();
}

#[test]
fn unuse_with_a_smaller_size_shrinks_the_cookie_at_once() {
    let (_dir, d) = daemon();
    let mut c = d.client();
    let v = c.acquire_volume(b"vol", b"").unwrap();
    let k = c.acquire_cookie(v, b"k", b"", 8192).unwrap();
    // Two uses: the cookie stays live after one unuse.
    c.use_cookie(k, false).unwrap();
    c.use_cookie(k, false).unwrap();
    assert_eq!(c.write(k, 0, &[9; 8192]).unwrap(), Status::Ok);
    c.unuse_cookie(k, None, Some(4096)).unwrap();
    // The bytes past the new size are gone now, not at relinquish.
    match c.read(k, 4096, 4096) {
        Err(ringcache::client::ClientError::Status(Status::Range)) => {}
        Ok(ringcache::client::ReadReply::Data(segs)) => {
            for s in segs {
                if let ringcache::client::ReadSegment::Data { data, .. } = s {
                    assert!(!data.contains(&9), "old bytes past the new size");
                }
            }
        }
        other => panic!("read past the new size: {other:?}"),
    }
    let occ = c.query_occupancy(k).unwrap();
    assert!(
        occ.iter().all(|&(off, len)| off + len <= 4096),
        "cached past the new size: {occ:?}"
    );
}

#[test]
fn a_cookie_not_in_use_reads_nothing_and_caches_nothing() {
    let (_dir, d) = daemon();
    let mut c = d.client();
    let v = c.acquire_volume(b"vol", b"").unwrap();
    let k = c.acquire_cookie(v, b"k", b"", 8192).unwrap();
    // Never used: as a file that is not open.
    assert_eq!(c.write(k, 0, &[3; 4096]).unwrap(), Status::Dropped);
    c.use_cookie(k, false).unwrap();
    assert_eq!(c.write(k, 0, &[3; 8192]).unwrap(), Status::Ok);
    assert!(matches!(
        c.read(k, 0, 4096).unwrap(),
        ringcache::client::ReadReply::Data(_)
    ));
    c.unuse_cookie(k, None, None).unwrap();
    // Used and let go: the same, until it is used again.
    assert_eq!(
        c.read(k, 0, 4096).unwrap(),
        ringcache::client::ReadReply::NoData
    );
    assert_eq!(c.write(k, 0, &[4; 4096]).unwrap(), Status::Dropped);
    c.use_cookie(k, false).unwrap();
    match c.read(k, 0, 4096).unwrap() {
        ringcache::client::ReadReply::Data(segs) => match &segs[..] {
            [ringcache::client::ReadSegment::Data { data, .. }] => {
                assert!(data.iter().all(|&b| b == 3), "the dropped write was cached")
            }
            other => panic!("{other:?}"),
        },
        other => panic!("the data cached while in use is gone: {other:?}"),
    }
}

#[test]
fn lengths_that_do_not_fit_their_field_are_client_errors_not_truncations() {
    use ringcache::client::{ClientError, request};
    let (_dir, d) = daemon();
    let mut c = d.client();
    // 65,536 bytes do not fit a u16 length: before, the field said 0 and
    // the daemon read the first bytes of the key as something else.
    let long = vec![b'k'; 65_536];
    for r in [
        request::acquire_volume(&long, b""),
        request::acquire_volume(b"vol", &long),
        request::hello(&long),
        request::invalidate(CookieHandle(1), &long, 0),
        request::unuse_cookie(CookieHandle(1), Some(&long), None),
    ] {
        assert!(matches!(r, Err(ClientError::Protocol(_))), "{r:?}");
    }
    assert!(request::acquire_volume(&long[..65_535], b"").is_ok());
    let e = c.acquire_volume(&long, b"").expect_err("too long");
    assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");
    let v = c.acquire_volume(b"vol", b"").expect("acquire");
    let e = c
        .acquire_cookie(v, &long, b"", 0)
        .expect_err("a key too long");
    assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");
    let e = c
        .declare_server(v, &[b's'; 256], 1)
        .expect_err("a server id over 255 bytes");
    assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");
    // Nothing was sent: the connection is in step and serves on.
    c.ping().expect("ping after the refused requests");
    assert!(c.acquire_cookie(v, b"k", b"", 0).is_ok());
}
