//! Each job's object, ready before its timed phase (embedded target; the
//! daemon target fills its objects through the socket, in `daemon.rs`).
//!
//! One object of `size` bytes in the volume [`VOLUME`], keyed by the job
//! name, prefilled (untimed, [`PREFILL_CHUNK`] writes from a few threads)
//! when the job reads. An object of the same size left fully cached by an
//! earlier run is reused, like a file fio laid out before; one of another
//! size, or not fully cached, is deleted and made again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringcache::store::ObjectId;

use super::jobfile::Job;
use super::progress::join;
use super::runner::RunOptions;
use super::setup::{Device, note};
use super::units::fmt_bytes_bin;
use super::{BenchError, store_err};

/// The volume that holds the benchmark's objects.
pub const VOLUME: &[u8] = b"bench";

/// Prefill writes of this size.
pub(super) const PREFILL_CHUNK: u64 = 1 << 20;

/// The data prefill writes, [`PREFILL_CHUNK`] bytes drawn from `seed`.
pub(super) fn prefill_chunk(seed: u64) -> Vec<u8> {
    let mut chunk = vec![0u8; PREFILL_CHUNK as usize];
    ChaCha8Rng::seed_from_u64(seed).fill(chunk.as_mut_slice());
    chunk
}

/// The object of job `job` ready to run: created, and prefilled when the
/// job reads.
pub(super) fn prepare_object(
    dev: &Device,
    job: &Job,
    key: &str,
    opts: &RunOptions,
    progress: bool,
) -> Result<(ObjectId, Option<Duration>), BenchError> {
    let store = &dev.store;
    let ctx = |what: &str| format!("job {:?}: {what}", job.name);
    let vol = store
        .volume(VOLUME, true)
        .map_err(store_err(ctx("volume")))?;
    let reads = job.rw.read_percent(job.rwmixread) > 0;
    if let Some(info) = store
        .lookup(vol, key.as_bytes())
        .map_err(store_err(ctx("lookup")))?
    {
        let full = store
            .occupancy(info.id)
            .map_err(store_err(ctx("occupancy")))?
            == vec![(0, job.size)];
        if info.size == job.size && (full || !reads) {
            return Ok((info.id, None));
        }
        store
            .delete(info.id)
            .map_err(store_err(ctx("delete old object")))?;
    }
    let id = store
        .create(vol, key.as_bytes(), b"", job.size)
        .map_err(store_err(ctx("create object")))?;
    if !reads {
        return Ok((id, None));
    }
    note(
        opts,
        &format!(
            "prefilling {} of job {:?} on {}",
            fmt_bytes_bin(job.size as f64),
            job.name,
            dev.path.display()
        ),
    );
    let t = Instant::now();
    let bar = progress.then(|| {
        let b = indicatif::ProgressBar::with_draw_target(
            Some(job.size),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "prefill {prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        ) {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_prefix(job.name.clone());
        b
    });
    let next = AtomicU64::new(0);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(2, 4);
    let chunk = &prefill_chunk(id);
    let next = &next;
    let bar = &bar;
    std::thread::scope(|s| -> Result<(), BenchError> {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(move || -> Result<(), BenchError> {
                    loop {
                        let off = next.fetch_add(PREFILL_CHUNK, Ordering::Relaxed);
                        if off >= job.size {
                            return Ok(());
                        }
                        let len = (job.size - off).min(PREFILL_CHUNK) as usize;
                        store
                            .write(id, off, &chunk[..len])
                            .map_err(store_err(format!("job {:?}: prefill", job.name)))?;
                        if let Some(b) = bar {
                            b.inc(len as u64);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            join(h)?;
        }
        Ok(())
    })?;
    store
        .flush()
        .map_err(store_err(ctx("flush after prefill")))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok((id, Some(t.elapsed())))
}
