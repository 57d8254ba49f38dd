//! A mass break through the real daemon costs O(objects in use), never
//! O(objects cached): with 10 000 files cached and 10 of them in use by two
//! connections, a whole-server break (and a new server epoch) zaps exactly
//! those 10 files on each holding connection, once each, and looks at 10
//! records, not 10 000. Connections that close while breaks fly leave no
//! hold behind.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::daemon::{DaemonProc, stat, write_config};
use ringcache::client::{Client, ReadReply, VolumeHandle};
use ringcache::proto;

const FILES: u64 = 10_000;
const IN_USE: u64 = 10;

fn volume(c: &mut Client) -> VolumeHandle {
    let v = c.acquire_volume(b"ringfs.big", b"").unwrap();
    c.declare_server(v, b"srv-big", 1).unwrap();
    v
}

fn key(i: u64) -> Vec<u8> {
    format!("file-{i}").into_bytes()
}

#[test]
fn a_server_break_zaps_only_the_files_in_use() {
    let dir = tempfile::tempdir().unwrap();
    // Room for 10 000 objects and their data.
    let config = write_config(dir.path(), "size 256M\n");
    let d = DaemonProc::start(dir.path(), &config);
    let mut filler = d.client();
    let vf = volume(&mut filler);
    // 10 000 files cached under promises, then let go.
    for i in 0..FILES {
        let k = filler
            .acquire_cookie(vf, &key(i), &1u64.to_le_bytes(), 4096)
            .unwrap();
        filler.use_cookie(k, false).unwrap();
        let token = filler.begin_fetch(k).unwrap();
        filler.revalidate(k, &token, 1, 4096, 60_000).unwrap();
        assert_eq!(
            filler
                .write_fetched(k, &token, 1, 0, &[i as u8; 4096])
                .unwrap(),
            proto::Status::Ok
        );
        filler.relinquish_cookie(k, false).unwrap();
    }
    let cached = stat(&mut filler, "space.objects");
    assert!(cached >= FILES, "{cached} objects cached");
    assert_eq!(stat(&mut filler, "callback.objects_in_use"), 0);

    // Two connections hold the same 10 files.
    let mut holders: Vec<(Client, BTreeSet<u32>)> = (0..2)
        .map(|_| {
            let mut c = d.client();
            let v = volume(&mut c);
            let handles = (0..IN_USE)
                .map(|i| {
                    let k = c
                        .acquire_cookie(v, &key(i), &1u64.to_le_bytes(), 4096)
                        .unwrap();
                    c.use_cookie(k, false).unwrap();
                    k.0
                })
                .collect();
            (c, handles)
        })
        .collect();
    assert_eq!(stat(&mut filler, "callback.objects_in_use"), IN_USE);
    assert_eq!(stat(&mut filler, "callback.holds"), 2 * IN_USE);

    let visits_before = stat(&mut filler, "callback.break_visits");
    filler.break_server(vf).unwrap();
    let visits = stat(&mut filler, "callback.break_visits") - visits_before;
    assert_eq!(visits, IN_USE, "the break looked at the files in use only");
    for (c, handles) in &mut holders {
        let mut got = BTreeSet::new();
        while let Some(z) = c.wait_zap(Duration::from_millis(500)).unwrap() {
            assert_eq!(z.reason, proto::ZAP_SERVER);
            assert!(got.insert(z.handle), "handle {} zapped twice", z.handle);
        }
        assert_eq!(&got, handles, "exactly the handles in use, once each");
    }
    // A new epoch (the server restarted) is the same whole-server break.
    filler.declare_server(vf, b"srv-big", 2).unwrap();
    for (c, handles) in &mut holders {
        let mut got = BTreeSet::new();
        while let Some(z) = c.wait_zap(Duration::from_millis(500)).unwrap() {
            got.insert(z.handle);
        }
        assert_eq!(&got, handles);
        // And nothing cached is served until revalidated.
        let h = *handles.iter().next().unwrap();
        assert_eq!(
            c.read(ringcache::client::CookieHandle(h), 0, 4096).unwrap(),
            ReadReply::Revalidate
        );
    }
}

#[test]
fn connections_closing_during_breaks_leak_no_holds() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let d = DaemonProc::start(dir.path(), &config);
    let socket = d.socket.clone();
    let breaker = std::thread::spawn(move || {
        let mut c = Client::connect(&socket).unwrap();
        let v = volume(&mut c);
        for _ in 0..300 {
            c.break_server(v).unwrap();
            c.break_files(v, &[b"file-0", b"file-1"]).unwrap();
        }
    });
    for round in 0..30 {
        let mut c = d.client();
        let v = volume(&mut c);
        for i in 0..5 {
            let k = c
                .acquire_cookie(v, &key(i), &1u64.to_le_bytes(), 4096)
                .unwrap();
            c.use_cookie(k, false).unwrap();
        }
        if round % 2 == 0 {
            // Read zaps for a while, then vanish without relinquishing.
            let _ = c.wait_zap(Duration::from_millis(5)).unwrap();
        }
        drop(c);
    }
    breaker.join().unwrap();
    let mut c = d.client();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let holds = stat(&mut c, "callback.holds");
        let objects = stat(&mut c, "callback.objects");
        if holds == 0 && objects == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{holds} holds and {objects} records left behind"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(stat(&mut c, "fscache.cookies"), 0);
}
