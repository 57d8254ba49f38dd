//! SIGTERM while clients are connected: a client still talking to the
//! daemon has every request it sends answered, with `ShuttingDown` once
//! the shutdown began, and none of its sends fails with EPIPE (the daemon
//! used to shut the read side of every socket, so the next send of a
//! well-behaved client failed before anything answered it). A client
//! that stays quiet is let go at once: it reads end of stream, and it
//! does not hold the daemon up for the grace period.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{DaemonProc, write_config};
use ringcache::client::ClientError;
use ringcache::proto::Status;

#[test]
fn requests_during_shutdown_are_answered_shutting_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let mut d = DaemonProc::start(dir.path(), &config);
    let mut talker = d.client();
    talker.ping().expect("ping");
    let mut idle = d.client();
    idle.ping().expect("ping");

    let mut child = d.child.take().expect("running");
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    // Keep talking: each request is answered Ok (before the shutdown
    // reached this connection) or ShuttingDown (after), never EPIPE.
    let (mut ok, mut shutting_down) = (0u32, 0u32);
    while shutting_down == 0 {
        match talker.ping() {
            Ok(()) => ok += 1,
            Err(ClientError::Status(Status::ShuttingDown)) => shutting_down += 1,
            Err(e) => panic!("after {ok} pings answered Ok: {e}"),
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "never answered ShuttingDown ({ok} Ok)"
        );
    }
    // Told so, the client may still send what it had under way: answered
    // too (within the quiet time the daemon gives a connection).
    for _ in 0..3 {
        match talker.ping() {
            Err(ClientError::Status(Status::ShuttingDown)) => {}
            other => panic!("a request after ShuttingDown got {other:?}"),
        }
    }
    // Then quiet: the daemon closes both connections and exits, well
    // within its 10 s grace period although the idle client never left.
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon did not shut down");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = t.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(5),
        "an idle client held the shutdown for {took:?}"
    );
    // The idle client reads end of stream (an I/O error from the client
    // library), not an answer.
    match idle.ping() {
        Err(ClientError::Io(_)) => {}
        other => panic!("the idle client after shutdown: {other:?}"),
    }
    eprintln!("shutdown: {ok} pings answered Ok, then ShuttingDown; exit after {took:?}");
}
