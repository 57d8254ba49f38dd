//! At most 64 requests of a client wait at the server: beyond that the
//! server answers `Busy` at once and applies nothing; the 64 are served.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{ServerProc, client, config, dirs};
use ringfs::client::{Client, new_client_id, read_one};
use ringfs::wire::{
    self, Header, Hello, Kind, ReplyBody, Request, Status, WRITE_APPEND, decode_reply, frame, op,
};

#[test]
fn beyond_64_requests_in_flight_the_server_answers_busy() {
    let d = dirs();
    std::fs::write(d.export.join("f"), b"").expect("write");
    let srv = ServerProc::start(&d.export, &d.state, &["--break-timeout-ms", "1000"]);
    // A client that does not answer breaks holds a promise on f: the
    // first change of f waits a second, while the rest queue up.
    let mut cfg = config("deaf");
    cfg.ack_breaks = false;
    let deaf = Client::connect(srv.addr, cfg).expect("connect");
    let root = deaf.root();
    let f = deaf.lookup(root, b"f").expect("lookup").attr.id;
    deaf.read(f, 0, 1).expect("read");

    let mut s = TcpStream::connect(srv.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let hello = Request::Hello(Hello {
        version: wire::VERSION,
        client_id: new_client_id(),
        incarnation: 1,
        name: b"flood".to_vec(),
    });
    s.write_all(&frame(
        &Header::new(Kind::Request, op::HELLO, 0, 0),
        &hello.encode(),
    ))
    .expect("hello");
    read_one(&mut s).expect("welcome");
    let n = 100u64;
    let mut burst = Vec::new();
    for seq in 1..=n {
        let w = Request::Write {
            id: f,
            offset: 0,
            flags: WRITE_APPEND,
            data: format!("{seq}\n").into_bytes(),
        };
        burst.extend(frame(
            &Header::new(Kind::Request, op::WRITE, seq, 0),
            &w.encode(),
        ));
    }
    s.write_all(&burst).expect("burst");
    let mut status: HashMap<u64, Status> = HashMap::new();
    while (status.len() as u64) < n {
        let (h, p) = read_one(&mut s).expect("a reply");
        if h.kind != Kind::Reply as u8 {
            continue;
        }
        let r = decode_reply(h.op, &p).expect("decode");
        if let ReplyBody::Write { .. } | ReplyBody::Empty = r.body {
            status.insert(h.seq, r.status);
        }
    }
    let ok = status.values().filter(|s| **s == Status::Ok).count();
    let busy = status.values().filter(|s| **s == Status::Busy).count();
    assert_eq!(ok + busy, n as usize, "{status:?}");
    assert!(
        busy >= 30,
        "{busy} busy: the queue holds 64 (and one being served)"
    );
    assert!(ok >= 64, "{ok} served");
    // Busy requests were not applied: the file holds exactly the others.
    let text = std::fs::read_to_string(d.export.join("f")).expect("read");
    let mut lines: Vec<u64> = text.lines().map(|l| l.parse().expect("a number")).collect();
    lines.sort_unstable();
    let mut want: Vec<u64> = status
        .iter()
        .filter(|(_, st)| **st == Status::Ok)
        .map(|(seq, _)| *seq)
        .collect();
    want.sort_unstable();
    assert_eq!(lines, want);
    // The server goes on serving everyone.
    let other = client(srv.addr, "other");
    other.getattr(f).expect("getattr");
}
