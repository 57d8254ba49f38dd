//! Bad input on the socket gets a defined error (or, for framing errors, a
//! closed connection) within 100 ms, and never disturbs the daemon or its
//! other clients. One case per test; after each, a bystander client that
//! holds its own cookie checks that it is still served and its data intact.
//!
//! The timing is of the daemon's answer to a request that needs no disk
//! I/O; an idle daemon gives it in microseconds.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::daemon::{DaemonProc, write_config};
use ringcache::client::{Client, ClientError, CookieHandle, ReadReply, ReadSegment};
use ringcache::proto::{self, Op, Status, Writer};

const LIMIT: Duration = Duration::from_millis(100);

struct Fixture {
    _dir: tempfile::TempDir,
    d: DaemonProc,
    bystander: Client,
    by_cookie: CookieHandle,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "allow vol uid=0\nallow bystander uid=0\n");
    let d = DaemonProc::start(dir.path(), &config);
    let mut bystander = d.client();
    let v = bystander.acquire_volume(b"bystander", b"").unwrap();
    let by_cookie = bystander.acquire_cookie(v, b"mine", b"", 4096).unwrap();
    bystander.use_cookie(by_cookie, false).unwrap();
    assert_eq!(
        bystander.write(by_cookie, 0, &[0x5A; 4096]).unwrap(),
        Status::Ok
    );
    Fixture {
        _dir: dir,
        d,
        bystander,
        by_cookie,
    }
}

impl Fixture {
    /// The daemon and the bystander are unaffected.
    fn check_bystander(&mut self) {
        self.bystander.ping().expect("bystander served");
        match self.bystander.read(self.by_cookie, 0, 4096).unwrap() {
            ReadReply::Data(segs) => match &segs[..] {
                [ReadSegment::Data { data, .. }] => assert!(data.iter().all(|&b| b == 0x5A)),
                other => panic!("bystander data changed: {other:?}"),
            },
            other => panic!("bystander data gone: {other:?}"),
        }
        let mut fresh = self.d.client();
        fresh.ping().expect("new clients served");
    }

    /// A client with a volume and a 8 KiB cookie in use.
    fn client_with_cookie(&self) -> (Client, CookieHandle) {
        let mut c = self.d.client();
        let v = c.acquire_volume(b"vol", b"").unwrap();
        let k = c.acquire_cookie(v, b"k", b"", 8192).unwrap();
        c.use_cookie(k, false).unwrap();
        (c, k)
    }
}

/// Send a raw request on `c` and time the reply's status.
fn timed(c: &mut Client, op: u16, body: &[u8]) -> Status {
    let t = Instant::now();
    c.stream().write_all(&proto::frame(op, 777, body)).unwrap();
    let (st, _) = c.recv(777).expect("a reply");
    let took = t.elapsed();
    assert!(took < LIMIT, "reply took {took:?}");
    st
}

/// The daemon closes the connection (read gives EOF or reset) within the limit.
fn closed_within_limit(s: &mut UnixStream) {
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue, // an error reply before the close is fine
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("not closed within {LIMIT:?}: {e}"),
        }
    }
    assert!(t.elapsed() < LIMIT);
}

fn raw_greeted(d: &DaemonProc) -> UnixStream {
    let c = d.client();
    let mut c = c;
    c.stream().try_clone().unwrap()
}

#[test]
fn unknown_opcode() {
    let mut f = fixture();
    let (mut c, _) = f.client_with_cookie();
    assert_eq!(timed(&mut c, 0x7777, b"junk"), Status::UnknownOp);
    c.ping().expect("connection still usable");
    f.check_bystander();
}

#[test]
fn wrong_protocol_version() {
    let mut f = fixture();
    let mut s = UnixStream::connect(&f.d.socket).unwrap();
    let body = Writer::new()
        .bytes(&proto::MAGIC)
        .u32(99)
        .u32(0)
        .u16(0)
        .finish();
    s.write_all(&proto::frame(Op::Hello as u16, 1, &body))
        .unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let mut head = [0u8; 16];
    s.read_exact(&mut head).expect("a version reply");
    let h = proto::parse_header(&head).unwrap();
    let mut payload = vec![0u8; h.payload_len];
    s.read_exact(&mut payload).unwrap();
    assert_eq!(
        Status::from_u16(u16::from_le_bytes([payload[0], payload[1]])),
        Status::Version
    );
    closed_within_limit(&mut s);
    // A request before the greeting is refused too.
    let mut s = UnixStream::connect(&f.d.socket).unwrap();
    s.write_all(&proto::frame(Op::Ping as u16, 1, &[])).unwrap();
    closed_within_limit(&mut s);
    f.check_bystander();
}

#[test]
fn frame_longer_than_what_is_sent_then_closed() {
    let mut f = fixture();
    let mut s = raw_greeted(&f.d);
    let mut fr = proto::frame(Op::Ping as u16, 5, &[0u8; 100]);
    fr.truncate(16 + 10); // header says 100 payload bytes; 10 come
    s.write_all(&fr).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    closed_within_limit(&mut s);
    f.check_bystander();
}

#[test]
fn frame_length_above_the_limit() {
    let mut f = fixture();
    let mut s = raw_greeted(&f.d);
    let mut head = proto::frame(Op::Ping as u16, 5, &[]);
    head[..4].copy_from_slice(&((proto::MAX_FRAME + 1) as u32).to_le_bytes());
    s.write_all(&head).unwrap();
    closed_within_limit(&mut s);
    let mut s = raw_greeted(&f.d);
    head[..4].copy_from_slice(&3u32.to_le_bytes()); // shorter than a header
    s.write_all(&head).unwrap();
    closed_within_limit(&mut s);
    f.check_bystander();
}

fn acquire_cookie_body(v: u32, key: &[u8], key_len: u16) -> Vec<u8> {
    Writer::new()
        .u32(v)
        .u16(key_len)
        .u16(0)
        .u64(4096)
        .bytes(key)
        .finish()
}

#[test]
fn key_lengths_zero_limit_plus_one_and_one_mib() {
    let mut f = fixture();
    let mut c = f.d.client();
    let v = c.acquire_volume(b"vol", b"").unwrap();
    assert_eq!(
        timed(
            &mut c,
            Op::AcquireCookie as u16,
            &acquire_cookie_body(v.0, b"", 0)
        ),
        Status::Invalid
    );
    let long = vec![b'k'; ringcache_ondisk::OBJECT_KEY_MAX + 1];
    assert_eq!(
        timed(
            &mut c,
            Op::AcquireCookie as u16,
            &acquire_cookie_body(v.0, &long, long.len() as u16)
        ),
        Status::Invalid
    );
    let at_limit = vec![b'k'; ringcache_ondisk::OBJECT_KEY_MAX];
    assert_eq!(
        timed(
            &mut c,
            Op::AcquireCookie as u16,
            &acquire_cookie_body(v.0, &at_limit, at_limit.len() as u16)
        ),
        Status::Ok
    );
    // A 1 MiB key cannot be described by the 16-bit length: the payload
    // does not match its fields.
    let huge = vec![b'k'; 1 << 20];
    assert_eq!(
        timed(
            &mut c,
            Op::AcquireCookie as u16,
            &acquire_cookie_body(v.0, &huge, u16::MAX)
        ),
        Status::BadRequest
    );
    // Volume keys likewise.
    let vbody = |k: &[u8]| Writer::new().u16(k.len() as u16).u16(0).bytes(k).finish();
    assert_eq!(
        timed(&mut c, Op::AcquireVolume as u16, &vbody(b"")),
        Status::Invalid
    );
    assert_eq!(
        timed(
            &mut c,
            Op::AcquireVolume as u16,
            &vbody(&[b'v'; ringcache_ondisk::VOLUME_KEY_MAX + 1])
        ),
        Status::Invalid
    );
    c.ping().unwrap();
    f.check_bystander();
}

#[test]
fn keys_are_bytes_never_paths() {
    let mut f = fixture();
    let mut c = f.d.client();
    let v = c.acquire_volume(b"vol", b"").unwrap();
    for key in [
        &b"a\0b"[..],
        b"../../etc/passwd",
        b"/",
        b"..",
        &[0xff, 0xfe, 0x80],
    ] {
        let k = c
            .acquire_cookie(v, key, b"", 4096)
            .expect("cookie keys are opaque bytes");
        c.use_cookie(k, false).unwrap();
        assert_eq!(c.write(k, 0, &[key.len() as u8; 4096]).unwrap(), Status::Ok);
        match c.read(k, 0, 4096).unwrap() {
            ReadReply::Data(_) => {}
            other => panic!("{key:?}: {other:?}"),
        }
        c.relinquish_cookie(k, true).unwrap();
    }
    // Nothing was created outside the cache file.
    let entries: Vec<_> = std::fs::read_dir(&f.d.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(entries.len() <= 4, "unexpected files: {entries:?}");
    // Volume keys must be printable without '/'.
    let vbody = |k: &[u8]| Writer::new().u16(k.len() as u16).u16(0).bytes(k).finish();
    for key in [&b"a/b"[..], b"..\0", &[0xff]] {
        let st = timed(&mut c, Op::AcquireVolume as u16, &vbody(key));
        assert!(
            matches!(st, Status::Invalid | Status::Denied),
            "{key:?}: {st:?}"
        );
    }
    f.check_bystander();
}

#[test]
fn offset_plus_length_overflow_and_reads_past_the_size() {
    let mut f = fixture();
    let (mut c, k) = f.client_with_cookie();
    assert_eq!(c.write(k, 0, &[1; 8192]).unwrap(), Status::Ok);
    let rd = |off: u64, len: u32| Writer::new().u32(k.0).u32(len).u64(off).finish();
    assert_eq!(
        timed(&mut c, Op::Read as u16, &rd(u64::MAX - 10, 4096)),
        Status::Range
    );
    assert_eq!(
        timed(&mut c, Op::Read as u16, &rd(1 << 40, 4096)),
        Status::Range,
        "past the size"
    );
    let wr = Writer::new()
        .u32(k.0)
        .u32(4096)
        .u64(u64::MAX - 100)
        .bytes(&[0; 4096])
        .finish();
    assert_eq!(timed(&mut c, Op::Write as u16, &wr), Status::Range);
    let too_big = Writer::new()
        .u32(k.0)
        .u32((proto::MAX_DATA + 1) as u32)
        .u64(0)
        .finish();
    assert_eq!(timed(&mut c, Op::Read as u16, &too_big), Status::Range);
    f.check_bystander();
}

#[test]
fn handles_after_relinquish_and_from_another_connection() {
    let mut f = fixture();
    let (mut c, k) = f.client_with_cookie();
    c.relinquish_cookie(k, false).unwrap();
    let rd = Writer::new().u32(k.0).u32(4096).u64(0).finish();
    assert_eq!(timed(&mut c, Op::Read as u16, &rd), Status::BadHandle);
    assert!(matches!(
        c.use_cookie(k, false),
        Err(ClientError::Status(Status::BadHandle))
    ));
    // The bystander's cookie handle means nothing on another connection.
    let (mut other, _) = f.client_with_cookie();
    let steal = Writer::new().u32(f.by_cookie.0).u32(4096).u64(0).finish();
    let st = timed(&mut other, Op::Read as u16, &steal);
    assert!(
        matches!(st, Status::BadHandle | Status::NoData | Status::Ok),
        "{st:?}"
    );
    if st == Status::Ok {
        // Handle numbers are per connection: the same number names this
        // connection's own cookie, never the bystander's data.
        let (_, body) = {
            other
                .stream()
                .write_all(&proto::frame(Op::Read as u16, 9, &steal))
                .unwrap();
            other.recv(9).unwrap()
        };
        assert!(
            !body.windows(4).any(|w| w == [0x5A; 4]),
            "read another client's data"
        );
    }
    let wr = Writer::new()
        .u32(f.by_cookie.0)
        .u32(4096)
        .u64(0)
        .bytes(&[0xEE; 4096])
        .finish();
    let _ = timed(&mut other, Op::Write as u16, &wr);
    f.check_bystander();
}

#[test]
fn volume_not_on_the_peers_list() {
    let mut f = fixture();
    let mut c = f.d.client();
    let body = Writer::new().u16(9).u16(0).bytes(b"forbidden").finish();
    assert_eq!(
        timed(&mut c, Op::AcquireVolume as u16, &body),
        Status::Denied
    );
    f.check_bystander();
}

#[test]
fn half_sent_frame_then_a_stall_does_not_stop_others() {
    let mut f = fixture();
    let mut stalled = raw_greeted(&f.d);
    stalled
        .write_all(&proto::frame(Op::Ping as u16, 1, &[0; 64])[..20])
        .unwrap();
    // Others are served while it stalls.
    let t = Instant::now();
    for _ in 0..100 {
        f.bystander.ping().unwrap();
    }
    f.check_bystander();
    assert!(t.elapsed() < ringcache::daemon::FRAME_TIMEOUT);
    // The stalled connection is closed once the frame timeout passes.
    stalled
        .set_read_timeout(Some(ringcache::daemon::FRAME_TIMEOUT * 3))
        .unwrap();
    let mut buf = [0u8; 16];
    match stalled.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("stalled connection not closed: {other:?}"),
    }
}

#[test]
fn a_thousand_concurrent_connections() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let mut f = fixture();
    let mut clients: Vec<Client> = (0..1000).map(|_| f.d.client()).collect();
    for c in &mut clients {
        c.ping().unwrap();
    }
    f.check_bystander();
    drop(clients);
    f.check_bystander();
}

#[test]
fn a_client_that_disconnects_with_accesses_in_flight_leaks_nothing() {
    let mut f = fixture();
    let (mut c, k) = f.client_with_cookie();
    assert_eq!(c.write(k, 0, &[3; 8192]).unwrap(), Status::Ok);
    // Fire reads and writes and vanish without waiting for the replies.
    for i in 0..50u64 {
        let _ = c.send(Op::Read, &Client::read_request(k, 0, 8192));
        let w = Writer::new()
            .u32(k.0)
            .u32(4096)
            .u64((i % 2) * 4096)
            .bytes(&[4; 4096])
            .finish();
        let _ = c.send(Op::Write, &w);
    }
    drop(c);
    // The cookie is released: another client can take the same key.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut c2 = f.d.client();
    let v = c2.acquire_volume(b"vol", b"").unwrap();
    let k2 = loop {
        match c2.acquire_cookie(v, b"k", b"", 8192) {
            Ok(k) => break k,
            Err(ClientError::Status(Status::Busy)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("cookie of the dead client not released: {e}"),
        }
    };
    c2.use_cookie(k2, false).unwrap();
    assert!(matches!(c2.read(k2, 0, 8192).unwrap(), ReadReply::Data(_)));
    let stats = c2.stats().unwrap();
    let get = |n: &str| stats.iter().find(|(k, _)| k == n).map(|(_, v)| *v).unwrap();
    // The bystander's cookie and this one.
    assert_eq!(get("fscache.cookies"), 2, "{stats:?}");
    f.check_bystander();
}
