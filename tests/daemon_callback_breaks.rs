//! The callback layer through the real `ringcached` (protocol version 2):
//! a read without a valid promise answers Revalidate, never cached bytes;
//! a file break, a volume break, a server break and a new server epoch each
//! stop the cached data from being served and zap every connection that
//! holds the file (two connections share one cookie); revalidating with the
//! same data version keeps the data (no device write, the same bytes), a
//! new version invalidates it; a token taken before a break cannot install
//! its promise or its data; a version-1 client is served as before and sees
//! a miss where a version-2 client sees Revalidate; a connection that
//! closes while holding files leaks no hold.

mod common;

use std::time::Duration;

use common::daemon::{DaemonProc, stat, write_config};
use ringcache::client::{Client, ClientError, CookieHandle, ReadReply, ReadSegment, VolumeHandle};
use ringcache::proto::{self, Status};

const WAIT: Duration = Duration::from_secs(5);
const PROMISE_MS: u32 = 60_000;

fn bytes_of(r: &ReadReply) -> Vec<u8> {
    let mut v = Vec::new();
    match r {
        ReadReply::Data(segs) => {
            for s in segs {
                match s {
                    ReadSegment::Data { data, .. } => v.extend_from_slice(data),
                    ReadSegment::Hole { len, .. } => {
                        v.extend(std::iter::repeat_n(0, *len as usize))
                    }
                }
            }
        }
        other => panic!("expected data, got {other:?}"),
    }
    v
}

/// A client with a callback volume (server "srv-1", epoch 1) and a cookie
/// for `key` at data version `dv`, in use.
fn open(d: &DaemonProc, key: &[u8], dv: u64) -> (Client, VolumeHandle, CookieHandle) {
    let mut c = d.client();
    assert_eq!(c.server_info().version, 2);
    let v = c.acquire_volume(b"ringfs.export1", b"").unwrap();
    c.declare_server(v, b"srv-1", 1).unwrap();
    let k = c.acquire_cookie(v, key, &dv.to_le_bytes(), 8192).unwrap();
    c.use_cookie(k, false).unwrap();
    (c, v, k)
}

/// Fetch `key` "from the server": a token first, then a promise for `dv`,
/// then the data written under the token.
fn fetch(c: &mut Client, k: CookieHandle, dv: u64, fill: u8) {
    let token = c.begin_fetch(k).unwrap();
    let r = c.revalidate(k, &token, dv, 8192, PROMISE_MS).unwrap();
    assert!(r.installed);
    assert_eq!(
        c.write_fetched(k, &token, dv, 0, &[fill; 8192]).unwrap(),
        Status::Ok
    );
}

#[test]
fn breaks_hide_cached_data_until_revalidated_and_zap_every_holder() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let d = DaemonProc::start(dir.path(), &config);
    let (mut a, va, ka) = open(&d, b"file-1", 7);
    // No promise yet: nothing cached may be served.
    assert_eq!(a.read(ka, 0, 4096).unwrap(), ReadReply::Revalidate);
    assert_eq!(a.validate(ka).unwrap(), None);
    fetch(&mut a, ka, 7, 0xA7);
    assert_eq!(a.validate(ka).unwrap(), Some(7));
    assert_eq!(bytes_of(&a.read(ka, 0, 8192).unwrap()), vec![0xA7; 8192]);

    // A second connection on the same host shares the file's cookie.
    let (mut b, vb, kb) = open(&d, b"file-1", 7);
    assert_eq!(bytes_of(&b.read(kb, 0, 4096).unwrap()), vec![0xA7; 4096]);

    // A file break: neither connection reads cached data any more, and
    // both are zapped, once each, naming their own handle.
    assert_eq!(b.break_files(vb, &[b"file-1", b"not-cached"]).unwrap(), 1);
    assert_eq!(a.read(ka, 0, 4096).unwrap(), ReadReply::Revalidate);
    assert_eq!(b.read(kb, 0, 4096).unwrap(), ReadReply::Revalidate);
    let za = a.wait_zap(WAIT).unwrap().expect("A is zapped");
    assert_eq!((za.handle, za.reason), (ka.0, proto::ZAP_FILE));
    let zb = b.wait_zap(WAIT).unwrap().expect("B is zapped");
    assert_eq!((zb.handle, zb.reason), (kb.0, proto::ZAP_FILE));
    assert_eq!(a.wait_zap(Duration::from_millis(200)).unwrap(), None);

    // Revalidating with the same version keeps the data: no device write.
    let writes_before = stat(&mut a, "store.writes");
    let token = a.begin_fetch(ka).unwrap();
    let r = a.revalidate(ka, &token, 7, 8192, PROMISE_MS).unwrap();
    assert!(r.kept && r.installed);
    assert_eq!(bytes_of(&a.read(ka, 0, 8192).unwrap()), vec![0xA7; 8192]);
    assert_eq!(bytes_of(&b.read(kb, 0, 8192).unwrap()), vec![0xA7; 8192]);
    assert_eq!(stat(&mut a, "store.writes"), writes_before);

    // A volume break, then a server break: the same, reason by reason.
    a.break_volume(va).unwrap();
    assert_eq!(b.read(kb, 0, 4096).unwrap(), ReadReply::Revalidate);
    assert_eq!(
        b.wait_zap(WAIT).unwrap().map(|z| z.reason),
        Some(proto::ZAP_VOLUME)
    );
    assert_eq!(
        a.wait_zap(WAIT).unwrap().map(|z| z.reason),
        Some(proto::ZAP_VOLUME)
    );
    let token = a.begin_fetch(ka).unwrap();
    assert!(a.revalidate(ka, &token, 7, 8192, PROMISE_MS).unwrap().kept);
    b.break_server(vb).unwrap();
    assert_eq!(a.read(ka, 0, 4096).unwrap(), ReadReply::Revalidate);
    assert_eq!(
        a.wait_zap(WAIT).unwrap().map(|z| z.reason),
        Some(proto::ZAP_SERVER)
    );
    assert_eq!(
        b.wait_zap(WAIT).unwrap().map(|z| z.reason),
        Some(proto::ZAP_SERVER)
    );

    // The server restarted (new epoch): a whole-server break.
    let token = a.begin_fetch(ka).unwrap();
    assert!(a.revalidate(ka, &token, 7, 8192, PROMISE_MS).unwrap().kept);
    a.declare_server(va, b"srv-1", 2).unwrap();
    assert_eq!(b.read(kb, 0, 4096).unwrap(), ReadReply::Revalidate);
    assert_eq!(
        b.wait_zap(WAIT).unwrap().map(|z| z.reason),
        Some(proto::ZAP_SERVER)
    );
    let _ = a.wait_zap(WAIT).unwrap();

    // A new version: the data is invalidated at once, the other holder is
    // told, and the file reads as a miss under the new promise.
    let token = b.begin_fetch(kb).unwrap();
    let r = b.revalidate(kb, &token, 8, 8192, PROMISE_MS).unwrap();
    assert!(!r.kept && r.installed);
    assert_eq!(a.read(ka, 0, 8192).unwrap(), ReadReply::NoData);
    assert_eq!(
        a.wait_zap(WAIT).unwrap().map(|z| z.reason),
        Some(proto::ZAP_INVALIDATED)
    );
    assert_eq!(
        b.wait_zap(Duration::from_millis(200)).unwrap(),
        None,
        "the client that revalidated is not zapped by its own change"
    );
}

#[test]
fn a_break_during_a_fetch_installs_neither_promise_nor_data() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let d = DaemonProc::start(dir.path(), &config);
    let (mut a, va, ka) = open(&d, b"file-2", 1);
    // Data fetched under a token that a break overtook.
    let token = a.begin_fetch(ka).unwrap();
    a.break_files(va, &[b"file-2"]).unwrap();
    assert!(matches!(
        a.revalidate(ka, &token, 1, 8192, PROMISE_MS),
        Err(ClientError::Status(Status::Broken))
    ));
    assert!(matches!(
        a.install_promise(ka, &token, 1, PROMISE_MS),
        Err(ClientError::Status(Status::Broken))
    ));
    assert!(matches!(
        a.write_fetched(ka, &token, 1, 0, &[1; 8192]),
        Err(ClientError::Status(Status::Broken))
    ));
    assert_eq!(a.read(ka, 0, 4096).unwrap(), ReadReply::Revalidate);
    // A fresh token works, and the data fetched under it is served.
    fetch(&mut a, ka, 1, 0x11);
    // Data under a promise, then a break before the data is written: the
    // data is refused.
    let token = a.begin_fetch(ka).unwrap();
    assert!(a.revalidate(ka, &token, 1, 8192, PROMISE_MS).unwrap().kept);
    a.break_volume(va).unwrap();
    assert!(matches!(
        a.write_fetched(ka, &token, 1, 0, &[2; 8192]),
        Err(ClientError::Status(Status::Broken))
    ));
    let token = a.begin_fetch(ka).unwrap();
    assert!(a.revalidate(ka, &token, 1, 8192, PROMISE_MS).unwrap().kept);
    assert_eq!(bytes_of(&a.read(ka, 0, 8192).unwrap()), vec![0x11; 8192]);
    // A made-up token is simply broken.
    assert!(matches!(
        a.install_promise(ka, &[0xEE; proto::TOKEN_BYTES], 1, PROMISE_MS),
        Err(ClientError::Status(Status::Broken))
    ));
}

#[test]
fn promises_within_the_margin_and_version_1_clients() {
    let dir = tempfile::tempdir().unwrap();
    // Promises count only while more than 2 s of them are left.
    let config = write_config(dir.path(), "callback_margin 2\n");
    let d = DaemonProc::start(dir.path(), &config);
    let (mut a, va, ka) = open(&d, b"file-3", 3);
    let token = a.begin_fetch(ka).unwrap();
    // A promise of 1.5 s is inside the margin at once.
    a.revalidate(ka, &token, 3, 8192, 1500).unwrap();
    assert_eq!(a.validate(ka).unwrap(), None);
    assert_eq!(a.read(ka, 0, 4096).unwrap(), ReadReply::Revalidate);
    fetch(&mut a, ka, 3, 0x33);
    assert_eq!(a.validate(ka).unwrap(), Some(3));

    // A version-1 client is served as before: volumes it does not declare
    // for a server behave as they always did ...
    let mut old = Client::connect_version(&d.socket, 1).unwrap();
    assert_eq!(old.server_info().version, 1);
    let v1 = old.acquire_volume(b"plain", b"").unwrap();
    let k1 = old.acquire_cookie(v1, b"f", b"aux", 4096).unwrap();
    old.use_cookie(k1, false).unwrap();
    assert_eq!(old.write(k1, 0, &[5; 4096]).unwrap(), Status::Ok);
    assert_eq!(bytes_of(&old.read(k1, 0, 4096).unwrap()), vec![5; 4096]);
    // ... and in a callback volume, a file without a valid promise is a
    // miss to it (it does not know Revalidate), never cached bytes.
    let vo = old.acquire_volume(b"ringfs.export1", b"").unwrap();
    let ko = old
        .acquire_cookie(vo, b"file-3", &3u64.to_le_bytes(), 8192)
        .unwrap();
    old.use_cookie(ko, false).unwrap();
    assert_eq!(bytes_of(&old.read(ko, 0, 4096).unwrap()), vec![0x33; 4096]);
    a.break_files(va, &[b"file-3"]).unwrap();
    assert_eq!(old.read(ko, 0, 4096).unwrap(), ReadReply::NoData);
}

#[test]
fn a_closed_connection_leaves_no_holds_and_gets_no_zaps() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let d = DaemonProc::start(dir.path(), &config);
    let (mut a, va, ka) = open(&d, b"file-4", 4);
    fetch(&mut a, ka, 4, 0x44);
    {
        let (_b, _vb, _kb) = open(&d, b"file-4", 4);
        // B vanishes without relinquishing.
    }
    std::thread::sleep(Duration::from_millis(200));
    a.break_files(va, &[b"file-4"]).unwrap();
    assert_eq!(
        a.wait_zap(WAIT).unwrap().map(|z| z.handle),
        Some(ka.0),
        "the holder left is zapped"
    );
    assert_eq!(stat(&mut a, "callback.holds"), 1, "B's hold went with it");
    a.relinquish_cookie(ka, false).unwrap();
    assert_eq!(stat(&mut a, "callback.holds"), 0);
    assert_eq!(stat(&mut a, "callback.objects"), 0);
}

#[test]
fn a_holder_that_never_reads_does_not_hold_up_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let d = DaemonProc::start(dir.path(), &config);
    // A holds the file and never reads its socket again.
    let (_a, _va, _ka) = open(&d, b"file-5", 5);
    let (mut b, vb, _kb) = open(&d, b"file-5", 5);
    // Far more zaps than a socket buffer and a connection's queue hold:
    // every break is still answered at once.
    let start = std::time::Instant::now();
    for _ in 0..20_000 {
        assert_eq!(b.break_files(vb, &[b"file-5"]).unwrap(), 1);
    }
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "breaks were held up by a holder that does not read"
    );
    // B reads its own zaps, the last of them collapsed into one zap of
    // every handle when its queue overflowed.
    let mut n = 0;
    while b.wait_zap(Duration::from_millis(300)).unwrap().is_some() {
        n += 1;
    }
    assert!(n > 0);
    assert_eq!(stat(&mut b, "callback.file_breaks"), 20_000);
}

#[test]
fn after_a_restart_every_object_is_revalidated_and_unchanged_data_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut d = DaemonProc::start(dir.path(), &config);
    let (mut a, _va, ka) = open(&d, b"file-6", 6);
    fetch(&mut a, ka, 6, 0x66);
    // Flush: the fetched data is on the device before kill -9.
    a.flush_cache().unwrap();
    drop(a);
    d.kill9();
    let d = DaemonProc::start(dir.path(), &config);
    let (mut a, _va, ka) = open(&d, b"file-6", 6);
    // Promises live in memory only: nothing is served until revalidated.
    assert_eq!(a.read(ka, 0, 4096).unwrap(), ReadReply::Revalidate);
    let token = a.begin_fetch(ka).unwrap();
    let r = a.revalidate(ka, &token, 6, 8192, PROMISE_MS).unwrap();
    assert!(r.kept, "the same version keeps the data across the restart");
    assert_eq!(bytes_of(&a.read(ka, 0, 8192).unwrap()), vec![0x66; 8192]);
}
