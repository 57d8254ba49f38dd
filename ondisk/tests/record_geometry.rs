//! `Record::check_geometry`: an extent or region record that names a place
//! outside the device is refused: a region index past region_count, an
//! extent that runs past the end of its region, more block crcs than the
//! region has blocks. Also guards a panic found by review: on a valid
//! geometry that ends near 2^64, the error path computed the extent's end
//! with unchecked addition and overflowed.

mod common;

use common::*;
use ringcache_ondisk::FormatError;
use ringcache_ondisk::record::{Crcs, ExtentEntry, Record};
use ringcache_ondisk::superblock::Geometry;

fn extent(region_index: u32, region_block: u32, length: u32) -> (ExtentEntry, Vec<u32>) {
    let entry = ExtentEntry {
        region_index,
        region_block,
        length,
        ..extent_entry()
    };
    let crcs = vec![0; entry.block_count()];
    (entry, crcs)
}

#[test]
fn records_without_locations_always_fit() {
    let g = geometry();
    for r in sample_records() {
        assert_eq!(r.check_geometry(&g), Ok(()), "{r:?}");
    }
}

#[test]
fn extent_region_index_too_big() {
    let g = geometry();
    for index in [g.region_count, g.region_count + 1, u32::MAX] {
        let (entry, crcs) = extent(index, 1, 4096);
        let r = Record::Extent {
            entry,
            crcs: Crcs::Native(&crcs),
        };
        assert_eq!(
            r.check_geometry(&g),
            Err(FormatError::OutOfRange {
                what: "extent entry",
                field: "region_index",
                value: index.into(),
                why: "no such region",
            })
        );
    }
}

#[test]
fn extent_past_region_end() {
    let g = geometry();
    let blocks = g.region_blocks();
    let last = g.region_count - 1;
    // Ends exactly at the end of the region: fine.
    let (entry, crcs) = extent(last, blocks - 2, 2 * 4096);
    let r = Record::Extent {
        entry,
        crcs: Crcs::Native(&crcs),
    };
    assert_eq!(r.check_geometry(&g), Ok(()));
    // One block further: past the end.
    let (entry, crcs) = extent(last, blocks - 2, 2 * 4096 + 1);
    let r = Record::Extent {
        entry,
        crcs: Crcs::Native(&crcs),
    };
    let start = g.region_offset(last);
    assert_eq!(
        r.check_geometry(&g),
        Err(FormatError::PastDevice {
            what: "extent entry (end of its region)",
            end: start + u64::from(blocks + 1) * 4096,
            device_bytes: start + g.region_bytes,
        })
    );
    // A region_block far past the region.
    let (entry, crcs) = extent(0, u32::MAX, 1);
    let r = Record::Extent {
        entry,
        crcs: Crcs::Native(&crcs),
    };
    assert!(matches!(
        r.check_geometry(&g),
        Err(FormatError::PastDevice { .. })
    ));
}

fn ckpt_extent(region_index: u32, region_offset: u32, length: u32) -> Record<'static> {
    Record::CkptExtent {
        object_id: 1,
        logical_offset: 0,
        length,
        region_index,
        region_offset,
    }
}

#[test]
fn checkpoint_extent_region_index_too_big() {
    let g = geometry();
    assert_eq!(
        ckpt_extent(g.region_count, 4096, 1).check_geometry(&g),
        Err(FormatError::OutOfRange {
            what: "checkpoint extent",
            field: "region_index",
            value: g.region_count.into(),
            why: "no such region",
        })
    );
}

#[test]
fn checkpoint_extent_past_region_end() {
    let g = geometry();
    let rb = g.region_bytes as u32;
    assert_eq!(ckpt_extent(1, rb - 4096, 4096).check_geometry(&g), Ok(()));
    assert_eq!(
        ckpt_extent(1, rb - 4096, 4097).check_geometry(&g),
        Err(FormatError::PastDevice {
            what: "checkpoint extent (end of its region)",
            end: g.region_offset(1) + g.region_bytes + 1,
            device_bytes: g.region_offset(1) + g.region_bytes,
        })
    );
    assert!(matches!(
        ckpt_extent(0, u32::MAX - 4095, u32::MAX).check_geometry(&g),
        Err(FormatError::PastDevice { .. })
    ));
}

#[test]
fn region_record_out_of_range() {
    let g = geometry();
    let crcs = vec![0u32; g.region_blocks() as usize + 1];
    let r = Record::Region {
        region_index: g.region_count,
        region_seq: 1,
        crcs: Crcs::Native(&crcs[..1]),
    };
    assert_eq!(
        r.check_geometry(&g),
        Err(FormatError::OutOfRange {
            what: "region record",
            field: "region_index",
            value: g.region_count.into(),
            why: "no such region",
        })
    );
    let fits = Record::Region {
        region_index: 0,
        region_seq: 1,
        crcs: Crcs::Native(&crcs[..g.region_blocks() as usize]),
    };
    assert_eq!(fits.check_geometry(&g), Ok(()));
    let r = Record::Region {
        region_index: 0,
        region_seq: 1,
        crcs: Crcs::Native(&crcs),
    };
    assert_eq!(
        r.check_geometry(&g),
        Err(FormatError::OutOfRange {
            what: "region record",
            field: "crc_count",
            value: crcs.len() as u64,
            why: "more crcs than the region has blocks",
        })
    );
}

/// A valid geometry whose last region ends 4 KiB short of 2^64 (possible on
/// a device that reports a huge size). Before the fix, reporting an extent
/// past the end of that region overflowed u64 and panicked in debug builds.
#[test]
fn no_overflow_on_a_geometry_ending_near_u64_max() {
    const GIB: u64 = 1 << 30;
    let g = Geometry {
        device_bytes: u64::MAX,
        region_count: 2,
        region_bytes: GIB,
        regions_offset: u64::MAX - 2 * GIB - 4095,
        ckpt_offset: 8192,
        ckpt_slot_bytes: 8192,
        metalog_offset: 3 * 8192,
        metalog_bytes: 16384,
    };
    assert_eq!(g.validate(u64::MAX), Ok(()));
    let blocks = g.region_blocks();
    let (entry, crcs) = extent(1, blocks - 1, 1 << 20);
    let r = Record::Extent {
        entry,
        crcs: Crcs::Native(&crcs),
    };
    assert_eq!(
        r.check_geometry(&g),
        Err(FormatError::PastDevice {
            what: "extent entry (end of its region)",
            end: u64::MAX,
            device_bytes: g.region_offset(1) + GIB,
        })
    );
    assert_eq!(
        ckpt_extent(1, (GIB - 4096) as u32, u32::MAX).check_geometry(&g),
        Err(FormatError::PastDevice {
            what: "checkpoint extent (end of its region)",
            end: u64::MAX,
            device_bytes: g.region_offset(1) + GIB,
        })
    );
}
