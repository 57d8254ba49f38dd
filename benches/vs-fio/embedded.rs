//! The embedded side: the store in this process on the same file,
//! formatted as a cache; one object filled by four writer threads, then
//! read back through a ReadQueue at a fixed queue depth (index lookup,
//! crc32c check of every block).

use std::path::Path;
use std::sync::Arc;
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringcache::io::{self, EngineKind, IoEngine, OpenOptions};
use ringcache::store::{FormatOptions, ReadQueue, Store, StoreConfig, format};

use crate::measure::{latency_us, percentiles_us};
use crate::{FILL_BS, FILL_BYTES};

/// The file opened with the best engine there is (io_uring, else psync), saying
/// so when it is not io_uring.
pub(crate) fn open_engine(file: &Path) -> Result<Arc<dyn IoEngine>> {
    let e = io::open(
        file,
        &OpenOptions {
            engine: EngineKind::Auto,
            ..Default::default()
        },
    )?;
    if e.name() != "uring" {
        eprintln!(
            "note: io_uring unavailable, ringcache runs on the {} engine",
            e.name()
        );
    }
    Ok(e)
}

/// What both ringcache fills write, [`FILL_BS`] bytes at a time.
pub(crate) fn fill_chunk() -> Vec<u8> {
    (0..FILL_BS).map(|i| (i % 251) as u8).collect()
}

/// Wait for a fill's writers; the first that failed (or panicked) is the
/// fill's error.
pub(crate) fn join_writers(workers: Vec<ScopedJoinHandle<'_, Result<()>>>) -> Result<()> {
    for w in workers {
        w.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    }
    Ok(())
}

/// `file` formatted as an empty cache (whatever it held); its engine.
pub(crate) fn format_file(file: &Path) -> Result<Arc<dyn IoEngine>> {
    let engine = open_engine(file)?;
    format(
        engine.as_ref(),
        &FormatOptions {
            force: true,
            ..Default::default()
        },
    )?;
    Ok(engine)
}

/// Format the file, fill one object; returns MiB/s of the fill (and
/// prints its writes' latency percentiles on stderr).
pub(crate) fn rc_fill(file: &Path) -> Result<f64> {
    let engine = format_file(file)?;
    let store = Store::open(engine, StoreConfig::default())?;
    let vol = store.volume(b"bench", true)?;
    let id = store.create(vol, b"fill", b"", FILL_BYTES)?;
    // Four writers of 1 MiB each: 4 MiB in flight, as fio's iodepth=4.
    let chunk = fill_chunk();
    let next = std::sync::atomic::AtomicU64::new(0);
    let lat = std::sync::Mutex::new(latency_us()?);
    let t = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let mut mine = latency_us()?;
                    loop {
                        let off =
                            next.fetch_add(FILL_BS as u64, std::sync::atomic::Ordering::Relaxed);
                        if off >= FILL_BYTES {
                            let mut all = lat.lock().unwrap_or_else(|e| e.into_inner());
                            all.add(&mine)?;
                            return Ok(());
                        }
                        let t = Instant::now();
                        store.write(id, off, &chunk)?;
                        mine.saturating_record(t.elapsed().as_micros() as u64);
                    }
                })
            })
            .collect();
        join_writers(workers)
    })?;
    store.flush()?;
    let secs = t.elapsed().as_secs_f64();
    let lat = lat.into_inner().unwrap_or_else(|e| e.into_inner());
    eprintln!(
        "embedded fill: {} writes of 1 MiB, 4 in flight: {}",
        lat.len(),
        percentiles_us(&lat)
    );
    store.close()?;
    Ok(FILL_BYTES as f64 / (1 << 20) as f64 / secs)
}

/// Random 4 KiB reads of the filled object at queue depth `qd`, by
/// `threads` threads with a read queue each: their total IOPS.
pub(crate) fn rc_read_iops(file: &Path, qd: usize, seconds: u64, threads: usize) -> Result<f64> {
    let store = Store::open(open_engine(file)?, StoreConfig::default())?;
    let vol = store.volume(b"bench", false)?;
    let info = store
        .lookup(vol, b"fill")?
        .context("filled object missing")?;
    let t = Instant::now();
    let deadline = t + Duration::from_secs(seconds);
    let ios = std::thread::scope(|s| -> Result<u64> {
        let readers: Vec<_> = (0..threads)
            .map(|n| {
                let store = &store;
                s.spawn(move || reader(store, info.id, qd, n as u64, deadline))
            })
            .collect();
        let mut total = 0;
        for r in readers {
            total += r
                .join()
                .map_err(|_| anyhow::anyhow!("a reader panicked"))??;
        }
        Ok(total)
    })?;
    let secs = t.elapsed().as_secs_f64();
    drop(store);
    Ok(ios as f64 / secs)
}

/// One reader of [`rc_read_iops`]: reads until `deadline`; how many.
pub(crate) fn reader(
    store: &Store,
    id: u64,
    qd: usize,
    seed: u64,
    deadline: Instant,
) -> Result<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(1 + seed);
    let blocks = FILL_BYTES / 4096;
    let mut q = ReadQueue::new(store);
    let mut done = Vec::with_capacity(qd);
    let mut ios = 0u64;
    loop {
        // Keep `qd` reads at the device; replace the finished ones before
        // checking them (as fio requeues before it looks at completions).
        q.reap();
        while q.io_in_flight() < qd {
            let off = rng.random_range(0..blocks) * 4096;
            q.submit(ios, id, off, 4096)?;
        }
        q.take(&mut done);
        for (_, r) in done.drain(..) {
            let segs = r?;
            if segs.len() != 1 || !matches!(segs[0], ringcache::store::Segment::Data { .. }) {
                bail!("a read of cached data missed");
            }
            ios += 1;
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    // Drain what is in flight before the store closes.
    while q.in_flight() > 0 {
        q.wait(&mut done);
        done.clear();
    }
    Ok(ios)
}
