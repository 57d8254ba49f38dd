//! `--mixed`: the embedded store's random reads while a writer fills
//! another object, against the same reads alone, in alternation on one
//! open store; and the writer's latency.
//!
//! One object is filled (1 GiB, as the default run's fill), then each
//! repetition reads it at queue depth 32 (`--threads` readers) for
//! `--seconds` alone, and again for `--seconds` while one writer thread
//! writes a new object of its own from the start, 4 KiB at a time
//! (each write checksummed, logged and, every 256 log blocks or half a
//! log ring, its metadata written or checkpointed by that writer). The
//! writer's object is deleted after the repetition, so that space never
//! runs short and nothing of the read object is evicted. fio has no part
//! here: the figure is a ratio of the store to itself (reads while a
//! writer fills / reads alone), and the writer's p50, p99, p99.9 and
//! longest write, with the checkpoints taken meanwhile.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use ringcache::store::{Store, StoreConfig};

use crate::Opts;
use crate::embedded::{open_engine, rc_fill, reader};
use crate::measure::{latency_us, median, percentiles_us};

/// At most this much is written by the writer in one repetition.
const WRITER_BYTES: u64 = 768 << 20;
const WRITE_BS: usize = 4096;

pub(crate) fn mixed(o: &Opts, file: &Path) -> Result<()> {
    eprintln!("filling the object to read (1 GiB)");
    rc_fill(file)?;
    let store = Store::open(open_engine(file)?, StoreConfig::default())?;
    let vol = store.volume(b"bench", false)?;
    let target = store
        .lookup(vol, b"fill")?
        .context("filled object missing")?
        .id;
    let mut alone = Vec::new();
    let mut with_writer = Vec::new();
    let mut lat = latency_us()?;
    let mut written = 0u64;
    let mut checkpoints = 0u64;
    for rep in 0..o.reps {
        let a = read_iops(&store, target, o, None)?;
        let before = store.stats().checkpoints;
        let w = store.create(vol, format!("writer-{rep}").as_bytes(), b"", WRITER_BYTES)?;
        let mut rep_lat = latency_us()?;
        let m = read_iops(&store, target, o, Some((w, &mut rep_lat)))?;
        checkpoints += store.stats().checkpoints - before;
        store.delete(w)?;
        written += rep_lat.len() * WRITE_BS as u64;
        eprintln!(
            "rep {rep}: reads alone {a:.0} IOPS, with a writer {m:.0} IOPS ({:.2}); {} writes, p99.9 {} us",
            m / a,
            rep_lat.len(),
            rep_lat.value_at_quantile(0.999)
        );
        lat.add(&rep_lat)?;
        alone.push(a);
        with_writer.push(m);
    }
    store.close()?;
    let (ma, mm) = (median(&mut alone), median(&mut with_writer));
    println!(
        "randread 4k qd32 x{}: alone {ma:.0} IOPS, while a writer fills {mm:.0} IOPS (medians)",
        o.threads
    );
    println!(
        "writer, 4 KiB writes: {} in all ({} MiB), {}; {checkpoints} checkpoints meanwhile",
        lat.len(),
        written >> 20,
        percentiles_us(&lat)
    );
    let _ = std::fs::remove_file(file);
    println!("ratio {:.2}", mm / ma);
    Ok(())
}

/// Reads of `target` at queue depth 32 by `o.threads` readers for
/// `o.seconds`, with a writer filling `writer.0` meanwhile if given (its
/// write latencies, in microseconds, into `writer.1`): the readers' IOPS.
fn read_iops(
    store: &Store,
    target: u64,
    o: &Opts,
    writer: Option<(u64, &mut Histogram<u64>)>,
) -> Result<f64> {
    let t = Instant::now();
    let deadline = t + Duration::from_secs(o.seconds);
    let stop = AtomicBool::new(false);
    let ios = std::thread::scope(|s| -> Result<u64> {
        let readers: Vec<_> = (0..o.threads)
            .map(|n| s.spawn(move || reader(store, target, 32, n as u64, deadline)))
            .collect();
        let stop = &stop;
        let w = writer.map(|(id, hist)| {
            s.spawn(move || -> Result<()> {
                let block: Vec<u8> = (0..WRITE_BS).map(|i| (i % 253) as u8).collect();
                let mut off = 0;
                while !stop.load(Ordering::Relaxed) && off < WRITER_BYTES {
                    let t = Instant::now();
                    store.write(id, off, &block)?;
                    hist.saturating_record(t.elapsed().as_micros() as u64);
                    off += WRITE_BS as u64;
                }
                Ok(())
            })
        });
        let mut total = 0;
        for r in readers {
            total += r
                .join()
                .map_err(|_| anyhow::anyhow!("a reader panicked"))??;
        }
        stop.store(true, Ordering::Relaxed);
        if let Some(w) = w {
            w.join()
                .map_err(|_| anyhow::anyhow!("the writer panicked"))??;
        }
        Ok(total)
    })?;
    Ok(ios as f64 / t.elapsed().as_secs_f64())
}
