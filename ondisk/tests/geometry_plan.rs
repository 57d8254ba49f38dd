//! How `Geometry::plan` sizes a device (the numbers docs/FORMAT.md quotes),
//! and the offset helpers recovery uses to find slots, log blocks and
//! regions.

mod common;

use ringcache_ondisk::FormatError;
use ringcache_ondisk::superblock::{Geometry, GeometryParams};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn plan(device_bytes: u64) -> Geometry {
    Geometry::plan(device_bytes, GeometryParams::default()).unwrap()
}

#[test]
fn one_gib_device() {
    let g = plan(GIB);
    assert_eq!(g.device_bytes, GIB);
    assert_eq!(g.ckpt_offset, 8192);
    assert_eq!(g.ckpt_slot_bytes, 16 * MIB, "1/64 of the device");
    assert_eq!(g.metalog_offset, 8192 + 32 * MIB);
    assert_eq!(g.metalog_bytes, 8 * MIB, "1/128 of the device");
    // 8 KiB + 32 MiB + 8 MiB rounded up to the next MiB.
    assert_eq!(g.regions_offset, 41 * MIB);
    assert_eq!(g.region_bytes, 8 * MIB);
    assert_eq!(g.region_count, ((GIB - 41 * MIB) / (8 * MIB)) as u32);
    assert_eq!(g.region_count, 122);
}

#[test]
fn small_device_gets_the_minimum_log_and_slots() {
    let g = plan(64 * MIB);
    assert_eq!(g.ckpt_slot_bytes, MIB);
    assert_eq!(g.metalog_bytes, MIB);
    assert_eq!(g.regions_offset, 4 * MIB);
    assert_eq!(g.region_count, 7);
}

#[test]
fn large_device_gets_the_maximum_log_and_slots() {
    let g = plan(1 << 40);
    assert_eq!(g.ckpt_slot_bytes, 1024 * MIB);
    assert_eq!(g.metalog_bytes, 64 * MIB);
    // 8 KiB + 2 GiB + 64 MiB rounded up to the next MiB.
    assert_eq!(g.regions_offset, 2113 * MIB);
    assert_eq!(
        u64::from(g.region_count),
        ((1u64 << 40) - g.regions_offset) / (8 * MIB)
    );
}

/// The examples table of docs/FORMAT.md.
#[test]
fn examples_in_the_format_doc() {
    // (device, slot, log, regions_offset, region_count), sizes in MiB.
    let table = [
        (64, 1, 1, 4, 7),
        (256, 4, 2, 11, 30),
        (1024, 16, 8, 41, 122),
        (1 << 20, 1024, 64, 2113, 130_807),
    ];
    for (device, slot, log, regions_offset, count) in table {
        let g = plan(device * MIB);
        assert_eq!(
            (
                g.ckpt_slot_bytes / MIB,
                g.metalog_bytes / MIB,
                g.regions_offset / MIB,
                g.region_count
            ),
            (slot, log, regions_offset, count),
            "{device} MiB"
        );
        assert_eq!(g.region_bytes, 8 * MIB);
    }
}

#[test]
fn log_and_slot_sizes_are_rounded_down_to_blocks() {
    // 1/64 and 1/128 of a device that is not a multiple of 512 KiB.
    let device = 3 * GIB + 12345;
    let g = plan(device);
    assert_eq!(g.ckpt_slot_bytes, (device / 64) & !4095);
    assert_eq!(g.metalog_bytes, (device / 128) & !4095);
}

#[test]
fn overrides_are_taken_as_given() {
    let g = Geometry::plan(
        GIB,
        GeometryParams {
            region_bytes: Some(64 << 10),
            metalog_bytes: Some(16384),
            ckpt_slot_bytes: Some(8192),
        },
    )
    .unwrap();
    assert_eq!(g.region_bytes, 64 << 10);
    assert_eq!(g.metalog_bytes, 16384);
    assert_eq!(g.ckpt_slot_bytes, 8192);
    assert_eq!(g.metalog_offset, 8192 + 16384);
    assert_eq!(g.regions_offset, MIB);
}

#[test]
fn a_device_too_small_for_two_regions_is_refused() {
    assert!(matches!(
        Geometry::plan(8 * MIB, GeometryParams::default()),
        Err(FormatError::OutOfRange {
            field: "region_count",
            value: 0,
            ..
        })
    ));
    assert!(matches!(
        Geometry::plan(0, GeometryParams::default()),
        Err(FormatError::OutOfRange {
            field: "region_count",
            ..
        })
    ));
}

#[test]
fn plan_refuses_what_validate_refuses() {
    let bad = |p: GeometryParams| Geometry::plan(GIB, p).unwrap_err();
    assert!(matches!(
        bad(GeometryParams {
            region_bytes: Some(0),
            ..Default::default()
        }),
        FormatError::OutOfRange {
            field: "region_bytes",
            ..
        }
    ));
    assert!(matches!(
        bad(GeometryParams {
            metalog_bytes: Some(1000),
            ..Default::default()
        }),
        FormatError::OutOfRange {
            field: "metalog_bytes",
            ..
        }
    ));
}

#[test]
fn offset_helpers() {
    let g = plan(GIB);
    assert_eq!(g.ckpt_slot_offset(0), g.ckpt_offset);
    assert_eq!(g.ckpt_slot_offset(1), g.ckpt_offset + g.ckpt_slot_bytes);
    let n = g.metalog_blocks();
    assert_eq!(n, 2048);
    assert_eq!(g.metalog_block_offset(0), g.metalog_offset);
    assert_eq!(g.metalog_block_offset(5), g.metalog_offset + 5 * 4096);
    // Block seq s lives at ring position s % metalog_blocks.
    assert_eq!(g.metalog_block_offset(n), g.metalog_offset);
    assert_eq!(
        g.metalog_block_offset(3 * n + 7),
        g.metalog_offset + 7 * 4096
    );
    assert_eq!(g.region_offset(0), g.regions_offset);
    assert_eq!(g.region_offset(3), g.regions_offset + 3 * g.region_bytes);
    assert_eq!(g.region_blocks(), 2048);
    let last_end = g.region_offset(g.region_count - 1) + g.region_bytes;
    assert!(last_end <= g.device_bytes);
}
