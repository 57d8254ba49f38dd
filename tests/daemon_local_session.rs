//! The daemon in its user's process (`daemon::Embedded`, `LocalSession`):
//! the same requests as a socket connection, answered on the caller's
//! thread. A callback volume's cookie is shared by two sessions; a read
//! without a promise answers Revalidate; data cached with its token reads
//! back; a new version from one session zaps the other (`wait_zaps`);
//! closing a session gives back its cookies (a new session acquires the
//! same key at once); the cache closes cleanly and reopens with the data.

use std::sync::Arc;
use std::time::Duration;

use ringcache::client::{ReadReply, ReadSegment, Requests};
use ringcache::daemon::{Config, Embedded};
use ringcache::proto::{self, Status};

fn cfg(dir: &std::path::Path) -> Config {
    let mut c = Config::embedded();
    c.device = dir.join("cache.img");
    c.create_bytes = Some(64 << 20);
    c
}

fn data(r: ReadReply) -> Vec<u8> {
    match r {
        ReadReply::Data(segs) => segs
            .into_iter()
            .flat_map(|s| match s {
                ReadSegment::Data { data, .. } => data,
                ReadSegment::Hole { .. } => panic!("a hole"),
            })
            .collect(),
        other => panic!("expected data, got {other:?}"),
    }
}

#[test]
fn sessions_share_callback_cookies_zap_each_other_and_close_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Embedded::open(cfg(tmp.path())).unwrap();
    let a = Arc::new(e.session().unwrap());
    let b = e.session().unwrap();
    let key = b"file-1";
    let v1 = 7u64.to_le_bytes();
    let mut handles = Vec::new();
    for s in [&*a, &b] {
        let vol = s.acquire_volume(b"ringfs.local", b"").unwrap();
        s.declare_server(vol, b"srv", 1).unwrap();
        let c = s.acquire_cookie(vol, key, &v1, 8192).unwrap();
        s.use_cookie(c, false).unwrap();
        handles.push((vol, c));
    }
    let (ca, cb) = (handles[0].1, handles[1].1);

    // No promise yet: Revalidate, never cached bytes.
    assert_eq!(a.read(ca, 0, 4096).unwrap(), ReadReply::Revalidate);
    // The fetch protocol: token, revalidate (same version), cache data.
    let t = a.begin_fetch(ca).unwrap();
    let rv = a.revalidate(ca, &t, 7, 8192, 60_000).unwrap();
    assert!(rv.kept && rv.installed, "{rv:?}");
    assert_eq!(
        a.write_fetched(ca, &t, 7, 0, &[0xAB; 8192]).unwrap(),
        Status::Ok
    );
    assert_eq!(data(a.read(ca, 0, 8192).unwrap()), vec![0xAB; 8192]);
    // The other session's handle is on the same cookie: its promise too.
    assert_eq!(data(b.read(cb, 4096, 4096).unwrap()), vec![0xAB; 4096]);

    // A new version through B: A's handle gets a zap, the data is gone.
    let waiter = {
        let a = a.clone();
        std::thread::spawn(move || a.wait_zaps())
    };
    let t = b.begin_fetch(cb).unwrap();
    let rv = b.revalidate(cb, &t, 8, 8192, 60_000).unwrap();
    assert!(!rv.kept, "a new version keeps no data");
    let zaps = waiter.join().unwrap().expect("a zap");
    assert!(
        zaps.iter()
            .any(|z| z.handle == ca.0 && z.reason == proto::ZAP_INVALIDATED),
        "{zaps:?}"
    );
    assert_eq!(a.read(ca, 0, 4096).unwrap(), ReadReply::NoData);

    // Closing a session releases its handles; the other keeps the cookie.
    drop(b);
    assert_eq!(a.read(ca, 0, 4096).unwrap(), ReadReply::NoData);
    let t = a.begin_fetch(ca).unwrap();
    a.revalidate(ca, &t, 8, 8192, 60_000).unwrap();
    assert_eq!(
        a.write_fetched(ca, &t, 8, 0, &[0xCD; 8192]).unwrap(),
        Status::Ok
    );
    a.flush_cache().unwrap();
    a.unuse_cookie(ca).unwrap();
    a.relinquish_cookie(ca, false).unwrap();
    a.relinquish_volume(handles[0].0, false).unwrap();
    // wait_zaps ends once the session is closed.
    let waiter = {
        let a = a.clone();
        std::thread::spawn(move || a.wait_zaps())
    };
    std::thread::sleep(Duration::from_millis(50));
    a.close_events();
    assert!(waiter.join().unwrap().is_none());
    drop(a);
    e.close().unwrap();

    // Reopened: the data of version 8 is there for a lookup at version 8.
    let e = Embedded::open(cfg(tmp.path())).unwrap();
    let s = e.session().unwrap();
    let vol = s.acquire_volume(b"ringfs.local", b"").unwrap();
    s.declare_server(vol, b"srv", 2).unwrap();
    let c = s
        .acquire_cookie(vol, key, &8u64.to_le_bytes(), 8192)
        .unwrap();
    s.use_cookie(c, false).unwrap();
    let t = s.begin_fetch(c).unwrap();
    assert!(s.revalidate(c, &t, 8, 8192, 60_000).unwrap().kept);
    assert_eq!(data(s.read(c, 0, 8192).unwrap()), vec![0xCD; 8192]);
    drop(s);
    e.close().unwrap();
}

/// The same session seen through the trait's default `read_whole` (a
/// plain request and its decoded reply), to compare the session's own.
struct Plain<'a>(&'a dyn Requests);

impl Requests for Plain<'_> {
    fn request(&self, op: proto::Op, body: &[u8]) -> ringcache::client::Result<(Status, Vec<u8>)> {
        self.0.request(op, body)
    }
    fn is_dead(&self) -> bool {
        false
    }
}

/// `read_whole` of a session answers as a read through its reply would,
/// in every case the mount meets: no promise, whole data, a hole, the end
/// of the object, past it, a cookie not in use; and appends only when
/// whole.
#[test]
fn a_sessions_whole_read_answers_as_its_reply_would() {
    use ringcache::client::WholeRead;
    let tmp = tempfile::tempdir().unwrap();
    let e = Embedded::open(cfg(tmp.path())).unwrap();
    let s = e.session().unwrap();
    let plain = Plain(&s);
    let vol = s.acquire_volume(b"ringfs.local", b"").unwrap();
    s.declare_server(vol, b"srv", 1).unwrap();
    let c = s
        .acquire_cookie(vol, b"f", &7u64.to_le_bytes(), 16384)
        .unwrap();
    s.use_cookie(c, false).unwrap();
    let both = |off: u64, len: u32| {
        let (mut a, mut b) = (b"prefix".to_vec(), b"prefix".to_vec());
        let fast = s.read_whole(c, off, len, &mut a);
        let slow = plain.read_whole(c, off, len, &mut b);
        assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "at {off}+{len}");
        assert_eq!(a, b, "at {off}+{len}");
        (fast, a)
    };
    assert_eq!(both(0, 4096).0.unwrap(), WholeRead::Revalidate);
    let t = s.begin_fetch(c).unwrap();
    assert!(s.revalidate(c, &t, 7, 16384, 60_000).unwrap().installed);
    // 8 KiB cached at 0 and 4 KiB at 12 KiB: a hole at 8 KiB.
    let pattern: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(s.write_fetched(c, &t, 7, 0, &pattern).unwrap(), Status::Ok);
    assert_eq!(
        s.write_fetched(c, &t, 7, 12288, &[9; 4096]).unwrap(),
        Status::Ok
    );
    let (r, out) = both(0, 8192);
    assert_eq!(r.unwrap(), WholeRead::Data);
    assert_eq!(&out[..6], b"prefix");
    assert_eq!(&out[6..], &pattern[..]);
    let (r, out) = both(4096, 4096);
    assert_eq!(r.unwrap(), WholeRead::Data);
    assert_eq!(&out[6..], &pattern[4096..]);
    let (r, out) = both(4096, 8192);
    assert_eq!(r.unwrap(), WholeRead::Partial, "a hole at 8 KiB");
    assert_eq!(out, b"prefix", "nothing appended");
    let (r, out) = both(12288, 8192);
    assert_eq!(r.unwrap(), WholeRead::Data, "ends at the object's end");
    assert_eq!(&out[6..], &[9; 4096][..]);
    let (r, out) = both(16384, 4096);
    assert_eq!(r.unwrap(), WholeRead::Data, "at the end: no bytes");
    assert_eq!(out, b"prefix");
    let (r, _) = both(u64::MAX - 100, 4096);
    assert!(r.is_err(), "offset and length overflow: {r:?}");
    s.unuse_cookie(c).unwrap();
    assert_eq!(both(0, 4096).0.unwrap(), WholeRead::NoData);
    drop(s);
    e.close().unwrap();
}
