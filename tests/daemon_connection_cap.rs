//! The connection cap (`max_connections`): a client over it is told so
//! (`Status::Busy` from `connect`, for the blocking and the shared client)
//! instead of hanging or reading a bare EOF, a place freed is taken by
//! the next client, and 10,000 connection attempts, accepted and refused,
//! leave the daemon's descriptor and thread counts where they started.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{DaemonProc, write_config};
use ringcache::client::{Client, ClientError, SharedClient};
use ringcache::proto::Status;

fn entries(path: String) -> usize {
    std::fs::read_dir(path).map(|d| d.count()).unwrap_or(0)
}

fn busy<T>(r: Result<T, ClientError>) -> bool {
    matches!(r, Err(ClientError::Status(Status::Busy)))
}

#[test]
fn clients_over_the_cap_are_refused_clearly_and_attempts_leak_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "max_connections 4\n");
    let d = DaemonProc::start(dir.path(), &config);
    let pid = d.child.as_ref().expect("running").id();
    let fds = || entries(format!("/proc/{pid}/fd"));
    let tasks = || entries(format!("/proc/{pid}/task"));
    // The start-up probe's connection is gone once its thread is.
    let settle = |want_fds: usize, want_tasks: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while (fds() != want_fds || tasks() != want_tasks) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        (fds(), tasks())
    };
    std::thread::sleep(Duration::from_millis(200));
    let (fd0, task0) = (fds(), tasks());

    let mut held: Vec<Client> = (0..4).map(|_| d.client()).collect();
    for c in &mut held {
        c.ping().expect("a client under the cap is served");
    }
    assert!(
        busy(Client::connect(&d.socket)),
        "the fifth client is refused"
    );
    assert!(
        busy(SharedClient::connect(&d.socket, b"t")),
        "so is a shared one"
    );

    // One leaves: the next client gets its place.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut again = loop {
        match Client::connect(&d.socket) {
            Ok(c) => break c,
            Err(ClientError::Status(Status::Busy)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("a freed place is not taken: {e}"),
        }
    };
    again.ping().expect("served");
    drop(again);
    drop(held.pop());

    // 10,000 attempts with two places left: accepted and refused alike
    // leave nothing behind.
    let (mut ok, mut refused) = (0, 0);
    for i in 0..10_000 {
        match Client::connect(&d.socket) {
            Ok(c) => {
                ok += 1;
                drop(c);
            }
            Err(ClientError::Status(Status::Busy)) => refused += 1,
            Err(e) => panic!("attempt {i}: {e}"),
        }
    }
    assert_eq!(ok + refused, 10_000);
    drop(held);
    let (fd1, task1) = settle(fd0, task0);
    assert_eq!(
        (fd1, task1),
        (fd0, task0),
        "descriptors and threads after 10,000 attempts ({ok} accepted, {refused} refused)"
    );
    eprintln!(
        "10,000 attempts: {ok} accepted, {refused} refused; fds {fd0}, threads {task0} before and after"
    );
}
