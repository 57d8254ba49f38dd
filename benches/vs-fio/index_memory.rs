//! The index's memory per cached extent: 1M extents built in an index,
//! the bytes they take counted by a tracking allocator, which is this
//! bench's global allocator (declared here, the one place that reads it).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringcache::store::IndexProbe;
use ringcache_ondisk::Record;
use ringcache_ondisk::superblock::{Geometry, GeometryParams};

#[global_allocator]
static ALLOC: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// Bytes of index memory per extent, with 1M 4 KiB extents in 1000 objects.
pub(crate) fn index_bytes_per_extent() -> f64 {
    let g = Geometry::plan(
        64 << 30,
        GeometryParams {
            region_bytes: Some(64 << 20),
            ..Default::default()
        },
    )
    .expect("geometry");
    let mut ix = IndexProbe::new(g);
    ix.apply(&Record::Volume {
        volume_id: 1,
        key: b"v",
    });
    const OBJECTS: u64 = 1000;
    const PER: u64 = 1000;
    for o in 0..OBJECTS {
        ix.apply(&Record::Object {
            object_id: o + 1,
            volume_id: 1,
            data_gen: 1,
            size: 1 << 40,
            flags: 0,
            key: format!("object-{o}").as_bytes(),
            aux: b"",
        });
    }
    let before = ALLOC.allocated();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for i in 0..OBJECTS * PER {
        let o = i % OBJECTS + 1;
        // Every other block, so no two extents touch: worst case.
        let block = (i / OBJECTS) * 2;
        let region = rng.random_range(0..g.region_count);
        ix.insert_extent(o, block * 4096, 4096, region, 4096);
    }
    let after = ALLOC.allocated();
    (after - before) as f64 / (OBJECTS * PER) as f64
}
