//! A client that vanished is forgotten after `--client-timeout-secs`: a
//! greeting from it then says `resumed` 0 (its kept replies are gone,
//! so it may resend only what is safe to repeat); before that, it
//! resumes. A new incarnation of a client id starts afresh at once. Past
//! `--max-clients`, a greeting is refused.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{ServerProc, dirs};
use ringfs::client::{new_client_id, read_one};
use ringfs::wire::{self, Header, Hello, Kind, ReplyBody, Request, decode_reply, frame, op};

fn hello(addr: SocketAddr, id: [u8; 16], incarnation: u64) -> (TcpStream, wire::Reply) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let hello = Request::Hello(Hello {
        version: wire::VERSION,
        client_id: id,
        incarnation,
        name: b"raw".to_vec(),
    });
    s.write_all(&frame(
        &Header::new(Kind::Request, op::HELLO, 0, 0),
        &hello.encode(),
    ))
    .expect("send");
    let (_, p) = read_one(&mut s).expect("an answer");
    let r = decode_reply(op::HELLO, &p).expect("decode");
    (s, r)
}

fn greet(addr: SocketAddr, id: [u8; 16], incarnation: u64) -> (TcpStream, bool) {
    let (s, r) = hello(addr, id, incarnation);
    match r.body {
        ReplyBody::Welcome(w) => (s, w.resumed),
        other => panic!("{other:?}"),
    }
}

#[test]
fn past_max_clients_a_greeting_is_refused() {
    let d = dirs();
    let srv = ServerProc::start(&d.export, &d.state, &["--max-clients", "1"]);
    let first = new_client_id();
    let (_s1, _) = greet(srv.addr, first, 1);
    let (mut s2, r) = hello(srv.addr, new_client_id(), 1);
    assert_eq!(r.status, wire::Status::TooManyClients);
    assert!(read_one(&mut s2).is_err(), "closed");
    // The same client connecting again replaces its connection: allowed.
    let (_s3, resumed) = greet(srv.addr, first, 1);
    assert!(resumed);
}

#[test]
fn a_vanished_client_is_forgotten_after_the_timeout() {
    let d = dirs();
    let srv = ServerProc::start(&d.export, &d.state, &["--client-timeout-secs", "1"]);
    let id = new_client_id();
    let (s, resumed) = greet(srv.addr, id, 5);
    assert!(!resumed, "a first greeting resumes nothing");
    drop(s);
    std::thread::sleep(Duration::from_millis(100));
    // Back quickly: resumed.
    let (s, resumed) = greet(srv.addr, id, 5);
    assert!(resumed);
    // A connection that replaces a live one resumes too.
    let (s2, resumed) = greet(srv.addr, id, 5);
    assert!(resumed);
    drop(s);
    drop(s2);
    // Another incarnation (the client restarted): afresh.
    let (s, resumed) = greet(srv.addr, id, 6);
    assert!(!resumed);
    drop(s);
    // Away longer than the timeout (plus the once-a-second sweep): forgotten.
    std::thread::sleep(Duration::from_millis(2500));
    let (_s, resumed) = greet(srv.addr, id, 6);
    assert!(!resumed, "forgotten after the client timeout");
}
