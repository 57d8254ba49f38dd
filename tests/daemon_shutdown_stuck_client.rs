//! SIGTERM while a client has piled up replies it never reads: the
//! connection's threads are stuck writing to it, or waiting for room. The
//! daemon gives in-flight requests a grace period, then cuts such clients
//! off, and still shuts down cleanly (exit 0, cache marked clean), instead
//! of hanging on one misbehaving client.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{DaemonProc, write_config};
use ringcache::client::request;
use ringcache::proto::{Op, Status};

#[test]
fn shutdown_cuts_off_a_client_that_does_not_read_its_replies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let mut d = DaemonProc::start(dir.path(), &config);
    let mut c = d.client();
    let v = c.acquire_volume(b"vol", b"").unwrap();
    let k = c.acquire_cookie(v, b"obj", b"", 1 << 20).unwrap();
    c.use_cookie(k, true).unwrap();
    assert_eq!(c.write(k, 0, &vec![7u8; 1 << 20]).unwrap(), Status::Ok);
    // 16 MiB of replies: far more than the socket holds.
    for i in 0..4096u64 {
        c.queue(Op::Read, &request::read(k, (i % 256) * 4096, 4096));
    }
    c.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let mut child = d.child.take().expect("running");
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon did not shut down with a stuck client");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let took = t.elapsed();
    assert!(
        took >= ringcache::daemon::SHUTDOWN_GRACE / 2,
        "in-flight requests get their grace period first ({took:?})"
    );
    drop(c);
    // The cache was closed cleanly: it reopens with the data.
    let mut d = DaemonProc::start(dir.path(), &config);
    let mut c = d.client();
    let v = c.acquire_volume(b"vol", b"").unwrap();
    let k = c.acquire_cookie(v, b"obj", b"", 1 << 20).unwrap();
    c.use_cookie(k, false).unwrap();
    assert!(matches!(
        c.read(k, 0, 4096).unwrap(),
        ringcache::client::ReadReply::Data(_)
    ));
    assert!(d.terminate());
}
