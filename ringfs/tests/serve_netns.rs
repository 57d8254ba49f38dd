//! The server in one network namespace, two clients in two others,
//! joined by veth pairs the test makes (and removes, also on failure):
//! every operation across them, and the link of one client taken down for
//! 2 s in the middle of transfers: requests are resent and complete, none
//! applied twice, and a break that could not be delivered is owed.
//! Without root or `ip` the tests print why and skip; under CI=true they
//! fail instead.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::netns::{Topology, make_or_skip};
use common::{ServerProc, client, dirs, exercise_every_op};
use ringfs::client::{Client, Event, ServerBreakReason};
use ringfs::wire::CREATE_EXCLUSIVE;

fn serve_in(topo: &Topology, d: &common::Dirs, args: &[&str]) -> ServerProc {
    ServerProc::spawn(
        &d.export,
        &d.state,
        "0.0.0.0:0",
        args,
        Some(&topo.server_ns),
    )
}

fn addr_for(topo: &Topology, srv: &ServerProc, i: usize) -> SocketAddr {
    format!("{}:{}", topo.server_addr[i], srv.addr.port())
        .parse()
        .expect("an address")
}

fn client_in(topo: &Topology, srv: &ServerProc, i: usize, name: &'static str) -> Client {
    let addr = addr_for(topo, srv, i);
    topo.in_client(i, move || client(addr, name))
        .join()
        .expect("client thread")
}

#[test]
fn every_op_across_network_namespaces() {
    let Some(topo) = make_or_skip("ops", 2) else {
        return;
    };
    let d = dirs();
    let srv = serve_in(&topo, &d, &[]);
    let a = client_in(&topo, &srv, 0, "a");
    let b = client_in(&topo, &srv, 1, "b");
    exercise_every_op(&a, &b);
    a.close().expect("farewell");
    b.close().expect("farewell");
}

#[test]
fn link_down_for_2s_mid_transfer_resends_and_applies_once() {
    let Some(topo) = make_or_skip("link", 2) else {
        return;
    };
    let d = dirs();
    let srv = serve_in(&topo, &d, &[]);
    let a = Arc::new(client_in(&topo, &srv, 0, "a"));
    let b = client_in(&topo, &srv, 1, "b");
    let root = a.root();
    let log = a
        .create(root, b"log", 0o644, CREATE_EXCLUSIVE)
        .expect("create")
        .0
        .attr
        .id;
    let data = a
        .create(root, b"data", 0o644, CREATE_EXCLUSIVE)
        .expect("create")
        .0
        .attr
        .id;
    let held = b
        .create(root, b"held", 0o644, CREATE_EXCLUSIVE)
        .expect("create")
        .0
        .attr
        .id;
    a.read(held, 0, 10).expect("A holds a promise on held");

    // A appends records (kept replies: exactly once) and writes 256 KiB
    // chunks (positional) until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let chunks = Arc::new(AtomicU64::new(0));
    let worker = {
        let (a, stop, chunks) = (a.clone(), stop.clone(), chunks.clone());
        thread::spawn(move || {
            let mut appended = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let rec = format!("a:{n}\n");
                a.append(log, rec.as_bytes())
                    .expect("append completes, across the outage");
                appended.push(rec);
                let chunk = vec![(n % 251) as u8; 256 * 1024];
                a.write(data, (n % 8) * chunk.len() as u64, &chunk)
                    .expect("write completes");
                chunks.fetch_add(1, Ordering::Relaxed);
            }
            appended
        })
    };
    thread::sleep(Duration::from_millis(500));
    let before = chunks.load(Ordering::Relaxed);
    topo.link(0, false).expect("link down");
    let down = Instant::now();
    // Counted once the link is down (`ip` can take a while to run on a
    // busy machine, and transfers go on until it has): from here on only
    // replies already in A's socket can complete a chunk.
    let at_down = chunks.load(Ordering::Relaxed);
    // While A is cut off, B changes a file A holds a promise on: the
    // write waits for the break timeout, and A owes the break.
    let t = Instant::now();
    b.write(held, 0, b"changed while A was away")
        .expect("write");
    let waited = t.elapsed();
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let left = Duration::from_secs(2).saturating_sub(down.elapsed());
    thread::sleep(left);
    let during = chunks.load(Ordering::Relaxed);
    topo.link(0, true).expect("link up");
    let up = Instant::now();
    while chunks.load(Ordering::Relaxed) < during + 5 {
        assert!(
            up.elapsed() < Duration::from_secs(20),
            "transfers resumed after the outage"
        );
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let appended = worker.join().expect("worker");
    eprintln!(
        "chunks: {before} before the outage, {at_down} once the link was down, {during} at its end, {} after; {} appends; B's write waited {waited:?}",
        chunks.load(Ordering::Relaxed),
        appended.len()
    );
    assert!(
        during <= at_down + 4,
        "little went through while the link was down ({at_down} then {during})"
    );

    // Every acknowledged append is in the log exactly once, nothing else.
    let text = std::fs::read_to_string(d.export.join("log")).expect("read log");
    let mut count: HashMap<&str, usize> = HashMap::new();
    for line in text.split_inclusive('\n') {
        *count.entry(line).or_default() += 1;
    }
    for rec in &appended {
        assert_eq!(count.get(rec.as_str()), Some(&1), "{rec:?}");
    }
    assert_eq!(count.len(), appended.len(), "no record twice or unsent");

    // A lost its connection, came back to the same epoch (resumed), and
    // got the break it owed.
    let events = a.drain_events();
    assert!(
        events.contains(&Event::ServerBreak {
            reason: ServerBreakReason::Disconnected
        }),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Reconnected { resumed: true, .. })),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Break { file, .. } if *file == held)),
        "A received the break on held: {events:?}"
    );
    let (_, now) = a.read(held, 0, 100).expect("read");
    assert_eq!(now, b"changed while A was away");
}
