//! kill -9 of the server while two clients write, then a restart: every
//! acknowledged write is there exactly once. Each client increments its
//! own counter file by read-modify-write (positional writes, safe to
//! repeat after a new epoch) and appends records to a shared log (not
//! safe to repeat: after a restart an unanswered append is reported
//! indeterminate, never resent). The clients see a whole-server break.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use common::{ServerProc, client, dirs};
use ringfs::client::{Client, ClientError, Event, ServerBreakReason};
use ringfs::wire::CREATE_EXCLUSIVE;

struct Outcome {
    increments: u64,
    appended: Vec<String>,
    maybe: Vec<String>,
}

fn work(c: &Client, who: &str, stop: &AtomicBool) -> Outcome {
    let root = c.root();
    let counter = c
        .create(root, format!("counter-{who}").as_bytes(), 0o644, 0)
        .expect("create counter")
        .0
        .attr
        .id;
    let log = c.lookup(root, b"log").expect("lookup log").attr.id;
    let mut out = Outcome {
        increments: 0,
        appended: Vec::new(),
        maybe: Vec::new(),
    };
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Read-modify-write of the counter.
        let (_, bytes) = c.read(counter, 0, 8).expect("read counter");
        let v = if bytes.len() == 8 {
            u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
        } else {
            0
        };
        assert_eq!(
            v, out.increments,
            "{who}: the counter holds every acknowledged increment once"
        );
        c.write(counter, 0, &(v + 1).to_le_bytes())
            .expect("write counter");
        out.increments += 1;
        // An append.
        n += 1;
        let rec = format!("{who}:{n}\n");
        match c.append(log, rec.as_bytes()) {
            Ok(_) => out.appended.push(rec),
            Err(ClientError::Indeterminate) => out.maybe.push(rec),
            Err(e) => panic!("{who}: append: {e}"),
        }
    }
    out
}

#[test]
fn kill9_while_two_clients_write_loses_and_repeats_nothing() {
    let d = dirs();
    let mut srv = ServerProc::start(&d.export, &d.state, &[]);
    let setup = client(srv.addr, "setup");
    setup
        .create(setup.root(), b"log", 0o644, CREATE_EXCLUSIVE)
        .expect("create log");
    setup.close().expect("farewell");

    let a = Arc::new(client(srv.addr, "a"));
    let b = Arc::new(client(srv.addr, "b"));
    let epoch0 = a.epoch();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = [("a", a.clone()), ("b", b.clone())]
        .into_iter()
        .map(|(who, c)| {
            let stop = stop.clone();
            thread::spawn(move || work(&c, who, &stop))
        })
        .collect();

    for _round in 0..3 {
        thread::sleep(Duration::from_millis(400));
        srv.kill9();
        thread::sleep(Duration::from_millis(300));
        srv.restart();
        // Both clients back on the new epoch before the next kill.
        let t = std::time::Instant::now();
        while a.epoch() != srv.epoch || b.epoch() != srv.epoch {
            assert!(t.elapsed() < Duration::from_secs(20), "clients reconnected");
            thread::sleep(Duration::from_millis(10));
        }
    }
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let outcomes: Vec<Outcome> = workers
        .into_iter()
        .map(|w| w.join().expect("worker"))
        .collect();

    // Counters: exactly the acknowledged increments.
    for (who, o) in ["a", "b"].iter().zip(&outcomes) {
        let bytes = std::fs::read(d.export.join(format!("counter-{who}"))).expect("read");
        let v = u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
        assert_eq!(v, o.increments, "counter-{who}");
        assert!(o.increments > 10, "{who} did some work ({})", o.increments);
        eprintln!(
            "{who}: {} increments, {} appends, {} indeterminate",
            o.increments,
            o.appended.len(),
            o.maybe.len()
        );
    }
    // The log: every acknowledged append exactly once, an indeterminate
    // one at most once, nothing else.
    let log = std::fs::read_to_string(d.export.join("log")).expect("read log");
    let mut count: HashMap<&str, usize> = HashMap::new();
    for line in log.split_inclusive('\n') {
        *count.entry(line).or_default() += 1;
    }
    let mut expected = 0;
    for o in &outcomes {
        for rec in &o.appended {
            assert_eq!(count.get(rec.as_str()), Some(&1), "acknowledged {rec:?}");
            expected += 1;
        }
        for rec in &o.maybe {
            let n = count.get(rec.as_str()).copied().unwrap_or(0);
            assert!(n <= 1, "indeterminate {rec:?} applied {n} times");
            expected += n;
        }
    }
    assert_eq!(
        count.values().sum::<usize>(),
        expected,
        "no record that was never sent"
    );

    // Both clients saw the new epochs as whole-server breaks.
    for c in [&a, &b] {
        assert!(c.epoch() >= epoch0 + 3);
        let events = c.drain_events();
        let new_epochs = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::ServerBreak {
                        reason: ServerBreakReason::NewEpoch
                    }
                )
            })
            .count();
        assert_eq!(new_epochs, 3, "{events:?}");
    }
}
