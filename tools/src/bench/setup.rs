//! Each cache file or device a run uses, ready for its jobs: created (a
//! regular file, sized so the jobs' objects fit without culling) when it
//! does not exist, formatted (with force) when it holds no ringcache
//! cache, and opened with the job's I/O engine. A damaged cache is never
//! reformatted: the run stops and says how to check or format it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ringcache::io::{self, EngineKind, IoEngine, OpenOptions};
use ringcache::store::{CullThresholds, FormatOptions, Store, StoreConfig, StoreError, format};
use ringcache_ondisk::superblock::{Geometry, GeometryParams};

use super::runner::RunOptions;
use super::units::fmt_bytes_bin;
use super::{BenchError, io_err, store_err};

/// Bytes of data a cache of this geometry holds before culling starts
/// (brun percent of regions kept free, one region open, one header block
/// per region).
fn usable_bytes(g: &Geometry) -> u64 {
    let regions = u64::from(g.region_count);
    let reserve = (regions * u64::from(CullThresholds::default().brun)).div_ceil(100) + 1;
    regions.saturating_sub(reserve) * (g.region_bytes - 4096)
}

/// Size of a cache file that holds `data` bytes of objects without culling.
pub fn device_bytes_for(data: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    let round = |v: u64| v.div_ceil(MIB) * MIB;
    let mut d = round(data + data / 5 + 16 * MIB);
    loop {
        if let Ok(g) = Geometry::plan(d, GeometryParams::default())
            && usable_bytes(&g) >= data
        {
            return d;
        }
        d = round(d + d / 10);
    }
}

/// One cache file or device and the store on it.
pub(super) struct Device {
    pub(super) path: PathBuf,
    pub(super) store: Store,
    pub(super) engine_name: &'static str,
}

/// Say `msg` on stderr when the run was asked to (`RunOptions::notes`).
pub(super) fn note(opts: &RunOptions, msg: &str) {
    if opts.notes {
        eprintln!("ringcache bench: {msg}");
    }
}

fn open_engine(path: &Path, kind: EngineKind) -> Result<Arc<dyn IoEngine>, BenchError> {
    io::open(
        path,
        &OpenOptions {
            engine: kind,
            ..Default::default()
        },
    )
    .map_err(io_err(format!("opening {}", path.display())))
}

/// Open the cache on `path`, formatting (and creating or growing a regular
/// file) when it holds no cache.
pub(super) fn open_device(
    path: &Path,
    data_bytes: u64,
    kind: EngineKind,
    opts: &RunOptions,
    notes: &mut Vec<String>,
) -> Result<Device, BenchError> {
    let want = device_bytes_for(data_bytes);
    let meta = std::fs::metadata(path);
    let is_block = meta
        .as_ref()
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()));
    if meta.is_err() {
        note(
            opts,
            &format!(
                "creating {} ({})",
                path.display(),
                fmt_bytes_bin(want as f64)
            ),
        );
        ringcache::util::create_backing_file(path, want)
            .map_err(io_err(format!("creating {}", path.display())))?;
    }
    let engine = open_engine(path, kind)?;
    let store = match Store::open(engine.clone(), StoreConfig::default()) {
        Ok(s) => s,
        Err(StoreError::NotACache(_)) => {
            drop(engine);
            if !is_block && std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) < want {
                ringcache::util::create_backing_file(path, want)
                    .map_err(io_err(format!("growing {}", path.display())))?;
            }
            note(
                opts,
                &format!(
                    "formatting {} as a ringcache cache (it held none)",
                    path.display()
                ),
            );
            let engine = open_engine(path, kind)?;
            format(
                engine.as_ref(),
                &FormatOptions {
                    tag: "bench".into(),
                    force: true,
                    ..Default::default()
                },
            )
            .map_err(store_err(format!("formatting {}", path.display())))?;
            Store::open(engine, StoreConfig::default())
                .map_err(store_err(format!("opening {}", path.display())))?
        }
        Err(e) => {
            return Err(BenchError::Store {
                context: format!(
                    "opening {} (a damaged cache is not reformatted: check it with `ringcache fsck`, or format it with `ringcache format --force`)",
                    path.display()
                ),
                source: e,
            });
        }
    };
    let usable = usable_bytes(&store.superblock().geometry);
    if usable < data_bytes {
        let msg = format!(
            "the cache on {} holds {} before culling, the jobs' objects are {}: some data will be culled and reads of it counted as misses",
            path.display(),
            fmt_bytes_bin(usable as f64),
            fmt_bytes_bin(data_bytes as f64)
        );
        note(opts, &msg);
        notes.push(msg);
    }
    let engine_name = store.engine().name();
    Ok(Device {
        path: path.to_path_buf(),
        store,
        engine_name,
    })
}
