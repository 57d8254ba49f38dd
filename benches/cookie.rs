//! `cookie`: latency of `lookup_cookie` for objects already in the index,
//! and throughput of whole cookie cycles (acquire, use, unuse,
//! relinquish) with 1 and 2 threads.
//!
//! The cache is a file-backed store (io_uring where available) with 20 000
//! objects in one volume. A lookup of an object in the index touches no
//! device, so this measures the cookie layer and the index, not the disk.
//!
//! Run: `cargo bench --bench cookie -- [--dir DIR] [--objects N]`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use ringcache::cookie::{CacheBackend, Fscache, FscacheConfig};
use ringcache::io::{self, EngineKind, OpenOptions};
use ringcache::store::{FormatOptions, Store, StoreConfig, format};

fn main() -> Result<()> {
    let mut dir = std::env::temp_dir();
    let mut objects: u64 = 20_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = PathBuf::from(args.next().context("--dir needs a path")?),
            "--objects" => objects = args.next().context("--objects needs N")?.parse()?,
            "--bench" => {}
            other => bail!("unknown argument {other:?} (--dir DIR, --objects N)"),
        }
    }
    let file = dir.join("ringcache-cookie-bench.img");
    ringcache::util::create_backing_file(&file, 256 << 20)?;
    let engine = io::open(
        &file,
        &OpenOptions {
            engine: EngineKind::Auto,
            ..Default::default()
        },
    )?;
    let engine_name = engine.name();
    format(
        engine.as_ref(),
        &FormatOptions {
            force: true,
            ..Default::default()
        },
    )?;
    let store = Arc::new(Store::open(
        engine,
        StoreConfig {
            max_objects: Some(objects * 4),
            ..Default::default()
        },
    )?);
    let vol = store.acquire_volume(b"bench", b"")?;
    for i in 0..objects {
        store.create(vol, format!("object-{i}").as_bytes(), b"aux", 4096)?;
    }
    store.flush()?;

    // lookup_cookie of objects in the index.
    let mut h = Histogram::<u64>::new(3)?;
    let mut nothing = || {};
    for round in 0..5 {
        for i in 0..objects {
            let key = format!("object-{}", (i * 7919) % objects);
            let t = Instant::now();
            let l = store.lookup_cookie(vol, key.as_bytes(), b"aux", 4096, &mut nothing)?;
            let ns = t.elapsed().as_nanos() as u64;
            if !l.positive {
                bail!("lookup of {key} was not positive");
            }
            store.withdraw_cookie(l.object, false, b"aux", 4096)?;
            if round > 0 {
                h.record(ns.max(1))?;
            }
        }
    }
    println!(
        "lookup_cookie in index ({engine_name}, {objects} objects): p50 {:.2} us, p99 {:.2} us, max {:.2} us",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );

    // Whole cookie cycles.
    for threads in [1usize, 2] {
        let cache = Arc::new(Fscache::new(store.clone(), FscacheConfig::default()));
        let volume = cache.acquire_volume("cycles", b"")?;
        let per_thread = 20_000u64;
        let t = Instant::now();
        std::thread::scope(|s| {
            for th in 0..threads {
                let (cache, volume) = (cache.clone(), volume.clone());
                s.spawn(move || {
                    for i in 0..per_thread {
                        let key = format!("t{th}-{}", i % 2000);
                        let c = cache
                            .acquire_cookie(&volume, key.as_bytes(), b"a", 4096)
                            .expect("acquire");
                        cache.use_cookie(&c, false);
                        cache.unuse_cookie(&c, None, None);
                        cache.relinquish_cookie(&c, false);
                    }
                });
            }
        });
        let secs = t.elapsed().as_secs_f64();
        let cycles = per_thread * threads as u64;
        println!(
            "acquire+use+unuse+relinquish, {threads} thread(s): {:.0} cycles/s ({:.2} us per cycle)",
            cycles as f64 / secs,
            secs * 1e6 / cycles as f64 * threads as f64
        );
        cache.relinquish_volume(&volume, false)?;
    }
    drop(store);
    let _ = std::fs::remove_file(&file);
    Ok(())
}
