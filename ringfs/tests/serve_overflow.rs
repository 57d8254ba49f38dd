//! An inotify queue overflow is a whole-server break, never a silent
//! miss: local changes made while the server is stopped (SIGSTOP)
//! overflow its event queue; every client gets a whole-server break,
//! every data version changes at its next use, and the server goes on
//! seeing local changes.

mod common;

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use common::{ServerProc, client, dirs};
use ringfs::client::{Event, ServerBreakReason};
use ringfs::wire::BreakReason;

#[test]
fn an_event_queue_overflow_is_a_whole_server_break() {
    let d = dirs();
    std::fs::write(d.export.join("held"), b"held").expect("write");
    let srv = ServerProc::start(&d.export, &d.state, &[]);
    let a = client(srv.addr, "a");
    let root = a.root();
    let held = a.lookup(root, b"held").expect("lookup").attr;
    a.read(held.id, 0, 10).expect("read");

    // Stop the server, make more events than its queue holds (alternating
    // between two files so that the kernel cannot merge them), let it go.
    let f1 = std::fs::File::create(d.export.join("burst1")).expect("create");
    let f2 = std::fs::File::create(d.export.join("burst2")).expect("create");
    let pid = Pid::from_raw(srv.child.id() as i32);
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
    // Twice the kernel's queue length.
    let queue: u64 = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(16_384);
    let writes = 2 * queue + 1000;
    for _ in 0..writes / 2 {
        f1.write_at(b"x", 0).expect("write");
        f2.write_at(b"y", 0).expect("write");
    }
    kill(pid, Signal::SIGCONT).expect("SIGCONT");
    let until = Instant::now() + Duration::from_secs(20);
    let mut overflowed = false;
    while Instant::now() < until && !overflowed {
        overflowed = a.next_event(Duration::from_millis(100))
            == Some(Event::ServerBreak {
                reason: ServerBreakReason::Server(BreakReason::Overflow),
            });
    }
    assert!(
        overflowed,
        "no overflow reported after {writes} local writes"
    );
    // Let the server read the rest of the burst (it may overflow again).
    std::thread::sleep(Duration::from_secs(2));
    a.drain_events();
    // Every version is suspect: even the untouched file gets a new one.
    let after = a.getattr(held.id).expect("getattr").attr;
    assert_ne!(after.data_version, held.data_version);
    // And the server goes on watching.
    a.read(held.id, 0, 10).expect("read");
    a.drain_events();
    std::fs::write(d.export.join("held"), b"changed").expect("write");
    let until = Instant::now() + Duration::from_secs(10);
    let mut broken = false;
    while Instant::now() < until && !broken {
        broken = match a.next_event(Duration::from_millis(100)) {
            Some(Event::Break { file, .. }) => file == held.id,
            // A whole-server break covers it too.
            Some(Event::ServerBreak { reason }) => reason != ServerBreakReason::Disconnected,
            _ => false,
        };
    }
    assert!(broken, "local changes are seen after the overflow");
}
