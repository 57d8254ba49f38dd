//! `ringcached`: the ringcache daemon.
//!
//! With no arguments it runs on its embedded default: a file-backed cache
//! of 1 GiB under `./ringcache-data/`, created and formatted on first run.
//! Today it opens (and if need be recovers) the cache, runs a self-check
//! workload through the store, prints what it did and closes the cache
//! cleanly; the socket service comes next.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use ringcache::io::{self, EngineKind, OpenOptions};
use ringcache::store::{FormatOptions, Segment, Store, StoreConfig, format};
use ringcache::util::{create_backing_file, parse_size};

/// Default data directory, relative to the working directory.
const DATA_DIR: &str = "ringcache-data";
/// Default size of the file-backed cache.
const DEFAULT_BYTES: u64 = 1 << 30;

#[derive(Parser)]
#[command(name = "ringcached", version, about = "The ringcache cache daemon")]
struct Args {
    /// Cache device or file (default: ./ringcache-data/cache.img, created on first run).
    #[arg(long)]
    device: Option<PathBuf>,
    /// Size of a cache file created on first run.
    #[arg(long, value_parser = parse_size, default_value = "1G")]
    size: u64,
    /// I/O engine: auto, uring or psync.
    #[arg(long, default_value = "auto")]
    engine: EngineKind,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let (path, fresh) = match args.device {
        Some(p) => (p, false),
        None => {
            let p = PathBuf::from(DATA_DIR).join("cache.img");
            let fresh = !p.exists();
            if fresh {
                let bytes = if args.size == 0 {
                    DEFAULT_BYTES
                } else {
                    args.size
                };
                create_backing_file(&p, bytes)
                    .with_context(|| format!("creating {}", p.display()))?;
            }
            (p, fresh)
        }
    };
    let engine = io::open(
        &path,
        &OpenOptions {
            engine: args.engine,
            ..Default::default()
        },
    )
    .with_context(|| format!("opening {}", path.display()))?;
    if fresh {
        let sb = format(
            engine.as_ref(),
            &FormatOptions {
                tag: "default".into(),
                ..Default::default()
            },
        )?;
        tracing::info!(path = %path.display(), regions = sb.geometry.region_count, "formatted a new cache");
    }
    tracing::info!(engine = engine.name(), path = %path.display(), "opening cache");
    let store = Store::open(engine, StoreConfig::default())
        .with_context(|| format!("opening the cache on {}", path.display()))?;
    let report = store.recovery_report().clone();
    tracing::info!(?report, "cache open");
    let store = Arc::new(store);
    self_check(&store)?;
    let stats = store.stats();
    let occ = store.occupancy_summary();
    println!("ringcached: cache {} ok", path.display());
    println!("  engine           {}", store.engine().name());
    println!("  clean last close {}", report.clean_shutdown);
    println!("  objects          {}", occ.objects);
    println!("  regions free     {}/{}", occ.regions_free, occ.regions);
    println!("  cached bytes     {}", occ.live_bytes);
    println!("  writes/reads     {}/{}", stats.writes, stats.reads);
    println!("  checksum errors  {}", stats.checksum_errors);
    match Arc::try_unwrap(store) {
        Ok(s) => s.close().context("closing the cache")?,
        Err(_) => bail!("store still shared at shutdown"),
    }
    Ok(())
}

/// Write, read back and verify a few MiB through the store.
fn self_check(store: &Store) -> Result<()> {
    let t = Instant::now();
    let vol = store.volume(b"ringcached.selfcheck", true)?;
    let key = b"selfcheck";
    if let Some(old) = store.lookup(vol, key)? {
        store.delete(old.id)?;
    }
    const BYTES: usize = 8 << 20;
    let id = store.create(vol, key, b"v1", BYTES as u64)?;
    let data: Vec<u8> = (0..BYTES).map(|i| (i * 31 % 251) as u8).collect();
    for (i, chunk) in data.chunks(1 << 20).enumerate() {
        store.write(id, (i << 20) as u64, chunk)?;
    }
    store.flush()?;
    let mut got = Vec::with_capacity(BYTES);
    for seg in store.read(id, 0, BYTES as u64)? {
        match seg {
            Segment::Data { data, .. } => got.extend_from_slice(&data),
            Segment::Hole { offset, len } => {
                bail!("self-check: hole at {offset} (+{len}) after writing")
            }
        }
    }
    if got != data {
        bail!("self-check: data read back differs from data written");
    }
    store.delete(id)?;
    tracing::info!(
        elapsed_ms = t.elapsed().as_millis() as u64,
        "self-check passed: 8 MiB written, flushed, read back"
    );
    Ok(())
}
