//! `format` must not make a cache that `open` then refuses: with 64 KiB
//! regions a device of 256 GiB or more has over 4 194 304 regions, more
//! than the index addresses. Format refuses it with open's message; a
//! device just under the limit formats and opens. (The files are sparse:
//! nothing close to their size is written.)

use std::sync::Arc;

use ringcache::io::{self, EngineKind, OpenOptions};
use ringcache::store::{FormatOptions, Store, StoreConfig, StoreError, format};
use ringcache_ondisk::superblock::GeometryParams;

fn engine_on(dir: &std::path::Path, name: &str, bytes: u64) -> Arc<dyn ringcache::io::IoEngine> {
    let path = dir.join(name);
    ringcache::util::create_backing_file(&path, bytes).unwrap();
    io::open(
        &path,
        &OpenOptions {
            engine: EngineKind::Psync,
            ..Default::default()
        },
    )
    .unwrap()
}

fn small_regions() -> FormatOptions {
    FormatOptions {
        tag: "big".into(),
        geometry: GeometryParams {
            region_bytes: Some(64 << 10),
            ..Default::default()
        },
        force: true,
    }
}

#[test]
fn too_many_regions_are_refused_at_format() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_on(dir.path(), "big.img", 300 << 30);
    match format(e.as_ref(), &small_regions()) {
        Err(StoreError::Invalid(m)) => {
            assert!(m.contains("more than this build addresses"), "{m}")
        }
        other => panic!("format accepted {other:?}"),
    }
    // Nothing was written: the device still holds no cache.
    assert!(Store::open(e, StoreConfig::default()).is_err());

    // Under the limit: formats, and opens.
    let e = engine_on(dir.path(), "ok.img", 16 << 30);
    format(e.as_ref(), &small_regions()).unwrap();
    Store::open(e, StoreConfig::default()).unwrap();
}
