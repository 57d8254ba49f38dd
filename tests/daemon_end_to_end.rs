//! The real `ringcached` process, end to end through the client library:
//! the whole cookie API over the socket, pipelined requests, stats, a clean
//! shutdown on SIGTERM that keeps the data, and a restart that finds it.

mod common;

use common::daemon::{DaemonProc, write_config};
use ringcache::client::{ReadReply, ReadSegment};
use ringcache::proto::{Op, Status};

fn data_of(r: &ReadReply) -> Vec<Option<u8>> {
    let mut v = Vec::new();
    if let ReadReply::Data(segs) = r {
        for s in segs {
            match s {
                ReadSegment::Data { data, .. } => v.extend(data.iter().map(|&b| Some(b))),
                ReadSegment::Hole { len, .. } => v.extend(std::iter::repeat_n(None, *len as usize)),
            }
        }
    }
    v
}

#[test]
fn cookie_api_over_the_socket_and_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut d = DaemonProc::start(dir.path(), &config);
    let mut c = d.client();
    assert_eq!(c.server_info().version, ringcache::proto::VERSION);
    let v = c.acquire_volume(b"afs.example", b"cell-1").unwrap();
    let k = c
        .acquire_cookie(v, b"fid:1:2:3", b"dv=7", 3 * 4096)
        .unwrap();
    c.use_cookie(k, true).unwrap();
    assert_eq!(
        c.read(k, 0, 4096).unwrap(),
        ReadReply::NoData,
        "a new object has nothing to read"
    );
    assert_eq!(c.write(k, 0, &[0xAB; 8192]).unwrap(), Status::Ok);
    let r = c.read(k, 0, 3 * 4096).unwrap();
    let got = data_of(&r);
    assert_eq!(got.len(), 3 * 4096);
    assert!(got[..8192].iter().all(|b| *b == Some(0xAB)));
    assert!(
        got[8192..].iter().all(Option::is_none),
        "hole after the written part"
    );
    assert_eq!(c.query_occupancy(k).unwrap(), vec![(0, 8192)]);
    c.prepare_to_write(k).unwrap();
    c.resize(k, 4096).unwrap();
    assert_eq!(c.query_occupancy(k).unwrap(), vec![(0, 4096)]);

    // Pipelined: many reads in flight on one connection.
    let ids: Vec<u64> = (0..32)
        .map(|_| {
            c.send(
                Op::Read,
                &ringcache::client::Client::read_request(k, 0, 4096),
            )
            .unwrap()
        })
        .collect();
    for id in ids.into_iter().rev() {
        let (st, body) = c.recv(id).unwrap();
        let r = ringcache::client::Client::parse_read(st, &body).unwrap();
        assert!(data_of(&r).iter().all(|b| *b == Some(0xAB)));
    }

    c.unuse_cookie(k, Some(b"dv=8"), None).unwrap();
    c.relinquish_cookie(k, false).unwrap();
    c.relinquish_volume(v, false).unwrap();
    let stats = c.stats().unwrap();
    let get = |n: &str| stats.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
    assert_eq!(get("fscache.acquires"), Some(1));
    assert_eq!(get("fscache.cookies"), Some(0));
    assert!(get("store.writes").unwrap() >= 1);
    drop(c);

    assert!(d.terminate(), "clean shutdown exits 0");
    let d = DaemonProc::start(dir.path(), &config);
    let mut c = d.client();
    let v = c.acquire_volume(b"afs.example", b"cell-1").unwrap();
    let k = c.acquire_cookie(v, b"fid:1:2:3", b"dv=8", 4096).unwrap();
    c.use_cookie(k, false).unwrap();
    let got = data_of(&c.read(k, 0, 4096).unwrap());
    assert!(
        got.iter().all(|b| *b == Some(0xAB)),
        "data survives a clean restart, with the coherency data given at unuse"
    );
    c.invalidate(k, b"dv=9", 4096).unwrap();
    assert_eq!(
        c.read(k, 0, 4096).unwrap(),
        ReadReply::NoData,
        "invalidated"
    );
}
