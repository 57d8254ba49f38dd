//! Changes made on the exported directory by other local processes (not
//! through ringfs) break promises and bump the data version; so do
//! changes made while the server was not running, found at next use.

mod common;

use std::time::{Duration, Instant};

use common::{ServerProc, client, dirs};
use ringfs::client::{Client, Event};
use ringfs::wire::{BreakReason, FileId};

fn wait_break(c: &Client, file: FileId) -> Option<BreakReason> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match c.next_event(left) {
            Some(Event::Break {
                file: f, reason, ..
            }) if f == file => return Some(reason),
            Some(_) => {}
            None => return None,
        }
    }
    None
}

/// Reads `file` until the reply carries a promise and `want`: a read
/// that overlapped a change gets no promise, and a break of that change
/// may still be on its way. Fails after 5 s.
fn settled_read(c: &Client, file: FileId, want: &[u8]) -> ringfs::wire::AttrReply {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (attr, data) = c.read(file, 0, 10).expect("read");
        if attr.promise_ms > 0 && data == want {
            return attr;
        }
        assert!(
            Instant::now() < deadline,
            "no promised read of {want:?} within 5 s (last: {data:?}, promise {} ms)",
            attr.promise_ms
        );
        let _ = c.next_event(Duration::from_millis(20));
    }
}

#[test]
fn a_local_write_breaks_the_promise_and_bumps_the_version() {
    let d = dirs();
    let path = d.export.join("f");
    std::fs::write(&path, b"aaaa").expect("write");
    std::fs::create_dir(d.export.join("sub")).expect("mkdir");
    let srv = ServerProc::start(&d.export, &d.state, &[]);
    let a = client(srv.addr, "a");
    let root = a.root();
    let f = a.lookup(root, b"f").expect("lookup").attr.id;

    let mut attr = settled_read(&a, f, b"aaaa");
    for round in 0..5 {
        // Same size: the size does not move, the version must. A write
        // through `std::fs::write` truncates and then writes, which
        // inotify may report in two batches: two breaks, and a read
        // between them is of a file still changing (no promise, maybe
        // empty). The contract is what a read sees once it settles.
        let new = if round % 2 == 0 { b"bbbb" } else { b"aaaa" };
        std::fs::write(&path, new).expect("local write");
        assert_eq!(wait_break(&a, f), Some(BreakReason::Local), "round {round}");
        let after = settled_read(&a, f, new);
        assert_ne!(
            after.attr.data_version, attr.attr.data_version,
            "round {round}"
        );
        attr = after;
    }

    // Local changes of entries break the directory's promise, in
    // subdirectories too.
    let sub = a.lookup(root, b"sub").expect("lookup").attr.id;
    a.readdir(sub).expect("readdir");
    a.drain_events();
    std::fs::write(d.export.join("sub/new"), b"x").expect("local create");
    assert_eq!(wait_break(&a, sub), Some(BreakReason::Local));
    assert_eq!(a.readdir(sub).expect("readdir").len(), 1);
    // A directory made locally is watched too.
    std::fs::create_dir(d.export.join("sub/deeper")).expect("local mkdir");
    let deeper = a.lookup(sub, b"deeper").expect("lookup").attr.id;
    a.readdir(deeper).expect("readdir");
    a.drain_events();
    std::fs::write(d.export.join("sub/deeper/x"), b"x").expect("local create");
    assert_eq!(wait_break(&a, deeper), Some(BreakReason::Local));
    // chmod by a local process breaks the file's promise.
    a.getattr(f).expect("getattr");
    a.drain_events();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert_eq!(wait_break(&a, f), Some(BreakReason::Local));
    assert_eq!(a.getattr(f).expect("getattr").attr.mode, 0o600);
}

#[test]
fn versions_persist_across_restarts_and_changes_while_down_are_found() {
    let d = dirs();
    std::fs::write(d.export.join("same"), b"unchanged").expect("write");
    std::fs::write(d.export.join("changed"), b"before").expect("write");
    let mut srv = ServerProc::start(&d.export, &d.state, &[]);
    let first_epoch = srv.epoch;
    let (same_v, changed_v, same, changed) = {
        let a = client(srv.addr, "a");
        let root = a.root();
        let s = a.lookup(root, b"same").expect("lookup").attr;
        let c = a.lookup(root, b"changed").expect("lookup").attr;
        (s.data_version, c.data_version, s.id, c.id)
    };
    srv.kill9();
    std::fs::write(d.export.join("changed"), b"while the server was down").expect("write");
    srv.restart();
    assert_eq!(srv.epoch, first_epoch + 1, "a new epoch at every start");
    let a = client(srv.addr, "a");
    assert_eq!(a.epoch(), srv.epoch);
    let s = a.getattr(same).expect("getattr").attr;
    assert_eq!(
        s.data_version, same_v,
        "an unchanged file keeps its version"
    );
    let c = a.getattr(changed).expect("getattr").attr;
    assert_ne!(
        c.data_version, changed_v,
        "a change while down gets a new version"
    );
    assert!(
        c.data_version > same_v.max(changed_v),
        "versions are never reused"
    );
}
