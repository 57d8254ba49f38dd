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
/// whole. `start_read_whole` answers the same, read on the caller's
/// thread or by the session's read thread.
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
        // Read alone on this thread, and handed to the session's read
        // thread: the same answer.
        for handed in [false, true] {
            s.hand_over_every_read(handed);
            let (tx, rx) = std::sync::mpsc::channel();
            s.start_read_whole(
                c,
                off,
                len,
                b"prefix".to_vec(),
                Box::new(move |r, out| tx.send((format!("{r:?}"), out)).unwrap()),
            );
            let (later, out) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            let how = if handed { "handed over" } else { "read alone" };
            assert_eq!(later, format!("{slow:?}"), "{how}, at {off}+{len}");
            assert_eq!(out, b, "{how}, at {off}+{len}");
        }
        s.hand_over_every_read(false);
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

/// Blocks of [`cached_file`].
const BLOCKS: u64 = 256;

/// Block i of [`cached_file`]: the byte i (mod 251) and its number.
fn block(i: u64) -> Vec<u8> {
    let mut b = vec![(i % 251) as u8; 4096];
    b[..8].copy_from_slice(&i.to_le_bytes());
    b
}

/// A file of [`BLOCKS`] blocks, all cached, under a valid promise.
fn cached_file(s: &dyn Requests) -> ringcache::client::CookieHandle {
    let vol = s.acquire_volume(b"ringfs.local", b"").unwrap();
    s.declare_server(vol, b"srv", 1).unwrap();
    let c = s
        .acquire_cookie(vol, b"f", &7u64.to_le_bytes(), BLOCKS * 4096)
        .unwrap();
    s.use_cookie(c, false).unwrap();
    let t = s.begin_fetch(c).unwrap();
    assert!(
        s.revalidate(c, &t, 7, BLOCKS * 4096, 600_000)
            .unwrap()
            .installed
    );
    for i in 0..BLOCKS {
        assert_eq!(
            s.write_fetched(c, &t, 7, i * 4096, &block(i)).unwrap(),
            Status::Ok
        );
    }
    c
}

/// A counter of the daemon's metrics (Prometheus text).
fn stat(s: &dyn Requests, name: &str) -> u64 {
    let text = s.metrics().unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|n| n.contains(name))
        })
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics:\n{text}"))
}

/// Reads handed to a session's read thread from several threads at once:
/// each answered once, with its own bytes; reads that arrive together go
/// to the device together (fewer submissions than reads); a session
/// dropped with reads outstanding answers them all first; and an answer
/// that drops the last handle of its session does not hang the thread.
#[test]
fn reads_handed_to_the_read_thread_are_each_answered_with_their_bytes() {
    use ringcache::client::{ReadWholeDone, WholeRead};
    use std::sync::atomic::{AtomicU64, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    let e = Embedded::open(cfg(tmp.path())).unwrap();
    let s = Arc::new(e.session().unwrap());
    let c = cached_file(&*s);
    let subs_before = stat(&*s, "read_submissions");
    const THREADS: u64 = 4;
    const PER: u64 = 2000;
    let wrong = Arc::new(AtomicU64::new(0));
    let here = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (s, wrong, here) = (s.clone(), wrong.clone(), here.clone());
            std::thread::spawn(move || {
                let (tx, rx) = std::sync::mpsc::channel::<u64>();
                let mut out = 0;
                let me = std::thread::current().id();
                for n in 0..PER {
                    let i = (n * 7 + t * 31) % BLOCKS;
                    let (tx, wrong, here, want) =
                        (tx.clone(), wrong.clone(), here.clone(), block(i));
                    let done: ReadWholeDone = Box::new(move |r, got| {
                        if !matches!(r, Ok(WholeRead::Data)) || got != want {
                            wrong.fetch_add(1, Ordering::SeqCst);
                        }
                        if std::thread::current().id() == me {
                            here.fetch_add(1, Ordering::SeqCst);
                        }
                        tx.send(i).unwrap();
                    });
                    s.start_read_whole(c, i * 4096, 4096, Vec::new(), done);
                    out += 1;
                    // Up to 16 outstanding per thread.
                    while out >= 16 {
                        rx.recv_timeout(Duration::from_secs(10)).expect("an answer");
                        out -= 1;
                    }
                }
                for _ in 0..out {
                    rx.recv_timeout(Duration::from_secs(10)).expect("an answer");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(wrong.load(Ordering::SeqCst), 0, "reads answered wrongly");
    let subs = stat(&*s, "read_submissions") - subs_before;
    let (here, all) = (here.load(Ordering::SeqCst), THREADS * PER);
    println!("{all} reads in {subs} submissions, {here} read on their callers' threads");
    // Under load the reads are handed over, even those that find none
    // outstanding for a moment, and go to the device together.
    assert!(
        here < all / 10,
        "{here} of {all} reads were not handed over"
    );
    assert!(
        subs < (all - here) / 2,
        "{subs} submissions for {} reads handed over: few went together",
        all - here
    );

    // Dropped with reads outstanding: every one is answered first.
    s.hand_over_every_read(true);
    let answered = Arc::new(AtomicU64::new(0));
    for i in 0..64 {
        let answered = answered.clone();
        s.start_read_whole(
            c,
            i * 4096,
            4096,
            Vec::new(),
            Box::new(move |r, _| {
                assert!(matches!(r, Ok(WholeRead::Data)), "{r:?}");
                answered.fetch_add(1, Ordering::SeqCst);
            }),
        );
    }
    let s = Arc::into_inner(s).expect("the threads' handles are gone");
    drop(s);
    assert_eq!(answered.load(Ordering::SeqCst), 64, "reads lost at drop");

    // An answer that drops the session's last handle.
    let s = Arc::new(e.session().unwrap());
    s.hand_over_every_read(true);
    let vol = s.acquire_volume(b"ringfs.local", b"").unwrap();
    s.declare_server(vol, b"srv", 1).unwrap();
    let c = s
        .acquire_cookie(vol, b"f", &7u64.to_le_bytes(), BLOCKS * 4096)
        .unwrap();
    s.use_cookie(c, false).unwrap();
    let promise = |s: &dyn Requests, c| {
        let t = s.begin_fetch(c).unwrap();
        let rv = s.revalidate(c, &t, 7, BLOCKS * 4096, 600_000).unwrap();
        assert!(rv.kept, "the same version keeps the data: {rv:?}");
    };
    promise(&*s, c);
    let (tx, rx) = std::sync::mpsc::channel();
    let holder = Arc::new(std::sync::Mutex::new(Some(s.clone())));
    {
        let holder = holder.clone();
        s.start_read_whole(
            c,
            0,
            4096,
            Vec::new(),
            Box::new(move |r, got| {
                // The session goes with the answer's last handle.
                drop(holder.lock().unwrap().take());
                tx.send((format!("{r:?}"), got == block(0))).unwrap();
            }),
        );
    }
    drop(s);
    let (r, same) = rx.recv_timeout(Duration::from_secs(10)).expect("an answer");
    assert_eq!(r, "Ok(Data)");
    assert!(same, "the cached bytes");
    assert!(holder.lock().unwrap().is_none());
    // The cache is still served by a new session.
    let s = e.session().unwrap();
    let vol = s.acquire_volume(b"ringfs.local", b"").unwrap();
    s.declare_server(vol, b"srv", 1).unwrap();
    let c = s
        .acquire_cookie(vol, b"f", &7u64.to_le_bytes(), BLOCKS * 4096)
        .unwrap();
    s.use_cookie(c, false).unwrap();
    promise(&s, c);
    let mut out = Vec::new();
    assert_eq!(
        s.read_whole(c, 4096, 4096, &mut out).unwrap(),
        WholeRead::Data
    );
    assert_eq!(out, block(1));
    drop(s);
    e.close().unwrap();
}

/// A read that is alone (one thread reading, one read at a time) is read
/// on its caller's thread, before `start_read_whole` returns, and does
/// not go through the read thread; with `hand_over_every_read` every read
/// is answered by the read thread.
#[test]
fn a_read_alone_is_read_on_its_callers_thread_unless_every_read_is_handed_over() {
    use ringcache::client::WholeRead;
    use std::sync::atomic::{AtomicU64, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    let e = Embedded::open(cfg(tmp.path())).unwrap();
    let s = e.session().unwrap();
    let c = cached_file(&s);
    const READS: u64 = 500;
    // Reads one at a time; how many were answered on this thread, before
    // start_read_whole returned.
    let one_at_a_time = |s: &ringcache::daemon::LocalSession| {
        let here = Arc::new(AtomicU64::new(0));
        let me = std::thread::current().id();
        for n in 0..READS {
            let i = (n * 13) % BLOCKS;
            let (tx, rx) = std::sync::mpsc::channel();
            let here = here.clone();
            s.start_read_whole(
                c,
                i * 4096,
                4096,
                Vec::new(),
                Box::new(move |r, got| {
                    if std::thread::current().id() == me {
                        here.fetch_add(1, Ordering::SeqCst);
                    }
                    tx.send(matches!(r, Ok(WholeRead::Data)) && got == block(i))
                        .unwrap();
                }),
            );
            assert!(
                rx.recv_timeout(Duration::from_secs(10)).expect("an answer"),
                "read {n} (block {i}) answered wrongly"
            );
        }
        here.load(Ordering::SeqCst)
    };
    let subs_before = stat(&s, "read_submissions");
    assert_eq!(one_at_a_time(&s), READS, "reads alone handed over");
    assert_eq!(
        stat(&s, "read_submissions"),
        subs_before,
        "reads alone went through the read thread"
    );
    s.hand_over_every_read(true);
    assert_eq!(one_at_a_time(&s), 0, "reads read on the caller's thread");
    assert!(
        stat(&s, "read_submissions") >= subs_before + READS,
        "every read handed over is a submission of the read thread's"
    );
    drop(s);
    e.close().unwrap();
}
