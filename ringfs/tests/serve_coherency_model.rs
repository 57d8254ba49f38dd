//! The coherency guarantee itself: while a client holds a promise that no
//! break has touched since it asked, the file on the server is exactly
//! what that client was told. One client writes in a loop, another reads
//! and checks the exported file directly whenever it holds a promise.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{ServerProc, client, config, dirs};
use ringfs::client::{Client, Event};

#[test]
fn an_unbroken_promise_never_vouches_for_old_data() {
    let d = dirs();
    let path = d.export.join("f");
    std::fs::write(&path, [0u8; 64]).expect("write");
    let srv = ServerProc::start(&d.export, &d.state, &[]);

    // Every break the reader gets bumps this, before it is acknowledged.
    let breaks = Arc::new(AtomicU64::new(0));
    let mut cfg = config("reader");
    {
        let breaks = breaks.clone();
        cfg.on_event = Some(Arc::new(move |e: &Event| {
            if matches!(e, Event::Break { .. } | Event::ServerBreak { .. }) {
                breaks.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let reader = Client::connect(srv.addr, cfg).expect("connect");
    let writer = client(srv.addr, "writer");
    let f = reader.lookup(reader.root(), b"f").expect("lookup").attr.id;

    let stop = Arc::new(AtomicBool::new(false));
    let w = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u8;
            while !stop.load(Ordering::Relaxed) {
                n = n.wrapping_add(1);
                writer.write(f, 0, &[n; 64]).expect("write");
            }
            writer
        })
    };
    let deadline = Instant::now() + Duration::from_millis(1500);
    let (mut promised, mut checks) = (0u64, 0u64);
    while Instant::now() < deadline {
        let before = breaks.load(Ordering::SeqCst);
        let (attr, data) = reader.read(f, 0, 64).expect("read");
        if attr.promise_ms == 0 || breaks.load(Ordering::SeqCst) != before {
            continue; // no promise, or broken already
        }
        promised += 1;
        // Check the file itself for as long as the promise is unbroken.
        for _ in 0..50 {
            let on_disk = std::fs::read(&path).expect("read the export");
            if breaks.load(Ordering::SeqCst) != before {
                break;
            }
            checks += 1;
            assert_eq!(on_disk, data, "the file changed under an unbroken promise");
        }
    }
    stop.store(true, Ordering::Relaxed);
    drop(w.join().expect("writer"));
    assert!(
        promised > 10 && checks > 10,
        "{promised} promises, {checks} checks"
    );
    eprintln!("{promised} promises held, {checks} checks of the file under them");
}
