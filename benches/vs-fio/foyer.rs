//! foyer's column of `vs-fio --with-foyer`: its hybrid cache with a tiny
//! memory tier over a block engine on the same file, O_DIRECT, its
//! io_uring engine; values of 4 KiB keyed by block number.
//!
//! foyer drops inserts when its flush buffers are full. To compare what
//! is cached, not what is thrown away, the fill inserts in batches that fit
//! the buffers and waits for each batch to reach the device before the
//! next (back-pressure by hand); reads that find nothing are counted as
//! misses and reported, never counted as I/Os.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use foyer::{
    BlockEngineConfig, DeviceBuilder, FileDeviceBuilder, HybridCache, HybridCacheBuilder,
    IoEngineConfig, Load, RecoverMode, UringIoEngineConfig,
};

/// foyer writes each value with a header, rounded up to 4 KiB pages, so a
/// 4 KiB value takes 8 KiB of device: half as many values fill the same
/// device space as ringcache's blocks.
pub const VALUES: u64 = (super::FILL_BYTES / 4096) / 2;
const VALUE_BYTES: usize = 4096;
/// Values inserted before waiting for the device (fits the buffer pool).
const BATCH: u64 = 2048;
const BUFFER_POOL_BYTES: usize = 64 << 20;

type Cache = HybridCache<u64, Vec<u8>>;

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

async fn open(file: &Path) -> Result<Cache> {
    let device = FileDeviceBuilder::new(file)
        .with_capacity(super::FILE_BYTES as usize)
        .with_direct(true)
        .build()
        .map_err(|e| anyhow::anyhow!("foyer device: {e}"))?;
    HybridCacheBuilder::new()
        .with_name("vs-fio")
        .memory(1 << 20)
        .with_weighter(|_k: &u64, v: &Vec<u8>| v.len())
        .storage()
        .with_io_engine_config(
            Box::new(UringIoEngineConfig::new().with_io_depth(64)) as Box<dyn IoEngineConfig>
        )
        .with_engine_config(
            BlockEngineConfig::new(device)
                .with_block_size(16 << 20)
                .with_buffer_pool_size(BUFFER_POOL_BYTES),
        )
        .with_recover_mode(RecoverMode::None)
        .build()
        .await
        .map_err(|e| anyhow::anyhow!("foyer: {e}"))
}

/// foyer open on the file, with the runtime that drives it.
pub struct FoyerRun {
    rt: tokio::runtime::Runtime,
    cache: Arc<Cache>,
}

impl FoyerRun {
    /// Build foyer's cache on `file` (not measured).
    pub fn open(file: &Path) -> Result<FoyerRun> {
        let rt = runtime()?;
        let cache = Arc::new(rt.block_on(open(file))?);
        Ok(FoyerRun { rt, cache })
    }

    /// Store [`VALUES`] values; returns MiB/s of values stored.
    pub fn fill(&self) -> Result<f64> {
        let cache = &self.cache;
        self.rt.block_on(async {
            let value: Vec<u8> = (0..VALUE_BYTES).map(|i| (i % 251) as u8).collect();
            let t = Instant::now();
            let mut k = 0;
            while k < VALUES {
                let end = (k + BATCH).min(VALUES);
                for key in k..end {
                    let _ = cache.storage_writer(key).force().insert(value.clone());
                }
                cache.storage().wait().await;
                k = end;
            }
            let secs = t.elapsed().as_secs_f64();
            Ok((VALUES * VALUE_BYTES as u64) as f64 / (1 << 20) as f64 / secs)
        })
    }

    /// Random 4 KiB loads from the disk tier at queue depth `qd` (that many
    /// concurrent loads) for `seconds`: (IOPS, misses).
    pub fn read(&self, qd: usize, seconds: u64) -> Result<(f64, u64)> {
        let cache = &self.cache;
        self.rt.block_on(async {
            let ios = Arc::new(AtomicU64::new(0));
            let misses = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let t = Instant::now();
            let deadline = t + Duration::from_secs(seconds);
            let tasks: Vec<_> = (0..qd as u64)
                .map(|task| {
                    let (cache, ios, misses, stop) =
                        (cache.clone(), ios.clone(), misses.clone(), stop.clone());
                    tokio::spawn(async move {
                        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (task + 1);
                        while !stop.load(Ordering::Relaxed) {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            let key = x % VALUES;
                            match cache.storage().load(&key).await {
                                // From the device: not from its write
                                // queue, not throttled.
                                Ok(Load::Entry { .. }) => ios.fetch_add(1, Ordering::Relaxed),
                                _ => misses.fetch_add(1, Ordering::Relaxed),
                            };
                            if Instant::now() >= deadline {
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.context("a foyer reader panicked")?;
            }
            let secs = t.elapsed().as_secs_f64();
            Ok((
                ios.load(Ordering::Relaxed) as f64 / secs,
                misses.load(Ordering::Relaxed),
            ))
        })
    }

    /// Close the cache.
    pub fn close(self) -> Result<()> {
        self.rt
            .block_on(self.cache.close())
            .map_err(|e| anyhow::anyhow!("foyer close: {e}"))
    }
}
