//! Breaks: a client holding a promise is told before another client's
//! change is answered; one that does not answer holds the change up for
//! the break timeout only, and is sent what it owes before its next
//! reply; a client that said farewell, or vanished, holds nothing up.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ServerProc, client, config, dirs};
use ringfs::client::{Client, Event};
use ringfs::wire::{BreakReason, CREATE_EXCLUSIVE, FileId};

fn breaks_of(events: &[Event], file: FileId) -> Vec<(BreakReason, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Break {
                file: f,
                reason,
                owed,
            } if *f == file => Some((*reason, *owed)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_holder_gets_the_break_before_the_writer_returns() {
    let d = dirs();
    std::fs::write(d.export.join("f"), b"original").expect("write");
    let srv = ServerProc::start(&d.export, &d.state, &[]);
    // A records when its break handler ran (before it acknowledges).
    let seen: Arc<Mutex<Vec<(FileId, Instant)>>> = Arc::default();
    let mut cfg = config("a");
    {
        let seen = seen.clone();
        cfg.on_event = Some(Arc::new(move |e: &Event| {
            if let Event::Break { file, .. } = e {
                seen.lock().expect("lock").push((*file, Instant::now()));
            }
        }));
    }
    let a = Client::connect(srv.addr, cfg).expect("connect a");
    let b = client(srv.addr, "b");
    let root = a.root();
    let f = a.lookup(root, b"f").expect("lookup").attr.id;
    let (held, _) = a.read(f, 0, 100).expect("read");
    assert!(held.promise_ms > 0);

    for round in 0..20 {
        let data = format!("round {round:03}");
        b.write(f, 0, data.as_bytes()).expect("write");
        let returned = Instant::now();
        let got = seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|(x, _)| *x == f)
            .count();
        assert_eq!(
            got,
            round + 1,
            "A's break arrived before B's write returned"
        );
        assert!(
            seen.lock()
                .expect("lock")
                .iter()
                .all(|(_, t)| *t <= returned)
        );
        // A asks again: the new data, a new version, a new promise.
        let (attr, back) = a.read(f, 0, 100).expect("read");
        assert_eq!(back, data.as_bytes());
        assert_ne!(attr.attr.data_version, held.attr.data_version);
        assert!(attr.promise_ms > 0);
    }
    // The writer is never broken by its own change.
    let own = breaks_of(&b.drain_events(), f);
    assert!(own.is_empty(), "{own:?}");

    // A directory change breaks the directory's promise (A looked up in it).
    let before = seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|(x, _)| *x == root)
        .count();
    b.create(root, b"new", 0o644, CREATE_EXCLUSIVE)
        .expect("create");
    let after = seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|(x, _)| *x == root)
        .count();
    assert_eq!(after, before + 1, "the directory's promise was broken");
    b.rename(root, b"new", root, b"newer", 0).expect("rename");
    assert_eq!(
        seen.lock()
            .expect("lock")
            .iter()
            .filter(|(x, _)| *x == root)
            .count(),
        before + 1,
        "A held no promise on the directory any more: nothing to break"
    );
    a.readdir(root).expect("readdir");
    b.unlink(root, b"newer").expect("unlink");
    assert_eq!(
        seen.lock()
            .expect("lock")
            .iter()
            .filter(|(x, _)| *x == root)
            .count(),
        before + 2,
        "a readdir's promise is broken by an unlink"
    );
}

#[test]
fn a_client_that_does_not_answer_owes_its_break() {
    let d = dirs();
    std::fs::write(d.export.join("f"), b"original").expect("write");
    std::fs::write(d.export.join("g"), b"other").expect("write");
    let srv = ServerProc::start(&d.export, &d.state, &["--break-timeout-ms", "600"]);
    let mut cfg = config("deaf");
    cfg.ack_breaks = false;
    let a = Client::connect(srv.addr, cfg).expect("connect a");
    let b = client(srv.addr, "b");
    let root = a.root();
    let f = a.lookup(root, b"f").expect("lookup").attr.id;
    let g = a.lookup(root, b"g").expect("lookup").attr.id;
    a.read(f, 0, 100).expect("read");
    a.drain_events();

    let t = Instant::now();
    b.write(f, 0, b"changed!").expect("write");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(550),
        "the write waited for the break timeout ({waited:?})"
    );
    assert!(
        waited < Duration::from_secs(5),
        "but not much longer ({waited:?})"
    );
    // A did receive the first break (it just did not answer).
    assert_eq!(
        breaks_of(&a.drain_events(), f),
        vec![(BreakReason::Client, false)]
    );

    // A's next request, on another file: the owed break comes first.
    a.getattr(g).expect("getattr");
    assert_eq!(
        breaks_of(&a.drain_events(), f),
        vec![(BreakReason::Client, true)],
        "the owed break arrived before the reply"
    );
    // A change of a file A holds no promise on does not wait.
    let (h, _) = b
        .create(root, b"h", 0o644, CREATE_EXCLUSIVE)
        .expect("create");
    let t = Instant::now();
    b.write(h.attr.id, 0, b"x").expect("write");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn a_farewell_or_a_vanished_client_holds_nothing_up() {
    let d = dirs();
    std::fs::write(d.export.join("f"), b"original").expect("write");
    let srv = ServerProc::start(&d.export, &d.state, &["--break-timeout-ms", "3000"]);
    let b = client(srv.addr, "b");
    let root = b.root();
    let f = b.lookup(root, b"f").expect("lookup").attr.id;

    let a = client(srv.addr, "a");
    a.read(f, 0, 10).expect("read");
    a.close().expect("farewell");
    let t = Instant::now();
    b.write(f, 0, b"1").expect("write");
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );

    let c = client(srv.addr, "c");
    c.read(f, 0, 10).expect("read");
    drop(c); // no farewell: the connection just closes
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    b.write(f, 0, b"2").expect("write");
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
}
