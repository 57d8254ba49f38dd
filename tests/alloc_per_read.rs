//! Reads allocate nothing in the steady state: once the pools and reused
//! vectors are warm, a 4 KiB read through the store (planned, sent to the
//! device, checked, its segments handed back and dropped) makes no heap
//! allocation, on every engine.
//!
//! Counted by a global allocator that tallies every allocation of the
//! process (the engines' threads included), between two points after a
//! warm-up.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use ringcache::io::sim::SimFaults;
use ringcache::io::{self, EngineKind, IoEngine, OpenOptions};
use ringcache::store::{FormatOptions, ReadQueue, Segment, Store, StoreConfig, format};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// One dhat profiler per process, and one test at a time (see [`turn`]).
static PROFILER: Mutex<()> = Mutex::new(());

const OBJECT: u64 = 4 << 20;
const BLOCK: u64 = 4096;

fn fill(store: &Store) -> u64 {
    let vol = store.volume(b"vol", true).unwrap();
    let id = store.create(vol, b"obj", b"v1", OBJECT).unwrap();
    let data: Vec<u8> = (0..OBJECT).map(|i| (i % 251) as u8).collect();
    for at in (0..OBJECT).step_by(1 << 20) {
        store
            .write(id, at, &data[at as usize..(at + (1 << 20)) as usize])
            .unwrap();
    }
    id
}

/// Allocations per read over `reads` reads at queue depth `depth`, after
/// as many of warm-up.
fn allocs_per_read(store: &Store, id: u64, depth: usize, reads: u64) -> f64 {
    let mut q = ReadQueue::new(store);
    let mut out = Vec::with_capacity(depth);
    let mut next = 0u64;
    let blocks = OBJECT / BLOCK;
    let mut run = |n: u64, q: &mut ReadQueue, out: &mut Vec<_>| {
        let mut done = 0;
        while done < n {
            while q.in_flight() < depth {
                next = (next * 6364136223846793005 + 1442695040888963407) % blocks;
                q.submit(next, id, next * BLOCK, BLOCK).unwrap();
            }
            q.wait(out);
            for (tag, r) in out.drain(..) {
                let segs = r.unwrap();
                let Some(Segment::Data { offset, data }) = segs.first() else {
                    panic!("read of block {tag} is not data");
                };
                assert_eq!(*offset, tag * BLOCK);
                assert_eq!(data[0], ((tag * BLOCK) % 251) as u8);
                done += 1;
            }
        }
    };
    run(WARM_UP, &mut q, &mut out);
    let before = dhat::HeapStats::get().total_blocks;
    run(reads, &mut q, &mut out);
    let after = dhat::HeapStats::get().total_blocks;
    (after - before) as f64 / reads as f64
}

/// Reads before counting: pools, slabs and reused vectors reach their
/// working sizes.
const WARM_UP: u64 = 2000;

/// The tests take turns from their first step: the count is of the whole
/// process, so another test setting up beside one measuring would count.
fn turn() -> std::sync::MutexGuard<'static, ()> {
    PROFILER.lock().unwrap_or_else(|e| e.into_inner())
}

fn check(name: &str, engine: Arc<dyn IoEngine>) {
    let _profiler = dhat::Profiler::builder().testing().build();
    let store = Store::open(engine, StoreConfig::default()).unwrap();
    let id = fill(&store);
    for depth in [1, 8] {
        let per = allocs_per_read(&store, id, depth, 20_000);
        eprintln!("{name}: QD{depth}: {per:.3} allocations per read");
        dhat::assert_eq!(per, 0.0, "{name} at QD{depth}: {per} allocations per read");
    }
}

#[test]
fn sim_reads_allocate_nothing() {
    let _turn = turn();
    let sim = formatted_sim(64 << 20, Default::default(), SimFaults::default());
    check("sim", sim);
}

/// An engine of `kind` on a formatted temporary file, or `None` (after
/// saying why; a failure under CI) when the kernel refuses it.
fn file_engine(kind: EngineKind) -> Option<(tempfile::NamedTempFile, Arc<dyn IoEngine>)> {
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().set_len(64 << 20).unwrap();
    let opts = OpenOptions {
        engine: kind,
        ..OpenOptions::default()
    };
    let engine = match io::open(file.path(), &opts) {
        Ok(e) => e,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping: the {kind:?} engine is refused here: {e}");
            return None;
        }
        Err(e) => panic!("the {kind:?} engine is refused (CI is set, so this fails): {e}"),
    };
    format(
        engine.as_ref(),
        &FormatOptions {
            tag: "alloc".into(),
            geometry: Default::default(),
            force: false,
        },
    )
    .unwrap();
    Some((file, engine))
}

#[test]
fn psync_reads_allocate_nothing() {
    let _turn = turn();
    if let Some((_file, engine)) = file_engine(EngineKind::Psync) {
        check("psync", engine);
    }
}

#[test]
fn uring_reads_allocate_nothing() {
    let _turn = turn();
    if let Some((_file, engine)) = file_engine(EngineKind::Uring) {
        check("uring", engine);
    }
}
